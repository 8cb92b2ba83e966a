"""Where the demo models live on disk, and how a finished training is published atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ADAPTER_DIR",
    "CACHE_ENV",
    "CACHE_FORMAT",
    "MANIFEST",
    "REQUIRED_FILES",
    "STRONG_DIR",
    "TOKENIZER_DIR",
    "WEAK_DIR",
    "cache_root",
    "demo_dir",
    "publish",
    "read_manifest",
    "staging_dir",
]

CACHE_ENV = "W2S_GENERATE_CACHE"
# The versioned folder name: a change to what is stored gets a new folder rather than a migration.
CACHE_FORMAT = "demo-v1"
MANIFEST = "manifest.json"
STRONG_DIR, WEAK_DIR, ADAPTER_DIR, TOKENIZER_DIR = "strong", "weak", "weak-positive-lora", "tokenizer"

# What a complete cache holds; checked before reuse so a hand-damaged folder is rebuilt, not loaded
# (a cache written before each model folder held its tokenizer is rebuilt the same way).
REQUIRED_FILES = (
    f"{STRONG_DIR}/config.json",
    f"{STRONG_DIR}/model.safetensors",
    f"{STRONG_DIR}/tokenizer.json",
    f"{WEAK_DIR}/config.json",
    f"{WEAK_DIR}/model.safetensors",
    f"{WEAK_DIR}/tokenizer.json",
    f"{ADAPTER_DIR}/adapter_config.json",
    f"{ADAPTER_DIR}/adapter_model.safetensors",
    f"{ADAPTER_DIR}/tokenizer.json",
    f"{TOKENIZER_DIR}/tokenizer.json",
    MANIFEST,
)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$W2S_GENERATE_CACHE``, else ``~/.cache/w2s_generate``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "w2s_generate"


def demo_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The versioned folder holding the demo models: ``<cache root>/demo-v1``."""
    return cache_root(cache_dir) / CACHE_FORMAT


def read_manifest(folder: Path, expected: Mapping[str, Any]) -> dict[str, Any] | None:
    """The manifest of a complete cache folder whose keys match ``expected``, else None.

    Args:
        folder: A ``demo-v1`` folder.
        expected: Manifest entries that must be equal for the cache to be reused (format, recipe
            fingerprint), so that a change to the language or the training recipe retrains.

    Returns:
        The parsed manifest, or None if a file is missing, the manifest is unreadable, or an
        expected entry differs.
    """
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expected.items()):
        return None
    return manifest


@contextlib.contextmanager
def staging_dir(root: Path) -> Iterator[Path]:
    """A fresh hidden folder next to the final one, removed on exit unless it was published.

    It sits in the same parent as the final folder so that publishing is a rename on one
    filesystem, which is atomic.
    """
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CACHE_FORMAT}.tmp-", dir=root))
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
