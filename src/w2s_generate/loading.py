"""Loading checkpoints, tokenizers and peft adapters: one loader for pairs, the CLI and the recipes.

Safetensors only unless ``allow_pickle=True`` (unpickling can run code), no remote code unless
``trust_remote_code=True``; a local folder with pickle weights only is refused before anything loads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS_SAFE = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def check_weights_format(
    path: str | os.PathLike, allow_pickle: bool, role: str, allow_hint: str = "pass allow_pickle=True"
) -> None:
    """Refuse a local checkpoint with pickle weights only (an OSError, as transformers raises for
    weights it cannot find), naming ``role`` and how to allow them (``allow_hint``)."""
    folder = Path(path)
    if allow_pickle or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise OSError(
            f"{role}={str(path)!r} has only pickle weights ({', '.join(pickles)}) and no .safetensors: only "
            "safetensors load by default, since unpickling can run code. Re-save it with "
            f"save_pretrained(safe_serialization=True), or {allow_hint} if you trust its source."
        )


def load_kwargs(
    model_kwargs: dict[str, Any],
    dtype: torch.dtype | str | None,
    device_map: str | dict | None,
    allow_pickle: bool,
    trust_remote_code: bool,
) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments: safetensors unless ``allow_pickle``, dtype, placement."""
    load = dict(model_kwargs)
    load.update(use_safetensors=not allow_pickle or None, trust_remote_code=trust_remote_code)
    if dtype is not None:
        load["dtype"] = dtype
    if device_map is not None:
        load["device_map"] = device_map
    return load


def load_causal_lm(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    role: str = "model",
    **model_kwargs: Any,
) -> torch.nn.Module:
    """A causal LM in eval mode from a local folder or hub id, safetensors weights only by default.

    Args:
        path: a model folder or hub id.
        dtype: ``torch.float32``, ``"bfloat16"``, ``"auto"``, ... (default: the checkpoint's loader default).
        device_map: passed to ``from_pretrained`` (``"auto"``, ``"cpu"``, ``"cuda:0"``, ...).
        allow_pickle: load ``.bin``/``.pt``/``.pth`` weights (unpickling can run code: trusted sources only).
        trust_remote_code: run the checkpoint's own modelling code.
        role: how errors name the checkpoint (``"tuned"``, ``"--model"``, ...).
        **model_kwargs: more ``from_pretrained`` arguments.

    Raises:
        OSError: the folder holds only pickle weights (without ``allow_pickle``), or transformers found
            no weights; the message says how to go on.

    Examples:
        >>> from w2s_generate import load_causal_lm
        >>> model.save_pretrained("large")  # a folder with model.safetensors
        >>> large = load_causal_lm("large", dtype=torch.float32)
        >>> large.training, large.dtype
        (False, torch.float32)
    """
    load = load_kwargs(model_kwargs, dtype, device_map, allow_pickle, trust_remote_code)
    return from_pretrained(path, load, allow_pickle, role)


def from_pretrained(
    path: str | os.PathLike, load: dict[str, Any], allow_pickle: bool, role: str
) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained(path, **load)`` in eval mode, pickle-only folders refused
    first; a missing-safetensors error says how to go on."""
    check_weights_format(path, allow_pickle, role)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **load)
    except OSError as error:
        if allow_pickle or "safetensors" not in str(error):
            raise
        raise OSError(
            f"{error}\n{role}={str(path)!r} seems to have no safetensors weights; only those load by default. "
            "Pass allow_pickle=True to load .bin (pickle) weights if you trust the source."
        ) from error
    return model.eval()


def load_tokenizer(
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | Sequence[str | os.PathLike],
    *,
    trust_remote_code: bool = False,
    left_padded: bool = False,
) -> PreTrainedTokenizerBase:
    """A tokenizer from a folder or hub id, or the first of several candidate folders that holds one.

    Args:
        tokenizer: a tokenizer (returned as it is), a folder or hub id, or candidates tried in order
            (the tuned model's folder, then the untuned one's, ...).
        trust_remote_code: run the tokenizer's own code.
        left_padded: set it up for left-padded batches, as ``generate`` wants them (``padding_side =
            "left"``, EOS as the pad token when it has none).

    Raises:
        ValueError: no candidate holds tokenizer files; the message lists what was tried.

    Examples:
        >>> from w2s_generate import load_tokenizer
        >>> _ = tokenizer.save_pretrained("large")
        >>> loaded = load_tokenizer("large", left_padded=True)
        >>> loaded.padding_side, loaded.pad_token_id is not None
        ('left', True)
    """
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        loaded = tokenizer
    elif isinstance(tokenizer, (str, os.PathLike)):
        loaded = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=trust_remote_code)
    else:
        loaded = _first_tokenizer(tokenizer, trust_remote_code)
    if left_padded:
        loaded.padding_side = "left"
        if loaded.pad_token_id is None and loaded.eos_token_id is not None:
            loaded.pad_token = loaded.eos_token
    return loaded


def _first_tokenizer(
    candidates: Sequence[str | os.PathLike], trust_remote_code: bool
) -> PreTrainedTokenizerBase:
    errors = []
    for candidate in candidates:
        try:
            loaded = AutoTokenizer.from_pretrained(candidate, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            errors.append(f"{candidate}: {error}")
            continue
        # transformers 5 returns an empty tokenizer for a folder without tokenizer files.
        if len(loaded) > 1:
            return loaded
        errors.append(f"{candidate}: no tokenizer files")
    raise ValueError(
        "No tokenizer found next to the weak models; pass tokenizer=. Tried: " + "; ".join(errors)
    )


def adapter_base_model(folder: str | os.PathLike) -> str | None:
    """The base model an adapter folder names in its config (``base_model_name_or_path``).

    A relative path is read from the adapter's folder when the base is there (``../weak`` next to the
    adapter), else kept as written (a hub id, or a path from the working folder).
    """
    from peft import PeftConfig

    base = PeftConfig.from_pretrained(folder).base_model_name_or_path
    if base and not os.path.isabs(base):
        beside = os.path.normpath(os.path.join(folder, base))
        if os.path.exists(beside):
            return beside
    return base


def adapter_dir(path_or_id: str | os.PathLike, allow_pickle: bool) -> str | None:
    """The local folder of a peft adapter at ``path_or_id``, or ``None`` when it is a full model."""
    path = Path(path_or_id)
    if path.is_dir():
        if not (path / ADAPTER_CONFIG).exists():
            return None
        if not allow_pickle and not (path / ADAPTER_WEIGHTS_SAFE).exists():
            raise ValueError(
                f"{path} holds an adapter without {ADAPTER_WEIGHTS_SAFE}; only safetensors load by default. "
                "Re-save it with save_pretrained(safe_serialization=True) or pass allow_pickle=True."
            )
        return str(path)
    if os.path.exists(str(path_or_id)):
        return None
    if path.is_absolute() or str(path_or_id).startswith((".", "~")) or len(path.parts) > 2:
        raise FileNotFoundError(f"No such folder: {str(path_or_id)!r} (and it is not a hub id).")
    from huggingface_hub import file_exists, snapshot_download

    repo = str(path_or_id)
    if not file_exists(repo, ADAPTER_CONFIG):
        return None
    patterns = [ADAPTER_CONFIG, ADAPTER_WEIGHTS_SAFE, "*.json", "*.model", "*.txt"]
    if allow_pickle:
        patterns.append("adapter_model.bin")
    local = snapshot_download(repo, allow_patterns=patterns)
    return adapter_dir(local, allow_pickle)


def load_adapters(
    adapters: Sequence[str | os.PathLike],
    names: Sequence[str],
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None,
    load: dict[str, Any],
    allow_pickle: bool,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """One base model with every adapter loaded under ``names`` (they must share that base)."""
    from peft import PeftModel

    folders = []
    for adapter in adapters:
        folder = adapter_dir(adapter, allow_pickle)
        if folder is None:
            raise ValueError(f"{str(adapter)!r} is not a peft adapter (no {ADAPTER_CONFIG}).")
        folders.append(folder)
    bases = [adapter_base_model(f) for f in folders]
    if len(set(bases)) > 1:
        raise ValueError(
            f"The adapters have different base models ({sorted(set(bases))}): adapters sharing one forward need one base."
        )
    base = from_pretrained(bases[0], load, allow_pickle, "the adapters' base model")
    peft_model = PeftModel.from_pretrained(base, folders[0], adapter_name=names[0])
    for folder, name in zip(folders[1:], names[1:]):
        peft_model.load_adapter(folder, adapter_name=name)
    trust = load.get("trust_remote_code", False)
    tok = load_tokenizer(
        tokenizer if tokenizer is not None else [folders[0], bases[0]], trust_remote_code=trust
    )
    return peft_model, tok
