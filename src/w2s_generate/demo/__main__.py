"""``python -m w2s_generate.demo``: train (or load) the demo models and print the quick check."""

from __future__ import annotations

import argparse
import json
import time

from .check import format_check, quick_check
from .train import load_demo_models, train_demo_models


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see ``--help``)."""
    parser = argparse.ArgumentParser(prog="python -m w2s_generate.demo", description=__doc__)
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default: $W2S_GENERATE_CACHE or ~/.cache)"
    )
    parser.add_argument("--force", action="store_true", help="retrain even if a valid cache exists")
    parser.add_argument(
        "--scale", type=float, default=None, help="train with this step scale (implies --force)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads while training (--scale only)"
    )
    parser.add_argument("-n", type=int, default=50, help="samples per model in the check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    progress = not args.no_progress
    started = time.perf_counter()
    if args.scale is not None:
        train_demo_models(args.cache_dir, progress=progress, scale=args.scale, num_threads=args.threads)
    models = load_demo_models(args.cache_dir, force=args.force and args.scale is None, progress=progress)
    print(f"models ready in {time.perf_counter() - started:.1f}s at {models.cache_dir}")
    manifest = json.loads((models.cache_dir / "manifest.json").read_text())
    print("parameters:", manifest["param_counts"])
    print("losses:", json.dumps(manifest["final_losses"]))
    print(format_check(quick_check(models, n=args.n, seed=args.seed)))


if __name__ == "__main__":
    main()
