"""What a completions server says: its answers parsed into chunks, and which engine it is.

[`CompletionsSampler`][w2s_generate.CompletionsSampler] reads every answer through here: a body of the
wrong shape is a [`RemoteSamplerError`][w2s_generate.RemoteSamplerError] naming what is wrong, a body
worth asking for again (cut short, not JSON, an error object) a ``TransientError``.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from typing import Any


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


class TransientError(Exception):
    """A failure worth retrying (5xx, 429, timeout, broken connection, malformed JSON)."""


#: An answer larger than this is refused (chunks are a few tokens; this is a server gone wrong).
MAX_ANSWER_BYTES = 32 * 2**20
#: ``finish_reason`` values that end the response: EOS or a stop sequence ("stop"; vLLM then names the
#: stop string or token in ``stop_reason`` and leaves the string out of the text), vLLM's repetition
#: detection ("repetition"). "length" and null leave it open.
_FINISHED_REASONS = frozenset({"stop", "repetition"})
#: ``finish_reason`` values of a choice the server cut short (vLLM and SGLang "abort" the requests of an
#: engine shutting down; vLLM reports "error" for a failed one): partial text, so the attempt is retried.
_FAILED_REASONS = frozenset({"abort", "error"})


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def parse_completions(raw: bytes, n: int) -> list[Chunk]:
    """The chunks of one ``/v1/completions`` answer body, in ``index`` order.

    Raises ``TransientError`` (retried) for a body that is not JSON, is cut short, carries an ``error``
    object, holds no or too many choices, or has a choice the server cut short (``finish_reason``
    "abort" or "error"); [`RemoteSamplerError`][w2s_generate.RemoteSamplerError] for a JSON answer of
    the wrong shape (a ``text`` that is ``null`` or a number, ``choices`` that is not a list): that
    server does not speak the completions protocol, and asking again will not help.
    """
    return [choice.chunk for choice in parse_choices(raw, n)]


@dataclass(frozen=True)
class Choice:
    """One parsed choice: its chunk, and the token ids of its prompt and text where the server sent them."""

    chunk: Chunk
    prompt_ids: list[int] | None = None
    ids: list[int] | None = None


def token_ids(value: Any) -> list[int] | None:
    """A list of token ids as sent, or None for anything else (the ids are an optimisation only)."""
    if isinstance(value, list) and all(is_int(t) and 0 <= t < 2**31 for t in value):
        return value
    return None


def parse_choices(raw: bytes, n: int) -> list[Choice]:
    """``parse_completions``, keeping each choice's ``prompt_token_ids`` and ``token_ids`` (vLLM)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:  # bad JSON or UTF-8, a cut-off body, absurd nesting
        raise TransientError(f"malformed response ({type(error).__name__}): {raw[:200]!r}") from None
    if isinstance(data, dict) and "error" in data:
        raise TransientError(f"the server answered with an error: {json.dumps(data['error'])[:300]}")
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise RemoteSamplerError(
            'expected a JSON object with a "choices" list (an OpenAI-compatible /v1/completions answer), got '
            f"{json.dumps(data)[:200]}: check that the URL is the server's /v1 base and that it serves completions."
        )
    choices: list[tuple[int, int, Choice]] = []
    for i, choice in enumerate(data["choices"]):
        if not isinstance(choice, dict):
            raise RemoteSamplerError(f"choices[{i}] is {json.dumps(choice)[:80]}, not an object.")
        text, index, reason = choice.get("text"), choice.get("index", 0), choice.get("finish_reason")
        if not isinstance(text, str):
            raise RemoteSamplerError(
                f'choices[{i}]["text"] is {json.dumps(text)[:80]}, not a string: the server did not return '
                "completion text (a chat-completions endpoint, or a server bug); refusing to use it as text."
            )
        if not is_int(index):
            raise RemoteSamplerError(f'choices[{i}]["index"] is {json.dumps(index)[:80]}, not an integer.')
        if reason is not None and not isinstance(reason, str):
            raise RemoteSamplerError(
                f'choices[{i}]["finish_reason"] is {json.dumps(reason)[:80]}, not a string or null.'
            )
        if reason in _FAILED_REASONS:
            raise TransientError(
                f'choices[{i}] ended with finish_reason "{reason}": the server cut the request short '
                "(shutting down?); its text is partial"
            )
        chunk = Chunk(text, reason in _FINISHED_REASONS)
        ids = Choice(chunk, token_ids(choice.get("prompt_token_ids")), token_ids(choice.get("token_ids")))
        choices.append((index, i, ids))
    if not choices or len(choices) > n:
        raise TransientError(f"expected 1 to {n} choices, got {len(choices)}")
    return [choice for _, _, choice in sorted(choices, key=lambda c: c[:2])]


#: Engines a ``/models`` list names in ``owned_by``, and how to write their names.
ENGINES = {"vllm": "vLLM", "sglang": "SGLang"}
#: Request fields of other servers, refused on vLLM and SGLang when their schema cannot be read.
FOREIGN_FIELDS = {"generation_config": "transformers serve"}


def engine_of(models: Any, model: str) -> str | None:
    """The engine named by a ``/models`` answer's ``owned_by`` (the entry of ``model``, else the first)."""
    entries = models.get("data") if isinstance(models, dict) else None
    if not isinstance(entries, list):
        return None
    entries = [e for e in entries if isinstance(e, dict)]
    entry = next((e for e in entries if e.get("id") == model), entries[0] if entries else None)
    owner = entry.get("owned_by") if entry else None
    return owner.lower() if isinstance(owner, str) and owner.lower() in ENGINES else None


def completion_fields(schema: Any) -> set[str] | None:
    """The request fields of a FastAPI server's completions schema (vLLM's ``CompletionRequest``), if any."""
    try:
        fields = schema["components"]["schemas"]["CompletionRequest"]["properties"]
    except (KeyError, TypeError):
        return None
    return set(fields) if isinstance(fields, dict) and fields else None


def ignored_fields(extra_body: dict[str, Any], fields: set[str] | None, engine: str, url: str) -> str | None:
    """Why ``extra_body`` is refused on ``engine`` (it holds fields the engine would ignore), or None."""
    known = (lambda key: key not in FOREIGN_FIELDS) if fields is None else fields.__contains__
    ignored = sorted(key for key in extra_body if not known(key))
    if not ignored:
        return None
    names = ", ".join(
        f"{key!r}" + (f" ({FOREIGN_FIELDS[key]}'s)" if key in FOREIGN_FIELDS else "") for key in ignored
    )
    return (
        f"extra_body sets {names}, not a request field of {engine}'s completions: {engine} at {url} would "
        f"ignore it without a word. Use {engine}'s own fields (top_k, min_p, repetition_penalty, stop_token_ids, "
        "...) or drop it."
    )
