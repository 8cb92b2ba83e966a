"""Chunk-level beam search (CBS) against plain sampling of the same number of sequences plus one scoring.

What is measured
----------------
A strong causal LM (about 10x the parameters of one weak model; the exact counts are printed) and a
weak pair (two weak checkpoints, ``w2s.WeakPair(tuned, untuned, tokenizer)``) share one vocabulary.
For ``--batch`` prompts, side by side in one run:

(a) **CBS**: ``model.generate(**inputs, custom_generate=w2s.ChunkBeamSearch(pair, W, K, L),
    do_sample=True, min_new_tokens=N, max_new_tokens=N)``: every round each of the ``W`` beams of a
    prompt samples ``K`` chunks of ``L`` tokens, the pair scores all ``W*K`` candidates, the best ``W``
    survive; ``N`` new tokens per beam.
(b) **reference**: ``model.generate(do_sample=True, num_return_sequences=W*K, min_new_tokens=N,
    max_new_tokens=N)`` (the same ``B*W*K`` rows sampled to the same length, no search) **plus**
    ``pair.score`` of those ``W*K`` sequences per prompt once, at the end.

The headline is the ratio (a)/(b) at ``W=K=4, L=8, N=128`` (target <= 1.05). EOS cannot end a row
early in either run (``min_new_tokens=N``); the script checks from the search trace that every
surviving CBS beam holds exactly ``N`` tokens, and that every run returns ``prompt + N`` columns.

Also measured:

* **time vs length**: (a) and (b) at ``--lengths`` (default 32, 64, 128, 256 new tokens): seconds,
  ms per token and the growth from one length to the next (``time(256)/time(128)`` etc.). CBS must
  stay about linear, i.e. grow like the reference (both grow slightly faster than linear, as attention
  reads a longer cache every step and the dynamic KV cache is re-allocated each step).
* **peak memory**: each variant runs once in a fresh subprocess (same models, same seeds) after a tiny
  warm-up; on CPU the peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` just
  before the run; ``ru_maxrss`` where that is unavailable) minus the resident set before the run; on
  CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the run. Variants: plain
  sampling of ``W*K`` sequences alone, the reference (b), and CBS (a). The probes run with
  ``MALLOC_MMAP_THRESHOLD_=65536`` (unless already set): glibc then maps every large tensor on its own
  and unmaps it when freed, so the resident set follows the live tensors. With glibc's default
  (a threshold that adapts at run time, freed blocks kept in the heap) the same probe read anywhere
  from 110 to 190 MiB for the same run; with the fixed threshold it repeats to within 0.2 MiB.

Cost model
----------
Per prompt, with ``R = ceil(N / L)`` rounds:

* large model: ``B*W*K`` rows per token in both (a) and (b). (a) prefills the ``B`` prompts once
  and re-feeds the last token of the ``B*W`` survivors once per round (``R - 1`` forwards of ``B*W``
  rows in place of ``B*W*K``); (b) prefills ``B*W*K`` copies of the prompts. Both run ``N - 1``
  forwards after the prefill.
* weak pair: 2 sides x ``B*W*K`` rows x ``L`` tokens per round in (a), i.e. the same tokens (b)
  scores in one forward of 2 x ``B*W*K`` rows x ``N`` tokens, but in ``R`` forwards instead of one.
* per round, (a) also re-indexes both KV caches (strong: survivors, then each repeated ``K``
  times; pair: one gather of the 2 x ``B*W*K`` rows) and moves the scores to the host to select the
  survivors (one sync per round).

So by parameter counts (a) and (b) cost about the same (the prediction is printed); what the measured
ratio adds is the per-round work: cache copies, host syncs, the Python selection loop, and the pair's
``R`` small forwards instead of one large one.

Every model is built from a config with random weights (nothing is downloaded); the tokenizer is a
byte-level BPE of a few thousand tokens trained in-script on a synthetic text. Runs are interleaved
(CBS, reference, CBS, ... over every length) after a warm-up of each at the headline and at the
longest length, and medians over ``--repeats`` (headline length) or ``--length-repeats`` (the other
lengths) are reported. A markdown table and the exact command line are printed at the end.

How to run
----------
::

    python benchmarks/bench_chunk_search.py                        # GPT-2 family, CPU, float32, batch 1
    python benchmarks/bench_chunk_search.py --batch 2
    python benchmarks/bench_chunk_search.py --family llama
    python benchmarks/bench_chunk_search.py --threads 1            # a busy 2-core machine: avoids
                                                                   # OpenMP oversubscription
    python benchmarks/bench_chunk_search.py --device cuda --dtype bfloat16
    python benchmarks/bench_chunk_search.py --device cuda --dtype bfloat16 --family gpt2-large
    python benchmarks/bench_chunk_search.py --lengths none --no-memory   # the headline only (~30 s)
    python benchmarks/bench_chunk_search.py --real --threads 2     # real models across tokenizers (~3 min)

``--real`` measures the same two variants on real pretrained models across tokenizers: Gemma-3-270M
(262k SentencePiece vocabulary) steered by a SmolLM2-135M-Instruct LoRA pair (49k byte-level BPE;
r 16 on every linear layer, random non-zero weights: the timing does not depend on what it learned),
``W, K, L = 4, 4, 5``, 30 new tokens, 2 prompts (``--W/--K/--L/--new-tokens`` override). Both come
from packages on the index and are converted to safetensors once (``make install``,
``w2s.real_model_folder``). The reference (b) decodes the sampled ids to text and scores the text
with ``pair.score``, as the search does through its text bridge.

The default run takes about two minutes on two otherwise idle CPU cores. On a CPU that other processes
share, pass ``--threads 1``: two OpenMP threads on an oversubscribed CPU made single runs 5-20x slower
here, which no median of three hides. The ``-large`` families (strong ~0.45B, weak ~40M parameters)
are for a GPU, where the default sizes only measure kernel-launch overhead.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from _models import (
    PROMPTS,
    SIZES,
    describe,
    kv_bytes_per_token,
    make_model,
    make_tokenizer,
    n_params,
    synchronize,
)

import w2s_generate as w2s

MEMORY_VARIANTS = {
    "plain": "plain sampling of W*K sequences",
    "reference": "(b) plain sampling + pair.score",
    "cbs": "(a) CBS",
}


# ---------------------------------------------------------------------- the two variants
class Bench:
    """Models, inputs and the runs (a) and (b), built identically in the parent and in memory probes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        dtype = getattr(torch, args.dtype)
        self.tok = tok = make_tokenizer()
        self.vocab = len(tok)
        ids = {
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
        }
        self.strong = make_model(args.family, "strong", self.vocab, ids, seed=1).to(self.device, dtype)
        self.tuned = make_model(args.family, "weak", self.vocab, ids, seed=2).to(self.device, dtype)
        self.untuned = make_model(args.family, "weak", self.vocab, ids, seed=3).to(self.device, dtype)
        self.pair = w2s.WeakPair(self.tuned, self.untuned, tok)
        self.W, self.K, self.L = args.W, args.K, args.L
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
        self.inputs = tok(prompts, return_tensors="pt", padding=True).to(self.device)
        self.prompt_width = self.inputs["input_ids"].shape[1]
        # The weak side reads each prompt unpadded, exactly as CBS gives it to the pair by default.
        self.weak_prompts = [
            [t for t, m in zip(row, mask) if m]
            for row, mask in zip(self.inputs["input_ids"].tolist(), self.inputs["attention_mask"].tolist())
        ]
        self.sampling = {"do_sample": True, "temperature": 1.0, "top_k": 50}
        self.ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}

    def lengths(self, n: int) -> dict:
        return {"min_new_tokens": n, "max_new_tokens": n}

    def cbs(self, n: int, **extra) -> torch.Tensor:
        """(a) chunk-level beam search, the best hypothesis per prompt."""
        strategy = w2s.ChunkBeamSearch(
            self.pair, beam_width=self.W, successors_per_beam=self.K, chunk_length=self.L
        )
        return self.strong.generate(
            **self.inputs, custom_generate=strategy, **self.sampling, **self.lengths(n), **self.ids, **extra
        )

    def plain(self, n: int) -> torch.Tensor:
        """Plain sampling of W*K sequences per prompt, no search."""
        return self.strong.generate(
            **self.inputs,
            num_return_sequences=self.W * self.K,
            **self.sampling,
            **self.lengths(n),
            **self.ids,
        )

    def score(self, sequences: torch.Tensor) -> torch.Tensor:
        """``pair.score`` of every sampled sequence once (its prompt repeated per sequence)."""
        prompts = [p for p in self.weak_prompts for _ in range(self.W * self.K)]
        return self.pair.score(prompts, sequences[:, self.prompt_width :].tolist())

    def reference(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(b) plain sampling of W*K sequences + one scoring of all of them."""
        sequences = self.plain(n)
        return sequences, self.score(sequences)

    def check_cbs_length(self, n: int) -> int:
        """Run CBS with its trace and assert that every surviving beam holds exactly ``n`` tokens."""
        out = self.cbs(n, num_return_sequences=self.W, return_dict_in_generate=True, return_trace=True)
        expected_rounds = math.ceil(n / self.L)
        if out.trace is None or len(out.trace) != expected_rounds:
            raise AssertionError(f"CBS ran {len(out.trace or [])} rounds; expected {expected_rounds}")
        last = out.trace[-1]
        kept = [r for r, k in zip(last.responses, last.kept.tolist()) if k]
        if len(kept) != self.args.batch * self.W or any(len(r) != n for r in kept):
            raise AssertionError(
                f"CBS beams ended early: kept {len(kept)} beams of lengths {sorted({len(r) for r in kept})}, "
                f"expected {self.args.batch * self.W} beams of {n} tokens"
            )
        if tuple(out.sequences.shape) != (self.args.batch * self.W, self.prompt_width + n):
            raise AssertionError(f"CBS returned shape {tuple(out.sequences.shape)}")
        return len(out.trace)

    def check_shape(self, name: str, out: torch.Tensor, rows: int, n: int) -> None:
        if tuple(out.shape) != (rows, self.prompt_width + n):
            raise AssertionError(
                f"{name}: generated shape {tuple(out.shape)}, expected {(rows, self.prompt_width + n)}"
            )


# ---------------------------------------------------------------------- timing
def timed(run: Callable[[], object], device: torch.device, seed: int) -> tuple[float, float, object]:
    """``(wall seconds, CPU seconds of this process, output)`` of one seeded run."""
    torch.manual_seed(seed)
    synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = run()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu, out


# ---------------------------------------------------------------------- memory (in a fresh subprocess)
def _proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes (Linux), or {} elsewhere."""
    try:
        with open("/proc/self/status") as f:
            text = f.read()
    except OSError:
        return {}
    found = {k: re.search(rf"^{k}:\s+(\d+) kB", text, re.MULTILINE) for k in ("VmRSS", "VmHWM")}
    return {k: int(m.group(1)) * 1024 for k, m in found.items() if m}


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (and ru_maxrss) to the current resident set, Linux >= 4.0
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_probe(args: argparse.Namespace) -> None:
    """Run one variant once in this (fresh) process and print its peak memory as a JSON line."""
    bench = Bench(args)
    device, n = bench.device, args.new_tokens
    with torch.no_grad():
        # Tiny warm-up of every code path, so lazy one-time allocations are not charged to the variant.
        one = {k: v[:1] for k, v in bench.inputs.items()}
        tiny = {**bench.sampling, **bench.lengths(2), **bench.ids}
        bench.strong.generate(**one, **tiny)
        bench.pair.score(bench.weak_prompts[:1], [[5, 6]])
        bench.strong.generate(**one, custom_generate=w2s.ChunkBeamSearch(bench.pair, 1, 1, 1), **tiny)
        gc.collect()
        run = {
            "plain": lambda: bench.plain(n),
            "reference": lambda: bench.reference(n),
            "cbs": lambda: bench.cbs(n),
        }[args.memory_probe]
        result: dict[str, object] = {"variant": args.memory_probe}
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            timed(run, device, args.seed)
            result.update(
                method="torch.cuda.max_memory_allocated",
                peak_delta=torch.cuda.max_memory_allocated(device) - before,
            )
        else:
            before = _proc_status().get("VmRSS", _maxrss_bytes())
            if _reset_peak_rss():
                timed(run, device, args.seed)
                result.update(method="VmHWM after clear_refs", peak_delta=_proc_status()["VmHWM"] - before)
            else:
                floor = _maxrss_bytes()
                timed(run, device, args.seed)
                # ru_maxrss cannot be reset: if an earlier peak exceeds this run's, the delta reads 0.
                result.update(
                    method="ru_maxrss (not resettable)",
                    peak_delta=max(_maxrss_bytes() - max(floor, before), 0),
                )
            result["baseline"] = before
    print("MEMORY " + json.dumps(result), flush=True)


def measure_memory(args: argparse.Namespace) -> dict[str, dict]:
    results: dict[str, dict] = {}
    base = [sys.executable, os.path.abspath(__file__), *probe_argv(args)]
    # A fixed mmap threshold: large tensors are mapped and unmapped one by one, so RSS tracks live memory.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ}
    for variant in MEMORY_VARIANTS:
        proc = subprocess.run(
            [*base, "--memory-probe", variant], capture_output=True, text=True, check=False, env=env
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("MEMORY ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"memory probe {variant} failed:\n{proc.stdout}\n{proc.stderr}")
        results[variant] = json.loads(line[len("MEMORY ") :])
    return results


def probe_argv(args: argparse.Namespace) -> list[str]:
    argv = [
        f"--family={args.family}",
        f"--batch={args.batch}",
        f"--W={args.W}",
        f"--K={args.K}",
        f"--L={args.L}",
        f"--new-tokens={args.new_tokens}",
        f"--device={args.device}",
        f"--dtype={args.dtype}",
        f"--seed={args.seed}",
    ]
    if args.threads:
        argv.append(f"--threads={args.threads}")
    return argv


# ---------------------------------------------------------------------- cost model
def cost_model(bench: Bench, n: int, n_strong: int, n_weak: int) -> dict[str, float]:
    """Row-tokens through each model (prefill included) and the parameter-count prediction of (a)/(b)."""
    B, W, K, L = bench.args.batch, bench.W, bench.K, bench.L
    P = bench.prompt_width
    weak_p = sum(len(p) for p in bench.weak_prompts)
    rounds = math.ceil(n / L)
    # (a): prefill B prompts; N-R steps of B*W*K rows inside the rounds; R-1 re-feeds of B*W survivors.
    strong_a = B * P + (n - rounds) * B * W * K + (rounds - 1) * B * W
    weak_a = 2 * (weak_p + n * B * W * K)
    # (b): prefill B*W*K copies; N-1 steps of B*W*K rows; the pair reads prompt + response per row.
    strong_b = B * W * K * P + (n - 1) * B * W * K
    weak_b = 2 * W * K * (weak_p + n * B)
    predicted = (strong_a * n_strong + weak_a * n_weak) / (strong_b * n_strong + weak_b * n_weak)
    return {
        "rounds": rounds,
        "strong_a": strong_a,
        "strong_b": strong_b,
        "weak_a": weak_a,
        "weak_b": weak_b,
        "predicted": predicted,
    }


# ---------------------------------------------------------------------- real models across tokenizers
REAL_PROMPTS = [
    "The movie started slowly, and",
    "I went to the new cafe downtown and",
    "The hotel room was",
    "After reading the first chapter, I",
]


@torch.no_grad()
def run_real(args: argparse.Namespace) -> None:
    """(a) CBS and (b) sampling + one ``pair.score`` of the text, interleaved, on the real models."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    large_dir = w2s.real_model_folder("gemma-3-270m")
    weak_dir = w2s.real_model_folder("smollm2-135m-instruct")
    large = AutoModelForCausalLM.from_pretrained(large_dir, dtype=torch.float32).eval()
    large_tok = AutoTokenizer.from_pretrained(large_dir, padding_side="left")
    base = AutoModelForCausalLM.from_pretrained(weak_dir, dtype=torch.float32)
    weak_tok = AutoTokenizer.from_pretrained(weak_dir)
    torch.manual_seed(0)
    lora = LoraConfig(r=16, target_modules="all-linear", init_lora_weights=False)
    pair = w2s.WeakPair.from_peft(get_peft_model(base, lora), weak_tok, chat_template=False)
    B, W, K, L, n = args.batch, args.W, args.K, args.L, args.new_tokens
    prompts = (REAL_PROMPTS * B)[:B]
    inputs = large_tok(prompts, return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    sampling = dict(do_sample=True, temperature=0.7, top_k=50, min_new_tokens=n, max_new_tokens=n)
    cbs = w2s.ChunkBeamSearch(pair, W, K, L, tokenizer=large_tok)

    def search():
        return large.generate(**inputs, custom_generate=cbs, **sampling)

    def reference():
        out = large.generate(**inputs, num_return_sequences=W * K, **sampling)
        texts = large_tok.batch_decode(out[:, width:], skip_special_tokens=True)
        return pair.score([p for p in prompts for _ in range(W * K)], texts)

    print("# chunk-level beam search vs plain sampling + one scoring: real models across tokenizers")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"large: Gemma-3-270M, {n_params(large):,} parameters, {len(large_tok):,}-token SentencePiece")
    print(
        f"pair:  SmolLM2-135M-Instruct + LoRA r16, {n_params(base):,} parameters, {len(weak_tok):,}-token BPE"
    )
    print(f"B={B} prompts, W={W} K={K} L={L}, {n} new tokens, T=0.7, top-k 50")
    runs = {"cbs": search, "reference": reference}
    wall: dict[str, list[float]] = {"cbs": [], "reference": []}
    cpu: dict[str, list[float]] = {"cbs": [], "reference": []}
    for run in runs.values():
        timed(run, torch.device("cpu"), args.seed)  # warm-up
    for repeat in range(args.repeats):  # interleaved, so both see the same machine
        for name, run in runs.items():
            seconds, cpu_seconds, _ = timed(run, torch.device("cpu"), args.seed + repeat)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    a, b = statistics.median(wall["cbs"]), statistics.median(wall["reference"])
    ca, cb = statistics.median(cpu["cbs"]), statistics.median(cpu["reference"])
    print("| variant | median wall s | median CPU s | wall s of each run |")
    print("|---|---:|---:|---|")
    print(f"| (a) CBS | {a:.2f} | {ca:.2f} | {', '.join(f'{t:.2f}' for t in wall['cbs'])} |")
    print(
        f"| (b) sampling + pair.score | {b:.2f} | {cb:.2f} | {', '.join(f'{t:.2f}' for t in wall['reference'])} |"
    )
    print(f"ratio (a)/(b): wall {a / b:.3f}, CPU {ca / cb:.3f}  (target <= 1.05)")
    print("command: python " + " ".join(shlex.quote(x) for x in sys.argv))


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=sorted(SIZES), default="gpt2", help="model family (default gpt2)")
    parser.add_argument("--W", type=int, default=4, help="beam width W (default 4)")
    parser.add_argument("--K", type=int, default=4, help="successors per beam K (default 4)")
    parser.add_argument("--L", type=int, default=8, help="chunk length L in tokens (default 8)")
    parser.add_argument(
        "--new-tokens", type=int, default=128, help="new tokens per beam, headline (default 128)"
    )
    parser.add_argument(
        "--lengths",
        default="32,64,128,256",
        help="comma-separated new-token counts for the time-vs-length table (default 32,64,128,256); "
        "--new-tokens is always included; 'none' skips the table",
    )
    parser.add_argument("--batch", type=int, default=1, help="prompts per generate call (default 1)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per variant at --new-tokens (default 3)"
    )
    parser.add_argument(
        "--length-repeats",
        type=int,
        default=3,
        help="timed runs per variant at the other --lengths (default 3; the 256-token runs dominate the time)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="weights dtype"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of every run (default 0)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-probe", choices=sorted(MEMORY_VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument(
        "--real",
        action="store_true",
        help="real models across tokenizers: Gemma-3-270M steered by a SmolLM2-135M LoRA pair (W4 K4 L5, 30 tokens)",
    )
    args = parser.parse_args(argv)
    if args.real:
        for flag, default, real in (
            ("W", 4, 4),
            ("K", 4, 4),
            ("L", 8, 5),
            ("new_tokens", 128, 30),
            ("batch", 1, 2),
        ):
            if getattr(args, flag) == default:
                setattr(args, flag, real)
    if min(args.W, args.K, args.L, args.new_tokens, args.batch, args.repeats, args.length_repeats) < 1:
        parser.error("--W, --K, --L, --new-tokens, --batch, --repeats and --length-repeats must be positive")
    if args.lengths.strip().lower() in {"", "none"}:
        lengths = set()
    else:
        try:
            lengths = {int(x) for x in args.lengths.split(",") if x.strip()}
        except ValueError:
            parser.error(f"--lengths must be comma-separated integers; got {args.lengths!r}")
        if min(lengths, default=1) < 1:
            parser.error("--lengths must be positive")
    args.length_list = sorted(lengths | {args.new_tokens})
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args)
        return
    if args.real:
        run_real(args)
        return
    bench = Bench(args)
    device, n, lengths = bench.device, args.new_tokens, args.length_list
    B, W, K, L = args.batch, args.W, args.K, args.L
    n_strong, n_weak = n_params(bench.strong), n_params(bench.untuned)

    print(f"# chunk-level beam search vs plain sampling + one scoring ({args.family})")
    print(
        f"torch {torch.__version__}, device {device}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}"
    )
    if hasattr(os, "getloadavg"):
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        busy = ""
        if load > 0.5 * cores:
            busy = "  <- other processes share the CPU: timings are noisy"
            if device.type == "cpu" and not args.threads and torch.get_num_threads() > 1:
                busy += " (try --threads 1: OpenMP threads spin badly on an oversubscribed CPU)"
        print(f"load average {load:.2f} on {cores} cores before the run{busy}")
    print(f"vocabulary: {bench.vocab} tokens (byte-level BPE trained in-script)")
    print(f"strong: {n_strong:>12,} parameters  {describe(args.family, 'strong')}")
    print(f"weak:   {n_weak:>12,} parameters  {describe(args.family, 'weak')}  (each of the two checkpoints)")
    print(f"strong/weak parameter ratio: {n_strong / n_weak:.2f}x")
    print(
        f"batch {B}, W={W}, K={K}, L={L}, {n} new tokens per beam (headline), prompt width {bench.prompt_width}, "
        f"top_k 50; {args.repeats} timed runs per variant at {n} tokens, {args.length_repeats} at the other "
        "lengths, after 1 warm-up (at the headline and the longest length)"
    )
    model = cost_model(bench, n, n_strong, n_weak)
    print(
        f"cost model at N={n}: {model['rounds']} rounds; strong row-tokens (a) {model['strong_a']:,} vs "
        f"(b) {model['strong_b']:,}; weak row-tokens (a) {model['weak_a']:,} vs (b) {model['weak_b']:,}; "
        f"parameter-count prediction (a)/(b) = {model['predicted']:.2f}"
    )
    per_row = kv_bytes_per_token(bench.strong)
    full = (bench.prompt_width + n) * B * W * K * per_row
    print(
        f"strong KV cache of the {B * W * K} rows at {bench.prompt_width + n} tokens: {full / 2**20:.1f} MiB "
        f"(CBS copies it about twice per round to re-index it)"
    )
    print()

    rows_a, rows_b = B * W, B * W * K
    with torch.no_grad():
        # Warm-up (also the correctness checks): CBS really produces n tokens per beam.
        rounds = bench.check_cbs_length(n)
        _, _, out = timed(lambda: bench.cbs(n), device, args.seed)
        bench.check_shape("CBS", out, B, n)
        _, _, (seqs, scores) = timed(lambda: bench.reference(n), device, args.seed)
        bench.check_shape("plain sampling", seqs, rows_b, n)
        if scores.shape != (rows_b,):
            raise AssertionError(f"pair.score returned shape {tuple(scores.shape)}")
        print(
            f"checked: every CBS beam holds {n} new tokens after {rounds} rounds; (b) returns {rows_b} x {n}"
        )
        longest = max(lengths)
        if longest > n:
            # A warm-up at the longest length too: whichever variant first reaches a new cache size pays
            # the allocator's growth (on a GPU, new cudaMalloc segments), which is not the method's cost.
            timed(lambda: bench.cbs(longest), device, args.seed)
            timed(lambda: bench.reference(longest), device, args.seed)
            print(f"warmed up at the longest length too ({longest} tokens)")
        print()

        cbs_t: dict[int, list[float]] = {m: [] for m in lengths}
        plain_t: dict[int, list[float]] = {m: [] for m in lengths}
        score_t: dict[int, list[float]] = {m: [] for m in lengths}
        cbs_cpu: dict[int, list[float]] = {m: [] for m in lengths}  # CPU seconds of this process
        ref_cpu: dict[int, list[float]] = {m: [] for m in lengths}
        start = time.perf_counter()
        n_rounds = max(args.repeats, args.length_repeats if len(lengths) > 1 else 1)
        for repeat in range(n_rounds):
            for m in lengths:  # interleaved: CBS, reference, CBS, reference, ...
                if repeat >= (args.repeats if m == n else args.length_repeats):
                    continue
                seconds, cpu, out = timed(lambda m=m: bench.cbs(m), device, args.seed + repeat)
                bench.check_shape("CBS", out, B, m)
                cbs_t[m].append(seconds)
                cbs_cpu[m].append(cpu)
                seconds, cpu, seqs = timed(lambda m=m: bench.plain(m), device, args.seed + repeat)
                bench.check_shape("plain sampling", seqs, rows_b, m)
                plain_t[m].append(seconds)
                ref_cpu[m].append(cpu)
                seconds, cpu, _ = timed(lambda seqs=seqs: bench.score(seqs), device, args.seed + repeat)
                score_t[m].append(seconds)
                ref_cpu[m][-1] += cpu
            print(f"  repeat {repeat + 1}/{n_rounds} done ({time.perf_counter() - start:.0f} s)", flush=True)
        print()

    memory = None if args.no_memory else measure_memory(args)

    med = statistics.median
    ref_t = {m: [p + s for p, s in zip(plain_t[m], score_t[m])] for m in lengths}
    a, b = med(cbs_t[n]), med(ref_t[n])
    ratio = a / b
    # Each CBS run is followed by its reference run: the per-pair ratio cancels slow drifts of the load.
    paired = [x / y for x, y in zip(cbs_t[n], ref_t[n])]
    cpu_ratio = med(cbs_cpu[n]) / med(ref_cpu[n])

    def span(t: list[float]) -> str:
        return f"{min(t):.2f}-{max(t):.2f}"

    command = "python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv])
    explicit = (
        f"python benchmarks/bench_chunk_search.py --family {args.family} --W {W} --K {K} --L {L} "
        f"--new-tokens {n} --lengths {','.join(map(str, lengths))} --batch {B} --repeats {args.repeats} "
        f"--length-repeats {args.length_repeats} "
        f"--device {args.device} --dtype {args.dtype} --seed {args.seed}"
        + (f" --threads {args.threads}" if args.threads else "")
        + (" --no-memory" if args.no_memory else "")
    )
    print(
        f"{args.family}: strong {n_strong / 1e6:.2f}M vs weak {n_weak / 1e6:.2f}M parameters "
        f"({n_strong / n_weak:.1f}x), vocabulary {bench.vocab}, batch {B}, W={W} K={K} L={L}, {n} new tokens, "
        f"{device} {args.dtype}, {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print()
    print("| variant | rows / token | median s | runs s | ms / token | vs (b) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| (a) CBS W={W} K={K} L={L} | {rows_b} (keeps {rows_a}) | {a:.2f} | {span(cbs_t[n])} "
        f"| {1000 * a / n:.1f} | **{ratio:.2f}x** |"
    )
    p, s = med(plain_t[n]), med(score_t[n])
    print(
        f"| plain sampling, {W * K} seq/prompt | {rows_b} | {p:.2f} | {span(plain_t[n])} | {1000 * p / n:.1f} | {p / b:.2f}x |"
    )
    print(
        f"| pair.score of those, once | 2 x {rows_b} x {n} tok | {s:.2f} | {span(score_t[n])} | {1000 * s / n:.1f} | {s / b:.2f}x |"
    )
    print(
        f"| (b) reference = sampling + score | {rows_b} | {b:.2f} | {span(ref_t[n])} | {1000 * b / n:.1f} | 1.00x |"
    )
    print(f"| parameter-count prediction | | | | | {model['predicted']:.2f}x |")
    print()
    verdict = "meets" if ratio <= 1.05 else "MISSES"
    print(f"(a)/(b) = {ratio:.2f} ({verdict} the target <= 1.05)")
    print(
        f"  median of the per-repeat ratios (each CBS run vs the reference run right after it): "
        f"{med(paired):.2f} (runs {min(paired):.2f}-{max(paired):.2f})"
    )
    if device.type == "cpu":
        print(
            f"  by CPU time of this process (less sensitive to other processes on the machine): {cpu_ratio:.2f} "
            f"({med(cbs_cpu[n]):.2f} s vs {med(ref_cpu[n]):.2f} s)"
        )
    print()

    if len(lengths) > 1:
        print(
            "| new tokens | (a) CBS s | (a) ms / token | (a) growth | (b) ref s | (b) ms / token | (b) growth "
            "| (a)/(b) | (a)/(b) CPU time |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        previous = None
        for m in lengths:
            ta, tb = med(cbs_t[m]), med(ref_t[m])
            if previous is None:
                ga = gb = "-"
            else:
                pm, pa, pb = previous
                ga = f"{ta / pa:.2f} (x{m / pm:g} tokens)"
                gb = f"{tb / pb:.2f}"
            print(
                f"| {m} | {ta:.2f} | {1000 * ta / m:.1f} | {ga} | {tb:.2f} | {1000 * tb / m:.1f} | {gb} | {ta / tb:.2f} "
                f"| {med(cbs_cpu[m]) / med(ref_cpu[m]):.2f} |"
            )
            previous = (m, ta, tb)
        print()
        print(
            f"median of {args.repeats} runs at {n} tokens, {args.length_repeats} at the other lengths; growth: "
            "time at this length / time at the previous one (linear = the token ratio)."
        )
        for lo, hi in zip(lengths, lengths[1:]):
            print(
                f"time({hi})/time({lo}): (a) {med(cbs_t[hi]) / med(cbs_t[lo]):.2f}, "
                f"(b) {med(ref_t[hi]) / med(ref_t[lo]):.2f}  (linear: {hi / lo:.2f}); fastest runs: "
                f"(a) {min(cbs_t[hi]) / min(cbs_t[lo]):.2f}, (b) {min(ref_t[hi]) / min(ref_t[lo]):.2f}"
            )
        print()

    if memory is not None:
        method = memory["cbs"]["method"]
        plain_mem = memory["plain"]["peak_delta"]
        print("| variant (fresh subprocess, one run) | peak memory over baseline MiB | vs plain sampling |")
        print("|---|---:|---:|")
        for variant, label in MEMORY_VARIANTS.items():
            delta = memory[variant]["peak_delta"]
            rel = f"{delta / plain_mem:.2f}x" if plain_mem > 0 else "-"
            print(f"| {label} | {delta / 2**20:.1f} | {rel} |")
        baseline = memory["cbs"].get("baseline")
        extra = f"; baseline (models loaded) {baseline / 2**20:.0f} MiB" if baseline else ""
        print()
        mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536")
        where = f"MALLOC_MMAP_THRESHOLD_={mmap}" if device.type == "cpu" else "fresh process"
        print(f"memory: {method} ({where}), batch {B}, {n} new tokens{extra}")
        print()

    print(f"command: {command}")
    print(f"same as: {explicit}")


if __name__ == "__main__":
    main()
