"""Drafted token guidance: large-model forwards per token, acceptance and wall time.

What is measured
----------------
For each batch size, side by side in one process (one warm-up each, then ``--repeats`` interleaved
runs, medians):

1. **plain sampling** of the large model alone (``generate(do_sample=True)``);
2. **token guidance** without drafts (``TokenGuidance(pair, beta)``: one large-model forward per token);
3. **drafted token guidance** ``TokenGuidance(pair, beta, draft_tokens=G)`` for each G.

Reported per variant: milliseconds per generated token (wall time / tokens written, EOS excluded),
large-model forwards per generated token, the share of drafts the large model kept, and the time
against (1) and (2). With ``--quality`` (demo models only), the gold reward of token guidance with and
without drafts over seeds 0-2: the drafted samples come from the same distribution, so the two must
agree within the seed-to-seed spread.

Models: ``--models demo`` uses the offline demo task's trained models (strong Llama, weak Llama with
its positive LoRA adapter as the pair; trained once, then cached); ``--models random`` uses the
random GPT-2 family of the other timing benchmarks (strong ~10x one weak model), where a weak model
knows nothing of the large one and drafts are mostly rejected.

How to run
----------
::

    python benchmarks/bench_drafting.py                      # demo models, G in 2 4 8, batch 1 and 8
    python benchmarks/bench_drafting.py --models random
    python benchmarks/bench_drafting.py --quality --prompts 64
    python benchmarks/bench_drafting.py --chunk [--quality]  # chunk-level search, CBS(4, 4, 5)

With ``--chunk``: CBS(W=4, K=4, L=5) against ``ChunkBeamSearch(..., draft_tokens=G)`` for each G (and
one run drafting from the untuned side), wall time per call, large-model forwards per sampled token
(from ``out.cost``), and with ``--quality`` the gold reward of both over seeds 0-2.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import torch

import w2s_generate as w2s


def load(models: str):
    """``(strong, pair, tokenizer, prompts)`` for the chosen family."""
    if models == "demo":
        from w2s_generate.demo import load_demo_models, prompts

        demo = load_demo_models(progress=False)
        pair = w2s.WeakPair.from_peft(demo.tuned_weak(), demo.tokenizer)
        return demo.strong.eval(), pair, demo.tokenizer, prompts(64, seed=0)
    from _models import PROMPTS, make_model, make_tokenizer

    tok = make_tokenizer()
    ids = {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    strong = make_model("gpt2", "strong", len(tok), ids, seed=1)
    pair = w2s.WeakPair(
        make_model("gpt2", "weak", len(tok), ids, seed=2),
        make_model("gpt2", "weak", len(tok), ids, seed=3),
        tok,
    )
    return strong, pair, tok, PROMPTS * 16


def run(strong, inputs, kwargs, strategy, seed: int):
    """``(seconds, tokens written, large forwards or None, drafted, accepted)`` of one generate call."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    out = strong.generate(**inputs, **kwargs, custom_generate=strategy, return_dict_in_generate=True)
    seconds = time.perf_counter() - start
    response = out.sequences[:, inputs["input_ids"].shape[1] :]
    eos = kwargs["eos_token_id"]
    tokens = int(((response != kwargs["pad_token_id"]) & ~torch.isin(response, torch.tensor(eos))).sum())
    forwards = getattr(out, "large_forwards", None)
    return (
        seconds,
        max(tokens, 1),
        forwards,
        getattr(out, "drafted", 0) or 0,
        getattr(out, "accepted", 0) or 0,
    )


def timing(args, strong, pair, tok, prompts) -> None:
    eos = tok.eos_token_id
    kwargs = dict(
        do_sample=True,
        temperature=0.7,
        top_k=50,
        max_new_tokens=args.new_tokens,
        eos_token_id=[eos],
        pad_token_id=tok.pad_token_id,
    )
    print(
        f"{args.new_tokens} new tokens, temperature 0.7, top-k 50, beta {args.beta}, median of {args.repeats}"
    )
    print()
    print("| batch | variant | ms / token | large forwards / token | drafts kept | vs plain | vs no drafts |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        inputs = tok(prompts[:batch], return_tensors="pt", padding=True)
        variants = {"plain sampling": None, "token guidance": w2s.TokenGuidance(pair, args.beta)}
        for gamma in args.gammas:
            variants[f"drafted, G={gamma}"] = w2s.TokenGuidance(pair, args.beta, draft_tokens=gamma)
        results = {name: [] for name in variants}
        with torch.no_grad():
            for strategy in variants.values():  # warm-up
                run(strong, inputs, kwargs, strategy, 0)
            for repeat in range(args.repeats):
                for name, strategy in variants.items():
                    results[name].append(run(strong, inputs, kwargs, strategy, repeat))
        ms = {n: statistics.median(1000 * r[0] / r[1] for r in rs) for n, rs in results.items()}
        for name, rs in results.items():
            tokens = sum(r[1] for r in rs)
            forwards = (
                sum(r[2] for r in rs) * batch / tokens
                if rs[0][2] is not None
                else 1.0 + batch / (tokens / len(rs))  # one per step plus the prefill
            )
            drafted, accepted = sum(r[3] for r in rs), sum(r[4] for r in rs)
            kept = f"{accepted / drafted:.2f}" if drafted else ""
            print(
                f"| {batch} | {name} | {ms[name]:.2f} | {forwards:.2f} | {kept} | "
                f"{ms[name] / ms['plain sampling']:.2f}x | {ms[name] / ms['token guidance']:.2f}x |"
            )


def quality(args, strong, pair, tok) -> None:
    from w2s_generate.demo import gold_reward, prompts

    texts = prompts(args.prompts, seed=1)
    inputs = tok(texts, return_tensors="pt", padding=True)
    kwargs = dict(do_sample=True, temperature=0.7, top_k=50, max_new_tokens=40, pad_token_id=tok.pad_token_id)
    print()
    print(f"gold reward over {args.prompts} prompts, 40 new tokens, beta {args.beta}")
    print("| variant | seed 0 | seed 1 | seed 2 | mean |")
    print("|---|---:|---:|---:|---:|")
    for name, strategy in {
        "token guidance": w2s.TokenGuidance(pair, args.beta),
        f"drafted, G={args.gammas[0]}": w2s.TokenGuidance(pair, args.beta, draft_tokens=args.gammas[0]),
    }.items():
        rewards = []
        for seed in range(3):
            torch.manual_seed(seed)
            with torch.no_grad():
                out = strong.generate(**inputs, **kwargs, custom_generate=strategy)
            decoded = tok.batch_decode(out, skip_special_tokens=True)
            rewards.append(statistics.mean(gold_reward(t) for t in decoded))
        print(
            f"| {name} | "
            + " | ".join(f"{r:+.3f}" for r in rewards)
            + f" | {statistics.mean(rewards):+.3f} |"
        )


def chunk_timing(args, strong, pair, tok, prompts) -> None:
    """Chunk-level search with and without drafting: wall time, large forwards per sampled token, reward."""
    kwargs = dict(
        do_sample=True,
        temperature=0.7,
        top_k=50,
        max_new_tokens=args.new_tokens,
        eos_token_id=[tok.eos_token_id],
        pad_token_id=tok.pad_token_id,
        return_dict_in_generate=True,
    )
    print()
    print(f"chunk-level search W=4 K=4 L=5, {args.new_tokens} new tokens, median of {args.repeats}")
    print()
    print("| prompts | variant | s / call | large forwards / candidate token | vs undrafted |")
    print("|---:|---|---:|---:|---:|")
    for batch in args.batches:
        inputs = tok(prompts[:batch], return_tensors="pt", padding=True)
        variants = {"CBS": w2s.ChunkBeamSearch(pair, 4, 4, 5)}
        for gamma in args.gammas:
            variants[f"drafted, G={gamma}"] = w2s.ChunkBeamSearch(pair, 4, 4, 5, draft_tokens=gamma)
        variants[f"drafted, G={args.gammas[0]}, from the untuned side"] = w2s.ChunkBeamSearch(
            pair, 4, 4, 5, draft_tokens=args.gammas[0], draft_from="untuned"
        )
        seconds = {name: [] for name in variants}
        per_token = {name: [] for name in variants}
        with torch.no_grad():
            for strategy in variants.values():  # warm-up
                strong.generate(**inputs, **kwargs, custom_generate=strategy)
            for repeat in range(args.repeats):
                for name, strategy in variants.items():
                    torch.manual_seed(repeat)
                    start = time.perf_counter()
                    out = strong.generate(**inputs, **kwargs, custom_generate=strategy)
                    seconds[name].append(time.perf_counter() - start)
                    # Forwards per token of one candidate: each forward serves all W*K = 16 rows of a prompt.
                    per_token[name].append(
                        16 * sum(out.cost.large_forwards) / max(sum(out.cost.large_tokens), 1)
                    )
        base = statistics.median(seconds["CBS"])
        for name in variants:
            median = statistics.median(seconds[name])
            print(
                f"| {batch} | {name} | {median:.2f} | {statistics.mean(per_token[name]):.3f} | {median / base:.2f}x |"
            )
    if not args.quality:
        return
    from w2s_generate.demo import gold_reward
    from w2s_generate.demo import prompts as demo_prompts

    texts = demo_prompts(args.prompts, seed=1)
    inputs = tok(texts, return_tensors="pt", padding=True)
    print()
    print(f"gold reward of CBS W=4 K=4 L=5 over {args.prompts} prompts, 40 new tokens")
    print("| variant | seed 0 | seed 1 | seed 2 | mean |")
    print("|---|---:|---:|---:|---:|")
    for name, strategy in {
        "CBS": w2s.ChunkBeamSearch(pair, 4, 4, 5),
        f"drafted, G={args.gammas[0]}": w2s.ChunkBeamSearch(pair, 4, 4, 5, draft_tokens=args.gammas[0]),
    }.items():
        rewards = []
        for seed in range(3):
            torch.manual_seed(seed)
            with torch.no_grad():
                out = strong.generate(**inputs, **{**kwargs, "max_new_tokens": 40}, custom_generate=strategy)
            decoded = tok.batch_decode(out.sequences, skip_special_tokens=True)
            rewards.append(statistics.mean(gold_reward(t) for t in decoded))
        print(
            f"| {name} | "
            + " | ".join(f"{r:+.3f}" for r in rewards)
            + f" | {statistics.mean(rewards):+.3f} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", choices=["demo", "random"], default="demo")
    parser.add_argument("--gammas", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quality", action="store_true", help="gold reward with and without drafts (demo)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts of the --quality run")
    parser.add_argument("--chunk", action="store_true", help="chunk-level search with and without drafting")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    strong, pair, tok, prompts = load(args.models)
    print(
        f"# drafted token guidance ({args.models} models), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if args.chunk:
        chunk_timing(args, strong, pair, tok, prompts)
    else:
        timing(args, strong, pair, tok, prompts)
        if args.quality:
            quality(args, strong, pair, tok)
    print()
    print("command: python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv]))


if __name__ == "__main__":
    main()
