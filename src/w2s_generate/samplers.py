"""Where candidate chunks come from when the large model is reached only as text: a completions server.

[`CompletionsSampler`][w2s_generate.CompletionsSampler] talks to any OpenAI-compatible ``/v1/completions`` endpoint (vLLM, TGI,
SGLang, llama.cpp, ``transformers serve``). It asks for ``n=K`` samples per request where the server
honours ``n`` and otherwise sends K requests; all requests of a round run concurrently in a bounded
pool, with timeouts and retries with backoff on transient errors. No request is silently dropped:
a sample that cannot be had raises [`RemoteSamplerError`][w2s_generate.RemoteSamplerError].
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Chunk:
    """One sampled continuation.

    Attributes:
        text: the continuation's text.
        finished: whether the response ended (EOS or a stop sequence: finish reason ``"stop"``).

    Examples:
        >>> Chunk(" a fine film.", finished=True)
        Chunk(text=' a fine film.', finished=True)
    """

    text: str
    finished: bool


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


class RemoteSamplerError(RuntimeError):
    """A completions request failed for good (bad credentials, unknown model, retries used up).

    Examples:
        >>> sampler = CompletionsSampler("http://127.0.0.1:9/v1", "absent", retries=0, timeout=2)  # nothing there
        >>> try:
        ...     cbs.run(["the film was"], sampler=sampler, max_new_tokens=4)
        ... except RemoteSamplerError:
        ...     print("no answer")
        no answer
    """


class _Transient(Exception):
    """A failure worth retrying (5xx, 429, timeout, broken connection, malformed JSON)."""


class CompletionsSampler:
    """Sample chunks from an OpenAI-compatible completions endpoint.

    Args:
        base_url: the server's base URL, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: the model name the server knows.
        api_key: the key; default read from the environment variable ``api_key_env``.
        api_key_env: where to read the key from (``OPENAI_API_KEY``); no key is sent if unset.
        temperature: sampling temperature.
        top_p: nucleus sampling.
        stop: stop sequences (the response ends there).
        use_n: ask for ``n`` samples per request; switched off for good when the server returns fewer.
        max_workers: requests in flight at once.
        timeout: seconds per request.
        retries: attempts after the first on transient errors (5xx, 429, timeouts, malformed JSON).
        backoff: first retry delay in seconds; doubles each retry.
        seed: base seed for reproducible runs: each request's seed is derived from it, the prompt text
            and the sample's index, so it does not depend on request order or on earlier requests.
        extra_body: more request fields for a given server (vLLM's ``top_k``, ``transformers
            serve``'s ``generation_config``).

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
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://; got {base_url!r}.")
        if max_workers < 1 or retries < 0 or timeout <= 0:
            raise ValueError(
                f"max_workers must be >= 1, retries >= 0 and timeout > 0; got {max_workers}, {retries}, {timeout}."
            )
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
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

    def __repr__(self) -> str:
        return f"CompletionsSampler({self.url!r}, model={self.model!r})"

    # ------------------------------------------------------------------ sampling
    def sample(self, prefixes: Sequence[str], n: int, max_tokens: int) -> list[list[Chunk]]:
        """``n`` chunks of at most ``max_tokens`` tokens for every prefix, all requests concurrent."""
        if n < 1 or max_tokens < 1:
            raise ValueError(f"n and max_tokens must be >= 1; got {n}, {max_tokens}.")
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

    def _payload(self, prompt: str, n: int, max_tokens: int, index: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if n > 1:
            body["n"] = n
        if self.stop:
            body["stop"] = self.stop
        if self.seed is not None:
            body["seed"] = _request_seed(self.seed, prompt, index)
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
                time.sleep(self.backoff * 2 ** (attempt - 1) * (1 + 0.1 * random.random()))
            try:
                return self._once(body, headers, n)
            except _Transient as error:
                last = error
        raise RemoteSamplerError(
            f"{self.url} failed {self.retries + 1} times (model {self.model!r}); last error: {last}"
        ) from last

    def _once(self, body: bytes, headers: dict[str, str], n: int) -> list[Chunk]:
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
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
                raise _Transient(f"HTTP {error.code}: {detail}") from None
            raise RemoteSamplerError(
                f"{self.url} rejected the request (HTTP {error.code}): {detail}"
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            raise _Transient(f"{type(error).__name__}: {error}") from None
        try:
            choices = json.loads(raw)["choices"]
            chunks = [
                Chunk(str(c["text"]), c.get("finish_reason") == "stop")
                for c in sorted(choices, key=lambda c: c.get("index", 0))
            ]
        except (ValueError, KeyError, TypeError) as error:
            raise _Transient(f"malformed response ({type(error).__name__}): {raw[:200]!r}") from None
        if not chunks or len(chunks) > n:
            raise _Transient(f"expected up to {n} choices, got {len(chunks)}")
        return chunks
