"""The one rule for how a prompt becomes token ids: through the tokenizer's chat template, or raw.

A pair tuned on chat-formatted prompts must score chat-formatted prompts, and one tuned on raw text
must score raw text: training (``examples/train_weak_lora.py``), the command line, `WeakPair.score`
and the searches all encode prompts with `encode_prompt` below, under one decision per tokenizer
(`resolve_chat_template`), which a `WeakPair` holds and shows in its repr.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "PROMPT_FORMAT_FILE",
    "encode_prompt",
    "read_prompt_format",
    "resolve_chat_template",
    "write_prompt_format",
]

#: Written next to an adapter by the training script: how its training prompts were encoded.
PROMPT_FORMAT_FILE = "w2s_prompt_format.json"


def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_chat_template(tokenizer, chat_template: bool | None) -> bool:
    """Whether text prompts go through ``tokenizer``'s chat template.

    Args:
        tokenizer: the tokenizer that encodes the prompts.
        chat_template: ``None`` decides from the tokenizer (its chat template when it has one);
            ``True`` requires one; ``False`` encodes text raw.

    Examples:
        >>> from w2s_generate.prompt_format import resolve_chat_template
        >>> resolve_chat_template(pair.tokenizer, None)   # this tokenizer has no chat template
        False
    """
    if chat_template is None:
        return has_chat_template(tokenizer)
    if not isinstance(chat_template, bool):
        raise TypeError(f"chat_template must be True, False or None; got {chat_template!r}.")
    if chat_template and not has_chat_template(tokenizer):
        raise ValueError(
            "chat_template=True but the tokenizer has no chat template: set tokenizer.chat_template, or pass "
            "chat_template=False to encode text prompts raw."
        )
    return chat_template


def prompt_text(
    tokenizer,
    prompt: str | Sequence[Mapping[str, str]],
    *,
    chat_template: bool,
    condition: str | None = None,
) -> str:
    """The text of one prompt under the rule: through the chat template (as a user message) or raw.

    Args:
        tokenizer: the tokenizer of the model that reads the prompt.
        prompt: text, or a list of chat messages (these always need the chat template).
        chat_template: the decision of `resolve_chat_template`.
        condition: a text put before the prompt: a system message under the chat template, a
            preceding paragraph (``condition + "\\n\\n"``) for raw text.

    Examples:
        >>> from w2s_generate.prompt_format import prompt_text
        >>> prompt_text(pair.tokenizer, "Review:", chat_template=False, condition="Be kind.")
        'Be kind.\\n\\nReview:'
    """
    if isinstance(prompt, str):
        if not chat_template:
            return prompt if condition is None else condition + CONDITION_SEPARATOR + prompt
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt)
        if not chat_template:
            why = (
                "the tokenizer has no chat template"
                if not has_chat_template(tokenizer)
                else "chat_template=False"
            )
            raise ValueError(
                f"The prompt is a list of chat messages but {why}: give text prompts, or use a tokenizer with a "
                "chat template (chat_template=True)."
            )
    if condition is not None:
        messages = [{"role": "system", "content": condition}, *messages]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_prompt(
    tokenizer,
    prompt: str | Sequence[Mapping[str, str]],
    *,
    chat_template: bool,
    condition: str | None = None,
) -> list[int]:
    """The token ids of `prompt_text`: the template's own special tokens, or the tokenizer's for raw text.

    Examples:
        >>> from w2s_generate.prompt_format import encode_prompt
        >>> encode_prompt(pair.tokenizer, "Review:", chat_template=False) == pair.tokenizer("Review:")["input_ids"]
        True
    """
    text = prompt_text(tokenizer, prompt, chat_template=chat_template, condition=condition)
    # A chat template writes its own special tokens (BOS included); raw text gets the tokenizer's.
    formatted = chat_template or not isinstance(prompt, str)
    return list(tokenizer(text, add_special_tokens=not formatted)["input_ids"])


#: What separates a condition from a raw text prompt.
CONDITION_SEPARATOR = "\n\n"


def write_prompt_format(folder: str | os.PathLike[str], chat_template: bool) -> None:
    """Record next to an adapter how its training prompts were encoded (read back by `read_prompt_format`)."""
    Path(folder, PROMPT_FORMAT_FILE).write_text(json.dumps({"chat_template": bool(chat_template)}) + "\n")


def read_prompt_format(folder: str | os.PathLike[str]) -> bool | None:
    """The ``chat_template`` an adapter was trained with, or None when its folder does not say."""
    path = Path(folder, PROMPT_FORMAT_FILE)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, bool) else None
