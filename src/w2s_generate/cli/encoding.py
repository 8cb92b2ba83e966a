"""Each prompt as each model reads it: chat templates, token ids, and the context checks before generating."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..prompt_format import encode_prompt, has_chat_template, prompt_text
from .messages import reason
from .prompts import BadLine, PromptRecord


def _large_chat_template(tokenizer, args: argparse.Namespace) -> bool:
    """Whether the large model's prompts go through its chat template (when it has one, unless turned off)."""
    return not args.no_chat_template and has_chat_template(tokenizer)


def _no_template_reason(args: argparse.Namespace, whose: str) -> str:
    return "--no-chat-template was given" if args.no_chat_template else f"{whose} has no chat template"


def strong_prompt_ids(record: PromptRecord, tokenizer, args: argparse.Namespace) -> list[int]:
    """The large model's token ids of a prompt, through its chat template when it has one."""
    use_template = _large_chat_template(tokenizer, args)
    if not use_template and not isinstance(record.prompt, str):
        why = _no_template_reason(args, "its tokenizer")
        raise ValueError(f"the prompt is a list of chat messages but {why}: give the prompt as text")
    ids = encode_prompt(tokenizer, record.prompt, chat_template=use_template)
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    return ids


def strong_prompt_text(record: PromptRecord, tokenizer, args: argparse.Namespace) -> str:
    """The prompt text sent to --endpoint: through --tokenizer's chat template when there is one."""
    if tokenizer is not None and _large_chat_template(tokenizer, args):
        return prompt_text(tokenizer, record.prompt, chat_template=True)
    if isinstance(record.prompt, str):
        return record.prompt
    raise ValueError(
        "the prompt is a list of chat messages but no chat template formats it for --endpoint: pass --tokenizer "
        "with the served model's tokenizer, or give the prompt as text"
    )


def weak_prompt(record: PromptRecord, pair, args: argparse.Namespace):
    """What the weak pair reads as the prompt: the text (the pair's own rule formats it) or chat messages."""
    prompt = record.weak_prompt if record.weak_prompt is not None else record.prompt
    if isinstance(prompt, str):
        return prompt
    if not args.no_chat_template and has_chat_template(pair.tokenizer):
        return prompt
    field = "weak_prompt" if record.weak_prompt is not None else "prompt"
    why = _no_template_reason(args, "the weak tokenizer")
    raise ValueError(f'"{field}" is a list of chat messages for the weak pair but {why}: give it as text')


@dataclass
class Prepared:
    """A prompt ready to generate from: the large model's ids (or text, for --endpoint) and the pair's prompt."""

    record: PromptRecord
    ids: list[int] | None
    weak: Any
    text: str | None = None  # the prompt as text, for --endpoint


def _context(model) -> int | None:
    """The hard context of a model with a learned position table (GPT-2's 1024), else None."""
    from .._compat import learned_position_limit

    return learned_position_limit(model)


def _check_fits(length: int, room: int, limit: int | None, whose: str, args) -> None:
    """ValueError unless ``length`` prompt tokens plus ``room`` new ones fit in ``limit`` positions."""
    if limit is None or length + room <= limit:
        return
    if length >= limit:
        raise ValueError(
            f"the prompt is {length} tokens for {whose}, whose context holds {limit}: shorten the prompt"
        )
    raise ValueError(
        f"the prompt is {length} tokens and --max-new-tokens {args.max_new_tokens} for {whose}, whose context "
        f"holds {limit}: shorten the prompt or pass --max-new-tokens {limit - length} or less"
    )


def _weak_lengths(pair, weak) -> list[tuple[int, Any]]:
    """``(prompt tokens, model)`` for each side of the pair (a conditioned side reads its condition too)."""
    plain = len(pair.encode_prompt(weak))
    return [
        (
            plain if side.condition is None else len(pair.encode_prompt(weak, side.condition_for(weak))),
            side.model,
        )
        for side in pair.sides
    ]


def prepare(
    records: Iterable[PromptRecord], strong_tokenizer, pair, args, strong_model=None
) -> tuple[list[Prepared], list[BadLine]]:
    """Encode each prompt and check it fits both contexts, so that no prompt fails after generating."""
    strong_limit = None if strong_model is None else _context(strong_model)
    # The pair reads the large model's own tokens (so a response adds at most --max-new-tokens to the
    # weak side too) unless text is bridged across tokenizers or comes from a server.
    shared = args.method == "token" or (
        args.endpoint is None and pair.tokenizer.get_vocab() == strong_tokenizer.get_vocab()
    )
    weak_room = args.max_new_tokens if shared else 1
    prepared, bad = [], []
    for record in records:
        try:
            text = None
            if args.endpoint is not None:
                ids, text = None, strong_prompt_text(record, strong_tokenizer, args)
            else:
                ids = strong_prompt_ids(record, strong_tokenizer, args)
                _check_fits(len(ids), args.max_new_tokens, strong_limit, "the large model", args)
            if args.method == "token":
                if record.weak_prompt is not None:
                    raise ValueError(
                        '"weak_prompt" is not supported by --method token (token guidance scores the large '
                        "model's own prompt tokens); use --method cbs or bon"
                    )
                weak = None
                lengths = [(len(ids), side.model) for side in pair.sides]
            else:
                weak = weak_prompt(record, pair, args)
                lengths = _weak_lengths(pair, weak)  # fail here, on this line, rather than inside the search
            for length, model in lengths:
                _check_fits(length, weak_room, _context(model), "the weak pair", args)
        except Exception as error:  # a chat template may raise anything (jinja errors included)
            bad.append(BadLine(record.line, f"id {json.dumps(record.id)}: {reason(error)}"))
            continue
        prepared.append(Prepared(record, ids, weak, text))
    return prepared, bad
