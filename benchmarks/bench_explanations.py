"""Does an explanation from the large model make the small judge better? Measured on the demo task.

Explanation-facilitated guidance (after arXiv 2409.07335): the large model first writes an
explanation for each prompt, and the search is guided by a prompt-conditioned pair whose tuned side is
the small model reading it. Compared here, with chunk-level beam search (W=K=4, L=5) on the same
prompts and seeds, all judges being the *untrained-for-the-task* weak base model except the LoRA row:

- prompt pair: the small model conditioned on the goal alone (``rating : positive .``, a line the
  demo models saw in training) against the same model without it;
- explanation pair: conditioned on the goal plus the large model's explanation for this prompt.
  The demo language has no words to talk *about* reviews, so the "explanation" is what it can be
  there: the large model's own demonstration of a good answer, written with the goal in context;
- the trained LoRA pair, for reference, and the strong model alone.

Gold reward and fluency as in ``w2s-generate demo``. Run: ``python benchmarks/bench_explanations.py``.
"""

from __future__ import annotations

import argparse
import sys
import time

import w2s_generate as w2s
from w2s_generate.demo import fluency, gold_reward, load_demo_models
from w2s_generate.demo import prompts as demo_prompts
from w2s_generate.demo.compare import generate_texts

GOAL = "rating : positive ."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--explanation-tokens", type=int, default=16)
    args = parser.parse_args(argv)

    models = load_demo_models(args.cache_dir, progress=True)
    tok, strong, weak = models.tokenizer, models.strong, models.weak
    tok.padding_side = "left"
    sampling = dict(do_sample=True, temperature=0.7, top_k=50, max_new_tokens=40)
    sampling.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    print("| seed | judge | gold reward | fluency | seconds |\n|---|---|---:|---:|---:|")
    summary: dict[str, list[float]] = {}
    for seed in args.seeds:
        openings = demo_prompts(args.prompts, seed)
        started = time.perf_counter()
        notes = w2s.explain(
            strong, tok, openings, instruction=GOAL + " {prompt}", max_new_tokens=args.explanation_tokens
        )
        explain_seconds = time.perf_counter() - started
        judges = {
            "none (strong model alone)": None,
            "prompt pair (goal only)": w2s.PromptPair(weak, tok, GOAL),
            "explanation pair (goal + explanation)": w2s.explanation_pair(
                weak, tok, openings, [f"{GOAL} {o} {n}" for o, n in zip(openings, notes)]
            ),
            "trained LoRA pair (reference)": w2s.WeakPair.from_peft(models.tuned_weak(), tok),
        }
        for name, pair in judges.items():
            strategy = None if pair is None else w2s.ChunkBeamSearch(pair, 4, 4, 5)
            started = time.perf_counter()
            texts = generate_texts(strong, tok, openings, strategy, seed, **sampling)
            seconds = time.perf_counter() - started + (explain_seconds if "explanation" in name else 0.0)
            reward = sum(map(gold_reward, texts)) / len(texts)
            fl = sum(map(fluency, texts)) / len(texts)
            summary.setdefault(name, []).append(reward)
            print(f"| {seed} | {name} | {reward:+.3f} | {fl:.3f} | {seconds:.1f} |")
    print("\nmean gold reward over seeds:")
    for name, values in summary.items():
        print(f"  {name}: {sum(values) / len(values):+.3f}")
    print(f"example explanation: {GOAL} {openings[0]} {notes[0]}")
    print(f"\ncommand: python benchmarks/bench_explanations.py {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
