"""The options of ``w2s-generate generate``: value types, the argument groups, and the checks between them.

Every check here runs before anything is loaded; a refusal is argparse's one-line usage error (exit
code 2) that names the option, shows the value and says the fix.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .values import (
    device_map,
    env_name,
    finite_float,
    json_object,
    non_negative_float,
    non_negative_int,
    out_file,
    path_text,
    positive_float,
    positive_int,
    probability,
    seed_int,
)

DTYPES = ("auto", "float32", "bfloat16", "float16")

# --------------------------------------------------------------------------- the arguments


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``w2s-generate generate``."""
    _add_model_arguments(parser.add_argument_group("models (local paths or hub ids)"))
    _add_method_arguments(parser.add_argument_group("method"))

    io = parser.add_argument_group("prompts and results")
    prompts = io.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompts", type=path_text, metavar="FILE", help="JSON lines, one prompt per line")
    prompts.add_argument(
        "--prompt",
        metavar="TEXT",
        action="append",
        help="a prompt given directly (repeatable; ids 1, 2, ...)",
    )
    io.add_argument(
        "--out", required=True, type=out_file, metavar="FILE", help="JSON lines to append the results to"
    )
    io.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        metavar="N",
        help="prompts per generate call (default 1)",
    )
    io.add_argument("--no-progress", action="store_true", help="no progress bars")
    io.add_argument("--verbose", action="store_true", help="show transformers' and peft's warnings and logs")

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--max-new-tokens", type=positive_int, default=128, metavar="N", help="default 128")
    sampling.add_argument(
        "--temperature",
        type=non_negative_float,
        default=0.7,
        metavar="T",
        help="default 0.7; 0 means greedy (token only: the searches sample their candidates)",
    )
    sampling.add_argument(
        "--top-k", type=non_negative_int, metavar="K", help="default 50; 0 disables it (not with --endpoint)"
    )
    sampling.add_argument("--top-p", type=probability, metavar="P", help="default 1.0 (off)")
    sampling.add_argument(
        "--seed",
        type=seed_int,
        default=0,
        metavar="S",
        help="each generate call seeds with seed + the line number of its (first) prompt, so a resumed "
        "run samples as an uninterrupted one (default 0)",
    )

    loading = parser.add_argument_group("loading")
    loading.add_argument(
        "--device-map",
        type=device_map,
        metavar="MAP",
        help="passed to from_pretrained, e.g. auto, cpu, cuda:0",
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


def _add_model_arguments(models: argparse._ArgumentGroup) -> None:
    models.add_argument(
        "--model", required=True, type=path_text, metavar="STRONG", help="the large model to steer"
    )
    models.add_argument(
        "--tuned", type=path_text, metavar="T", help="the tuned weak checkpoint (with --untuned)"
    )
    models.add_argument(
        "--untuned", type=path_text, metavar="U", help="the untuned weak checkpoint (with --tuned)"
    )
    models.add_argument(
        "--adapter",
        type=path_text,
        metavar="DIR",
        action="append",
        help="a LoRA adapter: the pair is its base with and without it; repeat it for an ensemble of adapters "
        "on one base (one forward for all of them), weighted by --weights",
    )
    models.add_argument(
        "--weights",
        type=finite_float,
        nargs="+",
        metavar="W",
        help="one weight per --adapter (default 1 each)",
    )
    models.add_argument(
        "--tokenizer", type=path_text, metavar="PATH", help="the large model's tokenizer (default: --model)"
    )
    models.add_argument(
        "--endpoint",
        metavar="URL",
        help="an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1) serving the large model; --model is "
        "then the name it serves and no local large model is loaded (cbs and bon only; prompts are sent as "
        "text, formatted with --tokenizer's chat template when given)",
    )
    models.add_argument(
        "--api-key-env",
        type=env_name,
        metavar="NAME",
        help="--endpoint: the environment variable the API key is read from (default OPENAI_API_KEY)",
    )
    models.add_argument(
        "--extra-body",
        type=json_object,
        metavar="JSON",
        help="--endpoint: more request fields, e.g. '{\"top_k\": 50}' for vLLM (the completions API has no "
        "top_k, so --top-k is not sent by itself)",
    )
    models.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="--endpoint: the most one request may take in all, connecting, waiting and reading "
        "(default 60); a server that trickles bytes is cut off then",
    )
    models.add_argument(
        "--retries",
        type=non_negative_int,
        metavar="N",
        help="--endpoint: attempts after the first on transient faults (5xx, 429, timeouts, cut-short "
        "or malformed answers; default 3)",
    )
    models.add_argument(
        "--weak-tokenizer",
        type=path_text,
        metavar="PATH",
        help="the weak pair's tokenizer (default: next to --adapter or its base, or --tuned)",
    )


def _add_method_arguments(group: argparse._ArgumentGroup) -> None:
    """``--method`` and every method's options, from the method table (``w2s_generate.methods``)."""
    from .. import methods
    from . import values

    group.add_argument(
        "--method",
        required=True,
        choices=list(methods.METHODS),
        help="decoding method: " + ", ".join(f"{m.name} ({m.summary})" for m in methods.METHODS.values()),
    )
    owners = methods.option_owners()
    added = set()
    for spec in methods.METHODS.values():
        for option in spec.options:
            if option.name in added:
                continue
            added.add(option.name)
            group.add_argument(
                option.flag,
                type=None if option.cli_type is None else getattr(values, option.cli_type),
                choices=option.choices,
                metavar=option.metavar,
                action="append" if option.repeatable else "store",
                help=f"{', '.join(owners[option.name])}: {option.help}",
            )


# --------------------------------------------------------------------------- checks between options


def check_generate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that do not make sense (argparse exits with code 2)."""
    _check_pair_args(parser, args)
    from ..methods import method_defaults, option_owners

    defaults = method_defaults(args.method)
    for option, methods in option_owners().items():
        if option not in defaults and getattr(args, option) is not None:
            flag = "--" + option.replace("_", "-")
            owners = " or ".join(f"--method {m}" for m in methods)
            parser.error(f"{flag} applies to {owners} only, not --method {args.method}: drop it.")
    if args.method == "cbs" and args.successors is not None and args.successors_schedule is not None:
        parser.error("--successors and --successors-schedule both set K: give one.")
    for option, default in defaults.items():
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
    if args.draft_tokens is not None and args.chunk_stop is not None:
        parser.error(
            "--draft-tokens needs chunks of a fixed length, which --chunk-stop ends early: give one "
            "(drafted tokens cannot be checked for stop text before the large model verifies them)."
        )
    _check_sampling_args(parser, args)
    if args.weights is not None and not any(args.weights):
        parser.error(
            f"--weights {' '.join(map(str, args.weights))}: all zero, so every candidate would score 0 "
            "(no guidance at all); give at least one weight other than 0."
        )
    _check_endpoint_args(parser, args)
    if args.prompts is not None and same_file(args.prompts, args.out):
        parser.error(
            f"--out {args.out} is the --prompts file: results would be appended to the prompts; "
            "write them to another file."
        )


def _check_pair_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exactly one weak pair: ``--adapter`` (with one weight each), or ``--tuned`` and ``--untuned``."""
    if args.weights is not None and (args.adapter is None or len(args.weights) != len(args.adapter)):
        parser.error(
            f"--weights takes one weight per --adapter: got {len(args.weights)} weights for "
            f"{len(args.adapter or [])} adapters."
        )
    if args.adapter is not None:
        twice = next(
            (a for i, a in enumerate(args.adapter) if any(same_file(a, b) for b in args.adapter[:i])), None
        )
        if twice is not None:
            parser.error(
                f"--adapter {twice} is given twice: give it once (with --weights for a larger weight)."
            )
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
    elif args.tuned == args.untuned or same_file(args.tuned, args.untuned):
        parser.error(
            f"--tuned {args.tuned} and --untuned {args.untuned} are one checkpoint: every log-ratio would be 0 "
            "(no guidance at all); give the model after tuning and the model before."
        )


def _check_sampling_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Sampling options only where they are applied; then their defaults (top-k 50, top-p 1.0)."""
    if args.temperature == 0 and args.method != "token":
        parser.error(
            f"--temperature 0 is greedy decoding, but --method {args.method} samples its candidates: "
            "give a temperature > 0."
        )
    if args.temperature == 0:
        for flag, value, off in (("--top-k", args.top_k, 0), ("--top-p", args.top_p, 1.0)):
            if value is not None and value != off:
                parser.error(
                    f"{flag} applies to sampling, and --temperature 0 is greedy decoding: drop {flag} "
                    "(or give a temperature > 0)."
                )
    if args.endpoint is not None and args.top_k not in (None, 0):
        parser.error(
            f"--top-k is not sent to --endpoint (the completions API has no top_k): drop it, or pass "
            f"--extra-body '{{\"top_k\": {args.top_k}}}' to a server that reads it (vLLM does)."
        )
    args.top_k = 50 if args.top_k is None else args.top_k
    args.top_p = 1.0 if args.top_p is None else args.top_p


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


def _check_endpoint_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The request options only with ``--endpoint``; with it, a client that can be built."""
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
        return
    if args.api_key_env is not None and args.api_key_env not in os.environ:
        parser.error(
            f"--api-key-env {args.api_key_env}: that environment variable is not set: set it to the key, or drop "
            "--api-key-env if the server needs no key."
        )
    from .loading import make_sampler

    try:
        make_sampler(args)
    except ValueError as error:
        parser.error(f"--endpoint {args.endpoint}: {error}")


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (the same path, or links to one file)."""
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False
