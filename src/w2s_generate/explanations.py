"""Explanation-facilitated guidance: the large model explains, the small model judges with it.

After "Explanation, Debate, Align" (arXiv 2409.07335): a strong model's explanation can make a weak
model a better judge. Here the large model first writes a short explanation of what a good answer to
each prompt needs; the search is then guided by a prompt-conditioned pair whose tuned side is the
small model reading that explanation, and whose untuned side is the same model without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ._compat import token_id_list
from .combined import PromptPair
from .pairs import Prompt

DEFAULT_INSTRUCTION = (
    "Before anyone answers the request below, explain in two or three sentences what a good answer "
    "to it needs.\n\nRequest: {prompt}\n\nWhat a good answer needs:"
)


def _key(prompt: Prompt, tokenizer: PreTrainedTokenizerBase) -> str:
    """One key per prompt, however the search hands it over (text, chat messages or token ids)."""
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    if isinstance(prompt, str):
        return prompt.strip()
    items = list(prompt)
    if items and all(isinstance(t, int) for t in items):
        return tokenizer.decode(items, skip_special_tokens=True).strip()
    return json.dumps(items, sort_keys=True, default=str)


def _as_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in prompt)


@torch.no_grad()
def explain(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    instruction: str = DEFAULT_INSTRUCTION,
    max_new_tokens: int = 96,
    **generate_kwargs,
) -> list[str]:
    """The large model's explanation of what a good answer to each prompt needs.

    ``instruction`` is formatted with ``{prompt}`` and sent through the tokenizer's chat template
    when it has one. Decoding is greedy unless ``generate_kwargs`` say otherwise.

    Examples:
        >>> explain(model, tokenizer, ["Write a haiku about rain."], max_new_tokens=16)
        ['...']
    """
    texts, _ = write_for_prompts(model, tokenizer, prompts, instruction, max_new_tokens, **generate_kwargs)
    return texts


@torch.no_grad()
def write_for_prompts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    instruction: str,
    max_new_tokens: int,
    **generate_kwargs,
) -> tuple[list[str], list[int]]:
    """The large model's text for each prompt under ``instruction``, and the tokens it generated for it.

    The token count runs to the first end-of-sequence token (included), so padding is not counted.
    """
    if not isinstance(instruction, str) or "{prompt}" not in instruction:
        raise ValueError("instruction must contain '{prompt}', where each prompt goes.")
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of prompts; got {prompts!r:.60}.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}.")
    try:
        texts = [instruction.format(prompt=_as_text(p)) for p in prompts]
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"instruction has a brace field other than {{prompt}} ({error!r}): write literal braces as {{{{ and }}}}."
        ) from None
    if getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
            )
            for t in texts
        ]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # a decoder-only model continues each row from its last token
    try:
        if getattr(tokenizer, "chat_template", None):
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        else:
            encoded = tokenizer(texts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    encoded = {k: v.to(model.device) for k, v in encoded.items()}
    settings = {"do_sample": False, "max_new_tokens": max_new_tokens, **generate_kwargs}
    if tokenizer.pad_token_id is not None:
        settings.setdefault("pad_token_id", tokenizer.pad_token_id)
    out = model.generate(**encoded, **settings)
    width = encoded["input_ids"].shape[1]
    generated = out[:, width:].tolist()
    eos = set(token_id_list(settings.get("eos_token_id", model.generation_config.eos_token_id)))
    counts = [next((i + 1 for i, t in enumerate(row) if t in eos), len(row)) for row in generated]
    decoded = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [t.strip() for t in decoded], counts


def per_prompt(
    prompts: Sequence[Prompt],
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    what: str,
    many: str | None = None,
) -> Callable[[Prompt], str]:
    """``prompt -> text``: the text written for each prompt, found however the search hands the prompt over.

    ``what`` names one text in errors (e.g. ``"explanation"``), ``many`` the list (default ``what + "s"``).
    """
    many = many or f"{what}s"
    for name, value in (("prompts", prompts), (many, texts)):
        if isinstance(value, str):
            raise ValueError(
                f"{name} must be a list (one entry per prompt); got a str: wrap it, [{value!r:.40}]."
            )
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts but {len(texts)} {many}: give one per prompt.")
    table: dict[str, str] = {}
    for i, (prompt, text) in enumerate(zip(prompts, texts)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"{many}[{i}] is {text!r:.60}: each must be a non-empty text (an empty one would make the "
                "pair's two sides read the same, so it would not guide at all)."
            )
        key = _key(prompt, tokenizer)
        if table.get(key, text) != text:
            raise ValueError(
                f"prompts[{i}] ({prompt!r:.60}) appears twice with different {many}; one prompt has one."
            )
        table[key] = text

    def lookup(prompt: Prompt) -> str:
        try:
            return table[_key(prompt, tokenizer)]
        except KeyError:
            raise KeyError(
                f"No {what} for the prompt {prompt!r}: build the pair with the prompts the search scores."
            ) from None

    return lookup


def explanation_pair(
    small_model: torch.nn.Module,
    small_tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    explanations: Sequence[str],
) -> PromptPair:
    """A prompt-conditioned pair whose tuned side reads each prompt's explanation first.

    Args:
        small_model: the small judge model.
        small_tokenizer: its tokenizer.
        prompts: the prompts the pair will score (as given to the search as ``weak_prompts``, or the
            large model's prompt text).
        explanations: one explanation per prompt, e.g. from [`explain`][w2s_generate.explain].

    Examples:
        >>> notes = explain(model, tok, prompts, max_new_tokens=16)
        >>> pair = explanation_pair(small, small_tok, prompts, notes)
        >>> inputs = tok(prompts, return_tensors="pt", padding=True)
        >>> out = model.generate(**inputs, custom_generate=ChunkBeamSearch(pair), do_sample=True, max_new_tokens=10)
    """
    return PromptPair(
        small_model, small_tokenizer, per_prompt(prompts, explanations, small_tokenizer, "explanation")
    )
