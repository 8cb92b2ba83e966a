"""Search policies at equal compute: the reward-vs-large-model-tokens frontier on the demo task.

Every method runs on the same demo prompts and seeds with the trained demo models (strong Llama,
weak Llama + positive LoRA adapter as the pair), temperature 0.7, top-k 50, 40 new tokens:

- best-of-N at N = W*K;
- CBS(W, K, L=5), the paper's policy (top-W distinct selection, constant K, fixed chunks);
- the same W, K, L with one policy changed: diverse selection (at most one survivor per parent),
  stochastic selection (softmax over scores, temperature 1), a decaying schedule (2K, K, K/2, ...),
  an adaptive budget (a prompt stops once a finished response leads every beam by 1.0 nat), and
  chunks that end at the sentence end "." (capped at 2L).

The x axis is the large-model tokens each method sampled per prompt, read from the searches' own
cost accounting (``out.cost``); the y axis the gold reward, which the search never sees. Prints one
table per seed, the mean over seeds with its spread, and writes the plot.

Run: ``python benchmarks/bench_search_policies.py [--prompts 32] [--seeds 0 1 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from w2s_generate import (
    AdaptiveBudget,
    BestOfN,
    ChunkBeamSearch,
    ChunkBoundary,
    DiverseSelection,
    ScheduledBudget,
    StochasticSelection,
    WeakPair,
)
from w2s_generate.demo import load_demo_models
from w2s_generate.demo.language import prompts as demo_prompts
from w2s_generate.demo.reward import fluency, gold_reward

SHAPES = {4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8)}  # W*K -> (W, K)


@dataclass
class Row:
    policy: str
    budget: int
    seed: int
    gold_reward: float
    fluency: float
    large_tokens: float
    large_forwards: float
    weak_tokens: float
    seconds: float


def strategies(pair: WeakPair, budget: int, chunk: int) -> dict[str, object]:
    """Every compared method at one budget ``W*K``."""
    width, successors = SHAPES[budget]
    decaying = [2 * successors, successors, max(successors // 2, 1)]
    return {
        "best-of-N": BestOfN(pair, n=budget),
        "CBS (paper)": ChunkBeamSearch(pair, width, successors, chunk),
        "diverse selection": ChunkBeamSearch(pair, width, successors, chunk, selection=DiverseSelection(1)),
        "stochastic selection": ChunkBeamSearch(
            pair, width, successors, chunk, selection=StochasticSelection(1.0, seed=0)
        ),
        "decaying K": ChunkBeamSearch(pair, width, ScheduledBudget(decaying), chunk),
        "adaptive K": ChunkBeamSearch(pair, width, AdaptiveBudget(successors, margin=1.0), chunk),
        "sentence chunks": ChunkBeamSearch(
            pair, width, successors, ChunkBoundary(2 * chunk, stop_strings=["."])
        ),
    }


def run(models, pair, policy: str, strategy, budget: int, seed: int, openings: list[str], args) -> Row:
    tokenizer = models.tokenizer
    sampling = dict(
        do_sample=True,
        temperature=0.7,
        top_k=50,
        max_new_tokens=args.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        return_dict_in_generate=True,
    )
    torch.manual_seed(seed)
    texts: list[str] = []
    large, forwards, weak = [], [], []
    started = time.perf_counter()
    for start in range(0, len(openings), args.batch_size):
        batch = openings[start : start + args.batch_size]
        enc = tokenizer(batch, return_tensors="pt", padding=True)
        out = models.strong.generate(**enc, custom_generate=strategy, **sampling)
        continuations = tokenizer.batch_decode(
            out.sequences[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
        texts += [f"{p} {c}".strip() for p, c in zip(batch, continuations)]
        large += out.cost.large_tokens
        forwards += out.cost.large_forwards
        weak += out.cost.weak_tokens
    seconds = time.perf_counter() - started
    return Row(
        policy,
        budget,
        seed,
        sum(map(gold_reward, texts)) / len(texts),
        sum(map(fluency, texts)) / len(texts),
        statistics.mean(large),
        statistics.mean(forwards),
        statistics.mean(weak),
        seconds,
    )


def summary(rows: list[Row]) -> list[dict]:
    """Mean and spread over seeds for each (policy, budget)."""
    out = []
    keys = sorted({(r.policy, r.budget) for r in rows}, key=lambda k: (k[1], list(POLICY_ORDER).index(k[0])))
    for policy, budget in keys:
        group = [r for r in rows if r.policy == policy and r.budget == budget]
        rewards = [r.gold_reward for r in group]
        out.append(
            {
                "policy": policy,
                "budget": budget,
                "reward": statistics.mean(rewards),
                "spread": (max(rewards) - min(rewards)) / 2 if len(rewards) > 1 else 0.0,
                "per_seed": rewards,
                "fluency": statistics.mean(r.fluency for r in group),
                "large_tokens": statistics.mean(r.large_tokens for r in group),
                "large_forwards": statistics.mean(r.large_forwards for r in group),
                "weak_tokens": statistics.mean(r.weak_tokens for r in group),
                "seconds": statistics.mean(r.seconds for r in group),
            }
        )
    return out


POLICY_ORDER = (
    "best-of-N",
    "CBS (paper)",
    "diverse selection",
    "stochastic selection",
    "decaying K",
    "adaptive K",
    "sentence chunks",
)


def table(summaries: list[dict]) -> str:
    lines = [
        "| budget W·K | method | gold reward (mean ± half-range) | per seed | fluency | large tokens / prompt "
        "| large forwards / prompt | weak tokens / prompt | s / run |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        seeds = " / ".join(f"{r:+.3f}" for r in s["per_seed"])
        lines.append(
            f"| {s['budget']} | {s['policy']} | {s['reward']:+.3f} ± {s['spread']:.3f} | {seeds} | {s['fluency']:.3f} "
            f"| {s['large_tokens']:.0f} | {s['large_forwards']:.0f} | {s['weak_tokens']:.0f} | {s['seconds']:.1f} |"
        )
    return "\n".join(lines)


def plot(summaries: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    markers = dict(zip(POLICY_ORDER, "sovD^<>"))
    for policy in POLICY_ORDER:
        points = sorted((s for s in summaries if s["policy"] == policy), key=lambda s: s["large_tokens"])
        if not points:
            continue
        axis.errorbar(
            [p["large_tokens"] for p in points],
            [p["reward"] for p in points],
            yerr=[p["spread"] for p in points],
            marker=markers[policy],
            capsize=3,
            label=policy,
            linestyle="--" if policy == "best-of-N" else "-",
        )
    axis.set_xscale("log")
    axis.set_xlabel("large-model tokens sampled per prompt (log scale)")
    axis.set_ylabel("gold reward (mean over seeds)")
    axis.set_title("Search policies at equal compute (demo task)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16, 32], choices=sorted(SHAPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--chunk-length", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--plot", default="docs/img/search_policies_frontier.png")
    args = parser.parse_args(argv)

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    models = load_demo_models(args.cache_dir, progress=False)
    pair = WeakPair.from_peft(models.tuned_weak(), models.tokenizer)
    rows: list[Row] = []
    for seed in args.seeds:
        openings = demo_prompts(args.prompts, seed)
        for budget in args.budgets:
            for policy, strategy in strategies(pair, budget, args.chunk_length).items():
                row = run(models, pair, policy, strategy, budget, seed, openings, args)
                rows.append(row)
                print(
                    f"seed {seed} budget {budget:2d} {policy:22s} reward {row.gold_reward:+.3f} "
                    f"fluency {row.fluency:.3f} large tokens {row.large_tokens:6.0f} ({row.seconds:.1f}s)",
                    flush=True,
                )
    summaries = summary(rows)
    print()
    print(table(summaries))
    if args.plot:
        plot(summaries, args.plot)
    print(f"\ncommand: python benchmarks/bench_search_policies.py {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
