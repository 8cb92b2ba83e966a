"""Pairs built from other pairs or from a prompt: ensembles and prompt-conditioned pairs."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from .loading import load_adapters, load_kwargs
from .pairs import Prompt, WeakPair, check_causal_lm
from .prompt_format import read_prompt_format
from .scoring import Side


def _check_weights(weights: Sequence[object]) -> None:
    """Refuse weights that are not finite real numbers, or all zero (no guidance at all)."""
    for i, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise ValueError(
                f"weight {i} is {weight!r}: each weight must be a finite number (NaN or inf would make every "
                "score NaN or inf)."
            )
    if weights and not any(weights):
        raise ValueError(
            f"All weights are 0 ({list(weights)}): every candidate would score 0, which is no guidance at all; "
            "give at least one weight other than 0."
        )


class PromptPair(WeakPair):
    """A pair with no training: the tuned side is the small model reading ``condition`` first.

    The untuned side is the same model without it, or reading ``against`` (a contrasting text: see
    [`w2s_generate.debate_pair`][w2s_generate.debate_pair]); both sides run in one batched forward on
    one model. For chat prompts a condition is a system message; for text it is a paragraph before the
    prompt.

    Args:
        model: a small causal LM.
        tokenizer: its tokenizer.
        condition: the conditioning text (a system prompt, a principle, a persona), or a function
            returning one per prompt (see [`w2s_generate.explanation_pair`][w2s_generate.explanation_pair]).
        against: what the untuned side reads instead of nothing (a text or a function of the prompt).
        chat_template: whether text prompts go through the tokenizer's chat template (``None``: when it
            has one).

    Examples:
        >>> pair = PromptPair(small_model, tokenizer, condition="Answer kindly.")
        >>> pair.score(["How do I fix this?"], [" Happy to help!"])
        tensor([...])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        condition: str | Callable[[Prompt], str],
        against: str | Callable[[Prompt], str] | None = None,
        *,
        chat_template: bool | None = None,
    ) -> None:
        for name, value in (("condition", condition), ("against", against)):
            if value is None and name == "against":
                continue
            if not callable(value) and (not isinstance(value, str) or not value.strip()):
                raise ValueError(
                    f"{name} must be a non-empty text or a function of the prompt; got {value!r}."
                )
        if isinstance(condition, str) and condition == against:
            raise ValueError(
                f"condition and against are the same text ({condition!r:.40}): both sides would read the same, "
                "so the pair would not guide at all."
            )
        check_causal_lm(model, "model")
        model.eval()
        self.condition = condition
        self.against = against
        self._init(
            tokenizer,
            [Side(model, condition=condition), Side(model, condition=against)],
            [1.0, -1.0],
            chat_template=chat_template,
        )


class GuidanceEnsemble(WeakPair):
    """A weighted sum of pairs, usable wherever a pair is.

    Identical sides are merged (e.g. the base of several LoRA adapters on one peft model), and sides on
    one model share one forward, so k adapters on one base cost one base in memory and one forward.
    ``components`` keeps each pair's own score, reported in search traces.

    Args:
        members: ``[(pair, weight), ...]``; all pairs must share one tokenizer.
        names: a name per member for traces; default ``pair0``, ``pair1``, ...

    Examples:
        >>> ensemble = GuidanceEnsemble([(helpful, 1.0), (harmless, 0.5)], names=["helpful", "harmless"])
        >>> out = model.generate(**inputs, custom_generate=ChunkBeamSearch(ensemble), do_sample=True,
        ...                      max_new_tokens=10, return_dict_in_generate=True, return_trace=True)
        >>> sorted(out.trace[-1].component_scores)   # each judge's own score of every candidate
        ['harmless', 'helpful']
    """

    def __init__(self, members: Sequence[tuple[WeakPair, float]], names: Sequence[str] | None = None) -> None:
        if not members:
            raise ValueError("members is empty: give at least one (pair, weight).")
        for item in members:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], WeakPair)):
                raise TypeError(f"Each member must be a (WeakPair, weight) tuple; got {item!r}.")
        _check_weights([weight for _, weight in members])
        names = list(names) if names is not None else [f"pair{i}" for i in range(len(members))]
        if len(names) != len(members) or len(set(names)) != len(names):
            raise ValueError(f"names must be {len(members)} distinct names; got {names}.")
        first = members[0][0].tokenizer
        for pair, _ in members[1:]:
            if pair.tokenizer.get_vocab() != first.get_vocab():
                raise ValueError(
                    "The pairs of an ensemble must share one tokenizer (their scores are summed per token); "
                    f"got vocabularies of {len(first)} and {len(pair.tokenizer)} tokens."
                )
        formats = {pair.chat_template for pair, _ in members}
        if len(formats) > 1:
            raise ValueError(
                "The pairs of an ensemble read prompts differently (chat_template True for some, False for "
                "others): build them with one chat_template so every pair scores the same prompt ids."
            )
        sides: list[Side] = []
        keys: dict[tuple, int] = {}
        for pair, _ in members:
            for side in pair.sides:
                key = (id(side.model), side.adapter_name, side.condition)
                if key not in keys:
                    keys[key] = len(sides)
                    sides.append(side)
        components: dict[str, list[float]] = {}
        for name, (pair, weight) in zip(names, members):
            vector = [0.0] * len(sides)
            for side, coefficient in zip(pair.sides, pair.coefficients):
                vector[keys[(id(side.model), side.adapter_name, side.condition)]] += (
                    float(weight) * coefficient
                )
            components[name] = vector
        total = [sum(c[i] for c in components.values()) for i in range(len(sides))]
        self.members = list(members)
        self._init(first, sides, total, components, chat_template=members[0][0].chat_template)

    @classmethod
    def from_adapters(
        cls,
        adapters: Sequence[str | os.PathLike],
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
        *,
        tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
        dtype: torch.dtype | str | None = None,
        device_map: str | dict | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        chat_template: bool | None = None,
    ) -> GuidanceEnsemble:
        """Several LoRA adapters on one base, loaded once: an ensemble scored in one forward.

        ``chat_template`` (whether text prompts go through the tokenizer's chat template) defaults to
        what the adapter folders record (``w2s_prompt_format.json``), else to the tokenizer having one.

        Examples:
            >>> both = GuidanceEnsemble.from_adapters(["helpful-lora", "harmless-lora"], [1.0, 0.5])
            >>> both.score(["the film was"], [" great"])
            tensor([...])
        """
        if isinstance(adapters, (str, os.PathLike)):
            raise TypeError(
                f"adapters must be a list of adapter folders or ids; wrap it: [{str(adapters)!r}]."
            )
        weights = [1.0] * len(adapters) if weights is None else list(weights)
        if len(weights) != len(adapters) or not adapters:
            raise ValueError(
                f"Give one weight per adapter: {len(adapters)} adapters, {len(weights)} weights."
            )
        _check_weights(weights)
        names = (
            [Path(str(a)).name or f"pair{i}" for i, a in enumerate(adapters)]
            if names is None
            else list(names)
        )
        if len(set(names)) != len(names):
            names = [f"pair{i}" for i in range(len(adapters))]
        load = load_kwargs({}, dtype, device_map, allow_pickle, trust_remote_code)
        peft_model, tok = load_adapters(adapters, names, tokenizer, load, allow_pickle)
        if chat_template is None:
            recorded = {read_prompt_format(a) for a in adapters if Path(str(a)).is_dir()} - {None}
            chat_template = recorded.pop() if len(recorded) == 1 else None
        pairs = [WeakPair.from_peft(peft_model, tok, name, chat_template=chat_template) for name in names]
        return cls(list(zip(pairs, weights)), names=names)
