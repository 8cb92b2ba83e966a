"""Adversarial tests of the completions client against fault-injecting servers on 127.0.0.1.

Each server is an ``http.server`` in a daemon thread that answers the i-th request with the i-th
behaviour of its script (the last one repeats). Every behaviour ends by itself (bounded loops), and
every server is shut down by its fixture. Classes: faults that are retried until an answer comes,
answers of the wrong shape (a clear error at once), permanent HTTP errors, retries used up, protocol
quirks handled correctly, bad settings refused, and fuzzing of the response parser.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from w2s_generate.samplers import CompletionsSampler
from w2s_generate.server_answers import Chunk, RemoteSamplerError, TransientError, parse_completions

# --------------------------------------------------------------------------- the fault server


def _send(handler, status: int, payload: bytes, length: int | None = None, close: bool = False) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload) if length is None else length))
    if close:
        handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(payload)
    handler.wfile.flush()


def answer(n: int, texts=None, reasons=None) -> bytes:
    texts = texts or [f" chunk{i}" for i in range(n)]
    reasons = reasons or ["length"] * n
    choices = [{"index": i, "text": t, "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]
    return json.dumps({"choices": choices}).encode()


def ok(handler, n):
    _send(handler, 200, answer(n))


def status(code: int, body: bytes = b'{"error": "nope"}'):
    def behave(handler, n):
        _send(handler, code, body)

    return behave


def body(payload: bytes):
    def behave(handler, n):
        _send(handler, 200, payload)

    return behave


def choices(*items):
    return body(json.dumps({"choices": list(items)}).encode())


def incomplete(handler, n):
    """Content-Length promises more than is sent, then the connection closes."""
    payload = answer(n)
    _send(handler, 200, payload[:10], length=len(payload), close=True)
    handler.close_connection = True


def hang_up(handler, n):
    """Close the connection without any answer."""
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


def garbled_status(handler, n):
    handler.wfile.write(b"HTTP/1.1 banana\r\n\r\n")
    handler.close_connection = True


def chunked_cut(handler, n):
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(b"100\r\n" + b'{"choices": [')
    handler.close_connection = True


def trickle(handler, n, every: float = 0.05, steps: int = 60):
    """A valid answer sent one byte at a time, slowly: never idle long enough for a socket timeout."""
    payload = answer(n)
    try:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.flush()
        for byte in payload[:steps]:  # bounded: stops after `steps` bytes, an incomplete answer
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)
    except OSError:
        pass  # the client gave up: what we want
    handler.close_connection = True


def slow_headers(handler, n, delay: float = 1.0):
    time.sleep(delay)
    with contextlib.suppress(OSError):  # the client may have gone
        ok(handler, n)


class FaultServer:
    """A completions endpoint on 127.0.0.1 following a script of behaviours, one per request."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(request)
                    behaviour = server.script[min(len(server.requests), len(server.script)) - 1]
                try:
                    behaviour(self, int(request.get("n", 1)))
                except OSError:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(*script):
        server = FaultServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def sampler_for(server, **kwargs) -> CompletionsSampler:
    settings = {"retries": 2, "backoff": 0.01, "timeout": 2.0, "max_workers": 2, **kwargs}
    return CompletionsSampler(server.base, "tiny", **settings)


# --------------------------------------------------------------------------- class 1: retried, then answered

TRANSIENT = {
    "http-503": status(503),
    "http-429": status(429),
    "http-500": status(500),
    "body-shorter-than-content-length": incomplete,
    "connection-closed-without-answer": hang_up,
    "garbled-status-line": garbled_status,
    "chunked-body-cut-off": chunked_cut,
    "not-json": body(b"<html>overloaded</html>"),
    "json-cut-off": body(b'{"choices": [{"tex'),
    "empty-body": body(b""),
    "not-utf8": body(b'{"choices": [{"text": "\xff\xfe"}]}'),
    "error-object-with-200": body(b'{"error": {"message": "busy, try again"}}'),
    "no-choices": choices(),
    "too-many-choices": choices(*[{"text": "x", "index": i} for i in range(5)]),
    "deeply-nested-json": body(b"[" * 100_000 + b"]" * 100_000),
}


@pytest.mark.parametrize("fault", list(TRANSIENT), ids=list(TRANSIENT))
def test_transient_fault_is_retried_and_the_answer_used(serve, fault):
    server = serve(TRANSIENT[fault], ok)
    out = sampler_for(server).sample(["the film was"], 2, 3)
    assert out == [[Chunk(" chunk0", False), Chunk(" chunk1", False)]]
    assert len(server.requests) == 2


def test_a_trickling_server_is_cut_at_the_deadline_and_retried(serve):
    server = serve(trickle, ok)
    started = time.monotonic()
    out = sampler_for(server, timeout=0.5).sample(["the film was"], 1, 3)
    assert out == [[Chunk(" chunk0", False)]]
    assert time.monotonic() - started < 2.0  # the trickle alone would take 3 s


def test_slow_headers_are_a_timeout_and_retried(serve):
    server = serve(slow_headers, ok)
    started = time.monotonic()
    assert sampler_for(server, timeout=0.4).sample(["a"], 1, 2) == [[Chunk(" chunk0", False)]]
    assert time.monotonic() - started < 2.0


# --------------------------------------------------------------------------- class 2: wrong shape, clear error at once

WRONG_SHAPE = {
    "text-null": (choices({"text": None, "index": 0}), 'choices[0]["text"] is null, not a string'),
    "text-number": (choices({"text": 3, "index": 0}), 'choices[0]["text"] is 3, not a string'),
    "text-missing": (choices({"index": 0}), 'choices[0]["text"] is null'),
    "text-list": (choices({"text": ["a"]}), 'choices[0]["text"] is ["a"], not a string'),
    "choices-not-a-list": (body(b'{"choices": {"text": "x"}}'), 'a "choices" list'),
    "top-level-list": (body(b'[{"text": "x"}]'), 'a "choices" list'),
    "top-level-string": (body(b'"hello"'), 'a "choices" list'),
    "choice-not-an-object": (choices("x"), "choices[0] is"),
    "index-not-an-integer": (choices({"text": "x", "index": "0"}), 'choices[0]["index"] is "0"'),
    "index-a-bool": (choices({"text": "x", "index": True}), 'choices[0]["index"] is true'),
    "finish-reason-a-number": (choices({"text": "x", "finish_reason": 1}), '["finish_reason"] is 1'),
}


@pytest.mark.parametrize("fault", list(WRONG_SHAPE), ids=list(WRONG_SHAPE))
def test_an_answer_of_the_wrong_shape_is_a_clear_error_not_retried(serve, fault):
    behaviour, message = WRONG_SHAPE[fault]
    server = serve(behaviour, ok)
    with pytest.raises(RemoteSamplerError) as error:
        sampler_for(server).sample(["the film was"], 1, 3)
    assert message in str(error.value)
    assert len(server.requests) == 1  # asking again would not help


# --------------------------------------------------------------------------- class 3: permanent HTTP errors

PERMANENT = {
    "http-401": (401, "refused the credentials (HTTP 401): set the API key"),
    "http-403": (403, "refused the credentials (HTTP 403)"),
    "http-404": (404, "unknown model 'tiny' or no completions endpoint"),
    "http-400": (400, "rejected the request (HTTP 400)"),
    "http-422": (422, "rejected the request (HTTP 422)"),
}


@pytest.mark.parametrize("fault", list(PERMANENT), ids=list(PERMANENT))
def test_permanent_http_errors_are_clear_and_not_retried(serve, fault):
    code, message = PERMANENT[fault]
    server = serve(status(code, b'{"error": "the server says why"}'))
    with pytest.raises(RemoteSamplerError, match="the server says why") as error:
        sampler_for(server).sample(["a"], 1, 2)
    assert message in str(error.value) and len(server.requests) == 1


# --------------------------------------------------------------------------- class 4: retries used up, in bounded time


@pytest.mark.parametrize(
    "fault, timeout, message",
    [
        (status(503), 2.0, "HTTP 503"),
        (incomplete, 2.0, "IncompleteRead"),
        (trickle, 0.3, "no complete answer within timeout=0.3s"),
    ],
    ids=["always-503", "always-cut-short", "always-trickling"],
)
def test_retries_used_up_end_in_a_clear_error_in_bounded_time(serve, fault, timeout, message):
    server = serve(fault)
    sampler = sampler_for(server, retries=1, timeout=timeout)
    started = time.monotonic()
    with pytest.raises(RemoteSamplerError, match="failed 2 times") as error:
        sampler.sample(["a"], 1, 2)
    assert message in str(error.value)
    assert len(server.requests) == 2
    assert time.monotonic() - started < 2 * timeout + 1.5


def test_nothing_listening_is_retried_then_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sampler = CompletionsSampler(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff=0.01, timeout=1)
    with pytest.raises(RemoteSamplerError, match="failed 2 times.*Connection refused"):
        sampler.sample(["a"], 1, 2)


# --------------------------------------------------------------------------- class 5: protocol quirks handled


def test_a_server_ignoring_n_gets_one_request_per_sample(serve):
    server = serve(body(answer(1)))
    sampler = sampler_for(server)
    out = sampler.sample(["a", "b"], 3, 2)
    assert [len(r) for r in out] == [3, 3] and sampler.use_n is False
    assert len(server.requests) == 2 + 2 * 2  # one n=3 request per prefix, then 2 more samples each


def test_choices_out_of_order_are_put_in_index_order(serve):
    server = serve(choices({"index": 1, "text": " b"}, {"index": 0, "text": " a", "finish_reason": "stop"}))
    assert sampler_for(server).sample(["x"], 2, 2) == [[Chunk(" a", True), Chunk(" b", False)]]


def test_one_stop_string_is_one_stop_sequence(serve):
    server = serve(ok)
    sampler_for(server, stop="END").sample(["x"], 1, 2)
    assert server.requests[0]["stop"] == ["END"]  # not ["E", "N", "D"]


def test_request_seeds_differ_per_sample_and_extra_body_is_sent(serve):
    server = serve(body(answer(1)))
    sampler_for(server, seed=3, use_n=False, extra_body={"top_k": 5}).sample(["x"], 3, 2)
    assert len({r["seed"] for r in server.requests}) == 3
    assert all(r["top_k"] == 5 for r in server.requests)


# --------------------------------------------------------------------------- class 6: bad settings refused at once

BASE = "http://127.0.0.1:9/v1"
BAD_SETTINGS = {
    "url-without-scheme": ({"base_url": "localhost:8000/v1"}, "must start with http"),
    "url-ending-in-completions": (
        {"base_url": "http://127.0.0.1:8000/v1/completions"},
        "already ends with /completions",
    ),
    "url-without-host": ({"base_url": "http:///v1"}, "no host"),
    "url-bad-port": ({"base_url": "http://127.0.0.1:99999/v1"}, "not a valid URL"),
    "url-with-space": ({"base_url": "http://127.0.0.1:8000/v 1"}, "whitespace"),
    "model-empty": ({"model": ""}, "model must be the non-empty name"),
    "timeout-nan": ({"timeout": math.nan}, "timeout must be a finite number"),
    "timeout-inf": ({"timeout": math.inf}, "timeout must be a finite number"),
    "timeout-zero": ({"timeout": 0}, "timeout must be"),
    "retries-negative": ({"retries": -1}, "retries must be >= 0"),
    "retries-bool": ({"retries": True}, "retries must be >= 0 (an integer); got True"),
    "retries-float": ({"retries": 2.5}, "retries must be >= 0 (an integer)"),
    "max-workers-zero": ({"max_workers": 0}, "max_workers must be >= 1"),
    "backoff-negative": ({"backoff": -1.0}, "backoff must be"),
    "temperature-nan": ({"temperature": math.nan}, "temperature must be a finite number >= 0; got nan"),
    "temperature-inf": ({"temperature": math.inf}, "temperature must be a finite number >= 0; got inf"),
    "temperature-negative": ({"temperature": -0.5}, "temperature must be"),
    "top-p-zero": ({"top_p": 0.0}, "top_p must be in (0, 1]"),
    "top-p-above-one": ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    "seed-text": ({"seed": "1"}, "seed must be an integer or None"),
    "use-n-text": ({"use_n": "yes"}, "use_n must be True or False"),
    "stop-empty-string": ({"stop": [""]}, "stop must be a non-empty string"),
    "stop-not-strings": ({"stop": [1]}, "stop must be"),
    "extra-body-not-a-dict": ({"extra_body": [1]}, "extra_body must be a dict"),
    "extra-body-sets-prompt": ({"extra_body": {"prompt": "x"}}, "sets 'prompt', which the sampler sets"),
    "extra-body-sets-seed": ({"extra_body": {"seed": 1}}, "use seed= (each request then gets its own seed)"),
    "extra-body-sets-echo": ({"extra_body": {"echo": True}}, "an echoed prompt would be scored"),
    "extra-body-sets-n": ({"extra_body": {"n": 4}}, "use use_n= instead"),
    "extra-body-nan": ({"extra_body": {"top_k": math.nan}}, "no NaN/inf"),
    "api-key-with-newline": ({"api_key": "sk-abc\n"}, "api_key contains whitespace"),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS), ids=list(BAD_SETTINGS))
def test_bad_settings_are_refused_naming_the_value(case):
    overrides, message = BAD_SETTINGS[case]
    kwargs = {"base_url": BASE, "model": "m", **overrides}
    with pytest.raises(ValueError) as error:
        CompletionsSampler(kwargs.pop("base_url"), kwargs.pop("model"), **kwargs)
    assert message in str(error.value)
    assert "sk-abc" not in str(error.value)  # a key is never echoed


def test_an_api_key_with_a_newline_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret\n")
    with pytest.raises(ValueError, match=r"The API key in \$MY_KEY contains whitespace") as error:
        CompletionsSampler(BASE, "m", api_key_env="MY_KEY")
    assert "sk-secret" not in str(error.value)


@pytest.mark.parametrize(
    "args, message",
    [
        (("abc", 1, 2), "prefixes must be a list of strings"),
        ((["a", 3], 1, 2), "prefixes must be a list of strings"),
        ((["a"], 0, 2), "n and max_tokens must be integers >= 1"),
        ((["a"], True, 2), "n and max_tokens must be integers >= 1; got True"),
        ((["a"], 1, 2.0), "n and max_tokens must be integers >= 1"),
    ],
    ids=["prefixes-a-string", "prefix-not-text", "n-zero", "n-bool", "max-tokens-float"],
)
def test_bad_sample_arguments_are_refused_before_any_request(args, message):
    with pytest.raises(ValueError, match=message):
        CompletionsSampler(BASE, "m").sample(*args)


# --------------------------------------------------------------------------- class 7: fuzzing the response parser


def _ok_or_clear(raw: bytes, n: int) -> None:
    try:
        chunks = parse_completions(raw, n)
    except TransientError as error:
        assert str(error)
    except RemoteSamplerError as error:
        assert str(error)
    else:
        assert 1 <= len(chunks) <= n
        assert all(isinstance(c, Chunk) and isinstance(c.text, str) for c in chunks)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
choice_like = st.fixed_dictionaries(
    {},
    optional={
        "text": json_values | st.text(max_size=10),
        "index": json_values | st.integers(-3, 5),
        "finish_reason": json_values | st.sampled_from(["stop", "length"]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=200), n=st.integers(1, 4))
def test_fuzz_parser_on_arbitrary_bytes(raw, n):
    _ok_or_clear(raw, n)


@settings(max_examples=300, deadline=None)
@given(
    answer_=st.one_of(
        json_values,
        st.fixed_dictionaries({"choices": st.lists(choice_like | json_values, max_size=5)}),
    ),
    n=st.integers(1, 4),
)
def test_fuzz_parser_on_json_answers(answer_, n):
    _ok_or_clear(json.dumps(answer_).encode(), n)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=12), min_size=1, max_size=4), data=st.data())
def test_fuzz_parser_returns_valid_answers_exactly(texts, data):
    order = data.draw(st.permutations(range(len(texts))))
    items = [{"index": i, "text": texts[i], "finish_reason": "stop" if i % 2 else None} for i in order]
    chunks = parse_completions(json.dumps({"choices": items}).encode(), len(texts))
    assert chunks == [Chunk(t, bool(i % 2)) for i, t in enumerate(texts)]
