"""The documentation site builds and renders: no raw markup a reader would see, no broken links.

The site is built once per session with ``mkdocs build --strict`` (unresolved cross-references fail
the build), then every HTML page is parsed and checked for what mkdocs does not catch by itself:
Sphinx roles shown literally, raw ``$$`` math, doctest examples rendered as prose (or as nested
blockquotes, which is what a singular ``Example:`` section does), and internal links to missing files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

for _module in ("mkdocs", "mkdocstrings", "material"):
    pytest.importorskip(_module, reason=f"{_module} is not installed (pip install -e '.[docs]')")

ROOT = Path(__file__).resolve().parent.parent
# A role as it reaches the page: ":meth:`x`" stays text, ":meth:``x``" becomes ":meth:<code>x</code>"
# (code text is wrapped in backticks below, so both read ":meth:`").
SPHINX_ROLE = re.compile(r":(?:meth|class|func|attr|data|mod|obj|exc):`")
CODE_TAGS = {"code", "pre", "kbd", "samp"}
HIDDEN_TAGS = {"script", "style", "template"}
LINK_ATTRS = {"a": "href", "link": "href", "img": "src", "script": "src", "source": "src"}


@dataclass
class Page:
    path: Path
    text: str = ""  # visible text; the text of code elements is wrapped in backticks
    prose: list[str] = field(default_factory=list)  # visible text outside code elements
    links: list[str] = field(default_factory=list)
    nested_blockquotes: int = 0


class _PageParser(HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.parts: list[str] = []
        self.code = 0
        self.hidden = 0
        self.blockquotes = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = LINK_ATTRS.get(tag)
        value = dict(attrs).get(attr) if attr else None
        if value is not None:
            self.page.links.append(value)
        if tag in HIDDEN_TAGS:
            self.hidden += 1
        elif tag in CODE_TAGS:
            if self.code == 0:
                self.parts.append("`")
            self.code += 1
        elif tag == "blockquote":
            self.blockquotes += 1
            if self.blockquotes > 1:
                self.page.nested_blockquotes += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag in CODE_TAGS:
            self.code = max(0, self.code - 1)
            if self.code == 0:
                self.parts.append("`")
        elif tag == "blockquote":
            self.blockquotes = max(0, self.blockquotes - 1)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        self.parts.append(data)
        if not self.code:
            self.page.prose.append(data)

    def close(self) -> None:
        super().close()
        self.page.text = "".join(self.parts)


def _parse(path: Path) -> Page:
    page = Page(path)
    parser = _PageParser(page)
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return page


@dataclass
class Site:
    root: Path
    pages: list[Page]

    def name(self, page: Page) -> str:
        return page.path.relative_to(self.root).as_posix()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    out = tmp_path_factory.mktemp("docs") / "site"
    config = str(ROOT / "mkdocs.yml")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", config, "-d", str(out)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    pages = [_parse(path) for path in sorted(out.rglob("*.html"))]
    assert any(p.path == out / "api" / "index.html" for p in pages), "the API page was not built"
    return Site(out, pages)


def _context(text: str, start: int, end: int) -> str:
    return " ".join(text[max(0, start - 40) : end + 40].split())


def test_no_raw_sphinx_roles(site):
    found = [
        f"{site.name(page)}: ...{_context(page.text, m.start(), m.end())}..."
        for page in site.pages
        for m in SPHINX_ROLE.finditer(page.text)
    ]
    assert not found, "Sphinx roles shown literally (use [`name`][w2s_generate.Name]):\n" + "\n".join(found)


def test_no_raw_display_math(site):
    found = [
        f"{site.name(page)}: ...{_context(text, i, i + 2)}..."
        for page in site.pages
        for text in page.prose
        if (i := text.find("$$")) >= 0
    ]
    assert not found, "raw $$ math (there is no math engine):\n" + "\n".join(found)


def test_examples_render_as_code(site):
    found = [
        f"{site.name(page)}: ...{_context(text, i, i + 3)}..."
        for page in site.pages
        for text in page.prose
        if (i := text.find(">>>")) >= 0
    ]
    found += [
        f"{site.name(page)}: {page.nested_blockquotes} nested blockquote(s), doctest lines rendered as "
        "quotes (a singular `Example:` section? use `Examples:`)"
        for page in site.pages
        if page.nested_blockquotes
    ]
    assert not found, "examples outside code blocks:\n" + "\n".join(found)


def _target(site: Site, page: Page, link: str) -> Path | None:
    """The file an internal link points to, or None for external links and same-page anchors."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or not parts.path:  # http(s), mailto, data, #fragment, ?query
        return None
    path = unquote(parts.path)
    base = site.root if path.startswith("/") else page.path.parent
    target = (base / path.lstrip("/")).resolve()
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target


def test_internal_links_resolve(site):
    broken = []
    for page in site.pages:
        for link in page.links:
            target = _target(site, page, link)
            if target is not None and not target.is_file():
                broken.append(f"{site.name(page)}: {link}")
    assert not broken, "internal links to missing files:\n" + "\n".join(sorted(set(broken)))


# An object documented under its defining module's path (w2s_generate.candidates.LocalModelSource):
# the API page promises every public name imports from w2s_generate itself.
MODULE_PATH_ID = re.compile(r'id="(w2s_generate\.[a-z_]+\.[A-Za-z_]+)"')


def test_the_api_page_documents_names_as_they_are_imported(site):
    api = next(p for p in site.pages if site.name(p) == "api/index.html")
    found = sorted(set(MODULE_PATH_ID.findall(api.path.read_text(encoding="utf-8"))))
    assert not found, "documented under a submodule path, not as w2s_generate.<Name>:\n" + "\n".join(found)


def _stylesheets(site: Site, page: Page) -> str:
    css = []
    for link in page.links:
        target = _target(site, page, link)
        if target is not None and target.suffix == ".css" and target.is_file():
            css.append(target.read_text(encoding="utf-8"))
    return "\n".join(css)


CODE_WRAPS = re.compile(r"pre\s*>\s*code\s*\{[^}]*white-space:\s*pre-wrap", re.S)


def test_code_blocks_wrap_at_the_column(site):
    """The column holds about 80 characters of code at 1280 px; longer lines scroll out of sight unless
    code blocks wrap."""
    unwrapped = [
        site.name(page)
        for page in site.pages
        if "<pre" in page.path.read_text(encoding="utf-8") and not CODE_WRAPS.search(_stylesheets(site, page))
    ]
    assert not unwrapped, "pages whose code blocks do not wrap (extra_css):\n" + "\n".join(unwrapped)


def test_install_instructions_are_from_a_clone(site):
    """The package is not on an index: no page tells to pip install it by name."""
    by_name = re.compile(r"pip install ['\"]?w2s-generate")
    found = [f"{site.name(p)}: {m.group(0)}" for p in site.pages for m in by_name.finditer(p.text)]
    assert not found, "install by package name (not on an index):\n" + "\n".join(found)
    home = next(p for p in site.pages if site.name(p) == "index.html")
    assert "pip install -e ." in home.text and "make install" in home.text
