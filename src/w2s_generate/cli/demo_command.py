"""``w2s-generate demo``: prepare a demo task's models (once) and compare every method on them."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .values import finite_float, positive_int, seed_int

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
        type=positive_int,
        default=None,
        metavar="N",
        help="prompts (default 8 real, 32 synthetic)",
    )
    parser.add_argument(
        "--seeds",
        type=seed_int,
        nargs="+",
        default=None,
        metavar="S",
        help="one run per seed; the table shows the mean and the min to max over seeds (default 0)",
    )
    parser.add_argument(
        "--seed", type=seed_int, default=None, metavar="S", help="a single seed (same as --seeds S)"
    )
    parser.add_argument(
        "--budgets",
        type=positive_int,
        nargs="+",
        default=[4, 16],
        metavar="N",
        help="large-model samples per prompt for best-of-N and CBS (W = K = sqrt(N); default 4 16)",
    )
    parser.add_argument(
        "--chunk-length", type=positive_int, default=5, metavar="L", help="CBS chunk length (default 5)"
    )
    parser.add_argument(
        "--beta",
        type=finite_float,
        default=1.0,
        help="token guidance strength, synthetic task (default 1.0)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help="default 32 real, 40 synthetic",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
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

    from ..demo.compare import format_table, plot

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
        from ..demo.real import load_real_models, run_real_comparison

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
        from ..demo import load_demo_models
        from ..demo.compare import run_comparison

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
