"""What every decoding strategy shares: generate() plumbing and the search output."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
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
    model,
    config: GenerationConfig,
    input_ids: torch.Tensor,
    mask: torch.Tensor | None,
    position_ids: torch.Tensor | None = None,
) -> None:
    """Refuse prompts the search cannot start from: not ``[batch, length]`` integer ids of the model's
    table, a mask of another shape or with values other than 0/1, empty, right-padded, or longer than
    the context.

    One host sync per call, before any forward (more only to name what is wrong).
    """
    if input_ids.ndim != 2:
        raise ValueError(
            f"input_ids must be [batch, length]; got {input_ids.ndim} dimensions (shape {tuple(input_ids.shape)}): "
            "one row of token ids per prompt, as tokenizer(texts, return_tensors='pt', padding=True) gives."
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(
            f"input_ids must hold integer token ids; got {input_ids.dtype}: the ids the large model's tokenizer "
            "gives (tokenizer(texts, return_tensors='pt'))."
        )
    width = input_ids.shape[-1]
    if width == 0:
        raise ValueError(
            "input_ids holds no tokens: every prompt needs at least one (e.g. the tokenizer's BOS token, "
            "tokenizer(text) with add_special_tokens=True)."
        )
    # generate drops an all-ones mask but keeps the positions it made from it: their shape is the mask's
    # (a model with several position axes puts them first).
    shapes = [] if mask is None else [mask.shape]
    shapes += [] if position_ids is None else [position_ids.shape[-2:]]
    for shape in shapes:
        if tuple(shape) != tuple(input_ids.shape):
            raise ValueError(
                f"attention_mask (or position_ids) has shape {tuple(shape)} but input_ids "
                f"{tuple(input_ids.shape)}: one mask entry per token (1 for a token, 0 for padding), as the "
                "tokenizer gives them together."
            )
    from ._compat import input_rows, learned_position_limit

    rows = input_rows(model)
    # Everything checked below in one host sync: the ids' range, then the mask's values and layout.
    checks = [input_ids.min(), input_ids.max()]
    if mask is not None:
        on = mask != 0
        checks += [
            ((mask != 0) & (mask != 1)).any(),
            (~on.any(-1)).any(),
            # Left padding is zeros then ones; any 0 after a 1 is right padding (or a hole).
            (on[:, :-1] & ~on[:, 1:]).any(),
            on.sum(-1).max(),
        ]
    low, high, *mask_checks = torch.stack([c.long() for c in checks]).tolist()
    bad = low if low < 0 else high if rows is not None and high >= rows else None
    if bad is not None:
        raise ValueError(
            f"input_ids holds token id {bad}, outside the large model's {rows} rows: prompt ids must come from the "
            "large model's tokenizer."
        )
    longest = width
    if mask is not None:
        not_binary, empty, right, longest = mask_checks
        if not_binary:
            value = mask[(mask != 0) & (mask != 1)][0].item()
            raise ValueError(
                f"attention_mask holds {value}: only 0 (padding) and 1 (a token) are allowed, as the tokenizer gives them."
            )
        if empty:
            row = int((~on.any(-1)).nonzero()[0, 0])
            raise ValueError(
                f"row {row} of the attention mask is all zeros: an empty prompt. Every prompt needs at least one "
                "token (e.g. the BOS token)."
            )
        if right:
            row = int((on[:, :-1] & ~on[:, 1:]).any(-1).nonzero()[0, 0])
            raise ValueError(
                f"row {row} of the attention mask has padding after its tokens (right padding): a decoder-only "
                "model continues from the last position, so pad on the left: tokenizer.padding_side = 'left'."
            )
    limit = learned_position_limit(model)  # a learned position table (GPT-2): a hard limit
    new = config.max_length - width
    if limit is not None and longest + new > limit:  # padding takes no positions
        raise ValueError(
            f"The longest prompt ({longest} tokens) plus max_new_tokens={new} needs {longest + new} positions, "
            f"more than the large model's context of {limit}: shorten the prompt or ask for at most "
            f"{max(limit - longest, 0)} new tokens."
        )


def check_weak_prompts(weak_prompts: object, prompts: int) -> list:
    """``weak_prompts`` as a list of one entry per prompt, or a clear error (a lone text, a dict, a count)."""
    if isinstance(weak_prompts, (str, bytes, Mapping)) or not isinstance(weak_prompts, Sequence):
        hint = f": wrap it, [{weak_prompts!r:.40}]" if isinstance(weak_prompts, str) else ""
        raise TypeError(
            f"weak_prompts must be a list (one per prompt); got a {type(weak_prompts).__name__}{hint}."
        )
    if len(weak_prompts) != prompts:
        raise ValueError(
            f"weak_prompts has {len(weak_prompts)} entries for {prompts} prompts: give one per prompt."
        )
    return list(weak_prompts)


def refuse_options(config: GenerationConfig, strategy: str, options: Mapping[str, str]) -> None:
    """Refuse, by name, a generate option set in ``config`` that ``strategy`` does not apply.

    Args:
        config: the generation config of the call.
        strategy: the strategy's name, for the message.
        options: option -> why the strategy does not apply it (and what to use instead).
    """
    for option, why in options.items():
        value = getattr(config, option, None)
        if value is not None and value is not False:
            raise ValueError(f"{option}={value!r}: {strategy} does not apply it ({why}); drop it.")


def refuse_class(value: object, name: str) -> None:
    """Refuse a class given where an instance of it belongs (``selection=TopDistinct``)."""
    if isinstance(value, type):
        raise TypeError(f"{name} is the class {value.__name__}: pass an instance, {value.__name__}().")


def pair_type_error(pair: object) -> TypeError:
    """The error for a ``pair`` argument that is not a weak pair."""
    return TypeError(
        f"pair must be a w2s_generate.WeakPair; got a {type(pair).__name__}: build one with "
        "w2s.WeakPair(tuned, untuned, tokenizer) (or WeakPair.from_pretrained, WeakPair.from_peft)."
    )
