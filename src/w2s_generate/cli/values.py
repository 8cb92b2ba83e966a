"""The value types of the command line's options: each parses one value or says what it must be.

argparse turns the ``ArgumentTypeError`` into a one-line usage error that names the option.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from typing import Any


def _integer(text: str, rule: str, ok: Callable[[int], bool]) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
    return value


def _number(text: str, rule: str, ok: Callable[[float], bool]) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):  # nan and inf parse as floats: refused here
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, "an integer >= 1", lambda v: v >= 1)


def non_negative_int(text: str) -> int:
    return _integer(text, "an integer >= 0", lambda v: v >= 0)


def seed_int(text: str) -> int:
    return _integer(text, "an integer from 0 to 2**63 - 1", lambda v: 0 <= v < 2**63)


def finite_float(text: str) -> float:
    return _number(text, "a finite number", lambda v: True)


def positive_float(text: str) -> float:
    return _number(text, "a finite number > 0", lambda v: v > 0)


def non_negative_float(text: str) -> float:
    return _number(text, "a finite number >= 0", lambda v: v >= 0)


def probability(text: str) -> float:
    return _number(text, "in (0, 1]", lambda v: 0 < v <= 1)


def schedule(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be integers >= 1 separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be integers >= 1 separated by commas, got {text!r}")
    return values


def stop_string(text: str) -> str:
    r"""A stop string as typed in a shell: ``\n`` and ``\t`` are a newline and a tab."""
    value = text.replace("\\n", "\n").replace("\\t", "\t")
    if not value:
        raise argparse.ArgumentTypeError("must be non-empty text")
    return value


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}), got {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"top_k\": 50}}', got {text!r}")
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must not hold NaN or Infinity, got {text!r}") from None
    return value


def path_text(text: str) -> str:
    """A path or hub id: any text but the empty one (which would name the working folder)."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def out_file(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty: give a file name, e.g. results.jsonl")
    return text


_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu")
_DEVICE = re.compile(r"(cpu|meta|mps|(cuda|xpu|npu|mlu|hpu|musa)(:\d+)?)")


def device_map(text: str) -> str:
    """A device_map that from_pretrained takes as text: a strategy or one device."""
    if text in _DEVICE_MAPS or _DEVICE.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(
        f"must be {', '.join(_DEVICE_MAPS[:-1])}, {_DEVICE_MAPS[-1]} or a device such as cuda:0, got {text!r}"
    )


def env_name(text: str) -> str:
    """The name of an environment variable (never the value it holds)."""
    if not text:
        raise argparse.ArgumentTypeError("must be the name of an environment variable, got ''")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise argparse.ArgumentTypeError(  # the text is not shown: it may be the key itself
            "must be the name of an environment variable (the key itself is read from it), e.g. OPENAI_API_KEY; "
            "what was given is not a name (not shown here, in case it is a key)"
        )
    return text
