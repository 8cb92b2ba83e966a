"""Does weak-to-strong search do what the paper claims? Checked on the offline demo task.

Runs every method of ``w2s-generate demo`` on the same prompts and seeds (strong model alone, tuned
weak model alone, token guidance, best-of-N and chunk-level beam search at matched large-model
budgets) and checks the expected outcome:

1. CBS raises the gold reward well above the strong model alone;
2. CBS beats best-of-N at the same budget (N = W*K);
3. CBS keeps fluency at the strong model's level (within 0.05).

The gold reward is a lexicon score the search never sees. Prints the table and PASS/FAIL per claim;
exits 1 if a claim fails. Run: ``python benchmarks/bench_demo_task.py [--prompts 64]``.

``--task real`` runs the real-model task of ``w2s-generate demo`` instead (Gemma-3-270M steered by a
SmolLM2-135M pair, VADER as the gold reward) and checks, on the mean over seeds, that CBS at the
largest budget beats best-of-N at that budget and that both beat the large model alone:
``python benchmarks/bench_demo_task.py --task real --prompts 48 --seeds 0 1 2``.
"""

from __future__ import annotations

import argparse
import sys
import time

from w2s_generate.demo import load_demo_models
from w2s_generate.demo.compare import format_table, plot, run_comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--plot", default="w2s-demo/reward_vs_compute.png")
    parser.add_argument("--task", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.task == "real":
        return _real(args)

    started = time.perf_counter()
    models = load_demo_models(args.cache_dir, progress=True)
    print(f"models ready in {time.perf_counter() - started:.0f}s")
    failures = 0
    for seed in args.seeds:
        rows = run_comparison(
            models, n_prompts=args.prompts, seed=seed, budgets=tuple(args.budgets), progress=False
        )
        print(f"\nseed {seed}, {args.prompts} prompts\n")
        print(format_table(rows))
        by = {r.method: r for r in rows}
        strong = by["strong alone"]
        for budget in args.budgets:
            cbs = next(r for r in rows if r.family == "cbs" and r.budget == budget)
            bon = next(r for r in rows if r.family == "bon" and r.budget == budget)
            claims = {
                f"CBS (budget {budget}) reward {cbs.gold_reward:+.3f} > strong alone {strong.gold_reward:+.3f} + 0.5": cbs.gold_reward
                > strong.gold_reward + 0.5,
                f"CBS (budget {budget}) reward {cbs.gold_reward:+.3f} > best-of-{budget} {bon.gold_reward:+.3f}": cbs.gold_reward
                > bon.gold_reward,
                f"CBS (budget {budget}) fluency {cbs.fluency:.3f} >= strong alone {strong.fluency:.3f} - 0.05": cbs.fluency
                >= strong.fluency - 0.05,
            }
            for claim, ok in claims.items():
                print(("PASS " if ok else "FAIL ") + claim)
                failures += not ok
        if seed == args.seeds[0] and args.plot:
            print(f"plot: {plot(rows, args.plot)}")
    print(f"\ncommand: python benchmarks/bench_demo_task.py {' '.join(sys.argv[1:])}".rstrip())
    return 1 if failures else 0


def _real(args: argparse.Namespace) -> int:
    from w2s_generate.demo.real import load_real_models, run_real_comparison

    started = time.perf_counter()
    models = load_real_models(args.cache_dir, progress=True)
    print(f"models ready in {time.perf_counter() - started:.0f}s")
    rows = run_real_comparison(models, n_prompts=args.prompts, seeds=args.seeds, budgets=tuple(args.budgets))
    print(f"\nseeds {args.seeds}, {args.prompts} prompts\n")
    print(format_table(rows))
    large = next(r for r in rows if r.family == "strong")
    budget = max(args.budgets)
    cbs = next(r for r in rows if r.family == "cbs" and r.budget == budget)
    bon = next(r for r in rows if r.family == "bon" and r.budget == budget)
    claims = {
        f"CBS (budget {budget}) {cbs.gold_reward:+.3f} > best-of-{budget} {bon.gold_reward:+.3f}": cbs.gold_reward
        > bon.gold_reward,
        f"best-of-{budget} {bon.gold_reward:+.3f} > large model alone {large.gold_reward:+.3f}": bon.gold_reward
        > large.gold_reward,
    }
    for claim, ok in claims.items():
        print(("PASS " if ok else "FAIL ") + claim)
    print(
        f"fluency (large-model mean token log-prob): {', '.join(f'{r.method} {r.fluency:.2f}' for r in rows)}"
    )
    if args.plot:
        print(
            f"plot: {plot(rows, args.plot, title='Gemma-3-270M steered by a SmolLM2-135M pair', ylabel='VADER of the response (gold)')}"
        )
    print(f"\ncommand: python benchmarks/bench_demo_task.py {' '.join(sys.argv[1:])}".rstrip())
    return 0 if all(claims.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
