"""What the recipe scripts share: safe loading, prompt files, response decoding, tables, JSON lines.

Not a public API: the recipes import it as ``_common`` from their own folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

import w2s_generate as w2s
from w2s_generate.processor import check_shared_vocabulary

DTYPES = ("auto", "float32", "bfloat16", "float16")


class RecipeError(Exception):
    """Something the user can fix (a missing file, pickle weights, a wrong label); main() prints it."""


# --------------------------------------------------------------------------- arguments


def add_pair_arguments(
    parser: argparse.ArgumentParser, tuned: str, untuned: str, *, weak_device_map: bool = False
) -> None:
    """``--tuned``/``--untuned`` (two checkpoints) or ``--adapter`` (one base with a LoRA adapter)."""
    group = parser.add_argument_group("weak pair (local paths or hub ids)")
    group.add_argument("--tuned", default=tuned, metavar="T", help=f"the tuned small model (default {tuned})")
    group.add_argument(
        "--untuned",
        default=untuned,
        metavar="U",
        help=f"the same small model before tuning (default {untuned})",
    )
    group.add_argument(
        "--adapter",
        metavar="DIR",
        help="a LoRA adapter (e.g. from examples/train_weak_lora.py) used instead of --tuned/--untuned: "
        "tuned = its base with the adapter, untuned = the base alone",
    )
    group.add_argument(
        "--weak-tokenizer", metavar="PATH", help="the pair's tokenizer (default: next to the tuned model)"
    )
    if weak_device_map:
        group.add_argument(
            "--weak-device-map", metavar="MAP", help="where the pair goes (default: --device-map)"
        )


def add_sampling_arguments(
    parser: argparse.ArgumentParser, *, max_new_tokens: int, beam: tuple[int, int, int], batch_size: int = 4
) -> None:
    group = parser.add_argument_group("sampling and search")
    group.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=max_new_tokens,
        metavar="N",
        help=f"default {max_new_tokens}",
    )
    group.add_argument("--temperature", type=_positive_float, default=0.7, metavar="T", help="default 0.7")
    group.add_argument("--top-k", type=int, default=50, metavar="K", help="default 50; 0 disables it")
    group.add_argument("--top-p", type=float, default=1.0, metavar="P", help="default 1.0 (off)")
    W, K, L = beam
    group.add_argument(
        "--beam-width",
        type=_positive_int,
        default=W,
        metavar="W",
        help=f"CBS: beams kept per prompt (default {W})",
    )
    group.add_argument(
        "--successors",
        type=_positive_int,
        default=K,
        metavar="K",
        help=f"CBS: chunks sampled per beam and round (default {K})",
    )
    group.add_argument(
        "--chunk-length",
        type=_positive_int,
        default=L,
        metavar="L",
        help=f"CBS: tokens per chunk (default {L})",
    )
    group.add_argument(
        "--batch-size",
        type=_positive_int,
        default=batch_size,
        metavar="N",
        help=f"prompts per generate call (default {batch_size})",
    )


def add_loading_arguments(parser: argparse.ArgumentParser, *, device_map: str | None = None) -> None:
    group = parser.add_argument_group("loading")
    default = "cuda:0 when a GPU is present, else cpu" if device_map is None else device_map
    group.add_argument(
        "--device-map",
        default=device_map,
        metavar="MAP",
        help=f"passed to from_pretrained: auto (spread over every GPU), cpu, cuda:0, ... (default: {default})",
    )
    group.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="weights dtype (default: bfloat16 on GPU, float32 on CPU; auto: the checkpoint's own)",
    )
    group.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load .bin (pickle) weights; only from trusted sources",
    )
    group.add_argument(
        "--trust-remote-code", action="store_true", help="run model code from the repositories"
    )
    group.add_argument("--seed", type=int, default=0, help="torch seed, set before each method (default 0)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


# --------------------------------------------------------------------------- loading


def resolve_dtype(name: str | None) -> torch.dtype | str:
    if name is None:
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return "auto" if name == "auto" else getattr(torch, name)


def resolve_device_map(value: str | None) -> str:
    if value is not None:
        return value
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _pickle_hint(args: argparse.Namespace) -> str:
    return "" if args.allow_pickle else " (only safetensors weights load unless --allow-pickle is given)"


def load_causal_lm(
    name: str,
    args: argparse.Namespace,
    *,
    device_map: str | dict | None = None,
    tokenizer: str | None = None,
    max_memory: dict | None = None,
):
    """A causal LM in eval mode and its tokenizer (left padding, a pad token). RecipeError if not."""
    extra = {} if max_memory is None else {"max_memory": max_memory}
    try:
        model = w2s.load_causal_lm(
            name,
            dtype=resolve_dtype(args.dtype),
            device_map=resolve_device_map(device_map or args.device_map),
            allow_pickle=args.allow_pickle,
            trust_remote_code=args.trust_remote_code,
            role="--strong",
            **extra,
        )
    except (OSError, ValueError) as error:
        raise RecipeError(f"could not load {name}{_pickle_hint(args)}: {error}") from error
    tok = load_tokenizer(tokenizer or name, args)
    rows = int(model.get_output_embeddings().weight.shape[0])
    if len(tok) < rows // 2:
        raise RecipeError(
            f"the tokenizer of {tokenizer or name} has {len(tok)} tokens for {rows} output rows: the folder "
            "probably holds no tokenizer files; save the tokenizer next to the model."
        )
    return model, tok


def load_tokenizer(name: str, args: argparse.Namespace):
    """A tokenizer set up for left-padded batches (pad token = EOS when it has none)."""
    try:
        return w2s.load_tokenizer(name, trust_remote_code=args.trust_remote_code, left_padded=True)
    except (OSError, ValueError) as error:
        raise RecipeError(f"could not load the tokenizer of {name}: {error}") from error


def load_pair(args: argparse.Namespace, *, device_map: str | dict | None = None) -> w2s.WeakPair:
    """The weak pair of ``--adapter`` or ``--tuned``/``--untuned``."""
    kwargs = {
        "dtype": resolve_dtype(args.dtype),
        "device_map": resolve_device_map(device_map or args.device_map),
        "trust_remote_code": args.trust_remote_code,
    }
    what = args.adapter or f"{args.tuned} / {args.untuned}"
    try:
        if args.adapter is not None:
            pair = w2s.WeakPair.from_pretrained(
                args.adapter, tokenizer=args.weak_tokenizer, allow_pickle=args.allow_pickle, **kwargs
            )
        else:
            pair = w2s.WeakPair.from_pretrained(
                args.tuned,
                args.untuned,
                tokenizer=args.weak_tokenizer,
                allow_pickle=args.allow_pickle,
                **kwargs,
            )
    except (OSError, ValueError) as error:
        raise RecipeError(f"could not load the weak pair {what}{_pickle_hint(args)}: {error}") from error
    return pair


def shares_vocabulary(pair: w2s.WeakPair, tokenizer) -> bool:
    """Whether the large model's tokenizer maps every token to the pair's id (token guidance possible)."""
    try:
        check_shared_vocabulary(pair, tokenizer)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- prompts


def read_prompt_file(path: str | Path, field: str = "prompt", *, blocks: bool = False) -> list:
    """Prompts from a file: JSON lines (``.jsonl``/``.json``: an object with ``field``, or a string per line),
    otherwise plain text, one prompt per line (or, with ``blocks``, per paragraph: separated by blank lines).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"cannot read {path}: {error}") from error
    prompts: list = []
    if path.suffix in (".jsonl", ".json"):
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as error:
                raise RecipeError(f"{path} line {line}: not valid JSON ({error.msg})") from None
            value = data.get(field) if isinstance(data, dict) else data
            if not value or not isinstance(value, (str, list)):
                raise RecipeError(f'{path} line {line}: expected {{"{field}": ...}} or a JSON string')
            prompts.append(value)
    elif blocks:
        prompts = [" ".join(b.split()) for b in text.split("\n\n") if b.strip()]
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise RecipeError(f"{path} holds no prompts")
    return prompts


def batches(items: Sequence, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --------------------------------------------------------------------------- generating


def eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def response_ids(
    sequences: torch.Tensor, prompt_width: int, eos: set[int], pad: int | None
) -> list[list[int]]:
    """Each row's generated ids through its first end-of-sequence token (kept: the search scores it),
    without the padding after a row that stopped early (stop strings)."""
    rows = []
    for row in sequences[:, prompt_width:].tolist():
        for i, token in enumerate(row):
            if token in eos:
                row = row[: i + 1]
                break
        else:
            while row and pad is not None and row[-1] == pad:
                row = row[:-1]
        rows.append(row)
    return rows


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timer:
    """Wall-clock seconds of a block, GPU work included."""

    def __enter__(self) -> Timer:
        synchronize()
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        synchronize()
        self.seconds = time.perf_counter() - self.start


# --------------------------------------------------------------------------- output


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table (also valid Markdown): floats with 3 decimals, columns aligned."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def one_line(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
