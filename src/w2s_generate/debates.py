"""Debate-conditioned guidance: the large model argues both sides, the small judge contrasts them.

The second step of "Explanation, Debate, Align" (arXiv 2409.07335): a strong model exposes what makes
an answer good or bad by arguing for and against. Here the large model writes, per prompt, the case
*for* what a good response does and the case *against* (what a bad one does); the guiding pair's two
sides are the small model reading the pro case and the small model reading the con case, so its
log-ratio contrasts the two arguments rather than "with an explanation vs without":

``score(y) = log p_small(y | pro, x) - log p_small(y | con, x)``.

The tokens the large model spends on arguments are returned per prompt, to be counted in the same
budget as the search's samples ([`SearchCost`][w2s_generate.SearchCost]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .combined import PromptPair
from .explanations import per_prompt, write_for_prompts
from .pairs import Prompt

DEFAULT_PRO = (
    "Argue for the answer the request below deserves: in two or three sentences, say what a good answer "
    "does.\n\nRequest: {prompt}\n\nThe case for a good answer:"
)
DEFAULT_CON = (
    "Argue against: in two or three sentences, say what a bad answer to the request below would do, the "
    "flaws to avoid.\n\nRequest: {prompt}\n\nThe case against:"
)


@dataclass
class Debate:
    """Both sides of a debate, one entry per prompt.

    Attributes:
        pro: the case for what a good response does.
        con: the case against (what a bad response does, or a rebuttal).
        large_tokens: large-model tokens spent on both cases, per prompt.

    Examples:
        >>> cases = debate(model, tok, ["the film was"], max_new_tokens=8)
        >>> len(cases.pro), len(cases.con), cases.large_tokens[0] <= 16
        (1, 1, True)
    """

    pro: list[str]
    con: list[str]
    large_tokens: list[int]


@torch.no_grad()
def debate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    pro_instruction: str = DEFAULT_PRO,
    con_instruction: str = DEFAULT_CON,
    max_new_tokens: int = 96,
    **generate_kwargs: Any,
) -> Debate:
    """The large model's case for and against a good answer to each prompt.

    Each instruction is formatted with ``{prompt}`` and sent through the tokenizer's chat template
    when it has one, as in [`explain`][w2s_generate.explain]. Decoding is greedy unless
    ``generate_kwargs`` say otherwise.

    Args:
        model: the large model.
        tokenizer: its tokenizer.
        prompts: the prompts (text or chat messages).
        pro_instruction: asks for the case for a good answer; holds ``{prompt}``.
        con_instruction: asks for the case against; holds ``{prompt}``.
        max_new_tokens: the length of each case.
        **generate_kwargs: more ``generate`` arguments (e.g. ``do_sample=True``).

    Examples:
        >>> cases = debate(model, tok, prompts, max_new_tokens=8, do_sample=True)
        >>> pair = debate_pair(small, small_tok, prompts, cases)
        >>> out = model.generate(**inputs, custom_generate=ChunkBeamSearch(pair), do_sample=True, max_new_tokens=10)
    """
    pro, pro_tokens = write_for_prompts(
        model, tokenizer, prompts, pro_instruction, max_new_tokens, **generate_kwargs
    )
    con, con_tokens = write_for_prompts(
        model, tokenizer, prompts, con_instruction, max_new_tokens, **generate_kwargs
    )
    return Debate(pro, con, [a + b for a, b in zip(pro_tokens, con_tokens)])


def debate_pair(
    small_model: torch.nn.Module,
    small_tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    cases: Debate,
) -> PromptPair:
    """A pair whose tuned side reads each prompt's case for, and whose untuned side reads its case against.

    Args:
        small_model: the small judge model.
        small_tokenizer: its tokenizer.
        prompts: the prompts the pair will score (as given to the search as ``weak_prompts``, or the
            large model's prompt text).
        cases: one debate per prompt, from [`debate`][w2s_generate.debate] (or built by hand:
            ``Debate(pro=[...], con=[...], large_tokens=[...])``).

    Examples:
        >>> cases = Debate(pro=["a good answer is warm"], con=["a bad answer is dull"], large_tokens=[0])
        >>> pair = debate_pair(small, small_tok, ["the film was"], cases)
        >>> pair.score(["the film was"], [" great"]).shape
        torch.Size([1])
    """
    if not isinstance(cases, Debate):
        raise TypeError(f"cases must be a w2s_generate.Debate (from debate()); got a {type(cases).__name__}.")
    for i, (pro, con) in enumerate(zip(cases.pro, cases.con)):
        if isinstance(pro, str) and pro.strip() and pro == con:
            raise ValueError(
                f"prompt {i}: the case for and the case against are the same text ({pro!r:.40}), so the pair "
                "would not guide that prompt at all."
            )
    return PromptPair(
        small_model,
        small_tokenizer,
        per_prompt(prompts, cases.pro, small_tokenizer, "case for", "cases.pro"),
        against=per_prompt(prompts, cases.con, small_tokenizer, "case against", "cases.con"),
    )
