"""Drafted token guidance: large-model forwards per token, acceptance and wall time.

What is measured
----------------
For each batch size, side by side in one process (one warm-up each, then ``--repeats`` interleaved
runs, medians):

1. **plain sampling** of the large model alone (``generate(do_sample=True)``);
2. **token guidance** without drafts (``TokenGuidance(pair, beta)``: one large-model forward per token);
3. **proxy-tuning's loop** (``bench_token_guidance.proxy_tuning``, the peer: three models with their
   own caches, one forward each per step, the tuned side as a merged checkpoint), and token guidance
   over that same pair of checkpoints, for a like-for-like comparison of the two loops;
4. **drafted token guidance** ``TokenGuidance(pair, beta, draft_tokens=G)`` for each G.

Reported per variant: milliseconds per generated token (wall time / tokens written, EOS excluded),
large-model forwards per generated token, the share of drafts the large model kept, and the time
against (1) and (2) (the median over repeats of the ratio within a repeat, steadier than a ratio of
medians on a shared machine). Proxy-tuning's loop has no end-of-sequence check: it runs for as many
steps as token guidance took in the same repeat and is credited with its tokens, so the two loops do
equal work. With ``--quality`` (demo and wide models), the gold reward of token guidance without
drafts and with the longest G for ``--seeds`` seeds (default 0-2): the drafted samples come from the
same distribution, so the two must agree within the seed-to-seed spread.

Models
------
``--models demo``: the offline demo task's trained models (strong Llama, 1.1M parameters; the pair is
the weak Llama with its positive LoRA adapter; trained once, then cached).

``--models wide``: a large model whose batch-1 decoding is bound by memory bandwidth. The demo's
strong model widened, function-preserving, to hidden 1024, intermediate 4096, 32 heads of head_dim
32 and 6 layers (100.9M parameters; see ``_wide_models.py``): its logits equal the demo strong
model's (asserted on a few prompts before any timing), so the demo's pair drafts for it as well as
for the original, while every forward reads all 100M parameters. The pair is the one of
``--models demo``, 0.1% of the large model's parameters (both counts are printed; more than 1/10
is refused).

``--models random``: the random GPT-2 family of the other timing benchmarks (strong ~10x one weak
model), where a weak model knows nothing of the large one and drafts are mostly rejected.

How to run
----------
::

    python benchmarks/bench_drafting.py                      # demo models, G in 2 4 8, batch 1 and 8
    python benchmarks/bench_drafting.py --models random
    python benchmarks/bench_drafting.py --quality --prompts 64
    python benchmarks/bench_drafting.py --chunk [--quality]  # chunk-level search, CBS(4, 4, 5)
    python benchmarks/bench_drafting.py --models wide --threads 2 --repeats 5 --quality --prompts 32
    python benchmarks/bench_drafting.py --models wide --threads 2 --chunk --repeats 3 --gammas 2 4 \
        --quality --prompts 4
    python benchmarks/bench_drafting.py --models wide --threads 2 --chunk --width 2 --successors 2 \
        --gammas 2 4 --repeats 5
    python benchmarks/bench_drafting.py --models wide --dtype bfloat16       # also on a CPU
    python benchmarks/bench_drafting.py --models wide --device cuda --dtype bfloat16

With ``--loops``: undrafted ``TokenGuidance`` over the two checkpoints in its own decoding loop and
in transformers' loop, in a shuffled order each repeat, then the peer for as many steps; paired
medians (``python benchmarks/bench_drafting.py --models wide --loops --threads 2 --repeats 11``).

With ``--chunk``: CBS(W, K, L) (``--width``, ``--successors``, ``--chunk-length``; default 4, 4, 5)
against ``ChunkBeamSearch(..., draft_tokens=G)`` for each G (and the longest G drafting from the
untuned side), wall time per call, large-model forwards per sampled token (from ``out.cost``), the
share of drafts kept, and with ``--quality`` the gold reward of CBS and of the longest G from either
side. With L=5 a round drafts at most 4 tokens, so every G >= 4
drafts whole chunks.

``--device cuda --dtype bfloat16`` moves every model and input to the GPU and casts the weights
(the widened model is checked in float32 on the CPU first); timings synchronize the device. The
defaults are ``cpu`` and ``float32``; ``--threads`` sets torch's CPU threads. The load average is
printed before and after: on a machine whose cores other work keeps busy, threads stall one another
and single runs scatter widely; take figures on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from _models import n_params, synchronize

import w2s_generate as w2s

PEER = "proxy-tuning's loop (peer)"


@dataclass
class Models:
    """What one family gives the benchmark: the large model, the pair, and the peer's two checkpoints."""

    strong: torch.nn.Module
    pair: w2s.WeakPair
    tokenizer: object
    prompts: list[str]
    expert: torch.nn.Module  # the tuned side as a plain model, for proxy-tuning's loop
    antiexpert: torch.nn.Module  # the untuned side
    pair_parameters: int
    note: str = ""  # what the family's loading checked, printed under the header


@dataclass
class ProxyTuningLoop:
    """The peer as a variant: proxy-tuning's loop, logits ``large + alpha * (expert - antiexpert)``."""

    alpha: float


def load(models: str, device: torch.device, dtype: torch.dtype) -> Models:
    """The chosen family, on ``device`` in ``dtype``."""
    if models in ("demo", "wide"):
        from w2s_generate.demo import load_demo_models, prompts

        demo = load_demo_models(progress=False)
        strong, note = demo.strong.eval(), ""
        if models == "wide":
            strong, note = wide_model(demo)
        tuned = demo.tuned_weak()
        pair_parameters = n_params(tuned)  # the weak base and its adapter, both sides of the pair
        expert = demo.tuned_weak().merge_and_unload().eval()
        tuned = tuned.to(device, dtype)
        return Models(
            strong.to(device, dtype),
            w2s.WeakPair.from_peft(tuned, demo.tokenizer),
            demo.tokenizer,
            prompts(64, seed=0),
            expert.to(device, dtype),
            demo.weak.eval().to(device, dtype),
            pair_parameters,
            note,
        )
    from _models import PROMPTS, make_model, make_tokenizer

    tok = make_tokenizer()
    ids = {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    strong = make_model("gpt2", "strong", len(tok), ids, seed=1).to(device, dtype)
    tuned = make_model("gpt2", "weak", len(tok), ids, seed=2).to(device, dtype)
    untuned = make_model("gpt2", "weak", len(tok), ids, seed=3).to(device, dtype)
    return Models(
        strong,
        w2s.WeakPair(tuned, untuned, tok),
        tok,
        PROMPTS * 16,
        tuned,
        untuned,
        n_params(tuned) + n_params(untuned),
    )


def wide_model(demo):
    """``(model, note)``: the demo's strong model widened to >= 100M parameters, checked (float32, on
    the CPU) to compute the same logits."""
    from _wide_models import WIDE, check_same_function, widen

    from w2s_generate.demo import prompts

    wide = widen(demo.strong, WIDE["hidden"], WIDE["intermediate"], WIDE["layers"])
    inputs = demo.tokenizer(prompts(4, seed=2), return_tensors="pt", padding=True)
    difference = check_same_function(demo.strong.eval(), wide, inputs)
    config = wide.config
    note = (
        f"wide large model: Llama, hidden {config.hidden_size}, intermediate {config.intermediate_size}, "
        f"{config.num_attention_heads} heads of {config.head_dim}, {config.num_hidden_layers} layers; "
        f"its logits match the demo strong model's within {difference:.1e} on 4 prompts (float32)"
    )
    return wide, note


def counts(m: Models, at_most: float | None) -> str:
    """The parameter counts of the large model and the pair; the pair's share checked ``<= at_most``."""
    large = n_params(m.strong)
    share = m.pair_parameters / large
    if at_most is not None and share > at_most:
        raise AssertionError(
            f"the pair has {share:.3f} of the large model's parameters (more than {at_most})"
        )
    return f"parameters: large model {large:,}; pair {m.pair_parameters:,} ({share:.4f} of the large model)"


def ratio(runs: list[float], others: list[float]) -> float:
    """The median over repeats of one variant's time against another's in the same repeat.

    Interleaved runs of one repeat share the machine's load of the moment, so their ratio is steadier
    than the ratio of two medians when other work comes and goes.
    """
    return statistics.median(a / b for a, b in zip(runs, others))


@dataclass
class Run:
    """One timed call: wall time, what it wrote and what it cost."""

    seconds: float
    tokens: int  # response tokens written, EOS and padding excluded
    steps: int  # decoding steps of the batch (undrafted loops: one large forward each, prefill included)
    forwards: int  # large-model forwards
    drafted: int = 0
    accepted: int = 0


def run(m: Models, inputs, kwargs, strategy, seed: int) -> Run:
    """One ``generate`` call with ``strategy`` (``None``: plain sampling)."""
    device = inputs["input_ids"].device
    torch.manual_seed(seed)
    synchronize(device)
    start = time.perf_counter()
    out = m.strong.generate(**inputs, **kwargs, custom_generate=strategy, return_dict_in_generate=True)
    synchronize(device)
    seconds = time.perf_counter() - start
    response = out.sequences[:, inputs["input_ids"].shape[1] :]
    eos = torch.tensor(kwargs["eos_token_id"], device=device)
    tokens = int(((response != kwargs["pad_token_id"]) & ~torch.isin(response, eos)).sum())
    steps = response.shape[1]
    return Run(
        seconds,
        max(tokens, 1),
        steps,
        getattr(out, "large_forwards", None) or steps,
        getattr(out, "drafted", 0) or 0,
        getattr(out, "accepted", 0) or 0,
    )


def run_peer(m: Models, inputs, like: Run, alpha: float, seed: int, temperature: float) -> Run:
    """Proxy-tuning's loop for as many steps as the run ``like`` took, credited with its tokens.

    The loop has no end-of-sequence check: running it for the steps token guidance took in the same
    repeat (prefill included) makes the two loops' work equal, and their times comparable. It samples
    at the same temperature, through its processors as the published loop takes them.
    """
    from bench_token_guidance import proxy_tuning
    from transformers import LogitsProcessorList, TemperatureLogitsWarper

    device = inputs["input_ids"].device
    torch.manual_seed(seed)
    synchronize(device)
    start = time.perf_counter()
    warper = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    proxy_tuning(
        m.strong, m.expert, m.antiexpert, inputs, like.steps, alpha, 50, greedy=False, logits_processor=warper
    )
    synchronize(device)
    return Run(time.perf_counter() - start, like.tokens, like.steps, like.steps)


def sampling(args, tok) -> dict:
    """The sampling settings every timed variant shares: temperature 0.7, top-k 50, EOS and padding."""
    return dict(
        do_sample=True,
        temperature=0.7,
        top_k=50,
        max_new_tokens=args.new_tokens,
        eos_token_id=[tok.eos_token_id],
        pad_token_id=tok.pad_token_id,
    )


def timing(args, m: Models) -> None:
    tok = m.tokenizer
    kwargs = sampling(args, tok)
    checkpoints = w2s.WeakPair(m.expert, m.antiexpert, tok)
    print(
        f"{args.new_tokens} new tokens, temperature 0.7, top-k 50, beta {args.beta}, median of {args.repeats}"
    )
    print()
    print("| batch | variant | ms / token | large forwards / token | drafts kept | vs plain | vs no drafts |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    summary = []
    for batch in args.batches:
        inputs = tok(m.prompts[:batch], return_tensors="pt", padding=True).to(args.device)
        variants = {
            "plain sampling": None,
            "token guidance": w2s.TokenGuidance(m.pair, args.beta),
            "token guidance, two checkpoints": w2s.TokenGuidance(checkpoints, args.beta),
            PEER: ProxyTuningLoop(args.beta),
        }
        for gamma in args.gammas:
            variants[f"drafted, G={gamma}"] = w2s.TokenGuidance(m.pair, args.beta, draft_tokens=gamma)

        results: dict[str, list[Run]] = {name: [] for name in variants}
        with torch.no_grad():
            for repeat in range(-1, args.repeats):  # -1: the warm-up
                latest = {}
                for name, strategy in variants.items():
                    seed = max(repeat, 0)
                    if isinstance(strategy, ProxyTuningLoop):
                        latest[name] = run_peer(
                            m, inputs, latest["token guidance"], strategy.alpha, seed, kwargs["temperature"]
                        )
                    else:
                        latest[name] = run(m, inputs, kwargs, strategy, seed)
                    if repeat >= 0:
                        results[name].append(latest[name])
        per_run = {n: [1000 * r.seconds / r.tokens for r in rs] for n, rs in results.items()}  # ms / token
        ms = {n: statistics.median(runs) for n, runs in per_run.items()}

        def vs(name: str, other: str, per_run: dict = per_run) -> float:
            return ratio(per_run[name], per_run[other])

        for name, rs in results.items():
            forwards = sum(r.forwards for r in rs) * batch / sum(r.tokens for r in rs)
            drafted, accepted = sum(r.drafted for r in rs), sum(r.accepted for r in rs)
            kept = f"{accepted / drafted:.2f}" if drafted else ""
            print(
                f"| {batch} | {name} | {ms[name]:.2f} | {forwards:.2f} | {kept} | "
                f"{vs(name, 'plain sampling'):.2f}x | {vs(name, 'token guidance'):.2f}x |"
            )
        best = min((n for n in ms if n.startswith("drafted")), key=lambda n: vs(n, "plain sampling"))
        summary.append(
            f"batch {batch}: best drafted ({best}) {vs(best, 'plain sampling'):.2f}x plain sampling; "
            f"token guidance {vs('token guidance', PEER):.2f}x proxy-tuning's loop "
            f"(over the same two checkpoints: {vs('token guidance, two checkpoints', PEER):.2f}x)"
        )
    print()
    for line in summary:
        print(line)


def loop_timing(args, m: Models) -> None:
    """``--loops``: undrafted ``TokenGuidance`` over the two checkpoints in its own loop and in
    transformers' loop, in a shuffled order each repeat, then the peer for as many steps."""
    import random

    from bench_token_guidance import in_transformers_loop, paired_line

    tok = m.tokenizer
    kwargs = sampling(args, tok)
    strategy = w2s.TokenGuidance(w2s.WeakPair(m.expert, m.antiexpert, tok), args.beta)

    def builtin(inputs, seed: int) -> Run:
        with in_transformers_loop():
            return run(m, inputs, kwargs, strategy, seed)

    loops = {
        "own loop": lambda inputs, seed: run(m, inputs, kwargs, strategy, seed),
        "transformers' loop": builtin,
    }
    print(
        f"{args.new_tokens} new tokens, temperature 0.7, top-k 50, beta {args.beta}, {args.repeats} shuffled repeats"
    )
    for batch in args.batches:
        inputs = tok(m.prompts[:batch], return_tensors="pt", padding=True).to(args.device)
        per_step: dict[str, list[float]] = {name: [] for name in [*loops, PEER]}
        with torch.no_grad():
            for repeat in range(-1, args.repeats):  # -1: the warm-up
                seed = max(repeat, 0)
                order = list(loops)
                random.Random(repeat).shuffle(order)
                runs = {name: loops[name](inputs, seed) for name in order}
                if runs["own loop"].steps != runs["transformers' loop"].steps:
                    raise RuntimeError("the two loops decoded different tokens")
                runs[PEER] = run_peer(m, inputs, runs["own loop"], args.beta, seed, kwargs["temperature"])
                if repeat >= 0:
                    for name, r in runs.items():
                        per_step[name].append(1000 * r.seconds / r.steps)
        print(
            f"batch {batch}: "
            + ", ".join(f"{n} {statistics.median(t):.2f} ms/step" for n, t in per_step.items())
        )
        for name, other in [
            ("own loop", PEER),
            ("transformers' loop", PEER),
            ("own loop", "transformers' loop"),
        ]:
            print(f"  {paired_line(per_step, name, other)}")


@contextlib.contextmanager
def drafting_sources():
    """The candidate sources the drafted searches inside the block create (for their ``drafted`` and
    ``accepted`` counters, which the search's output does not carry)."""
    from w2s_generate.drafted_source import DraftedModelSource

    made = []
    init = DraftedModelSource.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    DraftedModelSource.__init__ = recording_init
    try:
        yield made
    finally:
        DraftedModelSource.__init__ = init


def gold_rewards(args, m: Models, strategies: dict, new_kwargs: dict, sequences) -> None:
    """One markdown row per strategy: the mean gold reward over ``--prompts`` prompts for each seed,
    their mean and their sample standard deviation."""
    from w2s_generate.demo import gold_reward, prompts

    tok = m.tokenizer
    inputs = tok(prompts(args.prompts, seed=1), return_tensors="pt", padding=True).to(args.device)
    kwargs = dict(
        do_sample=True,
        temperature=0.7,
        top_k=50,
        max_new_tokens=40,
        pad_token_id=tok.pad_token_id,
        **new_kwargs,
    )
    seeds = range(args.seeds)
    print("| variant | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean | sd |")
    print("|---|" + "---:|" * (len(seeds) + 2))
    for name, strategy in strategies.items():
        rewards = []
        for seed in seeds:
            torch.manual_seed(seed)
            with torch.no_grad():
                out = m.strong.generate(**inputs, **kwargs, custom_generate=strategy)
            decoded = tok.batch_decode(sequences(out), skip_special_tokens=True)
            rewards.append(statistics.mean(gold_reward(t) for t in decoded))
        print(
            f"| {name} | "
            + " | ".join(f"{r:+.3f}" for r in rewards)
            + f" | {statistics.mean(rewards):+.3f} | {statistics.stdev(rewards) if len(rewards) > 1 else 0.0:.3f} |"
        )


def quality(args, m: Models) -> None:
    print()
    print(f"gold reward over {args.prompts} prompts, 40 new tokens, beta {args.beta}")
    strategies = {
        "token guidance": w2s.TokenGuidance(m.pair, args.beta),
        f"drafted, G={max(args.gammas)}": w2s.TokenGuidance(m.pair, args.beta, draft_tokens=max(args.gammas)),
    }
    gold_rewards(args, m, strategies, {}, lambda out: out)


def chunk_timing(args, m: Models) -> None:
    """Chunk-level search with and without drafting: wall time, large forwards per sampled token, reward."""
    tok = m.tokenizer
    kwargs = sampling(args, tok) | dict(return_dict_in_generate=True)
    longest = max(args.gammas)
    shape = (args.width, args.successors, args.chunk_length)
    label = "W={} K={} L={}".format(*shape)
    print()
    print(f"chunk-level search {label}, {args.new_tokens} new tokens, median of {args.repeats}")
    print()
    print("| prompts | variant | s / call | large forwards / candidate token | drafts kept | vs undrafted |")
    print("|---:|---|---:|---:|---:|---:|")
    summary = []
    for batch in args.batches:
        inputs = tok(m.prompts[:batch], return_tensors="pt", padding=True).to(args.device)
        variants = {"CBS": w2s.ChunkBeamSearch(m.pair, *shape)}
        for gamma in args.gammas:
            variants[f"drafted, G={gamma}"] = w2s.ChunkBeamSearch(m.pair, *shape, draft_tokens=gamma)
        variants[f"drafted, G={longest}, from the untuned side"] = w2s.ChunkBeamSearch(
            m.pair, *shape, draft_tokens=longest, draft_from="untuned"
        )
        seconds = {name: [] for name in variants}
        per_token = {name: [] for name in variants}
        kept = {name: [0, 0] for name in variants}  # drafted, accepted
        device = inputs["input_ids"].device
        with torch.no_grad():
            for strategy in variants.values():  # warm-up
                m.strong.generate(**inputs, **kwargs, custom_generate=strategy)
            for repeat in range(args.repeats):
                for name, strategy in variants.items():
                    torch.manual_seed(repeat)
                    with drafting_sources() as sources:
                        synchronize(device)
                        start = time.perf_counter()
                        out = m.strong.generate(**inputs, **kwargs, custom_generate=strategy)
                        synchronize(device)
                        seconds[name].append(time.perf_counter() - start)
                    # Forwards per token of one candidate: each forward serves all W*K rows of a prompt.
                    per_token[name].append(
                        args.width
                        * args.successors
                        * sum(out.cost.large_forwards)
                        / max(sum(out.cost.large_tokens), 1)
                    )
                    kept[name][0] += sum(int(source.drafted) for source in sources)
                    kept[name][1] += sum(int(source.accepted) for source in sources)
        for name in variants:
            median = statistics.median(seconds[name])
            drafted, accepted = kept[name]
            share = f"{accepted / drafted:.2f}" if drafted else ""
            print(
                f"| {batch} | {name} | {median:.2f} | {statistics.mean(per_token[name]):.3f} | {share} | "
                f"{ratio(seconds[name], seconds['CBS']):.2f}x |"
            )
        best = min(
            (name for name in variants if name != "CBS"), key=lambda n: ratio(seconds[n], seconds["CBS"])
        )
        summary.append(f"{batch} prompt(s): best {best} {ratio(seconds[best], seconds['CBS']):.2f}x CBS")
    print()
    for line in summary:
        print(line)
    if not args.quality:
        return
    print()
    print(f"gold reward of CBS {label} over {args.prompts} prompts, 40 new tokens")
    strategies = {
        "CBS": w2s.ChunkBeamSearch(m.pair, *shape),
        f"drafted, G={longest}": w2s.ChunkBeamSearch(m.pair, *shape, draft_tokens=longest),
        f"drafted, G={longest}, from the untuned side": w2s.ChunkBeamSearch(
            m.pair, *shape, draft_tokens=longest, draft_from="untuned"
        ),
    }
    gold_rewards(args, m, strategies, {"return_dict_in_generate": True}, lambda out: out.sequences)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", choices=["demo", "wide", "random"], default="demo")
    parser.add_argument(
        "--gammas", type=int, nargs="+", default=None, help="draft lengths (2 4 8; wide: 2 4 6 8)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (1 8; wide: 1 4)")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument(
        "--quality", action="store_true", help="gold reward with and without drafts (demo, wide)"
    )
    parser.add_argument("--prompts", type=int, default=64, help="prompts of the --quality run")
    parser.add_argument(
        "--seeds", type=int, default=3, help="sampling seeds of the --quality run (0, 1, ...)"
    )
    parser.add_argument("--chunk", action="store_true", help="chunk-level search with and without drafting")
    parser.add_argument(
        "--loops",
        action="store_true",
        help="undrafted TokenGuidance in its own loop and in transformers' loop against the peer",
    )
    parser.add_argument("--width", type=int, default=4, help="--chunk: beams W (default 4)")
    parser.add_argument(
        "--successors", type=int, default=4, help="--chunk: successors per beam K (default 4)"
    )
    parser.add_argument("--chunk-length", type=int, default=5, help="--chunk: chunk length L (default 5)")
    args = parser.parse_args(argv)
    wide = args.models == "wide"
    args.gammas = args.gammas or ([2, 4, 6, 8] if wide else [2, 4, 8])
    args.batches = args.batches or ([1, 4] if wide else [1, 8])
    if args.quality and args.models == "random":
        parser.error("--quality needs the demo task's gold reward: use --models demo or wide")
    if args.threads:
        torch.set_num_threads(args.threads)
    m = load(args.models, torch.device(args.device), getattr(torch, args.dtype))
    load_average = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(
        f"# drafted guidance ({args.models} models), torch {torch.__version__}, device {args.device}, "
        f"dtype {args.dtype}, {torch.get_num_threads()} threads, {os.cpu_count()} cores{load_average}"
    )
    if m.note:
        print(m.note)
    print(counts(m, at_most=0.1 if args.models == "wide" else None))
    if args.chunk:
        chunk_timing(args, m)
    elif args.loops:
        loop_timing(args, m)
    else:
        timing(args, m)
        if args.quality:
            quality(args, m)
    print()
    if hasattr(os, "getloadavg"):
        print(f"load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("command: python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv]))


if __name__ == "__main__":
    main()
