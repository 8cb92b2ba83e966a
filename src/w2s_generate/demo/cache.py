"""Where the demo models live on disk (the cache root and atomic publishing are ``cache_folders``')."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cache_folders import CACHE_ENV, cache_root, publish, staging_dir

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
