"""Per-token overhead of token-level weak-to-strong guidance against plain ``generate``.

What is measured
----------------
A strong causal LM samples ``--new-tokens`` tokens for ``--batch`` prompts with
``model.generate(do_sample=True, min_new_tokens=N, max_new_tokens=N)`` (equal lengths in every run),
three ways:

1. **plain**: ``generate`` alone;
2. **guided, two checkpoints**: with ``w2s.WeakToStrongLogitsProcessor`` over
   ``w2s.WeakPair(tuned, untuned, tokenizer)``, two separate weak models;
3. **guided, LoRA pair**: with the processor over ``w2s.WeakPair.from_peft(...)``, one weak base
   plus a LoRA adapter (``init_lora_weights=False``, so the adapter is not a no-op); both sides run in
   one mixed-batch forward.

Beside them: ``TokenGuidance`` (the strategy spelling), the pair's own cached forwards (with plain
``generate``, the floor), and proxy-tuning's loop, the peer (see ``proxy_tuning``), as published
(end-of-sequence bookkeeping, ``min_new_tokens`` through its processors) and bare ("no EOS"). Besides
the ratio of the medians, ``TokenGuidance``'s median per-repeat ratio to each peer row is printed.

The strong model has about 10x the parameters of one weak model. The exact counts are printed, with
the ratio a pure parameter-count (FLOP) model predicts for guided/plain: ``1 + 2 * weak / strong``
(each step runs the strong model once and the weak model on twice the rows). The measured ratio also
holds what that model leaves out: per-step Python work of the processor, the log-softmax over the
vocabulary for three models, the KV-cache bookkeeping of the weak side, and, for small models on a
CPU, per-layer call overhead that does not shrink with the width.

Every model is built from a config with random weights (nothing is downloaded); the tokenizer is a
byte-level BPE trained in-script on a synthetic text to a vocabulary of a few thousand tokens, so the
LM head and the vocabulary-wide operations have a realistic-ish size. The prompt (and the weak side's
prefill) is inside the timed region of every run.

The runs are interleaved (plain, two-checkpoint, LoRA, plain, ...) after one warm-up run of each, and
the median over ``--repeats`` is reported as milliseconds per generated token, i.e. wall time divided
by ``--new-tokens`` (one decoding step produces one token for each of the ``--batch`` rows), and as
throughput (``batch * new_tokens / time``). A markdown table for the docs and the exact command line
are printed at the end.

How to run
----------
::

    python benchmarks/bench_token_guidance.py                      # GPT-2 family, CPU, float32
    python benchmarks/bench_token_guidance.py --family llama
    python benchmarks/bench_token_guidance.py --batch 8 --new-tokens 128 --repeats 5
    python benchmarks/bench_token_guidance.py --device cuda --dtype bfloat16
    python benchmarks/bench_token_guidance.py --loops --no-lora --threads 2 --repeats 21

``--loops`` times only ``TokenGuidance`` in its own decoding loop, the same in transformers' loop and
the peer, in a fresh random order each repeat, and prints each pair's median per-repeat ratio.
    python benchmarks/bench_token_guidance.py --device cuda --dtype bfloat16 --family gpt2-large

The ``-large`` families (strong ~0.45B, weak ~40M parameters) are for a GPU, where the default
sizes are so small that kernel-launch overhead, not arithmetic, sets every time.

The default run takes well under two minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
from _models import PROMPTS, SIZES, describe, make_model, make_tokenizer, n_params, synchronize
from peft import LoraConfig, get_peft_model
from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor

import w2s_generate as w2s
from w2s_generate._compat import forward_with_cache  # the cache keyword of this transformers

LORA_TARGETS = {"gpt2": ["c_attn", "c_proj"], "llama": ["q_proj", "v_proj"]}


# ---------------------------------------------------------------------- the floor and the peer
def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def pair_forwards(models: list, inputs: dict, new_tokens: int) -> None:
    """The weak pair's own work and nothing else: each model prefills the prompts, then every step
    each takes one one-token step from its KV cache (in turn, as any token-level guidance must; the
    tokens are the first model's greedy choices)."""
    from transformers import DynamicCache

    caches = [DynamicCache(config=model.config) for model in models]
    mask = inputs["attention_mask"]
    step_ids, positions = inputs["input_ids"], _positions(mask)
    for _ in range(new_tokens + 1):
        outs = [
            forward_with_cache(model, step_ids, mask, cache, position_ids=positions, logits_to_keep=1)
            for model, cache in zip(models, caches)
        ]
        step_ids = outs[0].logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1


@torch.no_grad()
def proxy_tuning(
    base,
    expert,
    antiexpert,
    inputs: dict,
    new_tokens: int,
    alpha: float,
    top_k: int,
    greedy: bool,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
    logits_processor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Proxy-tuning's decoding loop (Liu et al., 2024, arXiv 2401.08565), re-implemented from its
    published code (``modeling/dexperts.py``): three models, each with its own KV cache, one forward
    each per step; next-token logits ``base + alpha * (expert - antiexpert)``, then top-k and sampling
    (or argmax).

    With ``eos_token_id``, also the published loop's end-of-sequence bookkeeping: rows that wrote it
    write the pad id from then on, and the loop stops once every row has (one host read a step); with
    ``logits_processor``, its processors run on the combined logits before top-k, as published.
    Left out either way: the published loop's ``prepare_inputs_for_generation`` call per model and
    step, which is transformers-version specific (the caches are driven directly here)."""
    from transformers import DynamicCache

    models = [base, expert, antiexpert]
    caches = [DynamicCache(config=m.config) for m in models]
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    step_ids, positions = ids, _positions(mask)
    unfinished = torch.ones(ids.shape[0], dtype=torch.long, device=ids.device)
    eos = None if eos_token_id is None else torch.tensor([eos_token_id], device=ids.device)
    for _ in range(new_tokens):
        logits = [
            forward_with_cache(m, step_ids, mask, c, position_ids=positions, logits_to_keep=1).logits[:, -1]
            for m, c in zip(models, caches)
        ]
        scores = logits[0] + alpha * (logits[1] - logits[2])
        if logits_processor is not None:
            scores = logits_processor(ids, scores)
        if greedy:
            token = scores.argmax(-1)
        else:
            kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, -float("inf"))
            token = torch.multinomial(torch.softmax(scores, dim=-1), 1).squeeze(1)
        if eos is not None:
            token = token * unfinished + pad_token_id * (1 - unfinished)
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(token[:, None])], dim=1)
        step_ids, positions = token[:, None], mask.sum(-1, keepdim=True) - 1
        if eos is not None:
            unfinished = unfinished.mul(token.tile(eos.shape[0], 1).ne(eos.unsqueeze(1)).prod(dim=0))
            if unfinished.max() == 0:
                break
    return ids


# ---------------------------------------------------------------------- own loop against transformers'
@contextlib.contextmanager
def in_transformers_loop():
    """While open, ``TokenGuidance`` decodes in transformers' loop: the gate that sends greedy decoding
    and sampling to its own loop answers no. Only for timing the two loops side by side."""
    from w2s_generate import generate as strategies

    gate = strategies.own_loop_applies
    strategies.own_loop_applies = lambda *args, **kwargs: False
    try:
        yield
    finally:
        strategies.own_loop_applies = gate


def paired_line(times: dict[str, list[float]], name: str, other: str) -> str:
    """``name``'s time over ``other``'s in the same repeat: the median, and how often it was below 1."""
    ratios = [a / b for a, b in zip(times[name], times[other])]
    below = sum(r < 1 for r in ratios)
    return f"{name} / {other}: x{statistics.median(ratios):.3f} (below 1 in {below} of {len(ratios)} repeats)"


def shuffled_repeats(
    variants: dict[str, Callable[[], object]], repeats: int, seed: int
) -> dict[str, list[float]]:
    """Seconds of each variant in each repeat; every repeat runs them all in a fresh random order, so
    that none always runs after the same other (on two cores a run warms or slows the next)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        order = list(variants)
        random.Random(repeat).shuffle(order)
        for name in order:
            torch.manual_seed(seed)
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def compare_loops(strong, pair, tuned, untuned, inputs, gen_kwargs, peer_kwargs, args) -> None:
    """``--loops``: ``TokenGuidance`` in its own loop and in transformers', and the peer, shuffled."""
    strategy = w2s.TokenGuidance(pair, beta=args.beta)

    def builtin():
        with in_transformers_loop():
            return strong.generate(**inputs, **gen_kwargs, custom_generate=strategy)

    variants = {
        "own loop": lambda: strong.generate(**inputs, **gen_kwargs, custom_generate=strategy),
        "transformers' loop": builtin,
        "proxy-tuning loop (peer)": lambda: proxy_tuning(strong, tuned, untuned, inputs, **peer_kwargs),
    }
    with torch.no_grad():
        torch.manual_seed(args.seed)
        own = variants["own loop"]()
        torch.manual_seed(args.seed)
        if not torch.equal(own, builtin()):
            raise RuntimeError("TokenGuidance's own loop and transformers' loop decoded different tokens")
        variants["proxy-tuning loop (peer)"]()  # warm-up
        times = shuffled_repeats(variants, args.repeats, args.seed)
    n = args.new_tokens
    print(f"TokenGuidance over two checkpoints, {args.repeats} shuffled repeats (same tokens in both loops)")
    for name, runs in times.items():
        print(f"{name:<26} {1000 * statistics.median(runs) / n:8.2f} ms/token (median)")
    for name, other in [("own loop", "proxy-tuning loop (peer)"), ("transformers' loop", "proxy-tuning loop (peer)"),
                        ("own loop", "transformers' loop")]:  # fmt: skip
        print(paired_line(times, name, other))


# ---------------------------------------------------------------------- timing
def timed(run: Callable[[], torch.Tensor], device: torch.device, seed: int) -> tuple[float, torch.Tensor]:
    torch.manual_seed(seed)
    synchronize(device)
    start = time.perf_counter()
    out = run()
    synchronize(device)
    return time.perf_counter() - start, out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=sorted(SIZES), default="gpt2", help="model family (default gpt2)")
    parser.add_argument("--batch", type=int, default=4, help="prompts per generate call (default 4)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="weights dtype"
    )
    parser.add_argument("--beta", type=float, default=1.0, help="guidance strength (default 1.0)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of top-k 50 sampling")
    parser.add_argument("--no-lora", action="store_true", help="skip the LoRA-pair variant")
    parser.add_argument(
        "--loops",
        action="store_true",
        help="only TokenGuidance in its own loop, in transformers' loop and the peer, in shuffled order",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of every run (default 0)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.new_tokens < 1 or args.repeats < 1:
        parser.error("--batch, --new-tokens and --repeats must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    family = args.family

    tok = make_tokenizer()
    vocab = len(tok)
    ids = {
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }

    strong = make_model(family, "strong", vocab, ids, seed=1).to(device, dtype)
    tuned = make_model(family, "weak", vocab, ids, seed=2).to(device, dtype)
    untuned = make_model(family, "weak", vocab, ids, seed=3).to(device, dtype)
    lora_base = make_model(family, "weak", vocab, ids, seed=3)
    torch.manual_seed(4)
    lora_config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=LORA_TARGETS[family.split("-")[0]],
        init_lora_weights=False,  # random A and B: the adapter changes the outputs, as a tuned one would
        fan_in_fan_out=family == "gpt2",  # GPT-2's Conv1D stores weights transposed
    )
    with warnings.catch_warnings():  # peft reads a deprecated transformers property; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(lora_base, lora_config)
    peft_model = peft_model.to(device, dtype).eval()

    two_checkpoints = w2s.WeakPair(tuned, untuned, tok)
    lora_pair = w2s.WeakPair.from_peft(peft_model, tok)
    guided_two = w2s.WeakToStrongLogitsProcessor(two_checkpoints, beta=args.beta, strong_tokenizer=tok)
    guided_lora = w2s.WeakToStrongLogitsProcessor(lora_pair, beta=args.beta, strong_tokenizer=tok)

    n_strong, n_weak = n_params(strong), n_params(untuned)
    n_lora = sum(p.numel() for name, p in peft_model.named_parameters() if "lora_" in name)
    theory = 1 + 2 * n_weak / n_strong

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    inputs = tok(prompts, return_tensors="pt", padding=True).to(device)
    n = args.new_tokens
    gen_kwargs = {
        "do_sample": not args.greedy,
        "min_new_tokens": n,
        "max_new_tokens": n,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    if not args.greedy:
        gen_kwargs.update(temperature=1.0, top_k=50)
    # The same settings for the peer: min_new_tokens through its logits_processor argument.
    peer_min_new = LogitsProcessorList(
        [MinNewTokensLengthLogitsProcessor(inputs["input_ids"].shape[1], n, tok.eos_token_id, device=device)]
    )

    if args.loops:
        peer_kwargs = dict(
            new_tokens=n,
            alpha=args.beta,
            top_k=50,
            greedy=args.greedy,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            logits_processor=peer_min_new,
        )
        compare_loops(strong, two_checkpoints, tuned, untuned, inputs, gen_kwargs, peer_kwargs, args)
        return

    variants: dict[str, Callable[[], torch.Tensor | None]] = {
        "plain generate": lambda: strong.generate(**inputs, **gen_kwargs),
        "pair's own cached forwards": lambda: pair_forwards([tuned, untuned], inputs, n),
        "guided, two checkpoints": lambda: strong.generate(
            **inputs, **gen_kwargs, logits_processor=[guided_two]
        ),
        "guided, TokenGuidance": lambda: strong.generate(
            **inputs, **gen_kwargs, custom_generate=w2s.TokenGuidance(two_checkpoints, beta=args.beta)
        ),
        "proxy-tuning loop (peer)": lambda: proxy_tuning(
            strong,
            tuned,
            untuned,
            inputs,
            n,
            args.beta,
            50,
            args.greedy,
            tok.eos_token_id,
            tok.pad_token_id,
            peer_min_new,
        ),
        "proxy-tuning loop, no EOS": lambda: proxy_tuning(
            strong, tuned, untuned, inputs, n, args.beta, 50, args.greedy
        ),
    }
    if not args.no_lora:
        variants["guided, LoRA pair"] = lambda: strong.generate(
            **inputs, **gen_kwargs, logits_processor=[guided_lora]
        )

    print(f"# token-level guidance overhead ({family})")
    print(
        f"torch {torch.__version__}, device {device}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}"
    )
    if hasattr(os, "getloadavg"):
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        busy = "  <- other processes share the CPU: timings are noisy" if load > 0.5 * cores else ""
        print(f"load average {load:.2f} on {cores} cores before the run{busy}")
    print(f"vocabulary: {vocab} tokens (byte-level BPE trained in-script)")
    print(f"strong: {n_strong:>12,} parameters  {describe(family, 'strong')}")
    print(f"weak:   {n_weak:>12,} parameters  {describe(family, 'weak')}  (each of the two checkpoints)")
    print(
        f"LoRA:   {n_lora:>12,} adapter parameters on one weak base (r=8, {', '.join(LORA_TARGETS[family.split('-')[0]])})"
    )
    print(f"strong/weak parameter ratio: {n_strong / n_weak:.2f}x")
    mode = "greedy" if args.greedy else "sampling (top-k 50)"
    print(
        f"batch {args.batch}, {n} new tokens per row, {mode}, {args.repeats} timed runs per variant + 1 warm-up"
    )
    print()

    prompt_width = inputs["input_ids"].shape[1]
    with torch.no_grad():
        for name, run in variants.items():  # warm-up
            _, out = timed(run, device, args.seed)
            if out is not None and out.shape != (args.batch, prompt_width + n):
                raise RuntimeError(
                    f"{name}: generated shape {tuple(out.shape)}, expected {(args.batch, prompt_width + n)}"
                )
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():  # interleaved
                seconds, _ = timed(run, device, args.seed)
                times[name].append(seconds)

    ms = {name: 1000 * statistics.median(t) / n for name, t in times.items()}
    spread = {name: (1000 * min(t) / n, 1000 * max(t) / n) for name, t in times.items()}
    base = ms["plain generate"]
    floor = base + ms["pair's own cached forwards"]
    peer = ms["proxy-tuning loop (peer)"]
    for name in variants:
        low, high = spread[name]
        print(
            f"{name:<28} {ms[name]:8.2f} ms/token (median; runs {low:.2f}-{high:.2f})   "
            f"x{ms[name] / base:.2f} vs plain   x{ms[name] / floor:.2f} vs floor"
        )
    print(f"floor = plain generate + the pair's own cached forwards: {floor:.2f} ms/token")
    for name in ("guided, two checkpoints", "guided, TokenGuidance"):
        print(f"{name}: x{ms[name] / floor:.3f} of the floor, x{ms[name] / peer:.3f} of proxy-tuning's loop")
    # Each repeat runs every variant back to back: the median of the per-repeat ratios cancels the
    # machine's drift between repeats, which the ratio of the medians does not.
    for peer_name in ("proxy-tuning loop (peer)", "proxy-tuning loop, no EOS"):
        paired = statistics.median(a / b for a, b in zip(times["guided, TokenGuidance"], times[peer_name]))
        print(f"guided, TokenGuidance / {peer_name}, median of the {args.repeats} paired runs: x{paired:.3f}")
    print(f"theoretical from parameter counts, 1 + 2*weak/strong: {theory:.2f}")
    print()

    command = "python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv])
    explicit = (
        f"python benchmarks/bench_token_guidance.py --family {family} --batch {args.batch} "
        f"--new-tokens {n} --repeats {args.repeats} --device {args.device} --dtype {args.dtype} "
        f"--beta {args.beta:g} --seed {args.seed}"
        + (f" --threads {args.threads}" if args.threads else "")
        + (" --greedy" if args.greedy else "")
        + (" --no-lora" if args.no_lora else "")
    )
    print(
        f"{family}: strong {n_strong / 1e6:.1f}M vs weak {n_weak / 1e6:.2f}M parameters "
        f"({n_strong / n_weak:.1f}x), vocabulary {vocab}, batch {args.batch}, {n} new tokens, "
        f"{device} {args.dtype}, {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print()
    print("| variant | ms / token | tokens / s | vs plain | vs floor | vs proxy-tuning |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in variants:
        print(
            f"| {name} | {ms[name]:.2f} | {args.batch * 1000 / ms[name]:.1f} | {ms[name] / base:.2f}x "
            f"| {ms[name] / floor:.2f}x | {ms[name] / peer:.2f}x |"
        )
    print(
        f"| floor (plain + pair's forwards) | {floor:.2f} | | {floor / base:.2f}x | 1.00x | {floor / peer:.2f}x |"
    )
    print(f"| theoretical (1 + 2·weak/strong) | | | {theory:.2f}x | | |")
    print()
    print(
        f"ms / token: median wall time of one generate call / {n} new tokens (each step samples {args.batch} rows)."
    )
    print()
    print(f"command: {command}")
    print(f"same as: {explicit}")


if __name__ == "__main__":
    main()
