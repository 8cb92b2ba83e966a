"""The recipe scripts in examples/, end to end on tiny stand-in models saved to temporary folders.

Each script runs through its own ``main([...])`` with local paths in place of the hub ids, so the code
path is the one a user with the real models runs.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import math
import threading
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer
from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification, pipeline

import w2s_generate as w2s

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STRONG_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
WEAK_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
SENTIMENT_METHODS = ["sample", "bon", "cbs", "token"]


# The oracles recompute every score on the CPU in float32; where a GPU is present the scripts would
# otherwise load their models there in bfloat16 (their default), so each run is pinned to the CPU.
ON_CPU = ["--device-map", "cpu", "--dtype", "float32"]


def load_script(name: str):
    """The example script as a module whose ``main(argv)`` runs on the CPU in float32."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    script_main = module.main
    module.main = lambda argv: script_main([*argv, *ON_CPU])
    return module


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than on several contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save(model, tokenizer, folder: Path) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Stand-ins: GPT-2 strong/tuned/untuned on one tokenizer, a pair on another, a Llama chat model,
    a sentiment classifier, and a strong model with pickle weights only."""
    root = tmp_path_factory.mktemp("recipe-models")
    tok = make_tokenizer()
    other = make_tokenizer(288, seed_text="instructions: write, explain, give three tips")
    other.chat_template = WEAK_TEMPLATE
    chat = make_tokenizer()
    chat.chat_template = STRONG_TEMPLATE
    dirs = {
        "strong": save(make_model("gpt2", len(tok), 0, width=48), tok, root / "strong"),
        "tuned": save(make_model("gpt2", len(tok), 1), tok, root / "tuned"),
        "untuned": save(make_model("gpt2", len(tok), 2), tok, root / "untuned"),
        "llama": save(make_model("llama", len(tok), 3, width=48), tok, root / "llama"),
        "chat": save(make_model("llama", len(chat), 4, width=48), chat, root / "chat"),
        "other-tuned": save(make_model("gpt2", len(other), 5), other, root / "other-tuned"),
        "other-untuned": save(make_model("gpt2", len(other), 6), other, root / "other-untuned"),
    }
    torch.manual_seed(7)
    config = DistilBertConfig(
        vocab_size=len(tok),
        dim=32,
        hidden_dim=64,
        n_layers=1,
        n_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    dirs["classifier"] = save(DistilBertForSequenceClassification(config), tok, root / "classifier")
    pickled = root / "pickled"
    pickled.mkdir()
    strong = make_model("gpt2", len(tok), 0, width=48)
    strong.config.save_pretrained(pickled)
    torch.save(strong.state_dict(), pickled / "pytorch_model.bin")
    tok.save_pretrained(pickled)
    dirs["pickled"] = str(pickled)
    return dirs


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def table_rows(text: str) -> dict[str, list[str]]:
    """``method -> cells`` of the printed table (header and rule skipped)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "method":
            rows[cells[0]] = cells[1:]
    return rows


def assert_scores(pair: w2s.WeakPair, prompts: list, responses: list, reported: list[float]) -> None:
    assert all(math.isfinite(r) for r in reported)
    expected = torch.cat([pair.score([p], [r]) for p, r in zip(prompts, responses)])
    torch.testing.assert_close(torch.tensor(reported), expected, atol=2e-3, rtol=1e-3)


# --------------------------------------------------------------------------- every script


@pytest.mark.parametrize(
    ("name", "defaults"),
    [
        ("sentiment", ["gpt2-large", "lvwerra/gpt2-imdb", "lvwerra/distilbert-imdb"]),
        ("summarization", ["Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B"]),
        (
            "instruction_following",
            ["meta-llama/Meta-Llama-3-70B-Instruct", "HuggingFaceH4/zephyr-7b-beta", "mistral-7b-sft-beta"],
        ),
    ],
)
def test_help_names_the_real_models(name, defaults, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script(name).main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in defaults:
        assert default in text
    for flag in ("--device-map", "--dtype", "--seed", "--allow-pickle", "--trust-remote-code", "--adapter"):
        assert flag in text


# --------------------------------------------------------------------------- sentiment


def test_sentiment_table_and_every_reported_score(models, tmp_path, capsys):
    script = load_script("sentiment")
    out = tmp_path / "outputs.jsonl"
    argv = ["--strong", models["strong"], "--tuned", models["tuned"], "--untuned", models["untuned"]]
    argv += ["--classifier", models["classifier"], "--num-prompts", "3", "--max-new-tokens", "8"]
    argv += ["--batch-size", "2", "--output", str(out)]
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    assert list(rows) == SENTIMENT_METHODS

    records = read_jsonl(out)
    assert [r["method"] for r in records] == [m for m in SENTIMENT_METHODS for _ in range(3)]
    assert [r["prompt"] for r in records[:3]] == script.PROMPTS[:3]
    assert all(1 <= len(r["response_ids"]) <= 8 for r in records)
    # Each log-ratio is the pair's score of the response it is printed with: the searches' own
    # objective (CBS, best-of-N) and the recipe's scoring (sampling, token guidance) alike.
    pair = w2s.WeakPair.from_pretrained(models["tuned"], models["untuned"])
    assert_scores(
        pair,
        [r["prompt"] for r in records],
        [r["response_ids"] for r in records],
        [r["log_ratio"] for r in records],
    )
    classifier = pipeline("text-classification", model=models["classifier"], device="cpu")
    for record in records:
        scores = classifier(record["prompt"] + record["response"], top_k=None)
        positive = next(s["score"] for s in scores if s["label"] == "POSITIVE")
        assert record["positive"] == pytest.approx(positive, abs=1e-4)
    for method, (positive, ratio, seconds) in rows.items():
        mine = [r for r in records if r["method"] == method]
        assert float(positive) == pytest.approx(sum(r["positive"] for r in mine) / 3, abs=6e-4)
        assert float(ratio) == pytest.approx(sum(r["log_ratio"] for r in mine) / 3, abs=6e-4)
        assert float(seconds) > 0
    # The searches return other responses than plain sampling under the same seed.
    assert [r["response_ids"] for r in records if r["method"] == "cbs"] != [
        r["response_ids"] for r in records if r["method"] == "sample"
    ]


def test_sentiment_across_tokenizers_skips_token_guidance(models, tmp_path, capsys):
    prompts = tmp_path / "openings.txt"
    prompts.write_text("the film was\n\na quiet story\n")
    out = tmp_path / "outputs.jsonl"
    argv = [
        "--strong",
        models["strong"],
        "--tuned",
        models["other-tuned"],
        "--untuned",
        models["other-untuned"],
    ]
    argv += ["--classifier", models["classifier"], "--prompts", str(prompts), "--methods", "sample,cbs,token"]
    argv += ["--max-new-tokens", "6", "--beam-width", "2", "--successors", "2", "--chunk-length", "3"]
    assert load_script("sentiment").main(argv + ["--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "token guidance skipped" in captured.err
    assert list(table_rows(captured.out)) == ["sample", "cbs"]
    records = read_jsonl(out)
    assert [r["prompt"] for r in records] == ["the film was", "a quiet story"] * 2
    # Across tokenizers the pair scores the response text, re-encoded with its own tokenizer.
    pair = w2s.WeakPair.from_pretrained(models["other-tuned"], models["other-untuned"])
    assert_scores(
        pair,
        [r["prompt"] for r in records],
        [r["response"] for r in records],
        [r["log_ratio"] for r in records],
    )


def test_sentiment_refuses_pickle_weights_unless_allowed(models, capsys):
    script = load_script("sentiment")
    argv = ["--strong", models["pickled"], "--tuned", models["tuned"], "--untuned", models["untuned"]]
    argv += [
        "--classifier",
        models["classifier"],
        "--num-prompts",
        "1",
        "--max-new-tokens",
        "3",
        "--methods",
        "sample",
    ]
    assert script.main(argv) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert script.main(argv + ["--allow-pickle"]) == 0
    assert list(table_rows(capsys.readouterr().out)) == ["sample"]
    assert script.main(argv[:-1] + ["beam"]) == 2
    assert "unknown beam" in capsys.readouterr().err


# --------------------------------------------------------------------------- summarization


def test_summarization_prompts_stops_and_scores(models, tmp_path, capsys):
    articles = tmp_path / "articles.jsonl"
    texts = ["the film was wonderful and the acting was great.", "a quiet story about a family."]
    articles.write_text("".join(json.dumps({"article": a}) + "\n" for a in texts))
    out = tmp_path / "summaries.jsonl"
    argv = ["--strong", models["llama"], "--tuned", models["tuned"], "--untuned", models["untuned"]]
    argv += ["--articles", str(articles), "--max-new-tokens", "12", "--chunk-length", "4", "--stop", "e"]
    assert load_script("summarization").main(argv + ["--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## Article 1: the film was wonderful" in printed and "## Article 2: a quiet story" in printed
    assert set(table_rows(printed)) == {"plain sample", "CBS W=2 K=2 L=4"}

    records = read_jsonl(out)
    assert [r["method"] for r in records] == ["sample", "sample", "cbs", "cbs"]
    assert [r["prompt"] for r in records] == [f"Article: {a}\nTL;DR:" for a in texts] * 2
    tok = AutoTokenizer.from_pretrained(models["llama"])
    for record in records:
        ids = record["response_ids"]
        assert 1 <= len(ids) <= 12
        assert "e" not in tok.decode(ids[:-1])  # a summary ends at the first "e" (--stop)
        if len(ids) < 12 and ids[-1] != tok.eos_token_id:
            assert "e" in tok.decode(ids[-1:])
    pair = w2s.WeakPair.from_pretrained(models["tuned"], models["untuned"])
    assert_scores(
        pair,
        [r["prompt"] for r in records],
        [r["response_ids"] for r in records],
        [r["log_ratio"] for r in records],
    )


# --------------------------------------------------------------------------- instruction following


def chat_prompts(tmp_path: Path) -> tuple[Path, list[list[dict]]]:
    path = tmp_path / "prompts.jsonl"
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "the plot"}]
    path.write_text(json.dumps({"prompt": "the film"}) + "\n" + json.dumps({"prompt": messages}) + "\n")
    expected = [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the film"}],
        messages,
    ]
    return path, expected


def test_instruction_following_each_model_reads_its_own_template(models, tmp_path, capsys):
    prompts, conversations = chat_prompts(tmp_path)
    out = tmp_path / "responses.jsonl"
    argv = [
        "--strong",
        models["chat"],
        "--tuned",
        models["other-tuned"],
        "--untuned",
        models["other-untuned"],
    ]
    argv += [
        "--prompts",
        str(prompts),
        "--system",
        "be brief",
        "--max-new-tokens",
        "12",
        "--chunk-length",
        "4",
    ]
    assert load_script("instruction_following").main(argv + ["--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## 1. the film" in printed and "## 2. the plot" in printed and "loaded locally" in printed

    records = read_jsonl(out)
    assert [r["prompt"] for r in records] == conversations
    strong_tok = AutoTokenizer.from_pretrained(models["chat"])
    for record in records:
        text = strong_tok.apply_chat_template(record["prompt"], add_generation_prompt=True, tokenize=False)
        assert record["prompt_text"] == text and text.endswith("assistant:")
    pair = w2s.WeakPair.from_pretrained(models["other-tuned"], models["other-untuned"])
    assert pair.tokenizer.decode(pair.encode_prompt(conversations[0])).endswith("[assistant]")
    # The pair scored its own template's prompt and the response text (cross-tokenizer bridge).
    assert_scores(pair, conversations, [r["response"] for r in records], [r["log_ratio"] for r in records])


class CompletionsServer:
    """A loopback OpenAI-style /v1/completions server sampling from a local model (for --endpoint)."""

    def __init__(self, folder: str):
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = make_model("llama", len(self.tokenizer), 4, width=48)
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                payload = json.dumps(server.complete(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def complete(self, body: dict) -> dict:
        n = body.get("n", 1)
        ids = self.tokenizer(body["prompt"], add_special_tokens=False, return_tensors="pt")["input_ids"]
        with self.lock:
            self.bodies.append(body)
            out = self.model.generate(
                ids,
                do_sample=True,
                temperature=body["temperature"],
                max_new_tokens=body["max_tokens"],
                num_return_sequences=n,
                pad_token_id=0,
            )
        choices = []
        for i, row in enumerate(out[:, ids.shape[1] :].tolist()):
            stopped = 2 in row
            row = row[: row.index(2)] if stopped else row
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            choices.append({"index": i, "text": text, "finish_reason": "stop" if stopped else "length"})
        return {"choices": choices}

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def test_instruction_following_through_an_endpoint(models, tmp_path, capsys):
    prompts, conversations = chat_prompts(tmp_path)
    server = CompletionsServer(models["chat"])
    out = tmp_path / "responses.jsonl"
    # --strong is only the served model's name: nothing is loaded from it.
    argv = ["--endpoint", server.base, "--strong", "served-70b", "--tokenizer", models["chat"]]
    argv += [
        "--tuned",
        models["other-tuned"],
        "--untuned",
        models["other-untuned"],
        "--prompts",
        str(prompts),
    ]
    argv += [
        "--system",
        "be brief",
        "--max-new-tokens",
        "8",
        "--chunk-length",
        "4",
        "--extra-body",
        '{"top_k": 50}',
    ]
    try:
        assert load_script("instruction_following").main(argv + ["--output", str(out)]) == 0
    finally:
        server.close()
    assert f"served at {server.base}" in capsys.readouterr().out
    records = read_jsonl(out)
    assert [r["prompt"] for r in records] == conversations
    # The server got the large model's template text (then that text plus the response so far).
    texts = [
        server.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
        for c in conversations
    ]
    assert [r["prompt_text"] for r in records] == texts
    assert {b["prompt"] for b in server.bodies} >= set(texts)
    assert all(any(b["prompt"].startswith(t) for t in texts) for b in server.bodies)
    assert all(
        b["model"] == "served-70b" and b["top_k"] == 50 and b["max_tokens"] <= 4 for b in server.bodies
    )
    pair = w2s.WeakPair.from_pretrained(models["other-tuned"], models["other-untuned"])
    assert_scores(pair, conversations, [r["response"] for r in records], [r["log_ratio"] for r in records])


def test_instruction_following_endpoint_down_fails_cleanly(models, tmp_path, capsys):
    server = CompletionsServer(models["chat"])
    base = server.base
    server.close()  # nothing listens there any more
    argv = ["--endpoint", base, "--strong", "served", "--tokenizer", models["chat"], "--retries", "0"]
    argv += ["--tuned", models["other-tuned"], "--untuned", models["other-untuned"], "--max-new-tokens", "4"]
    assert load_script("instruction_following").main(argv + ["--num-prompts", "1"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "failed 1 times" in err
