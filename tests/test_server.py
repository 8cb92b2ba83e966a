"""Chunk-level search through a real completions server (`transformers serve`) on loopback."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

import w2s_generate as w2s

PROMPTS = ["the film was", "a quiet story"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 30.0) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny GPT-2 saved with safetensors and served by `transformers serve` on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("served") / "tiny"
    tokenizer = make_tokenizer()
    model = make_model("gpt2", len(tokenizer), 10, width=48)
    model.generation_config.do_sample = True
    model.generation_config.top_k = 0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    log = open(folder.parent / "serve.log", "w")  # noqa: SIM115 - open for the server process lifetime
    process = subprocess.Popen(
        [str(cli), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while True:
        try:
            post(base + "/completions", {"model": str(folder), "prompt": "a", "max_tokens": 1}, timeout=10)
            break
        except Exception:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(
                    "transformers serve did not start: " + (folder.parent / "serve.log").read_text()[-2000:]
                )
            time.sleep(1)
    yield {"base": base, "model": str(folder), "tokenizer": tokenizer, "strong": model.eval()}
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def pair(served):
    tok = served["tokenizer"]
    return w2s.WeakPair(make_model("llama", len(tok), 11), make_model("llama", len(tok), 12), tok)


class FaultProxy:
    """A loopback proxy in front of the server that injects faults into the first `count` requests."""

    def __init__(self, target: str, mode: str, count: int):
        self.target, self.mode, self.count, self.seen = target, mode, count, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.seen += 1
                faulty = proxy.seen <= proxy.count
                if faulty and proxy.mode == "5xx":
                    return self._reply(503, b'{"error": "overloaded"}')
                if faulty and proxy.mode == "malformed":
                    return self._reply(200, b'{"choices": [{"tex')
                if faulty and proxy.mode == "slow":
                    time.sleep(1.5)
                if proxy.mode == "401":
                    return self._reply(401, b'{"error": "bad key"}')
                if proxy.mode == "404":
                    return self._reply(404, b'{"error": "model not found"}')
                request = urllib.request.Request(
                    proxy.target + self.path[len("/v1") :],
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=60) as response:
                    self._reply(response.status, response.read())

            def _reply(self, status, payload):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_search_through_server_scores_like_local(served, pair):
    sampler = w2s.CompletionsSampler(served["base"], served["model"], temperature=1.0, seed=0)
    cbs = w2s.ChunkBeamSearch(pair, beam_width=2, successors_per_beam=2, chunk_length=3)
    out = cbs.run(PROMPTS, sampler=sampler, max_new_tokens=9, num_return_sequences=2, return_trace=True)
    assert isinstance(out, w2s.TextSearchOutput) and len(out.texts) == 4
    prompts = [p for p in PROMPTS for _ in range(2)]
    torch.testing.assert_close(out.log_ratios, pair.score(prompts, out.texts), atol=1e-4, rtol=1e-4)
    assert len(out.trace) == 3 and all(t.kept.sum() <= 4 for t in out.trace)
    # The local path on the same model returns the same kind of result, scored the same way.
    strong, tok = served["strong"], served["tokenizer"]
    inputs = tok(PROMPTS, return_tensors="pt", padding=True)
    local = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3, tokenizer=tok),
        do_sample=True,
        max_new_tokens=9,
        num_return_sequences=2,
        return_dict_in_generate=True,
    )
    # A shared vocabulary: the local path scores the sampled ids themselves.
    ids = [
        [t for t in row if t != tok.pad_token_id]
        for row in local.sequences[:, inputs["input_ids"].shape[1] :].tolist()
    ]
    torch.testing.assert_close(local.log_ratios, pair.score(prompts, ids), atol=1e-4, rtol=1e-4)


def test_greedy_server_matches_local_greedy(served, pair):
    sampler = w2s.CompletionsSampler(served["base"], served["model"], temperature=0.0)
    out = w2s.BestOfN(pair, n=1).run(["the film was"], sampler=sampler, max_new_tokens=6)
    strong, tok = served["strong"], served["tokenizer"]
    inputs = tok(["the film was"], return_tensors="pt")
    greedy = strong.generate(**inputs, do_sample=False, max_new_tokens=6)
    assert out.texts[0] == tok.decode(greedy[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("mode", ["5xx", "malformed", "slow"])
def test_transient_faults_are_retried(served, pair, mode):
    proxy = FaultProxy(served["base"], mode, count=2)
    try:
        sampler = w2s.CompletionsSampler(
            proxy.base, served["model"], timeout=1.0, retries=3, backoff=0.05, max_workers=1
        )
        out = w2s.ChunkBeamSearch(pair, 1, 2, 3).run(["the film was"], sampler=sampler, max_new_tokens=6)
    finally:
        proxy.close()
    assert proxy.seen >= 2 + 4 and len(out.texts) == 1
    torch.testing.assert_close(out.log_ratios, pair.score(["the film was"], out.texts), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "mode, message", [("5xx", "failed 2 times"), ("401", "refused the credentials"), ("404", "unknown model")]
)
def test_permanent_faults_raise(served, pair, mode, message):
    proxy = FaultProxy(served["base"], mode, count=100)
    try:
        sampler = w2s.CompletionsSampler(proxy.base, served["model"], retries=1, backoff=0.01)
        with pytest.raises(w2s.RemoteSamplerError, match=message):
            w2s.ChunkBeamSearch(pair, 1, 2, 3).run(["the film was"], sampler=sampler, max_new_tokens=6)
    finally:
        proxy.close()


def test_server_killed_mid_search_raises(served, pair):
    proxy = FaultProxy(served["base"], "none", count=0)
    sampler = w2s.CompletionsSampler(proxy.base, served["model"], retries=2, backoff=0.05, timeout=2.0)
    original = sampler.sample
    rounds = []

    def sample_then_kill(prefixes, n, max_tokens):
        if rounds:
            proxy.close()  # the server goes away before the second round
        rounds.append(1)
        return original(prefixes, n, max_tokens)

    sampler.sample = sample_then_kill
    with pytest.raises(w2s.RemoteSamplerError, match="failed 3 times"):
        w2s.ChunkBeamSearch(pair, 1, 2, 3).run(["the film was"], sampler=sampler, max_new_tokens=9)
    assert len(rounds) == 2


def test_bad_sampler_settings():
    with pytest.raises(ValueError, match="must start with http"):
        w2s.CompletionsSampler("localhost:8000", "m")
    with pytest.raises(ValueError, match="max_workers must be >= 1"):
        w2s.CompletionsSampler("http://127.0.0.1:1/v1", "m", max_workers=0)


def test_cli_endpoint(served, tmp_path):
    from w2s_generate.cli import main

    tok = served["tokenizer"]
    for name, seed in (("tuned", 11), ("untuned", 12)):
        make_model("llama", len(tok), seed).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "the film was"}\n{"prompt": "a quiet story"}\n')
    out = tmp_path / "out.jsonl"
    argv = [
        "generate",
        "--endpoint",
        served["base"],
        "--model",
        served["model"],
        "--tuned",
        str(tmp_path / "tuned"),
        "--untuned",
        str(tmp_path / "untuned"),
        "--method",
        "cbs",
        "--beam-width",
        "2",
        "--successors",
        "2",
        "--chunk-length",
        "3",
        "--max-new-tokens",
        "6",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["the film was", "a quiet story"]
    pair = w2s.WeakPair.from_pretrained(tmp_path / "tuned", tmp_path / "untuned")
    got = torch.tensor([r["log_ratio"] for r in rows])
    torch.testing.assert_close(
        got,
        pair.score(["the film was", "a quiet story"], [r["response"] for r in rows]),
        atol=1e-4,
        rtol=1e-4,
    )
    with pytest.raises(SystemExit):
        main(argv[:-6] + ["--method", "token", "--prompts", str(prompts), "--out", str(out)])
