"""The package's cache folder on disk, and atomic publishing of a folder written there.

Converted real models and the demo's trained models live under one root; each is written in a
staging folder beside its final place and published by a rename, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "W2S_GENERATE_CACHE"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$W2S_GENERATE_CACHE``, else ``~/.cache/w2s_generate``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "w2s_generate"


@contextlib.contextmanager
def staging_dir(root: Path) -> Iterator[Path]:
    """A fresh hidden folder next to the final one, removed on exit unless it was published.

    It sits in the same parent as the final folder so that publishing is a rename on one
    filesystem, which is atomic.
    """
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op once published (the folder moved away)


def publish(staged: Path, final: Path) -> None:
    """Move a fully written ``staged`` folder to ``final``, replacing an older ``final``.

    Readers see either the old complete folder or the new complete one (or, for the instant between
    the two renames of a replacement, none, which reads as "not cached"), never a half-written one.
    If another process published ``final`` first, that one is kept and ``staged`` is left for the
    caller's cleanup.
    """
    old: Path | None = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
        os.replace(final, old)
    try:
        os.replace(staged, final)
    except OSError:
        # A concurrent trainer won the race (rename onto a non-empty folder fails); keep its result.
        if not final.exists():
            if old is not None:  # a real failure: put the previous cache back before raising
                os.replace(old, final)
                old = None
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
