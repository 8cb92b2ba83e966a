"""Where candidate chunks come from when the large model is reached only as text: a completions server.

[`CompletionsSampler`][w2s_generate.CompletionsSampler] talks to any OpenAI-compatible
``/v1/completions`` endpoint (vLLM, TGI, SGLang, llama.cpp, ``transformers serve``). It asks for
``n=K`` samples per request where the server honours ``n`` and otherwise sends K requests; all
requests of a round run concurrently in a bounded pool, with timeouts and retries with backoff on
transient errors. No request is silently dropped: a sample that cannot be had raises
[`RemoteSamplerError`][w2s_generate.RemoteSamplerError].

On first use it asks the server's ``/models`` which engine it is (``owned_by``). On vLLM and SGLang
it refuses ``extra_body`` fields that the engine's completions schema does not hold (both accept
unknown fields and ignore them without a word); on vLLM it also continues each beam from the token
ids vLLM sampled it as instead of a re-tokenization of its text.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from .http_deadline import Deadline, opener_with, read_body
from .server_answers import (
    ENGINES,
    Choice,
    Chunk,
    RemoteSamplerError,
    TransientError,
    completion_fields,
    engine_of,
    ignored_fields,
    is_int,
    is_real,
    parse_choices,
)


class ChunkSampler(Protocol):
    """Samples ``n`` continuations of at most ``max_tokens`` tokens for each text prefix.

    Anything with this ``sample`` method can drive
    [`ChunkBeamSearch.run`][w2s_generate.ChunkBeamSearch.run]: a completions endpoint
    ([`CompletionsSampler`][w2s_generate.CompletionsSampler]), another client, a local engine.

    Examples:
        >>> class Canned:  # n continuations of every prefix, alternating between two texts
        ...     def sample(self, prefixes, n, max_tokens):
        ...         two = [Chunk(" so good.", finished=True), Chunk(" dull and", finished=False)]
        ...         return [[two[i % 2] for i in range(n)] for _ in prefixes]
        >>> out = cbs.run(["the film was"], sampler=Canned(), max_new_tokens=8)
        >>> out.texts[0] in {" so good.", " dull and so good.", " dull and dull and"}
        True
    """

    def sample(self, prefixes: Sequence[str], n: int, max_tokens: int) -> list[list[Chunk]]: ...


def _request_seed(seed: int, prompt: str, index: int) -> int:
    """A request's seed from the base seed, its prompt and its sample index (stable across runs)."""
    digest = hashlib.sha256(f"{seed}\x00{index}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


#: Request fields the sampler sets itself, and where to set them instead: given in ``extra_body``
#: they would silently change what is asked for (``echo`` would even return the prompt as the chunk).
_OWN_FIELDS = {
    "model": "the model argument",
    "prompt": "the prefixes given to sample()",
    "n": "use_n=",
    "max_tokens": "the chunk length the search asks for",
    "seed": "seed= (each request then gets its own seed)",
    "temperature": "temperature=",
    "top_p": "top_p=",
    "stop": "stop=",
    "stream": "nothing: the sampler reads whole answers",
    "echo": "nothing: an echoed prompt would be scored as the response",
}
#: Token ids kept for continuing beams (vLLM), in all; the oldest texts are forgotten past it.
TOKEN_ID_CACHE = 2**22
#: The longest wait between two attempts (seconds): a server restarting is found within this of coming back.
MAX_BACKOFF = 30.0


def _check_header_value(value: str, what: str) -> None:
    """Refuse a key with whitespace or control characters (it would be sent broken, or not at all)."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(
            f"{what} contains whitespace or a control character (a newline copied with it?): strip it. "
            "The key itself is not shown."
        )


class _TokenIdCache:
    """The server's token ids of texts it wrote (prompt + chunk), newest last, at most ``limit`` ids in all.

    A beam is then continued from the tokens it was sampled as: its text re-tokenized could differ
    (a byte-level BPE merges a word's pieces anew; a chunk cut inside a character loses its bytes).
    """

    def __init__(self, limit: int = TOKEN_ID_CACHE) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, array] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, text: str) -> list[int] | None:
        with self._lock:
            ids = self._ids.get(text)
            return None if ids is None else ids.tolist()

    def put(self, text: str, ids: list[int]) -> None:
        with self._lock:
            old = self._ids.pop(text, None)
            self._size -= 0 if old is None else len(old)
            self._ids[text] = array("i", ids)
            self._size += len(ids)
            while self._size > self.limit and self._ids:
                self._size -= len(self._ids.popitem(last=False)[1])


class CompletionsSampler:
    """Sample chunks from an OpenAI-compatible completions endpoint.

    Args:
        base_url: the server's base URL, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: the model name the server knows.
        api_key: the key; default read from the environment variable ``api_key_env``.
        api_key_env: where to read the key from (``OPENAI_API_KEY``); no key is sent if unset.
        temperature: sampling temperature.
        top_p: nucleus sampling.
        stop: stop sequences (the response ends there); one string is one stop sequence.
        use_n: ask for ``n`` samples per request; switched off for good when the server returns fewer.
        max_workers: requests in flight at once.
        timeout: seconds per request attempt in all (connecting, waiting and reading): a server that
            trickles bytes cannot hold a request longer.
        retries: attempts after the first on transient errors (5xx, 429, timeouts, broken or cut-short
            answers, malformed JSON).
        backoff: first retry delay in seconds; doubles each retry, up to ``MAX_BACKOFF`` (30 s).
        seed: base seed for reproducible runs: each request's seed is derived from it, the prompt text
            and the sample's index, so it does not depend on request order or on earlier requests.
        extra_body: more request fields for a given server (vLLM's ``top_k``, ``transformers
            serve``'s ``generation_config``); fields the sampler sets itself (``prompt``, ``n``,
            ``seed``, ``temperature``, ...) are refused there, and so, on vLLM and SGLang, are
            fields their completions schema does not hold (they would ignore them without a word).

    What the sampler learns of the server on first use (``/models``' ``owned_by``) is
    [`server_kind`][w2s_generate.CompletionsSampler.server_kind]. On vLLM each request also asks for
    the token ids (``return_token_ids``), and a beam is continued from the ids it was sampled as
    (a token-id prompt) rather than from its text re-tokenized by the server.

    Examples:
        >>> sampler = CompletionsSampler("http://127.0.0.1:8000/v1", "meta-llama/Llama-3.1-70B")  # doctest: +SKIP
        >>> out = cbs.run(["Write a haiku about rain."], sampler=sampler, max_new_tokens=64)        # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.7,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        use_n: bool = True,
        max_workers: int = 16,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        seed: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://; got {base_url!r}.")
        try:
            host = urllib.parse.urlsplit(base_url).hostname
            urllib.parse.urlsplit(base_url).port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as error:
            raise ValueError(f"base_url={base_url!r} is not a valid URL: {error}.") from None
        if not host or any(c.isspace() or ord(c) < 32 for c in base_url):
            raise ValueError(
                f"base_url={base_url!r} is not a valid URL (no host, or whitespace in it); "
                "e.g. http://127.0.0.1:8000/v1."
            )
        if base_url.rstrip("/").endswith("/completions"):
            raise ValueError(
                f"base_url={base_url!r} already ends with /completions: give the server's base URL "
                "(e.g. http://127.0.0.1:8000/v1); the sampler adds /completions itself."
            )
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be the non-empty name the server serves; got {model!r}.")
        checks = (
            (
                "max_workers",
                max_workers,
                is_int(max_workers) and max_workers >= 1,
                "must be >= 1 (an integer)",
            ),
            ("retries", retries, is_int(retries) and retries >= 0, "must be >= 0 (an integer)"),
            (
                "timeout",
                timeout,
                is_real(timeout) and math.isfinite(timeout) and timeout > 0,
                "must be a finite number of seconds > 0",
            ),
            (
                "backoff",
                backoff,
                is_real(backoff) and math.isfinite(backoff) and backoff >= 0,
                "must be a finite number of seconds >= 0",
            ),
            (
                "temperature",
                temperature,
                is_real(temperature) and math.isfinite(temperature) and temperature >= 0,
                "must be a finite number >= 0",
            ),
            ("top_p", top_p, is_real(top_p) and 0 < top_p <= 1, "must be in (0, 1]"),
            ("seed", seed, seed is None or is_int(seed), "must be an integer or None"),
            ("use_n", use_n, isinstance(use_n, bool), "must be True or False"),
        )
        for name, value, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} {rule}; got {value!r}.")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and (
            not isinstance(stop, Sequence) or not all(isinstance(s, str) and s for s in stop)
        ):
            raise ValueError(f"stop must be a non-empty string or a list of them; got {stop!r}.")
        if extra_body is not None:
            if not isinstance(extra_body, dict) or not all(isinstance(k, str) for k in extra_body):
                raise ValueError(f"extra_body must be a dict of request fields; got {extra_body!r}.")
            for key in extra_body:
                if key in _OWN_FIELDS:
                    raise ValueError(
                        f"extra_body sets {key!r}, which the sampler sets itself: use {_OWN_FIELDS[key]} instead."
                    )
            try:
                json.dumps(extra_body, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ValueError(f"extra_body must be plain JSON (no NaN/inf): {error}") from None
        if api_key is None:
            api_key = os.environ.get(api_key_env)
            if api_key:
                _check_header_value(api_key, f"The API key in ${api_key_env}")
        elif not isinstance(api_key, str):
            raise ValueError(f"api_key must be a string; got a {type(api_key).__name__}.")
        elif api_key:
            _check_header_value(api_key, "api_key")
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.api_key = api_key
        self.temperature = temperature
        self.top_p = top_p
        self.stop = list(stop) if stop else None
        self.use_n = use_n
        self.max_workers = max_workers
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.seed = seed
        self.extra_body = dict(extra_body or {})
        self._kind: str | None = None
        self._asked = False  # whether /models has answered (a server not up yet is asked again)
        self._refusal: str | None = None
        self._token_ids = _TokenIdCache()

    def __repr__(self) -> str:
        return f"CompletionsSampler({self.url!r}, model={self.model!r})"

    # ------------------------------------------------------------------ sampling
    def sample(self, prefixes: Sequence[str], n: int, max_tokens: int) -> list[list[Chunk]]:
        """``n`` chunks of at most ``max_tokens`` tokens for every prefix, all requests concurrent."""
        if isinstance(prefixes, str) or not all(isinstance(p, str) for p in prefixes):
            raise ValueError(f"prefixes must be a list of strings; got {prefixes!r:.80}.")
        if not (is_int(n) and is_int(max_tokens) and n >= 1 and max_tokens >= 1):
            raise ValueError(f"n and max_tokens must be integers >= 1; got {n!r}, {max_tokens!r}.")
        self.server_kind()
        if self._refusal is not None:
            raise RemoteSamplerError(self._refusal)
        results: list[list[Chunk]] = [[] for _ in prefixes]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            if self.use_n and n > 1:
                futures = [pool.submit(self._request, p, n, max_tokens) for p in prefixes]
                for i, future in enumerate(futures):
                    results[i] = future.result()
                if any(len(r) < n for r in results):
                    self.use_n = False  # the server ignores n: ask one sample per request from now on
            jobs = [
                (i, pool.submit(self._request, prefixes[i], 1, max_tokens, j))
                for i, r in enumerate(results)
                for j in range(len(r), n)
            ]
            for i, future in jobs:
                results[i].extend(future.result())
        for i, r in enumerate(results):
            if len(r) != n:
                raise RemoteSamplerError(f"Prefix {i} got {len(r)} samples instead of {n} from {self.url}.")
        return results

    # ------------------------------------------------------------------ the server
    def server_kind(self) -> str | None:
        """The engine behind ``base_url``: ``"vllm"`` or ``"sglang"`` as its ``/models`` list says
        (``owned_by``), None for another or one that does not say.

        Asked once, on first use (``sample`` asks first); a server that cannot be reached yet is asked
        again on the next call. On vLLM and SGLang, ``extra_body`` fields outside the completions
        schema (read from the server's ``/openapi.json``) are refused from then on.
        """
        if self._asked:
            return self._kind
        try:
            models = self._get_json(self.url[: -len("/completions")] + "/models")
        except TransientError:
            return None
        self._asked = True
        self._kind = engine_of(models, self.model)
        if self._kind is not None and self.extra_body:  # both accept unknown fields without a word
            try:
                schema = self._get_json(urllib.parse.urljoin(self.url, "../openapi.json"))
            except TransientError:
                schema = None
            fields = completion_fields(schema)
            self._refusal = ignored_fields(self.extra_body, fields, ENGINES[self._kind], self.url)
        return self._kind

    def _get_json(self, url: str) -> Any:
        """GET ``url`` as JSON; None for an HTTP error or an answer that is not JSON; TransientError if unreachable."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = Deadline(min(self.timeout, 10.0))
        opener = opener_with(deadline)
        try:
            with opener.open(
                urllib.request.Request(url, headers=headers), timeout=deadline.seconds
            ) as answer:
                raw = read_body(answer)
            return json.loads(raw)
        except urllib.error.HTTPError as error:
            error.close()
            return None
        except (ValueError, RecursionError, RemoteSamplerError):  # not JSON, or absurdly large
            return None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise TransientError(f"{type(error).__name__}: {error}") from None
        finally:
            deadline.cancel()

    # ------------------------------------------------------------------ requests
    def _payload(self, prompt: str, n: int, max_tokens: int, index: int = 0) -> dict[str, Any]:
        vllm = self._kind == "vllm"
        ids = self._token_ids.get(prompt) if vllm else None
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt if ids is None else ids,
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if n > 1:
            body["n"] = n
        if self.stop:
            body["stop"] = self.stop
        if self.seed is not None:  # from the text, however the prompt is sent
            body["seed"] = _request_seed(self.seed, prompt, index)
        if vllm:
            body["return_token_ids"] = True
        body.update(self.extra_body)
        return body

    def _request(self, prompt: str, n: int, max_tokens: int, index: int = 0) -> list[Chunk]:
        body = json.dumps(self._payload(prompt, n, max_tokens, index)).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(self.backoff * 2.0 ** min(attempt - 1, 64), MAX_BACKOFF)
                time.sleep(delay * (1 + 0.1 * random.random()))
            try:
                choices = self._once(body, headers, n)
            except TransientError as error:
                last = error
                continue
            self._remember(prompt, choices)
            return [choice.chunk for choice in choices]
        raise RemoteSamplerError(
            f"{self.url} failed {self.retries + 1} times (model {self.model!r}); last error: {last}"
        ) from last

    def _remember(self, prompt: str, choices: list[Choice]) -> None:
        """Keep the token ids of each open chunk's text (prompt + chunk), to continue it from them."""
        for choice in choices:
            text = choice.chunk.text
            # A chunk ending in U+FFFD was cut inside a character: its ids hold bytes its text lacks.
            if choice.chunk.finished or not text or text.endswith("\ufffd"):
                continue
            if choice.prompt_ids is not None and choice.ids:
                self._token_ids.put(prompt + text, choice.prompt_ids + choice.ids)

    def _once(self, body: bytes, headers: dict[str, str], n: int) -> list[Choice]:
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        deadline = Deadline(self.timeout)
        opener = opener_with(deadline)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                raw = read_body(response)
        except urllib.error.HTTPError as error:
            try:
                detail = error.read(2000).decode(errors="replace")[:300]
            except (OSError, http.client.HTTPException):
                detail = "(no readable body)"
            if error.code in (401, 403):
                raise RemoteSamplerError(
                    f"{self.url} refused the credentials (HTTP {error.code}): set the API key (api_key= or the "
                    f"environment variable the sampler reads). Server said: {detail}"
                ) from None
            if error.code == 404:
                raise RemoteSamplerError(
                    f"{self.url} answered 404: unknown model {self.model!r} or no completions endpoint there. "
                    f"Server said: {detail}"
                ) from None
            if error.code == 429 or error.code >= 500:
                raise TransientError(f"HTTP {error.code}: {detail}") from None
            raise RemoteSamplerError(
                f"{self.url} rejected the request (HTTP {error.code}): {detail}"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            # OSError covers timeouts and broken connections; HTTPException a cut-short body
            # (IncompleteRead) or a garbled status line.
            if deadline.expired:
                raise TransientError(f"no complete answer within timeout={self.timeout}s") from None
            raise TransientError(f"{type(error).__name__}: {error}") from None
        finally:
            deadline.cancel()
        if deadline.expired:  # an answer without Content-Length, cut at the deadline
            raise TransientError(f"no complete answer within timeout={self.timeout}s")
        return parse_choices(raw, n)
