"""Explanation, debate, align: which facilitated judge steers the search best? Measured on the demo task.

All judges guide the same chunk-level beam search (W=K=4, L=5, 40 new tokens, temperature 0.7,
top-k 50) of the demo's strong model on the same prompts and seeds (0, 1, 2):

- strong alone (no search);
- goal-only prompt pair: the untrained weak base reading ``rating : positive .`` vs reading nothing;
- explanation pair: reading the goal plus the large model's continuation of the prompt under it (the
  demo language has no words *about* reviews, so an "explanation" is a demonstration) vs nothing;
- debate pair: reading the large model's case for (the prompt continued under ``rating : positive .``)
  vs its case against (continued under ``rating : negative .``);
- the trained LoRA pair (supervised, with an adapter on the output layer);
- an aligned LoRA pair after one and two align iterations: a fresh adapter on the weak base's
  attention and MLP projections (trl's DPO cannot train one on the output layer), tuned with DPO on
  preference pairs from search traces on 64 training prompts (other seeds): first the traces of the
  search guided by the debate pair, then those of its own search.

The large-model tokens spent on explanations and arguments are added to the search's own count
(``out.cost``), so the budget column compares like with like.

Then an adversarial check in the spirit of weak-to-strong deception: the strong model is biased
toward the word "great" (``sequence_bias``, +4), a word every judge here likes. Repeating it raises
the lexicon reward too, so gold reward cannot expose it; fluency and the share of "great" can. Each
judge searches the biased model; an ensemble of the LoRA and debate pairs shows, in its trace, how far
the two judges agree on the candidates (Spearman correlation of their component scores over each
prompt's candidates of a round, averaged).

Run: ``python benchmarks/bench_debate_align.py [--prompts 64] [--seeds 0 1 2]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from peft import LoraConfig, get_peft_model

import w2s_generate as w2s
from w2s_generate.demo import fluency, gold_reward, load_demo_models
from w2s_generate.demo import prompts as demo_prompts
from w2s_generate.explanations import write_for_prompts

POSITIVE = "rating : positive ."
NEGATIVE = "rating : negative ."
ARGUMENT_TOKENS = 16
ALIGN_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def search(strong, tok, openings, pair, seed, args, bias=None, trace=False):
    """Texts, large-model tokens per prompt and (optionally) the traces of CBS over ``openings``."""
    sampling = dict(do_sample=True, temperature=0.7, top_k=50, max_new_tokens=args.max_new_tokens)
    sampling.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if bias:
        sampling["sequence_bias"] = bias
    torch.manual_seed(seed)
    texts, tokens, traces = [], [], []
    for start in range(0, len(openings), args.batch_size):
        batch = openings[start : start + args.batch_size]
        enc = tok(batch, return_tensors="pt", padding=True)
        if pair is None:
            out = strong.generate(**enc, **sampling)
            sequences = out
            tokens += [
                int(n) for n in (sequences[:, enc["input_ids"].shape[1] :] != tok.pad_token_id).sum(-1)
            ]
        else:
            out = strong.generate(
                **enc,
                custom_generate=w2s.ChunkBeamSearch(pair, 4, 4, 5),
                weak_prompts=batch,
                return_dict_in_generate=True,
                return_trace=trace,
                **sampling,
            )
            sequences = out.sequences
            tokens += out.cost.large_tokens
            traces.append((batch, out.trace))
        continuations = tok.batch_decode(sequences[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        texts += [f"{p} {c}".strip() for p, c in zip(batch, continuations)]
    return texts, tokens, traces


def debate_cases(strong, tok, openings, seed):
    """The large model's case for and against each opening (the demo's form: a demonstration under a goal)."""
    torch.manual_seed(seed)
    cases = w2s.debate(
        strong, tok, openings, POSITIVE + " {prompt}", NEGATIVE + " {prompt}", max_new_tokens=ARGUMENT_TOKENS
    )
    return w2s.Debate(
        pro=[f"{POSITIVE} {o} {c}" for o, c in zip(openings, cases.pro)],
        con=[f"{NEGATIVE} {o} {c}" for o, c in zip(openings, cases.con)],
        large_tokens=cases.large_tokens,
    )


def align_iterations(models, tok, args, iterations: int):
    """A fresh adapter on the weak base, aligned on search traces: first the debate pair's, then its own.

    trl's DPO cannot train an adapter on the output layer (the demo's trained adapter has one), so the
    aligned adapter covers the attention and MLP projections. Iteration 1 learns from the traces of a
    search guided by the debate pair (the large model facilitating); iteration ``i > 1`` from the
    traces of the search guided by the adapter of iteration ``i - 1``.
    """
    base = copy.deepcopy(models.weak)  # peft injects its layers into the model it is given
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=ALIGN_TARGETS)
    adapter = get_peft_model(base, config).eval()
    pair = w2s.WeakPair.from_peft(adapter, tok)
    train_prompts = demo_prompts(args.prompts, 1000)  # prompts the evaluation never sees
    teacher = w2s.debate_pair(
        models.weak, tok, train_prompts, debate_cases(models.strong, tok, train_prompts, 1000)
    )
    states = []
    for iteration in range(iterations):
        judge = teacher if iteration == 0 else pair
        _, _, traces = search(models.strong, tok, train_prompts, judge, 1000 + iteration, args, trace=True)
        records = [
            r
            for batch, trace in traces
            for r in w2s.preference_pairs(
                trace,
                batch,
                decode=tok.decode,
                pairs_per_round=args.pairs_per_round,
                last_round_only=args.last_round_only,
            )
        ]
        started = time.perf_counter()
        w2s.align_adapter(
            adapter, tok, records, beta=args.dpo_beta, learning_rate=args.dpo_lr, epochs=args.dpo_epochs
        )
        print(
            f"align iteration {iteration + 1}: {len(records)} preference pairs from the "
            f"{'debate pair' if iteration == 0 else 'aligned pair'}'s search, DPO {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        states.append({k: v.detach().clone() for k, v in adapter.state_dict().items() if "lora_" in k})
    return adapter, pair, states


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    ra, rb = ranks(a), ranks(b)
    if len(a) < 2 or statistics.pstdev(ra) == 0 or statistics.pstdev(rb) == 0:
        return float("nan")
    return statistics.correlation(ra, rb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dpo-beta", type=float, default=0.5)
    parser.add_argument("--dpo-lr", type=float, default=1e-3)
    parser.add_argument("--dpo-epochs", type=int, default=2)
    parser.add_argument("--pairs-per-round", type=int, default=2)
    parser.add_argument(
        "--last-round-only", action="store_true", help="preference pairs of whole responses only"
    )
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)

    models = load_demo_models(args.cache_dir, progress=False)
    tok, strong, weak = models.tokenizer, models.strong, models.weak
    tok.padding_side = "left"
    adapter, aligned_pair, states = align_iterations(models, tok, args, 2)
    lora_pair = w2s.WeakPair.from_peft(models.tuned_weak(), tok)

    rows: dict[str, list[tuple[float, float, float]]] = {}
    for seed in args.seeds:
        openings = demo_prompts(args.prompts, seed)
        notes, note_tokens = write_for_prompts(strong, tok, openings, POSITIVE + " {prompt}", ARGUMENT_TOKENS)
        torch.manual_seed(seed)
        cases = w2s.debate(
            strong,
            tok,
            openings,
            POSITIVE + " {prompt}",
            NEGATIVE + " {prompt}",
            max_new_tokens=ARGUMENT_TOKENS,
        )
        cases = w2s.Debate(
            pro=[f"{POSITIVE} {o} {c}" for o, c in zip(openings, cases.pro)],
            con=[f"{NEGATIVE} {o} {c}" for o, c in zip(openings, cases.con)],
            large_tokens=cases.large_tokens,
        )
        judges = {
            "strong alone": (None, [0] * len(openings)),
            "goal-only prompt pair": (w2s.PromptPair(weak, tok, POSITIVE), [0] * len(openings)),
            "explanation pair": (
                w2s.explanation_pair(
                    weak, tok, openings, [f"{POSITIVE} {o} {n}" for o, n in zip(openings, notes)]
                ),
                note_tokens,
            ),
            "debate pair": (w2s.debate_pair(weak, tok, openings, cases), cases.large_tokens),
            "trained LoRA pair": (lora_pair, [0] * len(openings)),
        }
        for name, (pair, extra) in judges.items():
            texts, tokens, _ = search(strong, tok, openings, pair, seed, args)
            spent = statistics.mean(t + e for t, e in zip(tokens, extra))
            rows.setdefault(name, []).append(
                (sum(map(gold_reward, texts)) / len(texts), sum(map(fluency, texts)) / len(texts), spent)
            )
        for iteration, state in enumerate(states, start=1):
            adapter.load_state_dict(state, strict=False)
            texts, tokens, _ = search(strong, tok, openings, aligned_pair, seed, args)
            rows.setdefault(f"aligned LoRA pair, iteration {iteration}", []).append(
                (
                    sum(map(gold_reward, texts)) / len(texts),
                    sum(map(fluency, texts)) / len(texts),
                    statistics.mean(tokens),
                )
            )
        print(f"seed {seed} done", flush=True)

    print("\n| judge | gold reward (mean ± half-range) | per seed | fluency | large tokens / prompt |")
    print("|---|---:|---|---:|---:|")
    for name, values in rows.items():
        rewards = [v[0] for v in values]
        spread = (max(rewards) - min(rewards)) / 2
        per_seed = " / ".join(f"{r:+.3f}" for r in rewards)
        print(
            f"| {name} | {statistics.mean(rewards):+.3f} ± {spread:.3f} | {per_seed} | "
            f"{statistics.mean(v[1] for v in values):.3f} | {statistics.mean(v[2] for v in values):.0f} |"
        )

    # ---------------------------------------------------------------- adversarial: a biased large model
    great = tok.convert_tokens_to_ids("great")
    bias = {(great,): 4.0}
    adapter.load_state_dict(states[-1], strict=False)
    print('\nAdversarial: the strong model biased toward "great" (+4), seed 0')
    print(
        '\n| judge | gold reward | fluency | "great" per response | judges agree (Spearman, LoRA vs debate) |'
    )
    print("|---|---:|---:|---:|---:|")
    openings = demo_prompts(args.prompts, 0)
    torch.manual_seed(0)
    cases = w2s.debate(
        strong, tok, openings, POSITIVE + " {prompt}", NEGATIVE + " {prompt}", max_new_tokens=ARGUMENT_TOKENS
    )
    cases = w2s.Debate(
        pro=[f"{POSITIVE} {o} {c}" for o, c in zip(openings, cases.pro)],
        con=[f"{NEGATIVE} {o} {c}" for o, c in zip(openings, cases.con)],
        large_tokens=cases.large_tokens,
    )
    debate_judge = w2s.debate_pair(weak, tok, openings, cases)
    ensemble = w2s.GuidanceEnsemble([(lora_pair, 1.0), (debate_judge, 1.0)], names=["lora", "debate"])
    for biased in (False, True):
        for name, pair in (
            ("strong alone", None),
            ("trained LoRA pair", lora_pair),
            ("debate pair", debate_judge),
            ("LoRA + debate ensemble", ensemble),
        ):
            texts, _, traces = search(
                strong, tok, openings, pair, 0, args, bias=bias if biased else None, trace=pair is ensemble
            )
            agree = ""
            if pair is ensemble:
                # Within each prompt's candidates of a round: scores of different prompts do not compare.
                values = [
                    spearman(
                        t.component_scores["lora"][t.prompt_index == b].tolist(),
                        t.component_scores["debate"][t.prompt_index == b].tolist(),
                    )
                    for _, trace in traces
                    for t in trace
                    for b in set(t.prompt_index.tolist())
                ]
                values = [v for v in values if v == v]
                agree = f"{statistics.mean(values):+.2f}" if values else "n/a"
            label = f"{name} ({'biased' if biased else 'unbiased'})"
            repeats = statistics.mean(t.split().count("great") for t in texts)
            print(
                f"| {label} | {sum(map(gold_reward, texts)) / len(texts):+.3f} | "
                f"{sum(map(fluency, texts)) / len(texts):.3f} | {repeats:.2f} | {agree} |"
            )
    print(f"\ncommand: python benchmarks/bench_debate_align.py {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
