"""The prompts of a run: JSON lines from ``--prompts`` (or ``--prompt`` texts), each checked on its own.

A line that cannot be a prompt is a ``BadLine`` (reported with its number, the others still answered);
a file that cannot be JSON lines at all is refused before anything is read.
"""

from __future__ import annotations

import difflib
import json
import os
import stat
from dataclasses import dataclass
from typing import Any

#: The fields of a prompt line; another field is ignored unless it looks like a misspelling of one.
FIELDS = ("prompt", "id", "weak_prompt")


@dataclass
class PromptRecord:
    """One prompt to answer: where it came from (``line``, 1-based) and what it says."""

    line: int
    id: int | str
    prompt: str | list[dict[str, str]]
    weak_prompt: str | list[dict[str, str]] | None = None


@dataclass
class BadLine:
    """A prompt that could not be answered, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}; skipped"


# --------------------------------------------------------------------------- reading prompts


def check_prompt(value: Any, field: str) -> str | list[dict[str, str]]:
    """``value`` if it is a usable prompt (non-empty text or chat messages), else ValueError."""
    if isinstance(value, str):
        if not value:
            raise ValueError(f'"{field}" is empty')
        return value
    if isinstance(value, list) and value:
        for i, message in enumerate(value):
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise ValueError(
                    f'"{field}"[{i}] is not a chat message: expected {{"role": TEXT, "content": TEXT}}, '
                    f"got {json.dumps(message)[:80]}"
                )
        return value
    raise ValueError(
        f'"{field}" must be text or a non-empty list of chat messages, got {json.dumps(value)[:80]}'
    )


def _check_unicode(value: Any, path: str = "the line") -> None:
    """Refuse text with unpaired surrogates (JSON allows ``"\\ud800"``; no tokenizer or file can take it)."""
    stack = [(value, path)]
    while stack:  # iterative: the nesting depth is the user's
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(
                    f"{where} holds an unpaired surrogate ({item[error.start]!r} at character {error.start}), "
                    "which is not valid Unicode: fix the escape sequence"
                ) from None
        elif isinstance(item, dict):
            stack.extend((k, where) for k in item)
            stack.extend((v, f'"{k}"') for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, where) for v in item)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (``json`` would keep the last of two silently)."""
    data = dict(pairs)
    if len(data) < len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKey(f"the key {json.dumps(twice)} appears twice in one object: keep one")
    return data


def _misspelt_field(key: str) -> str | None:
    """The field that ``key`` looks like a misspelling of (``ID``, ``weak-prompt``, ``prompts``), else None."""
    plain = key.strip().lower().replace("-", "_").replace(" ", "_")
    if plain in FIELDS:
        return plain
    if len(plain) <= 3:  # "idx" or "ids" are a dataset's own fields more often than typos of "id"
        return None
    close = difflib.get_close_matches(plain, FIELDS, n=1, cutoff=0.85)
    return close[0] if close else None


def parse_prompt_line(text: str, line: int) -> PromptRecord:
    """One JSON line of a prompts file as a ``PromptRecord``; ValueError says what is wrong."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise ValueError("not valid JSON here (nested too deeply)") from None
    except _DuplicateKey as error:
        raise ValueError(str(error)) from None
    except ValueError as error:  # e.g. an integer with more digits than Python converts
        raise ValueError(f"not valid JSON ({error})") from None
    _check_unicode(data)
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        raise ValueError(
            'expected a JSON object with a "prompt", got a list: --prompts takes JSON lines, one object per '
            "line, not a JSON array"
        )
    if not isinstance(data, dict):
        raise ValueError(f'expected a JSON object with a "prompt", got {type(data).__name__}')
    for key in data:
        field = _misspelt_field(key) if key not in FIELDS else None
        if field is not None:
            raise ValueError(f"unknown field {json.dumps(key)}: did you mean {json.dumps(field)}?")
    if "prompt" not in data:
        raise ValueError(f'no "prompt" field (fields: {", ".join(sorted(data)) or "none"})')
    record_id = data.get("id", line)
    if isinstance(record_id, bool) or not isinstance(record_id, (int, str)):
        raise ValueError(f'"id" must be text or an integer, got {json.dumps(record_id)}')
    prompt = check_prompt(data["prompt"], "prompt")
    weak = data.get("weak_prompt")
    weak = None if weak is None else check_prompt(weak, "weak_prompt")
    return PromptRecord(line, record_id, prompt, weak)


def _decode_line(raw: bytes, line: int) -> str:
    """One line of a JSON-lines file as text (a UTF-8 byte-order mark on line 1 is skipped)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte {error.start + 1}): save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff") if line == 1 else text


def read_prompts(path: str | os.PathLike) -> tuple[list[PromptRecord], list[BadLine]]:
    """The prompts of a JSON-lines file and its bad lines (blank lines are ignored).

    Lines end at ``\\n`` only (JSON text may hold U+2028 and the like); each line is decoded on its
    own, so one line that is not UTF-8 is one bad line.
    """
    records: list[PromptRecord] = []
    bad: list[BadLine] = []
    first_line_of: dict[int | str, int] = {}
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                text = _decode_line(raw, line)
                if not text.strip():
                    continue
                record = parse_prompt_line(text, line)
            except ValueError as error:
                bad.append(BadLine(line, str(error)))
                continue
            if record.id in first_line_of:
                bad.append(
                    BadLine(
                        line, f"id {json.dumps(record.id)} already used on line {first_line_of[record.id]}"
                    )
                )
                continue
            first_line_of[record.id] = line
            records.append(record)
    return records, bad


def check_prompts_file(path: str | os.PathLike) -> None:
    """ValueError for a ``--prompts`` that cannot be JSON lines: a device, a socket, a binary file.

    A named pipe is read as it comes (``--prompts <(...)``); a folder or a missing file is left to
    the reader, whose OSError says so.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    kind = file_kind(mode)
    if kind is not None and not stat.S_ISFIFO(mode) and not stat.S_ISDIR(mode):
        raise ValueError(f"--prompts {path} is {kind}, not a regular file: give a JSON-lines file")
    if stat.S_ISREG(mode):
        with open(path, "rb") as handle:
            if b"\0" in handle.read(1 << 16):
                raise ValueError(
                    f"--prompts {path} is not a text file (it holds NUL bytes): give a JSON-lines file, one "
                    'object such as {"prompt": "..."} per line'
                )


def direct_prompts(texts: list[str]) -> tuple[list[PromptRecord], list[BadLine]]:
    """The prompts of ``--prompt`` (ids 1, 2, ...) and the bad ones."""
    records, bad = [], []
    for i, text in enumerate(texts, start=1):
        try:
            records.append(PromptRecord(i, i, check_prompt(text, "prompt")))
        except ValueError as error:
            bad.append(BadLine(i, f"--prompt #{i}: {error}"))
    return records, bad


def file_kind(mode: int) -> str | None:
    """What a file that is not a regular file is, in words (None for a regular file)."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"
