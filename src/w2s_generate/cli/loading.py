"""Loading for ``w2s-generate generate``: the large model, the weak pair, the strategy, or a server client.

Local paths are checked before anything loads; every failure is a ``LoadError`` whose message names
the option and the path and says what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from .messages import reason


class LoadError(Exception):
    """A model, tokenizer or pair could not be loaded; the message says why and what to do."""


def torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def check_weights_format(path: str, allow_pickle: bool, flag: str) -> None:
    """Refuse a local checkpoint that has only pickle weights, unless ``--allow-pickle``."""
    from ..loading import check_weights_format as check

    try:
        check(path, allow_pickle, flag, allow_hint="pass --allow-pickle")
    except OSError as error:
        raise LoadError(str(error)) from None


def check_exists(path: str | None, flag: str) -> None:
    """Refuse a local path that does not exist (a hub id like ``org/name`` is left to the loader)."""
    if path is None or Path(path).exists():
        return
    if Path(path).is_absolute() or path.startswith((".", "~")) or len(Path(path).parts) > 2:
        raise LoadError(f"{flag} {path}: no such file or folder (and it is not a hub id like org/name).")


#: Files one of which a tokenizer folder holds (fast, sentencepiece, BPE or WordPiece, tiktoken).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tekken.json",
)


def _has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES) or any(folder.glob("*.tiktoken"))


def _local_folder(path: str, flag: str, what: str, holds: str) -> Path | None:
    """The local folder ``path`` names, or None for a hub id; LoadError when it is missing or a file."""
    check_exists(path, flag)
    folder = Path(path)
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise LoadError(
            f"{flag} {path} is a file, not a {what} folder: give the folder that holds {holds}, or a hub id"
        )
    return folder


def _check_checkpoint(path: str, flag: str, args: argparse.Namespace) -> Path | None:
    """A full checkpoint's local folder (None for a hub id): config.json there, no adapter, safe weights."""
    folder = _local_folder(path, flag, "model", "config.json")
    if folder is None:
        return None
    if flag != "--model" and (folder / "adapter_config.json").is_file():
        fix = (
            f"pass it as --adapter {path}"
            if flag == "--tuned"
            else "the pair of one adapter is --adapter DIR alone"
        )
        raise LoadError(f"{flag} {path} is a LoRA adapter, not a full checkpoint: {fix} (untuned = its base)")
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise LoadError(
            f"{flag} {path} holds no config.json: it is not a model folder; give the folder that save_pretrained "
            "wrote, or a hub id"
        )
    check_weights_format(path, args.allow_pickle, flag)
    return folder


def _check_tokenizer_folder(path: str, flag: str) -> None:
    folder = _local_folder(path, flag, "tokenizer", "tokenizer.json")
    if folder is not None and not _has_tokenizer_files(folder):
        raise LoadError(
            f"{flag} {path} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...): give the folder that "
            "tokenizer.save_pretrained wrote"
        )


def _check_adapter(path: str, args: argparse.Namespace) -> list[Path | None]:
    """An adapter's folder and its base's (None for hub ids), each checked; LoadError says what is wrong."""
    folder = _local_folder(path, "--adapter", "LoRA adapter", "adapter_config.json")
    if folder is None:
        return []
    if not (folder / "adapter_config.json").is_file():
        raise LoadError(
            f"--adapter {path} holds no adapter_config.json: it is not a LoRA adapter; for two full checkpoints "
            "use --tuned T --untuned U"
        )
    check_weights_format(path, args.allow_pickle, "--adapter")
    from ..loading import adapter_base_model

    try:
        written = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        base = adapter_base_model(folder)
    except Exception as error:  # a damaged config: peft's own message
        raise LoadError(
            f"--adapter {path}: its adapter_config.json cannot be read: {reason(error)}"
        ) from error
    if not base:
        raise LoadError(
            f"--adapter {path}: adapter_config.json names no base model (base_model_name_or_path)"
        )
    local = (
        Path(base).exists()
        or Path(base).is_absolute()
        or base.startswith((".", "~"))
        or len(Path(base).parts) > 2
    )
    if local and not Path(base).exists():
        raise LoadError(
            f"--adapter {path}: its base model {written} (adapter_config.json's base_model_name_or_path, read from "
            "the adapter's folder) is not there: put the base back, or fix that path"
        )
    if local:
        _check_checkpoint(base, f"--adapter {path}: its base model", args)
    return [folder, Path(base) if local else None]


def check_paths(args: argparse.Namespace) -> None:
    """Check every local path before anything loads: kind of folder, the files it must hold, safe weights.

    Hub ids are left to the loaders. LoadError names the option, the path and the fix.
    """
    if args.endpoint is None:
        model = _check_checkpoint(args.model, "--model", args)
        if args.tokenizer is None and model is not None and not _has_tokenizer_files(model):
            raise LoadError(
                f"--model {args.model} holds no tokenizer files: save the tokenizer next to the model, or pass "
                "--tokenizer"
            )
    for flag, path in (("--tokenizer", args.tokenizer), ("--weak-tokenizer", args.weak_tokenizer)):
        if path is not None:
            _check_tokenizer_folder(path, flag)
    if args.adapter is not None:
        for adapter in args.adapter:
            folders = _check_adapter(adapter, args)
            local = bool(folders) and None not in folders
            if args.weak_tokenizer is None and local and not any(_has_tokenizer_files(f) for f in folders):
                raise LoadError(
                    f"--adapter {adapter}: no tokenizer files next to the adapter or its base {folders[1]}: "
                    "save the tokenizer with the adapter, or pass --weak-tokenizer"
                )
        return
    folders = [
        _check_checkpoint(path, flag, args)
        for flag, path in (("--tuned", args.tuned), ("--untuned", args.untuned))
    ]
    if (
        args.weak_tokenizer is None
        and None not in folders
        and not any(_has_tokenizer_files(f) for f in folders)
    ):
        raise LoadError(
            f"--tuned {args.tuned} and --untuned {args.untuned} hold no tokenizer files: save the tokenizer next "
            "to them, or pass --weak-tokenizer"
        )


def _load_hint(error: Exception, allow_pickle: bool) -> str:
    """The safetensors hint, only where the loader found no safetensors weights."""
    if not allow_pickle and "safetensors" in str(error):
        return " (only safetensors weights load unless --allow-pickle is given)"
    return ""


def load_strong(args: argparse.Namespace):
    """The large model (eval mode) and its tokenizer, set up for left-padded batches."""
    from .._compat import output_rows
    from ..loading import load_causal_lm, load_tokenizer

    check_exists(args.model, "--model")
    check_exists(args.tokenizer, "--tokenizer")
    check_weights_format(args.model, args.allow_pickle, "--model")
    try:
        model = load_causal_lm(
            args.model,
            dtype=torch_dtype(args.dtype),
            device_map=args.device_map,
            allow_pickle=args.allow_pickle,
            trust_remote_code=args.trust_remote_code,
            role="--model",
        )
    except Exception as error:  # a broken config or weights file may raise anything
        hint = _load_hint(error, args.allow_pickle)
        raise LoadError(f"could not load --model {args.model}{hint}: {reason(error)}") from error
    source = args.tokenizer or args.model
    try:
        tokenizer = load_tokenizer(source, trust_remote_code=args.trust_remote_code, left_padded=True)
    except Exception as error:
        raise LoadError(
            f"could not load the large model's tokenizer from {source}: {reason(error)}"
        ) from error
    check_tokenizer_size(tokenizer, output_rows(model), source, "--tokenizer")
    return model, tokenizer


def load_pair(args: argparse.Namespace):
    """The weak pair from ``--adapter`` or ``--tuned``/``--untuned``."""
    from ..pairs import WeakPair

    kwargs: dict[str, Any] = {
        "tokenizer": args.weak_tokenizer,
        "dtype": torch_dtype(args.dtype),
        "device_map": args.device_map,
        "allow_pickle": args.allow_pickle,
        "trust_remote_code": args.trust_remote_code,
        # The pair's one prompt rule: --no-chat-template turns it off; otherwise as the adapter was
        # trained (its recorded format), else the weak tokenizer's chat template when it has one.
        "chat_template": False if args.no_chat_template else None,
    }
    if args.adapter is not None:
        what = "--adapter " + " --adapter ".join(args.adapter)
        for adapter in args.adapter:
            check_exists(adapter, "--adapter")
            check_weights_format(adapter, args.allow_pickle, "--adapter")
        if len(args.adapter) == 1 and args.weights is None:
            load = lambda: WeakPair.from_pretrained(args.adapter[0], **kwargs)  # noqa: E731
        else:
            from ..combined import GuidanceEnsemble

            load = lambda: GuidanceEnsemble.from_adapters(args.adapter, args.weights, **kwargs)  # noqa: E731
    else:
        what = f"--tuned {args.tuned} --untuned {args.untuned}"
        for flag, path in (("--tuned", args.tuned), ("--untuned", args.untuned)):
            check_exists(path, flag)
            check_weights_format(path, args.allow_pickle, flag)
        load = lambda: WeakPair.from_pretrained(args.tuned, args.untuned, **kwargs)  # noqa: E731
    try:
        pair = load()
    except Exception as error:
        hint = _load_hint(error, args.allow_pickle)
        raise LoadError(f"could not load the weak pair {what}{hint}: {reason(error)}") from error
    check_tokenizer_size(pair.tokenizer, pair.vocab_rows, args.weak_tokenizer or what, "--weak-tokenizer")
    return pair


def check_tokenizer_size(tokenizer, rows: int, source: str, flag: str) -> None:
    """Refuse a tokenizer that cannot be its model's (see ``pairs.clearly_not_its_tokenizer``).

    transformers 5 builds an empty tokenizer (one token) for a checkpoint folder without tokenizer
    files instead of failing; every prompt would then encode to nothing.
    """
    from ..pairs import clearly_not_its_tokenizer

    if len(tokenizer) < rows // 2:
        raise LoadError(
            f"the tokenizer loaded for {source} has {len(tokenizer)} tokens but its model {rows} output rows: "
            f"the folder probably holds no tokenizer files. Save the tokenizer next to the model or pass {flag}."
        )
    if clearly_not_its_tokenizer(len(tokenizer), rows):
        raise LoadError(
            f"the tokenizer loaded for {source} has {len(tokenizer)} tokens but its model {rows} output rows: "
            f"it is not that model's tokenizer. Pass {flag} with the tokenizer the model was trained with."
        )


def make_strategy(args: argparse.Namespace, pair, strong_tokenizer):
    """The decoding strategy of ``--method``, built from the method table."""
    from ..methods import build_strategy, method_defaults

    options = {option: getattr(args, option) for option in method_defaults(args.method)}
    return build_strategy(args.method, pair, strong_tokenizer, seed=args.seed, options=options)


def make_sampler(args: argparse.Namespace):
    """The --endpoint client (the standard library only: nothing heavy is imported)."""
    from ..samplers import CompletionsSampler

    optional = {"timeout": args.timeout, "retries": args.retries}
    return CompletionsSampler(
        args.endpoint,
        args.model,
        api_key_env=args.api_key_env or "OPENAI_API_KEY",
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        extra_body=args.extra_body,
        **{key: value for key, value in optional.items() if value is not None},
    )


def load_models(args: argparse.Namespace):
    """``(model, tokenizer, pair, strategy)``; the model's ``generate`` takes ``strategy=``. LoadError if not."""
    from ..generate import enable
    from ..processor import check_shared_vocabulary

    if args.endpoint is not None:
        return _load_remote(args)
    model, tokenizer = load_strong(args)
    pair = load_pair(args)
    if args.method == "token":
        try:
            check_shared_vocabulary(pair, tokenizer)
        except ValueError as error:
            raise LoadError(f"--method token: {error}") from error
    try:
        strategy = make_strategy(args, pair, tokenizer)
    except (ValueError, TypeError) as error:
        raise LoadError(f"--method {args.method}: {error}") from error
    return enable(model), tokenizer, pair, strategy


def _load_remote(args: argparse.Namespace):
    """``(sampler, tokenizer or None, pair, strategy)`` for --endpoint."""
    from transformers import AutoTokenizer

    tokenizer = None
    if args.tokenizer is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                args.tokenizer, trust_remote_code=args.trust_remote_code
            )
        except Exception as error:
            raise LoadError(f"could not load --tokenizer {args.tokenizer}: {reason(error)}") from error
    try:
        sampler = make_sampler(args)
    except ValueError as error:
        raise LoadError(f"--endpoint: {error}") from error
    pair = load_pair(args)
    return sampler, tokenizer, pair, make_strategy(args, pair, tokenizer)


def hub_progress_bars(enabled: bool) -> contextlib.AbstractContextManager:
    """transformers' loading bars off while this runs, when ``--no-progress`` is given."""
    if enabled:
        return contextlib.nullcontext()
    from .._compat import hub_progress_bars_off

    return hub_progress_bars_off()
