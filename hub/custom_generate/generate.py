"""Weak-to-strong search as a transformers ``custom_generate`` repository.

``model.generate(custom_generate="<this repo>", trust_remote_code=True, weak_pair=pair, ...)`` runs
chunk-level beam search (or best-of-N, or token-level guidance) from the ``w2s-generate`` package,
exactly as ``custom_generate=w2s.ChunkBeamSearch(pair, ...)`` does. This file only translates
``generate``'s arguments; the algorithms live in the package (see ``requirements.txt``).
"""

from __future__ import annotations

import functools

import w2s_generate as w2s

# generate() hands these to a hub strategy even when the caller did not set them.
_UNSET_BY_DEFAULT = (
    "synced_gpus",
    "assistant_model",
    "negative_prompt_ids",
    "negative_prompt_attention_mask",
)


@functools.lru_cache(maxsize=4)
def _load_pair(tuned: str, untuned: str | None) -> w2s.WeakPair:
    return w2s.WeakPair.from_pretrained(tuned, untuned)


def generate(
    model,
    *args,
    weak_pair: w2s.WeakPair | None = None,
    weak_tuned: str | None = None,
    weak_untuned: str | None = None,
    method: str = "cbs",
    streamer=None,
    tokenizer=None,
    stop_strings=None,
    **kwargs,
):
    """Run a w2s_generate strategy inside ``model.generate``.

    Args:
        model: the large model (transformers passes it).
        weak_pair: a ``w2s_generate.WeakPair`` (two checkpoints, or a base with a LoRA adapter).
        weak_tuned, weak_untuned: where to load the pair instead (hub ids or folders; a LoRA adapter
            as ``weak_tuned`` with no ``weak_untuned`` means "that adapter on its base").
        method: ``"cbs"`` (chunk-level beam search), ``"bon"`` (best-of-N) or ``"token"`` (token-level
            guidance; needs a shared vocabulary): the methods of ``w2s_generate.methods.METHODS``.
        streamer, tokenizer, stop_strings: as for ``generate``; ``tokenizer`` is the large model's and
            also bridges a pair with another tokenizer.
        **kwargs: the method's options, by the names of the package's method table and of the
            command line's flags (cbs: ``beam_width``, ``successors`` (an integer or a budget policy
            such as ``w2s.ScheduledBudget``), ``chunk_length`` (an integer or a ``w2s.ChunkBoundary``),
            ``selection`` (``"top"``, ``"diverse"``, ``"stochastic"`` or a selection policy),
            ``max_per_parent``, ``selection_temperature``, ``successors_schedule``, ``settle_margin``,
            ``chunk_stop``, ``draft_tokens``; bon: ``n``; token: ``beta``, ``draft_tokens``; an option
            of another method is refused by name), then every other ``generate`` argument
            (``do_sample``, ``max_new_tokens``, ``weak_prompts``, ``return_trace``, ...).
    """
    from w2s_generate.methods import build_strategy, option_owners

    if weak_pair is None:
        if weak_tuned is None:
            raise ValueError(
                "Give the weak pair: weak_pair=w2s.WeakPair(...), or weak_tuned= (and weak_untuned=) to load one."
            )
        weak_pair = _load_pair(str(weak_tuned), None if weak_untuned is None else str(weak_untuned))
    options = {name: kwargs.pop(name) for name in option_owners() if name in kwargs}
    strategy = build_strategy(method, weak_pair, options=options)
    for name in _UNSET_BY_DEFAULT:
        if kwargs.get(name) in (None, False):
            kwargs.pop(name, None)
    kwargs.pop("use_model_defaults", None)
    strategy = strategy.bind(streamer=streamer, tokenizer=tokenizer, stop_strings=stop_strings)
    return model.generate(*args, custom_generate=strategy, **kwargs)
