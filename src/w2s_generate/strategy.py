"""What every decoding strategy shares: generate() plumbing and the search output."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria
from transformers.utils import ModelOutput


@dataclass
class SearchOutput(ModelOutput):
    """What a search returns with ``return_dict_in_generate=True``.

    Attributes:
        sequences: ``[B * num_return_sequences, T]`` prompt + response ids, right-padded.
        log_ratios: ``[B * num_return_sequences]`` the pair's objective of each returned response.
        sequences_scores: the same scores under the name transformers' beam search gives them.
        trace: with ``return_trace=True``, one [`RoundTrace`][w2s_generate.RoundTrace] per round.
        cost: what the search spent per prompt ([`SearchCost`][w2s_generate.SearchCost]): large-model
            tokens sampled and forwards, weak-model tokens scored.

    Examples:
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=8,
        ...                      num_return_sequences=2, return_dict_in_generate=True)
        >>> out.sequences.shape[0], out.log_ratios.shape   # 2 prompts x 2 returned, best first
        (4, torch.Size([4]))
        >>> torch.equal(out.sequences_scores, out.log_ratios)
        True
    """

    sequences: torch.LongTensor | None = None
    log_ratios: torch.FloatTensor | None = None
    sequences_scores: torch.FloatTensor | None = None
    trace: list | None = None
    cost: object | None = None


@dataclass
class TextSearchOutput(ModelOutput):
    """What [`ChunkBeamSearch.run`][w2s_generate.ChunkBeamSearch.run] returns (a large model reached as text).

    Attributes:
        texts: ``B * num_return_sequences`` responses, best first per prompt.
        log_ratios: the pair's objective of each response.
        sequences_scores: the same scores under the name transformers' beam search gives them.
        trace: with ``return_trace=True``, one [`RoundTrace`][w2s_generate.RoundTrace] per round
            (its ``responses`` are texts).
        cost: what the search spent per prompt ([`SearchCost`][w2s_generate.SearchCost]).

    Examples:
        >>> class Canned:
        ...     def sample(self, prefixes, n, max_tokens):
        ...         return [[Chunk(" so good.", True)] * n for _ in prefixes]
        >>> out = cbs.run(["the film was", "a quiet story"], sampler=Canned(), max_new_tokens=8)
        >>> out.texts, out.log_ratios.shape
        ([' so good.', ' so good.'], torch.Size([2]))
    """

    texts: list[str] | None = None
    log_ratios: torch.FloatTensor | None = None
    sequences_scores: torch.FloatTensor | None = None
    trace: list | None = None
    cost: object | None = None


class Strategy:
    """Base of the decoding strategies: a callable that ``model.generate`` runs.

    transformers drops ``streamer=``, ``tokenizer=`` and ``stop_strings`` for callable strategies;
    [`bind`][w2s_generate.Strategy.bind] attaches them (``model.generate(strategy=...)`` does it for you after
    [`w2s_generate.enable`][w2s_generate.enable]).

    Examples:
        >>> isinstance(cbs, Strategy), isinstance(TokenGuidance(pair), Strategy)
        (True, True)
    """

    def __init__(self) -> None:
        self.bound_streamer = None
        self.bound_tokenizer = None
        self.bound_stop_strings: list[str] | None = None

    def bind(self, streamer=None, tokenizer=None, stop_strings: str | list[str] | None = None) -> Strategy:
        """A copy of this strategy that streams to ``streamer`` and stops at ``stop_strings``.

        Examples:
            >>> from transformers import TextStreamer
            >>> one = tok("the film was", return_tensors="pt")   # a streamer takes one prompt
            >>> out = model.generate(**one, do_sample=True, max_new_tokens=8,
            ...                      custom_generate=cbs.bind(streamer=TextStreamer(tok), tokenizer=tok))
            the film was...
        """
        if stop_strings is not None and tokenizer is None:
            raise ValueError("stop_strings needs the large model's tokenizer: pass tokenizer= as well.")
        bound = copy.copy(self)
        bound.bound_streamer = streamer
        bound.bound_tokenizer = tokenizer
        bound.bound_stop_strings = [stop_strings] if isinstance(stop_strings, str) else stop_strings
        return bound

    def extend_stopping_criteria(self, stopping_criteria: StoppingCriteriaList) -> StoppingCriteriaList:
        """The prepared criteria plus the bound stop strings."""
        if not self.bound_stop_strings:
            return stopping_criteria
        extended = StoppingCriteriaList(list(stopping_criteria))
        extended.append(StopStringCriteria(self.bound_tokenizer, self.bound_stop_strings))
        return extended


def check_prompt_rows(
    model, config: GenerationConfig, input_ids: torch.Tensor, mask: torch.Tensor | None
) -> None:
    """Refuse prompts the search cannot start from: empty, right-padded, or longer than the context.

    One host sync per call, before any forward.
    """
    width = input_ids.shape[-1]
    if width == 0:
        raise ValueError(
            "input_ids holds no tokens: every prompt needs at least one (e.g. the tokenizer's BOS token, "
            "tokenizer(text) with add_special_tokens=True)."
        )
    if mask is not None:
        mask = mask.bool()
        empty = ~mask.any(-1)
        if bool(empty.any()):
            raise ValueError(
                f"row {int(empty.nonzero()[0, 0])} of the attention mask is all zeros: an empty prompt. Every "
                "prompt needs at least one token (e.g. the BOS token)."
            )
        # Left padding is zeros then ones; any 0 after a 1 is right padding (or a hole).
        right = (mask[:, :-1] & ~mask[:, 1:]).any(-1)
        if bool(right.any()):
            raise ValueError(
                f"row {int(right.nonzero()[0, 0])} of the attention mask has padding after its tokens (right "
                "padding): a decoder-only model continues from the last position, so pad on the left: "
                "tokenizer.padding_side = 'left'."
            )
    from .scoring import _max_positions

    limit = _max_positions(model)  # a learned position table (GPT-2): a hard limit
    new = config.max_length - width
    longest = width if mask is None else int(mask.sum(-1).max())  # padding takes no positions
    if limit is not None and longest + new > limit:
        raise ValueError(
            f"The longest prompt ({longest} tokens) plus max_new_tokens={new} needs {longest + new} positions, "
            f"more than the large model's context of {limit}: shorten the prompt or ask for at most "
            f"{max(limit - longest, 0)} new tokens."
        )
