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
SEARCHES = ("cbs", "bon", "token")


@functools.lru_cache(maxsize=4)
def _load_pair(tuned: str, untuned: str | None) -> w2s.WeakPair:
    return w2s.WeakPair.from_pretrained(tuned, untuned)


def generate(
    model,
    *args,
    weak_pair: w2s.WeakPair | None = None,
    weak_tuned: str | None = None,
    weak_untuned: str | None = None,
    search: str = "cbs",
    beam_width: int = 4,
    successors_per_beam: int | w2s.BudgetPolicy = 4,
    chunk_length: int | w2s.ChunkBoundary | None = 5,
    selection: w2s.SelectionPolicy | None = None,
    n: int = 16,
    beta: float = 1.0,
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
        search: ``"cbs"`` (chunk-level beam search), ``"bon"`` (best-of-N) or ``"token"`` (token-level
            guidance; needs a shared vocabulary).
        beam_width, successors_per_beam, chunk_length: W, K, L of chunk-level beam search (K may be a
            budget policy such as ``w2s.ScheduledBudget``, L a ``w2s.ChunkBoundary``).
        selection: which candidates survive a round (default: the W best distinct ones).
        n: samples of best-of-N.
        beta: strength of token-level guidance.
        streamer, tokenizer, stop_strings: as for ``generate``; ``tokenizer`` is the large model's and
            also bridges a pair with another tokenizer.
        **kwargs: every other ``generate`` argument (``do_sample``, ``max_new_tokens``, ``weak_prompts``,
            ``return_trace``, ``return_dict_in_generate``, ...).
    """
    if weak_pair is None:
        if weak_tuned is None:
            raise ValueError(
                "Give the weak pair: weak_pair=w2s.WeakPair(...), or weak_tuned= (and weak_untuned=) to load one."
            )
        weak_pair = _load_pair(str(weak_tuned), None if weak_untuned is None else str(weak_untuned))
    if search == "cbs":
        strategy = w2s.ChunkBeamSearch(
            weak_pair, beam_width, successors_per_beam, chunk_length, selection=selection
        )
    elif search == "bon":
        strategy = w2s.BestOfN(weak_pair, n=n)
    elif search == "token":
        strategy = w2s.TokenGuidance(weak_pair, beta=beta)
    else:
        raise ValueError(f"search={search!r} is not one of {SEARCHES}.")
    for name in _UNSET_BY_DEFAULT:
        if kwargs.get(name) in (None, False):
            kwargs.pop(name, None)
    kwargs.pop("use_model_defaults", None)
    strategy = strategy.bind(streamer=streamer, tokenizer=tokenizer, stop_strings=stop_strings)
    return model.generate(*args, custom_generate=strategy, **kwargs)
