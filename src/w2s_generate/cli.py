"""The ``w2s-generate`` command line.

Each subcommand is one ``Command`` (a help line, a function that adds its arguments, a function
that runs it) registered in ``COMMANDS``; adding a subcommand is one function pair plus one entry
there. Heavy imports (torch, transformers) happen inside the run functions, so ``--help`` is instant.

Examples:
    w2s-generate generate --model path/to/strong --adapter path/to/weak-lora --method cbs \\
        --prompts prompts.jsonl --out results.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .prompt_format import encode_prompt, has_chat_template, prompt_text

PROG = "w2s-generate"

# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Command:
    """One subcommand: ``add_arguments(parser)`` fills its parser, ``run(args)`` returns the exit code."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


def build_parser() -> argparse.ArgumentParser:
    """The program's parser with one sub-parser per entry of ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Weak-to-strong search: steer a large language model at decoding time with a small "
        "tuned/untuned model pair.",
        epilog=f"Run '{PROG} COMMAND --help' for the options of one command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.description or command.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(_command=command, _parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``w2s-generate`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    verbose = getattr(args, "verbose", False)
    try:
        with _library_messages(verbose=verbose):
            return command.run(args)
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        kept = f"; {out} holds every result finished so far, and a rerun resumes after them" if out else ""
        print(f"{PROG}: interrupted{kept}", file=sys.stderr)
        return 130
    except Exception as error:  # the last resort: one line, not a traceback (--verbose shows it)
        if verbose:
            raise
        out = getattr(args, "out", None)
        kept = f"; {out} holds every result finished so far, and a rerun resumes after them" if out else ""
        print(
            f"{PROG}: error: {type(error).__name__}: {error}{kept} (run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return 1


@contextlib.contextmanager
def _library_messages(verbose: bool) -> Iterator[None]:
    """transformers' logs below errors and the libraries' warnings hidden, unless ``verbose``.

    Our own warnings (``W2SWarning``) always show: they are about the user's data or settings.
    """
    if verbose:
        yield
        return
    from transformers.utils import logging as hf_logging

    from ._compat import W2SWarning

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("default", W2SWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)


# --------------------------------------------------------------------------- `generate`

GENERATE_DESCRIPTION = """\
Generate a response for each prompt with a large model steered by a weak pair, one JSON line per
prompt appended to --out as soon as it is done.

The weak pair is either
  --adapter DIR            one small base model with a LoRA adapter (tuned = adapter on,
                           untuned = adapter off; the base is read from the adapter's config), or
  --tuned T --untuned U    two full checkpoints of the same small model, after and before tuning.

Methods:
  cbs    chunk-level beam search   (--beam-width, --successors, --chunk-length; policies:
                                    --selection, --successors-schedule, --settle-margin,
                                    --chunk-stop)
  bon    best-of-N                 (--n)
  token  token-level guidance      (--beta; needs the large model's vocabulary)

--draft-tokens G (cbs, token) lets the weak pair draft G tokens that the large model verifies in one
forward: the same distribution, fewer large-model forwards.

--prompts reads JSON lines: {"prompt": TEXT or [chat messages], "id": optional,
"weak_prompt": optional TEXT or [chat messages]}. The id defaults to the line number. A rerun skips
the ids already in --out, so an interrupted job resumes where it stopped. Malformed lines are
reported on stderr and skipped; the exit code is then 1.

Text prompts are wrapped as a user message and formatted with each model's chat template when its
tokenizer has one (the large model's with its tokenizer, the weak pair's with the pair's; an adapter
trained by examples/train_weak_lora.py records which format it was trained on, and the pair follows
it), unless --no-chat-template is given.

Weights load from safetensors only, unless --allow-pickle is given; repository code runs only with
--trust-remote-code.
"""

#: Options that only one method reads, with their defaults. Given to another method, they are refused
#: rather than silently ignored.
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "cbs": {
        "beam_width": 4,
        "successors": 4,
        "chunk_length": 5,
        "selection": "top",
        "max_per_parent": None,
        "selection_temperature": None,
        "successors_schedule": None,
        "settle_margin": None,
        "chunk_stop": None,
        "draft_tokens": None,
    },
    "bon": {"n": 16},
    "token": {"beta": 1.0, "draft_tokens": None},
}
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _integer(text: str, rule: str, ok: Callable[[int], bool]) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
    return value


def _number(text: str, rule: str, ok: Callable[[float], bool]) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):  # nan and inf parse as floats: refused here
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def _positive_int(text: str) -> int:
    return _integer(text, "an integer >= 1", lambda v: v >= 1)


def _non_negative_int(text: str) -> int:
    return _integer(text, "an integer >= 0", lambda v: v >= 0)


def _seed(text: str) -> int:
    return _integer(text, "an integer from 0 to 2**63 - 1", lambda v: 0 <= v < 2**63)


def _finite_float(text: str) -> float:
    return _number(text, "a finite number", lambda v: True)


def _positive_float(text: str) -> float:
    return _number(text, "a finite number > 0", lambda v: v > 0)


def _non_negative_float(text: str) -> float:
    return _number(text, "a finite number >= 0", lambda v: v >= 0)


def _schedule(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be integers >= 1 separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be integers >= 1 separated by commas, got {text!r}")
    return values


def _stop_string(text: str) -> str:
    r"""A stop string as typed in a shell: ``\n`` and ``\t`` are a newline and a tab."""
    value = text.replace("\\n", "\n").replace("\\t", "\t")
    if not value:
        raise argparse.ArgumentTypeError("must be non-empty text")
    return value


def _probability(text: str) -> float:
    return _number(text, "in (0, 1]", lambda v: 0 < v <= 1)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}), got {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"top_k\": 50}}', got {text!r}")
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must not hold NaN or Infinity, got {text!r}") from None
    return value


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``w2s-generate generate``."""
    models = parser.add_argument_group("models (local paths or hub ids)")
    models.add_argument("--model", required=True, metavar="STRONG", help="the large model to steer")
    models.add_argument("--tuned", metavar="T", help="the tuned weak checkpoint (with --untuned)")
    models.add_argument("--untuned", metavar="U", help="the untuned weak checkpoint (with --tuned)")
    models.add_argument(
        "--adapter",
        metavar="DIR",
        action="append",
        help="a LoRA adapter: the pair is its base with and without it; repeat it for an ensemble of adapters "
        "on one base (one forward for all of them), weighted by --weights",
    )
    models.add_argument(
        "--weights",
        type=_finite_float,
        nargs="+",
        metavar="W",
        help="one weight per --adapter (default 1 each)",
    )
    models.add_argument("--tokenizer", metavar="PATH", help="the large model's tokenizer (default: --model)")
    models.add_argument(
        "--endpoint",
        metavar="URL",
        help="an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1) serving the large model; --model is "
        "then the name it serves and no local large model is loaded (cbs and bon only; prompts are sent as "
        "text, formatted with --tokenizer's chat template when given)",
    )
    models.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="--endpoint: the environment variable the API key is read from (default OPENAI_API_KEY)",
    )
    models.add_argument(
        "--extra-body",
        type=_json_object,
        metavar="JSON",
        help="--endpoint: more request fields, e.g. '{\"top_k\": 50}' for vLLM (the completions API has no "
        "top_k, so --top-k is not sent by itself)",
    )
    models.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="--endpoint: the most one request may take in all, connecting, waiting and reading "
        "(default 60); a server that trickles bytes is cut off then",
    )
    models.add_argument(
        "--retries",
        type=_non_negative_int,
        metavar="N",
        help="--endpoint: attempts after the first on transient faults (5xx, 429, timeouts, cut-short "
        "or malformed answers; default 3)",
    )
    models.add_argument(
        "--weak-tokenizer",
        metavar="PATH",
        help="the weak pair's tokenizer (default: next to --adapter or its base, or --tuned)",
    )

    method = parser.add_argument_group("method")
    method.add_argument("--method", required=True, choices=sorted(METHOD_OPTIONS), help="decoding method")
    method.add_argument(
        "--beam-width", type=_positive_int, metavar="W", help="cbs: beams kept per prompt (default 4)"
    )
    method.add_argument(
        "--successors",
        type=_positive_int,
        metavar="K",
        help="cbs: chunks sampled per beam and round (default 4)",
    )
    method.add_argument(
        "--chunk-length", type=_positive_int, metavar="L", help="cbs: tokens per chunk (default 5)"
    )
    method.add_argument(
        "--selection",
        choices=("top", "diverse", "stochastic"),
        help="cbs: which candidates survive a round: the W best (top, default), at most --max-per-parent "
        "per beam (diverse), or drawn by softmax(score / --selection-temperature) (stochastic)",
    )
    method.add_argument(
        "--max-per-parent", type=_positive_int, metavar="M", help="cbs --selection diverse: default 1"
    )
    method.add_argument(
        "--selection-temperature",
        type=_positive_float,
        metavar="T",
        help="cbs --selection stochastic: default 1.0 (seeded by --seed)",
    )
    method.add_argument(
        "--successors-schedule",
        type=_schedule,
        metavar="K0,K1,...",
        help="cbs: successors per beam by round, the last repeating (instead of --successors)",
    )
    method.add_argument(
        "--settle-margin",
        type=_non_negative_float,
        metavar="D",
        help="cbs: stop sampling for a prompt once a finished response leads every live beam by D",
    )
    method.add_argument(
        "--chunk-stop",
        action="append",
        type=_stop_string,
        metavar="TEXT",
        help=r"cbs: also end a chunk at the token that completes TEXT (repeatable; \n and \t understood)",
    )
    method.add_argument(
        "--draft-tokens",
        type=_positive_int,
        metavar="G",
        help="cbs, token: the weak pair drafts G tokens, the large model verifies them in one forward "
        "(the same distribution, fewer large-model forwards; local models only)",
    )
    method.add_argument("--n", type=_positive_int, metavar="N", help="bon: number of samples (default 16)")
    method.add_argument(
        "--beta", type=_finite_float, metavar="B", help="token: guidance strength (default 1.0)"
    )

    io = parser.add_argument_group("prompts and results")
    prompts = io.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompts", metavar="FILE", help="JSON lines, one prompt per line")
    prompts.add_argument(
        "--prompt",
        metavar="TEXT",
        action="append",
        help="a prompt given directly (repeatable; ids 1, 2, ...)",
    )
    io.add_argument("--out", required=True, metavar="FILE", help="JSON lines to append the results to")
    io.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1,
        metavar="N",
        help="prompts per generate call (default 1)",
    )
    io.add_argument("--no-progress", action="store_true", help="no progress bars")
    io.add_argument("--verbose", action="store_true", help="show transformers' and peft's warnings and logs")

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument(
        "--max-new-tokens", type=_positive_int, default=128, metavar="N", help="default 128"
    )
    sampling.add_argument(
        "--temperature",
        type=_non_negative_float,
        default=0.7,
        metavar="T",
        help="default 0.7; 0 means greedy (token only: the searches sample their candidates)",
    )
    sampling.add_argument(
        "--top-k", type=_non_negative_int, default=50, metavar="K", help="default 50; 0 disables it"
    )
    sampling.add_argument("--top-p", type=_probability, default=1.0, metavar="P", help="default 1.0 (off)")
    sampling.add_argument(
        "--seed",
        type=_seed,
        default=0,
        metavar="S",
        help="each generate call seeds with seed + the line number of its (first) prompt, so a resumed "
        "run samples as an uninterrupted one (default 0)",
    )

    loading = parser.add_argument_group("loading")
    loading.add_argument(
        "--device-map", metavar="MAP", help="passed to from_pretrained, e.g. auto, cpu, cuda:0"
    )
    loading.add_argument("--dtype", choices=DTYPES, default="auto", help="weights dtype (default auto)")
    loading.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load .bin (pickle) weights; only from trusted sources",
    )
    loading.add_argument(
        "--trust-remote-code", action="store_true", help="run model code from the repository"
    )
    loading.add_argument(
        "--no-chat-template", action="store_true", help="never format prompts with chat templates"
    )


def _check_generate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that do not make sense (argparse exits with code 2)."""
    if args.weights is not None and (args.adapter is None or len(args.weights) != len(args.adapter)):
        parser.error(
            f"--weights takes one weight per --adapter: got {len(args.weights)} weights for "
            f"{len(args.adapter or [])} adapters."
        )
    if args.adapter is not None:
        others = [flag for flag, value in (("--tuned", args.tuned), ("--untuned", args.untuned)) if value]
        if others:
            parser.error(
                f"--adapter cannot be combined with {' and '.join(others)}: --adapter DIR alone is the pair "
                "'base model with and without the adapter' (its base comes from adapter_config.json); "
                "--tuned T --untuned U is a pair of two full checkpoints. Pick one."
            )
    elif args.tuned is None or args.untuned is None:
        given = "--tuned" if args.tuned else "--untuned" if args.untuned else None
        missing = "--untuned" if args.tuned else "--tuned"
        if given is None:
            parser.error("no weak pair given: pass --adapter DIR, or --tuned T --untuned U.")
        parser.error(
            f"{given} needs {missing}: a pair of full checkpoints is --tuned T --untuned U; "
            "for a LoRA adapter use --adapter DIR alone."
        )
    for method, options in METHOD_OPTIONS.items():
        if method == args.method:
            continue
        for option in options:
            if option not in METHOD_OPTIONS[args.method] and getattr(args, option) is not None:
                flag = "--" + option.replace("_", "-")
                owners = " or ".join(f"--method {m}" for m, o in METHOD_OPTIONS.items() if option in o)
                parser.error(f"{flag} applies to {owners} only, not --method {args.method}: drop it.")
    if args.method == "cbs" and args.successors is not None and args.successors_schedule is not None:
        parser.error("--successors and --successors-schedule both set K: give one.")
    for option, default in METHOD_OPTIONS[args.method].items():
        if getattr(args, option) is None:
            setattr(args, option, default)
    if args.method == "cbs":
        _check_policy_args(parser, args)
    if args.endpoint is not None and args.method == "token":
        parser.error(
            "--endpoint serves text only, and token guidance needs the large model's logits: use --method cbs or bon."
        )
    if args.endpoint is not None and args.draft_tokens is not None:
        parser.error(
            "--draft-tokens verifies drafts with the large model's logits, which --endpoint does not give: drop one."
        )
    if args.temperature == 0 and args.method != "token":
        parser.error(
            f"--temperature 0 is greedy decoding, but --method {args.method} samples its candidates: "
            "give a temperature > 0."
        )
    if args.weights is not None and not any(args.weights):
        parser.error(
            f"--weights {' '.join(map(str, args.weights))}: all zero, so every candidate would score 0 "
            "(no guidance at all); give at least one weight other than 0."
        )
    if args.endpoint is None:
        for flag, value in (
            ("--extra-body", args.extra_body),
            ("--api-key-env", args.api_key_env),
            ("--timeout", args.timeout),
            ("--retries", args.retries),
        ):
            if value is not None:
                parser.error(
                    f"{flag} applies to --endpoint only (a server's request): drop it or add --endpoint URL."
                )
    else:
        try:
            _sampler(args)
        except ValueError as error:
            parser.error(f"--endpoint {args.endpoint}: {error}")
    if args.prompts is not None and _same_file(args.prompts, args.out):
        parser.error(
            f"--out {args.out} is the --prompts file: results would be appended to the prompts; "
            "write them to another file."
        )


def _sampler(args: argparse.Namespace):
    """The --endpoint client (the standard library only: nothing heavy is imported)."""
    from .samplers import CompletionsSampler

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


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False


# --------------------------------------------------------------------------- prompts and results


@dataclass
class PromptRecord:
    """One prompt to answer: where it came from (``line``, 1-based) and what it says."""

    line: int
    id: int | str
    prompt: str | list[dict[str, str]]
    weak_prompt: str | list[dict[str, str]] | None = None


@dataclass
class BadLine:
    """A prompt that could not be answered, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}; skipped"


def _check_prompt(value: Any, field: str) -> str | list[dict[str, str]]:
    """``value`` if it is a usable prompt (non-empty text or chat messages), else ValueError."""
    if isinstance(value, str):
        if not value:
            raise ValueError(f'"{field}" is empty')
        return value
    if isinstance(value, list) and value:
        for i, message in enumerate(value):
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise ValueError(
                    f'"{field}"[{i}] is not a chat message: expected {{"role": TEXT, "content": TEXT}}, '
                    f"got {json.dumps(message)[:80]}"
                )
        return value
    raise ValueError(
        f'"{field}" must be text or a non-empty list of chat messages, got {json.dumps(value)[:80]}'
    )


def _check_unicode(value: Any, path: str = "the line") -> None:
    """Refuse text with unpaired surrogates (JSON allows ``"\\ud800"``; no tokenizer or file can take it)."""
    stack = [(value, path)]
    while stack:  # iterative: the nesting depth is the user's
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(
                    f"{where} holds an unpaired surrogate ({item[error.start]!r} at character {error.start}), "
                    "which is not valid Unicode: fix the escape sequence"
                ) from None
        elif isinstance(item, dict):
            stack.extend((k, where) for k in item)
            stack.extend((v, f'"{k}"') for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, where) for v in item)


def parse_prompt_line(text: str, line: int) -> PromptRecord:
    """One JSON line of a prompts file as a ``PromptRecord``; ValueError says what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise ValueError("not valid JSON here (nested too deeply)") from None
    except ValueError as error:  # e.g. an integer with more digits than Python converts
        raise ValueError(f"not valid JSON ({error})") from None
    _check_unicode(data)
    if not isinstance(data, dict):
        raise ValueError(f'expected a JSON object with a "prompt", got {type(data).__name__}')
    if "prompt" not in data:
        raise ValueError(f'no "prompt" field (fields: {", ".join(sorted(data)) or "none"})')
    record_id = data.get("id", line)
    if isinstance(record_id, bool) or not isinstance(record_id, (int, str)):
        raise ValueError(f'"id" must be text or an integer, got {json.dumps(record_id)}')
    prompt = _check_prompt(data["prompt"], "prompt")
    weak = data.get("weak_prompt")
    weak = None if weak is None else _check_prompt(weak, "weak_prompt")
    return PromptRecord(line, record_id, prompt, weak)


def _decode_line(raw: bytes, line: int) -> str:
    """One line of a JSON-lines file as text (a UTF-8 byte-order mark on line 1 is skipped)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte {error.start + 1}): save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff") if line == 1 else text


def read_prompts(path: str | os.PathLike) -> tuple[list[PromptRecord], list[BadLine]]:
    """The prompts of a JSON-lines file and its bad lines (blank lines are ignored).

    Lines end at ``\\n`` only (JSON text may hold U+2028 and the like); each line is decoded on its
    own, so one line that is not UTF-8 is one bad line.
    """
    records: list[PromptRecord] = []
    bad: list[BadLine] = []
    first_line_of: dict[int | str, int] = {}
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                text = _decode_line(raw, line)
                if not text.strip():
                    continue
                record = parse_prompt_line(text, line)
            except ValueError as error:
                bad.append(BadLine(line, str(error)))
                continue
            if record.id in first_line_of:
                bad.append(
                    BadLine(
                        line, f"id {json.dumps(record.id)} already used on line {first_line_of[record.id]}"
                    )
                )
                continue
            first_line_of[record.id] = line
            records.append(record)
    return records, bad


def read_done(path: Path) -> tuple[dict, dict | None]:
    """The prompt of each id already in the results file, and its last result.

    An incomplete last line (a run killed while writing it) is cut off so that appending stays valid;
    other unreadable lines are reported and ignored (their prompts are answered again).
    """
    if not path.exists():
        return {}, None
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        start = raw.rfind(b"\n") + 1
        try:
            json.loads(raw[start:])
        except ValueError:
            with open(path, "r+b") as handle:
                handle.truncate(start)
            _report(
                f"{path}: removed an incomplete last line ({len(raw) - start} bytes) left by an interrupted run"
            )
            raw = raw[:start]
        else:
            with open(path, "ab") as handle:
                handle.write(b"\n")
    done: dict = {}
    last = None
    # Lines end at b"\n" only: a result may hold U+2028 or U+0085, which str.splitlines would split on.
    for line, chunk in enumerate(raw.split(b"\n"), start=1):
        if not chunk.strip():
            continue
        try:
            result = json.loads(chunk.decode("utf-8"))
            done[result["id"]] = result.get("prompt")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            _report(f"{path}: line {line} is not a result (ignored; its prompt will be answered again)")
            continue
        last = result
    return done, last


def _report(message: str) -> None:
    """A message on stderr that does not break a progress bar."""
    from tqdm import tqdm

    tqdm.write(f"{PROG}: {message}", file=sys.stderr)


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- loading


class LoadError(Exception):
    """A model, tokenizer or pair could not be loaded; the message says why and what to do."""


def _torch_dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def _check_weights_format(path: str, allow_pickle: bool, flag: str) -> None:
    """Refuse a local checkpoint that has only pickle weights, unless ``--allow-pickle``."""
    folder = Path(path)
    if allow_pickle or not folder.is_dir():
        return
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if pickles:
        raise LoadError(
            f"{flag} {path} has only pickle weights ({', '.join(pickles)}) and no .safetensors: only safetensors "
            "load by default, since unpickling can run code. Convert it (load it and save_pretrained with "
            "safe_serialization=True) or pass --allow-pickle if you trust its source."
        )


def _check_exists(path: str | None, flag: str) -> None:
    """Refuse a local path that does not exist (a hub id like ``org/name`` is left to the loader)."""
    if path is None or Path(path).exists():
        return
    if Path(path).is_absolute() or path.startswith((".", "~")) or len(Path(path).parts) > 2:
        raise LoadError(f"{flag} {path}: no such file or folder (and it is not a hub id like org/name).")


def _load_hint(error: Exception, allow_pickle: bool) -> str:
    """The safetensors hint, only where the loader found no safetensors weights."""
    if not allow_pickle and "safetensors" in str(error):
        return " (only safetensors weights load unless --allow-pickle is given)"
    return ""


def load_strong(args: argparse.Namespace):
    """The large model (eval mode) and its tokenizer, set up for left-padded batches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_exists(args.model, "--model")
    _check_exists(args.tokenizer, "--tokenizer")
    _check_weights_format(args.model, args.allow_pickle, "--model")
    kwargs: dict[str, Any] = {
        "use_safetensors": True if not args.allow_pickle else None,
        "trust_remote_code": args.trust_remote_code,
        "dtype": _torch_dtype(args.dtype),
    }
    if args.device_map is not None:
        kwargs["device_map"] = args.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    except Exception as error:  # a broken config or weights file may raise anything
        hint = _load_hint(error, args.allow_pickle)
        raise LoadError(f"could not load --model {args.model}{hint}: {_reason(error)}") from error
    source = args.tokenizer or args.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=args.trust_remote_code)
    except Exception as error:
        raise LoadError(
            f"could not load the large model's tokenizer from {source}: {_reason(error)}"
        ) from error
    from ._compat import output_rows

    _check_tokenizer_size(tokenizer, output_rows(model), source, "--tokenizer")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def load_pair(args: argparse.Namespace):
    """The weak pair from ``--adapter`` or ``--tuned``/``--untuned``."""
    from .pairs import WeakPair

    kwargs: dict[str, Any] = {
        "tokenizer": args.weak_tokenizer,
        "dtype": _torch_dtype(args.dtype),
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
            _check_exists(adapter, "--adapter")
            _check_weights_format(adapter, args.allow_pickle, "--adapter")
        if len(args.adapter) == 1 and args.weights is None:
            load = lambda: WeakPair.from_pretrained(args.adapter[0], **kwargs)  # noqa: E731
        else:
            from .combined import GuidanceEnsemble

            load = lambda: GuidanceEnsemble.from_adapters(args.adapter, args.weights, **kwargs)  # noqa: E731
    else:
        what = f"--tuned {args.tuned} --untuned {args.untuned}"
        for flag, path in (("--tuned", args.tuned), ("--untuned", args.untuned)):
            _check_exists(path, flag)
            _check_weights_format(path, args.allow_pickle, flag)
        load = lambda: WeakPair.from_pretrained(args.tuned, args.untuned, **kwargs)  # noqa: E731
    try:
        pair = load()
    except Exception as error:
        hint = _load_hint(error, args.allow_pickle)
        raise LoadError(f"could not load the weak pair {what}{hint}: {_reason(error)}") from error
    _check_tokenizer_size(pair.tokenizer, pair.vocab_rows, args.weak_tokenizer or what, "--weak-tokenizer")
    return pair


def _check_tokenizer_size(tokenizer, rows: int, source: str, flag: str) -> None:
    """Refuse a tokenizer that cannot be its model's (see ``pairs.clearly_not_its_tokenizer``).

    transformers 5 builds an empty tokenizer (one token) for a checkpoint folder without tokenizer
    files instead of failing; every prompt would then encode to nothing.
    """
    from .pairs import clearly_not_its_tokenizer

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


def _check_policy_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a search-policy flag that the chosen policy would not read."""
    if args.max_per_parent is not None and args.selection != "diverse":
        parser.error(f"--max-per-parent applies to --selection diverse only, not {args.selection}: drop it.")
    if args.selection_temperature is not None and args.selection != "stochastic":
        parser.error(
            f"--selection-temperature applies to --selection stochastic only, not {args.selection}: drop it."
        )
    if args.successors_schedule is not None and args.settle_margin is not None:
        parser.error(
            "--settle-margin keeps K = --successors until a prompt settles; it does not combine with "
            "--successors-schedule: give one."
        )


def make_strategy(args: argparse.Namespace, pair, strong_tokenizer):
    """The decoding strategy of ``--method``."""
    from .generate import TokenGuidance
    from .policies import (
        AdaptiveBudget,
        ChunkBoundary,
        DiverseSelection,
        ScheduledBudget,
        StochasticSelection,
        TopDistinct,
    )
    from .search import BestOfN, ChunkBeamSearch

    if args.method == "cbs":
        if args.successors_schedule is not None:
            budget = ScheduledBudget(args.successors_schedule)
        elif args.settle_margin is not None:
            budget = AdaptiveBudget(args.successors, args.settle_margin)
        else:
            budget = args.successors
        if args.selection == "diverse":
            selection = DiverseSelection(args.max_per_parent or 1)
        elif args.selection == "stochastic":
            selection = StochasticSelection(args.selection_temperature or 1.0, seed=args.seed)
        else:
            selection = TopDistinct()
        boundary = ChunkBoundary(args.chunk_length, stop_strings=args.chunk_stop)
        return ChunkBeamSearch(
            pair,
            args.beam_width,
            budget,
            boundary,
            tokenizer=strong_tokenizer,
            selection=selection,
            draft_tokens=args.draft_tokens,
        )
    if args.method == "bon":
        return BestOfN(pair, args.n, tokenizer=strong_tokenizer)
    return TokenGuidance(pair, args.beta, draft_tokens=args.draft_tokens)


# --------------------------------------------------------------------------- prompts -> ids


def _large_chat_template(tokenizer, args: argparse.Namespace) -> bool:
    """Whether the large model's prompts go through its chat template (when it has one, unless turned off)."""
    return not args.no_chat_template and has_chat_template(tokenizer)


def _no_template_reason(args: argparse.Namespace, whose: str) -> str:
    return "--no-chat-template was given" if args.no_chat_template else f"{whose} has no chat template"


def strong_prompt_ids(record: PromptRecord, tokenizer, args: argparse.Namespace) -> list[int]:
    """The large model's token ids of a prompt, through its chat template when it has one."""
    use_template = _large_chat_template(tokenizer, args)
    if not use_template and not isinstance(record.prompt, str):
        why = _no_template_reason(args, "its tokenizer")
        raise ValueError(f"the prompt is a list of chat messages but {why}: give the prompt as text")
    ids = encode_prompt(tokenizer, record.prompt, chat_template=use_template)
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    return ids


def strong_prompt_text(record: PromptRecord, tokenizer, args: argparse.Namespace) -> str:
    """The prompt text sent to --endpoint: through --tokenizer's chat template when there is one."""
    if tokenizer is not None and _large_chat_template(tokenizer, args):
        return prompt_text(tokenizer, record.prompt, chat_template=True)
    if isinstance(record.prompt, str):
        return record.prompt
    raise ValueError(
        "the prompt is a list of chat messages but no chat template formats it for --endpoint: pass --tokenizer "
        "with the served model's tokenizer, or give the prompt as text"
    )


def weak_prompt(record: PromptRecord, pair, args: argparse.Namespace):
    """What the weak pair reads as the prompt: the text (the pair's own rule formats it) or chat messages."""
    prompt = record.weak_prompt if record.weak_prompt is not None else record.prompt
    if isinstance(prompt, str):
        return prompt
    if not args.no_chat_template and has_chat_template(pair.tokenizer):
        return prompt
    field = "weak_prompt" if record.weak_prompt is not None else "prompt"
    why = _no_template_reason(args, "the weak tokenizer")
    raise ValueError(f'"{field}" is a list of chat messages for the weak pair but {why}: give it as text')


# --------------------------------------------------------------------------- the run


@dataclass
class Prepared:
    record: PromptRecord
    ids: list[int] | None
    weak: Any
    text: str | None = None  # the prompt as text, for --endpoint


def _context(model) -> int | None:
    """The hard context of a model with a learned position table (GPT-2's 1024), else None."""
    from .scoring import _max_positions

    return _max_positions(model)


def _check_fits(length: int, room: int, limit: int | None, whose: str, args) -> None:
    """ValueError unless ``length`` prompt tokens plus ``room`` new ones fit in ``limit`` positions."""
    if limit is None or length + room <= limit:
        return
    if length >= limit:
        raise ValueError(
            f"the prompt is {length} tokens for {whose}, whose context holds {limit}: shorten the prompt"
        )
    raise ValueError(
        f"the prompt is {length} tokens and --max-new-tokens {args.max_new_tokens} for {whose}, whose context "
        f"holds {limit}: shorten the prompt or pass --max-new-tokens {limit - length} or less"
    )


def _weak_lengths(pair, weak) -> list[tuple[int, Any]]:
    """``(prompt tokens, model)`` for each side of the pair (a conditioned side reads its condition too)."""
    plain = len(pair.encode_prompt(weak))
    return [
        (
            plain if side.condition is None else len(pair.encode_prompt(weak, side.condition_for(weak))),
            side.model,
        )
        for side in pair.sides
    ]


def _prepare(
    records: Iterable[PromptRecord], strong_tokenizer, pair, args, strong_model=None
) -> tuple[list[Prepared], list[BadLine]]:
    """Encode each prompt and check it fits both contexts, so that no prompt fails after generating."""
    strong_limit = None if strong_model is None else _context(strong_model)
    # The pair reads the large model's own tokens (so a response adds at most --max-new-tokens to the
    # weak side too) unless text is bridged across tokenizers or comes from a server.
    shared = args.method == "token" or (
        args.endpoint is None and pair.tokenizer.get_vocab() == strong_tokenizer.get_vocab()
    )
    weak_room = args.max_new_tokens if shared else 1
    prepared, bad = [], []
    for record in records:
        try:
            text = None
            if args.endpoint is not None:
                ids, text = None, strong_prompt_text(record, strong_tokenizer, args)
            else:
                ids = strong_prompt_ids(record, strong_tokenizer, args)
                _check_fits(len(ids), args.max_new_tokens, strong_limit, "the large model", args)
            if args.method == "token":
                if record.weak_prompt is not None:
                    raise ValueError(
                        '"weak_prompt" is not supported by --method token (token guidance scores the large '
                        "model's own prompt tokens); use --method cbs or bon"
                    )
                weak = None
                lengths = [(len(ids), side.model) for side in pair.sides]
            else:
                weak = weak_prompt(record, pair, args)
                lengths = _weak_lengths(pair, weak)  # fail here, on this line, rather than inside the search
            for length, model in lengths:
                _check_fits(length, weak_room, _context(model), "the weak pair", args)
        except Exception as error:  # a chat template may raise anything (jinja errors included)
            bad.append(BadLine(record.line, f"id {json.dumps(record.id)}: {_reason(error)}"))
            continue
        prepared.append(Prepared(record, ids, weak, text))
    return prepared, bad


def _reason(error: BaseException) -> str:
    """An exception as one line: our own (ValueError, RuntimeError) by message, others by type too."""
    text = " ".join(str(error).split()) or "(no message)"
    if type(error) in (ValueError, RuntimeError) or type(error).__module__.startswith("w2s_generate"):
        return text
    return f"{type(error).__name__}: {text}"


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """What produced a result (the per-prompt seed is added per record)."""
    if args.adapter:
        adapter = args.adapter[0] if len(args.adapter) == 1 else args.adapter
        weak = {"adapter": adapter, **({"weights": args.weights} if args.weights else {})}
    else:
        weak = {"tuned": args.tuned, "untuned": args.untuned}
    tokenizers = {"tokenizer": args.tokenizer, "weak_tokenizer": args.weak_tokenizer}
    remote = {"endpoint": args.endpoint, "extra_body": args.extra_body} if args.endpoint else {}
    return {
        "model": args.model,
        **remote,
        **weak,
        **{key: value for key, value in tokenizers.items() if value is not None},
        **{option: getattr(args, option) for option in METHOD_OPTIONS[args.method]},
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "chat_template": not args.no_chat_template,
        "dtype": args.dtype,
    }


def _response_ids(row: list[int], eos_ids: set[int], pad_id: int | None) -> list[int]:
    """Generated ids up to (not including) the first end-of-sequence token, trailing padding removed."""
    for i, token in enumerate(row):
        if token in eos_ids:
            return row[:i]
    while row and pad_id is not None and row[-1] == pad_id:
        row = row[:-1]
    return row


def _eos_ids(model, tokenizer) -> set[int]:
    from ._compat import eos_token_ids

    eos = eos_token_ids(model.generation_config)
    if tokenizer.eos_token_id is not None:
        eos.append(tokenizer.eos_token_id)
    return set(eos)


def _generate_batch(
    model, tokenizer, strategy, batch: list[Prepared], args
) -> tuple[list[str], list | None, list | None]:
    """Responses (text), log-ratios and costs (searches only) for one batch of prepared prompts."""
    import torch

    if args.endpoint is not None:  # `model` is a CompletionsSampler
        out = strategy.run(
            [p.text for p in batch],
            sampler=model,
            weak_prompts=[p.weak for p in batch],
            max_new_tokens=args.max_new_tokens,
        )
        return list(out.texts), [float(x) for x in out.log_ratios], _costs(out, len(batch))

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = tokenizer.pad({"input_ids": [p.ids for p in batch]}, return_tensors="pt")
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    torch.manual_seed(args.seed + batch[0].record.line)
    kwargs: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": args.temperature > 0,
        "pad_token_id": pad,
        "return_dict_in_generate": True,
    }
    if args.temperature > 0:
        kwargs.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.method != "token":
        kwargs["weak_prompts"] = [p.weak for p in batch]
    out = model.generate(**inputs, strategy=strategy, tokenizer=tokenizer, **kwargs)
    width = inputs["input_ids"].shape[1]
    eos = _eos_ids(model, tokenizer)
    texts = [
        tokenizer.decode(_response_ids(row[width:], eos, pad), skip_special_tokens=True)
        for row in out.sequences.tolist()
    ]
    log_ratios = getattr(out, "log_ratios", None)
    return texts, None if log_ratios is None else [float(x) for x in log_ratios], _costs(out, len(batch))


def _costs(out, prompts: int) -> list[dict[str, int]] | None:
    """Each prompt's search cost as plain numbers (``None`` for token guidance, which has none)."""
    cost = getattr(out, "cost", None)
    return None if cost is None else [cost.to_dict(b) for b in range(prompts)]


def _records(args: argparse.Namespace) -> tuple[list[PromptRecord], list[BadLine]]:
    """The prompts of ``--prompts`` or ``--prompt`` and the bad ones (OSError when the file is unreadable)."""
    if args.prompts is not None:
        return read_prompts(args.prompts)
    records, bad = [], []
    for i, text in enumerate(args.prompt, start=1):
        try:
            records.append(PromptRecord(i, i, _check_prompt(text, "prompt")))
        except ValueError as error:
            bad.append(BadLine(i, f"--prompt #{i}: {error}"))
    return records, bad


def _warn_about_existing(
    records, done: dict, last: dict | None, settings: dict, args, out_path: Path
) -> None:
    """Warn when --out already holds other prompts under the same ids, or results of other settings."""
    renamed = [r for r in records if r.id in done and done[r.id] != r.prompt]
    if renamed:
        ids = ", ".join(json.dumps(r.id) for r in renamed[:5]) + (", ..." if len(renamed) > 5 else "")
        _report(
            f"warning: {len(renamed)} id(s) already in {out_path} with another prompt ({ids}); they are skipped "
            "all the same. Give each prompt its own id, or write to another --out."
        )
    if last is None or all(r.id in done for r in records):
        return
    old_settings = last.get("settings")
    old = {"method": last.get("method"), **(old_settings if isinstance(old_settings, dict) else {})}
    old.pop("seed", None)
    new = {"method": args.method, **settings}
    if old != new:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        _report(
            f"warning: {out_path} holds results made with other settings ({', '.join(keys)}); "
            "new results are appended to it all the same"
        )


def _hub_progress_bars(enabled: bool) -> contextlib.AbstractContextManager:
    """transformers' loading bars off while this runs, when ``--no-progress`` is given."""
    if enabled:
        return contextlib.nullcontext()
    from ._compat import hub_progress_bars_off

    return hub_progress_bars_off()


def _load(args: argparse.Namespace):
    """``(model, tokenizer, pair, strategy)``; the model's ``generate`` takes ``strategy=``. LoadError if not."""
    from .generate import enable
    from .processor import check_shared_vocabulary

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
            raise LoadError(f"could not load --tokenizer {args.tokenizer}: {_reason(error)}") from error
    try:
        sampler = _sampler(args)
    except ValueError as error:
        raise LoadError(f"--endpoint: {error}") from error
    pair = load_pair(args)
    return sampler, tokenizer, pair, make_strategy(args, pair, tokenizer)


def _result_line(
    item: Prepared, text: Any, log_ratio: Any, settings: dict, args, cost: dict | None = None
) -> str:
    """One line of --out as text; ValueError when the result is not one to keep."""
    if not isinstance(text, str):
        raise ValueError(f"the response is a {type(text).__name__}, not text: {text!r:.80}")
    if log_ratio is not None and not math.isfinite(log_ratio):
        raise ValueError(
            f"the pair scored the response {log_ratio}: a log-ratio must be a finite number (weights or "
            "weak models that produce NaN/inf?); not written"
        )
    line = json.dumps(
        _result(item, text, log_ratio, settings, args, cost), ensure_ascii=False, allow_nan=False
    )
    line.encode("utf-8")  # UnicodeEncodeError (a ValueError) before anything is written
    return line


def _answer(model, tokenizer, strategy, batch: list[Prepared], settings: dict, args):
    """``(item, result line or BadLine)`` for each prompt of ``batch``.

    Any exception is this batch's failure, never the run's. A failed batch of several prompts is
    tried again one prompt at a time, so one bad prompt never takes good ones down with it (and a
    rerun is never stuck on it).
    """
    try:
        texts, log_ratios, costs = _generate_batch(model, tokenizer, strategy, batch, args)
        if len(texts) != len(batch) or (log_ratios is not None and len(log_ratios) != len(batch)):
            raise RuntimeError(f"{len(texts)} responses came back for {len(batch)} prompts")
    except Exception as error:  # a prompt too long, a server down, a bug: the others may still work
        if len(batch) > 1:
            return [
                done for item in batch for done in _answer(model, tokenizer, strategy, [item], settings, args)
            ]
        return [
            (
                batch[0],
                BadLine(batch[0].record.line, f"id {json.dumps(batch[0].record.id)}: {_reason(error)}"),
            )
        ]
    seeded = {**settings, "seed": args.seed + batch[0].record.line}
    outcomes: list[tuple[Prepared, str | BadLine]] = []
    for i, item in enumerate(batch):
        ratio = None if log_ratios is None else log_ratios[i]
        cost = None if costs is None else costs[i]
        try:
            outcomes.append((item, _result_line(item, texts[i], ratio, seeded, args, cost)))
        except ValueError as error:
            outcomes.append((item, BadLine(item.record.line, f"id {json.dumps(item.record.id)}: {error}")))
    return outcomes


def _result(
    item: Prepared, text: str, log_ratio: float | None, settings: dict, args, cost: dict | None = None
) -> dict[str, Any]:
    """One line of --out."""
    result: dict[str, Any] = {"id": item.record.id, "prompt": item.record.prompt}
    if item.record.weak_prompt is not None:
        result["weak_prompt"] = item.record.weak_prompt
    result.update(response=text, method=args.method)
    if log_ratio is not None:
        result["log_ratio"] = log_ratio
    if cost is not None:
        result["cost"] = cost
    result["settings"] = settings
    return result


def run_generate(args: argparse.Namespace) -> int:
    """``w2s-generate generate``: answer every pending prompt, appending results to ``--out``."""
    _check_generate_args(args._parser, args)
    out_path = Path(args.out)
    if out_path.is_dir():
        _report(f"error: --out {out_path} is a folder; give a file name, e.g. {out_path / 'results.jsonl'}")
        return 2
    try:
        records, bad = _records(args)
    except (OSError, UnicodeDecodeError) as error:
        _report(f"error: cannot read --prompts {args.prompts}: {getattr(error, 'strerror', None) or error}")
        return 2
    for line in bad:
        _report(str(line))

    # 1. Skip what an earlier run already answered.
    done, last = read_done(out_path)
    settings = _settings(args)
    _warn_about_existing(records, done, last, settings, args, out_path)
    pending = [r for r in records if r.id not in done]
    if not pending:
        _report(f"nothing to do: all {len(records)} prompts already have a result in {out_path}")
        return 1 if bad else 0

    try:  # before the models load: an unwritable --out is found at once (and no empty file is left)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        created = not out_path.exists()
        open(out_path, "a", encoding="utf-8").close()
        if created:
            out_path.unlink()
    except OSError as error:
        _report(f"error: cannot write --out {out_path}: {error.strerror or error}")
        return 2

    # 2. Load the models and encode the prompts (a prompt its model cannot take is a bad line).
    with _hub_progress_bars(not args.no_progress):
        try:
            model, tokenizer, pair, strategy = _load(args)
        except LoadError as error:
            _report(f"error: {error}")
            return 2
    prepared, unprepared = _prepare(pending, tokenizer, pair, args, None if args.endpoint else model)
    for line in unprepared:
        _report(str(line))
    bad += unprepared

    # 3. Generate, appending each result as soon as its batch is done.
    from tqdm import tqdm

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(out_path, "a", encoding="utf-8") as out,
        tqdm(total=len(prepared), disable=args.no_progress, desc=args.method, unit="prompt") as bar,
    ):
        if len(pending) < len(records):
            bar.write(
                f"{PROG}: resuming: {len(records) - len(pending)} prompts already done", file=sys.stderr
            )
        for batch in _batches(prepared, args.batch_size):
            for _, outcome in _answer(model, tokenizer, strategy, batch, settings, args):
                if isinstance(outcome, BadLine):
                    bar.write(f"{PROG}: {outcome}", file=sys.stderr)
                    bad.append(outcome)
                else:
                    out.write(outcome + "\n")
                    out.flush()
            bar.update(len(batch))
    if bad:
        _report(f"{len(bad)} prompt(s) skipped (see above); fix them and rerun to answer just those")
        return 1
    return 0


# --------------------------------------------------------------------------- demo


DEMO_DESCRIPTION = """\
The paper's controlled-sentiment setting, offline, compared method by method.

--task real (the default): Gemma-3-270M is steered by SmolLM2-135M-Instruct and the same model with a
positive-sentiment LoRA adapter trained here on a CPU (a few minutes, once; both models convert once
from their installed GGUF packages). Methods: the large model alone, the tuned weak model alone,
best-of-N and chunk-level beam search at matched budgets (token guidance needs one shared vocabulary
and is skipped). Gold reward: VADER sentiment of the response; fluency: the large model's mean
token log-prob of the response.

--task synthetic: the same comparison on a small synthetic review language with models trained in
about two minutes (token guidance included; fluency is the share of grammatical sentences).

Writes results.md, results.json and reward_vs_compute.png to --out-dir. A larger real run:
  w2s-generate demo --prompts 48 --seeds 0 1 2
"""

#: Defaults that differ by task: (real, synthetic).
_DEMO_DEFAULTS = {"prompts": (8, 32), "max_new_tokens": (32, 40)}


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``w2s-generate demo``."""
    parser.add_argument(
        "--task",
        choices=("real", "synthetic"),
        default="real",
        help="real: Gemma-3-270M steered by a SmolLM2-135M pair (default); synthetic: the small trained demo",
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="model cache (default $W2S_GENERATE_CACHE or ~/.cache)"
    )
    parser.add_argument(
        "--force", action="store_true", help="retrain the adapter (real) or the demo models (synthetic)"
    )
    parser.add_argument(
        "--prompts",
        type=_positive_int,
        default=None,
        metavar="N",
        help="prompts (default 8 real, 32 synthetic)",
    )
    parser.add_argument(
        "--seeds",
        type=_seed,
        nargs="+",
        default=None,
        metavar="S",
        help="one run per seed; the table shows the mean and the min to max over seeds (default 0)",
    )
    parser.add_argument(
        "--seed", type=_seed, default=None, metavar="S", help="a single seed (same as --seeds S)"
    )
    parser.add_argument(
        "--budgets",
        type=_positive_int,
        nargs="+",
        default=[4, 16],
        metavar="N",
        help="large-model samples per prompt for best-of-N and CBS (W = K = sqrt(N); default 4 16)",
    )
    parser.add_argument(
        "--chunk-length", type=_positive_int, default=5, metavar="L", help="CBS chunk length (default 5)"
    )
    parser.add_argument(
        "--beta",
        type=_finite_float,
        default=1.0,
        help="token guidance strength, synthetic task (default 1.0)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=None,
        metavar="N",
        help="default 32 real, 40 synthetic",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's)",
    )
    parser.add_argument("--out-dir", default="w2s-demo", metavar="DIR", help="where the table and plot go")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--verbose", action="store_true", help="show transformers' and peft's warnings and logs"
    )


def _demo_seeds(args: argparse.Namespace) -> list[int]:
    if args.seeds is not None and args.seed is not None:
        raise ValueError("give --seeds or --seed, not both")
    if args.seeds is not None:
        return list(dict.fromkeys(args.seeds))
    return [args.seed if args.seed is not None else 0]


def run_demo(args: argparse.Namespace) -> int:
    """``w2s-generate demo``: prepare the task's models (once) and compare every method on them."""
    import dataclasses

    from .demo.compare import format_table, plot

    real = args.task == "real"
    for name, defaults in _DEMO_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[0] if real else defaults[1])
    seeds = _demo_seeds(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    started = time.perf_counter()
    if real:
        from .demo.real import load_real_models, run_real_comparison

        models = load_real_models(args.cache_dir, force=args.force, progress=progress)
        check = models.manifest["check"]
        print(
            f"real models ready in {time.perf_counter() - started:.0f}s (adapter {models.adapter_dir}; "
            f"held-out VADER tuned {check['tuned_vader']:+.3f} vs untuned {check['untuned_vader']:+.3f})"
        )
        rows = run_real_comparison(
            models,
            n_prompts=args.prompts,
            seeds=seeds,
            max_new_tokens=args.max_new_tokens,
            budgets=tuple(args.budgets),
            chunk_length=args.chunk_length,
            progress=progress,
        )
        title = "Gemma-3-270M steered by a SmolLM2-135M pair"
        ylabel = "VADER sentiment of the response (gold)"
    else:
        from .demo import load_demo_models
        from .demo.compare import run_comparison

        if len(seeds) > 1:
            raise ValueError("the synthetic task runs one seed at a time: give one --seed")
        models = load_demo_models(args.cache_dir, force=args.force, progress=progress)
        print(f"demo models ready in {time.perf_counter() - started:.0f}s ({models.cache_dir})")
        rows = run_comparison(
            models,
            n_prompts=args.prompts,
            seed=seeds[0],
            max_new_tokens=args.max_new_tokens,
            budgets=tuple(args.budgets),
            chunk_length=args.chunk_length,
            beta=args.beta,
            progress=progress,
        )
        title, ylabel = (
            "Weak-to-strong search on the offline review task",
            "gold reward (never seen by the search)",
        )
    table = format_table(rows)
    print(table)
    print(
        f"{args.task} task, {args.prompts} prompts, seeds {' '.join(map(str, seeds))}, "
        f"{args.max_new_tokens} new tokens; total {time.perf_counter() - started:.0f}s"
    )
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(table + "\n")
    (out_dir / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    if not args.no_plot:
        print(f"plot: {plot(rows, out_dir / 'reward_vs_compute.png', title=title, ylabel=ylabel)}")
    return 0


# --------------------------------------------------------------------------- registration

COMMANDS: dict[str, Command] = {
    "generate": Command(
        help="generate with a large model steered by a weak pair (cbs, bon or token guidance)",
        add_arguments=add_generate_arguments,
        run=run_generate,
        description=GENERATE_DESCRIPTION,
    ),
    "demo": Command(
        help="the offline demo: steer Gemma-3-270M with a SmolLM2 pair toward positive reviews, every method",
        add_arguments=add_demo_arguments,
        run=run_demo,
        description=DEMO_DESCRIPTION,
    ),
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
