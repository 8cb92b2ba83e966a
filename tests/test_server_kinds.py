"""What the completions client does per serving engine, against a fake server on 127.0.0.1.

The fake answers ``GET /v1/models`` with a chosen ``owned_by``, ``GET /openapi.json`` with a
completions schema (or 404), and ``POST /v1/completions`` like vLLM: each choice's text is ``" tN"``
for its token id N, with ``prompt_token_ids`` and ``token_ids`` when ``return_token_ids`` is asked.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from w2s_generate import samplers
from w2s_generate.samplers import CompletionsSampler
from w2s_generate.server_answers import Chunk, RemoteSamplerError, TransientError

VLLM_FIELDS = [
    "model",
    "prompt",
    "n",
    "max_tokens",
    "seed",
    "temperature",
    "top_p",
    "top_k",
    "return_token_ids",
]


class FakeEngine:
    """A completions server that says it is ``owner`` and answers like vLLM."""

    def __init__(self, owner: str = "vllm", schema: bool = True, reasons=None, texts=None) -> None:
        self.owner, self.schema = owner, schema
        self.reasons = reasons or []  # finish_reason of each answer in turn (then "length")
        self.texts = texts  # texts of every answer's choices, instead of " tN"
        self.requests: list[dict] = []
        self.gets: list[str] = []
        self.lock = threading.Lock()
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                engine.gets.append(self.path)
                if self.path == "/v1/models":
                    return self._send(200, {"data": [{"id": "m", "owned_by": engine.owner}]})
                if self.path == "/openapi.json" and engine.schema:
                    properties = {name: {} for name in VLLM_FIELDS}
                    return self._send(
                        200, {"components": {"schemas": {"CompletionRequest": {"properties": properties}}}}
                    )
                return self._send(404, {"detail": "Not Found"})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with engine.lock:
                    engine.requests.append(request)
                    k = len(engine.requests) - 1
                    reason = engine.reasons[k] if k < len(engine.reasons) else "length"
                prompt = request["prompt"]
                prompt_ids = prompt if isinstance(prompt, list) else [len(prompt)]
                choices = []
                for i in range(request.get("n", 1)):
                    token = 100 * (k + 1) + i
                    text = engine.texts[i] if engine.texts else f" t{token}"
                    choice = {"index": i, "text": text, "finish_reason": reason}
                    if request.get("return_token_ids"):
                        choice.update(prompt_token_ids=prompt_ids, token_ids=[token])
                    choices.append(choice)
                self._send(200, {"choices": choices})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def engine():
    engines = []

    def start(**kwargs) -> FakeEngine:
        engines.append(FakeEngine(**kwargs))
        return engines[-1]

    yield start
    for e in engines:
        e.close()


def client(engine, **kwargs) -> CompletionsSampler:
    return CompletionsSampler(engine.base, "m", **{"retries": 2, "backoff": 0.01, "timeout": 5, **kwargs})


def test_the_engine_is_read_from_owned_by(engine):
    assert client(engine(owner="vllm")).server_kind() == "vllm"
    assert client(engine(owner="sglang")).server_kind() == "sglang"
    assert client(engine(owner="HuggingFaceTB")).server_kind() is None  # transformers serve: the model's org


def test_vllm_beams_continue_from_the_token_ids_it_sampled(engine):
    server = engine()
    sampler = client(server, seed=0, max_workers=1)  # one request at a time: in order
    first = sampler.sample(["The film"], 2, 3)[0]
    assert [c.text for c in first] == [" t100", " t101"]
    sampler.sample(["The film t101", "The film other"], 1, 3)
    sent = [r["prompt"] for r in server.requests]
    # The beam's text maps to the prompt ids and its chunk's ids; an unknown text goes as text.
    assert sent == ["The film", [8, 101], "The film other"]
    assert all(r["return_token_ids"] is True for r in server.requests)
    # The seed comes from the text however the prompt is sent: a rerun sends the same seeds.
    rerun = engine()
    again = client(rerun, seed=0, max_workers=1)
    again.sample(["The film"], 2, 3)
    again.sample(["The film t101", "The film other"], 1, 3)
    assert [r["seed"] for r in rerun.requests] == [r["seed"] for r in server.requests]


@pytest.mark.parametrize(
    "texts, reasons, why",
    [
        ([" done", " done."], ["stop"], "finished"),
        ([" caf\ufffd", " \ufffd"], ["length"], "cut in a character"),
    ],
)
def test_finished_chunks_and_chunks_cut_in_a_character_are_not_continued_from_ids(
    engine, texts, reasons, why
):
    server = engine(texts=texts, reasons=reasons)
    sampler = client(server)
    sampler.sample(["x"], 2, 3)
    sampler.sample(["x" + texts[0], "x" + texts[1]], 1, 3)
    assert all(isinstance(r["prompt"], str) for r in server.requests), why


@pytest.mark.parametrize("owner", ["sglang", "HuggingFaceTB"])
def test_other_engines_get_text_prompts_and_no_vllm_fields(engine, owner):
    server = engine(owner=owner)
    sampler = client(server, extra_body={"top_k": 5})
    sampler.sample(["a"], 2, 3)
    sampler.sample(["a t100"], 1, 3)
    assert [r["prompt"] for r in server.requests] == ["a", "a t100"]
    assert not any("return_token_ids" in r for r in server.requests)
    assert server.requests[0]["top_k"] == 5


def test_generation_config_goes_to_a_server_that_is_neither_vllm_nor_sglang(engine):
    server = engine(owner="HuggingFaceTB")  # transformers serve: owned_by is the model's organisation
    client(server, extra_body={"generation_config": {"top_k": 5}}).sample(["a"], 1, 3)
    assert server.requests[0]["generation_config"] == {"top_k": 5}


@pytest.mark.parametrize("owner, name", [("vllm", "vLLM"), ("sglang", "SGLang")])
@pytest.mark.parametrize("schema", [True, False])
def test_vllm_and_sglang_refuse_extra_body_fields_they_would_ignore(engine, schema, owner, name):
    server = engine(owner=owner, schema=schema)
    with pytest.raises(
        RemoteSamplerError, match=f"'generation_config' \\(transformers serve's\\).*{name} at"
    ):
        client(server, extra_body={"generation_config": {"top_k": 5}}).sample(["a"], 1, 3)
    with pytest.raises(RemoteSamplerError):  # and again on the next call: nothing was sent
        client(server, extra_body={"generation_config": {}}).sample(["a"], 1, 3)
    assert server.requests == []
    client(server, extra_body={"top_k": 5}).sample(["a"], 1, 3)  # a vLLM field goes through
    assert server.requests[-1]["top_k"] == 5
    misspelt = client(server, extra_body={"topk": 5})
    if schema:  # the schema names every field vLLM reads
        with pytest.raises(RemoteSamplerError, match="'topk', not a request field"):
            misspelt.sample(["a"], 1, 3)
    else:  # without it, only the fields known to be other servers' are refused
        misspelt.sample(["a"], 1, 3)


def test_a_server_not_up_yet_is_asked_again(engine, monkeypatch):
    server = engine()
    sampler = client(server)
    down = {"on": True}
    get_json = sampler._get_json

    def flaky(url):
        if down["on"]:
            raise TransientError("Connection refused")
        return get_json(url)

    monkeypatch.setattr(sampler, "_get_json", flaky)
    assert sampler.server_kind() is None
    down["on"] = False
    assert sampler.server_kind() == "vllm"


@pytest.mark.parametrize("reason", ["abort", "error"])
def test_a_choice_the_server_cut_short_is_retried(engine, reason):
    server = engine(reasons=[reason, "length"])
    out = client(server).sample(["a"], 2, 3)
    assert len(server.requests) == 2 and [c.text for c in out[0]] == [" t200", " t201"]


@pytest.mark.parametrize(
    "reason, finished", [("stop", True), ("repetition", True), ("length", False), (None, False)]
)
def test_finish_reasons(engine, reason, finished):
    out = client(engine(reasons=[reason])).sample(["a"], 1, 3)
    assert out == [[Chunk(" t100", finished)]]


def test_the_backoff_is_capped(monkeypatch):
    sleeps = []
    monkeypatch.setattr(samplers.time, "sleep", sleeps.append)
    monkeypatch.setattr(
        samplers.CompletionsSampler, "_once", lambda *args: (_ for _ in ()).throw(TransientError("down"))
    )
    sampler = CompletionsSampler("http://127.0.0.1:9/v1", "m", retries=2000, backoff=1.0, timeout=1)
    monkeypatch.setattr(sampler, "_get_json", lambda url: None)
    with pytest.raises(RemoteSamplerError, match="failed 2001 times"):
        sampler.sample(["a"], 1, 1)
    assert max(sleeps) <= samplers.MAX_BACKOFF * 1.1 and sleeps[:3] == pytest.approx([1, 2, 4], rel=0.11)
