"""Every transformers/peft version gate and private-API touch point lives here.

Each helper says when it can go. The rest of the package uses only public APIs and these helpers.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Iterator

import torch
from transformers import DynamicCache, PreTrainedModel


class W2SWarning(UserWarning):
    """Warnings raised by w2s_generate (the test suite turns them into errors)."""


def new_cache(model: PreTrainedModel) -> DynamicCache:
    """An empty dynamic KV cache for ``model``.

    transformers >= 5 takes the config so that sliding-window layers get the right cache layer type.
    """
    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older signatures without `config`; can go once 5.0 is the floor everywhere
        return DynamicCache()


def select_cache_rows(cache: DynamicCache, index: torch.Tensor) -> None:
    """Re-index the cache's batch rows in place (duplicates allowed): ``[N, ...] -> [len(index), ...]``."""
    cache.batch_select_indices(index)


def accepts_position_ids(model: PreTrainedModel) -> bool:
    """Whether ``model.forward`` takes ``position_ids`` (every decoder-only LM in transformers 5 does)."""
    import inspect

    return "position_ids" in inspect.signature(model.forward).parameters


def accepts_logits_to_keep(model: PreTrainedModel) -> bool:
    """Whether ``model.forward`` can skip the logits of all but the last positions."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _adapter_hook_function():
    try:
        from peft.tuners.lora.model import _adapter_names_pre_forward_hook
    except ImportError:  # pragma: no cover - peft moved it; the cleanup below then matches nothing
        return None
    return _adapter_names_pre_forward_hook


def _remove_leftover_adapter_hooks(model: torch.nn.Module) -> int:
    """Remove peft's ``adapter_names`` pre-forward hooks left behind by a failed forward.

    peft's ``_enable_peft_forward_hooks`` removes its hooks without ``try/finally`` (peft 0.21), so an
    exception inside a mixed-adapter forward leaves them attached and every later forward keeps using
    the stale adapter list. Can go once peft removes the hooks in a ``finally`` block.
    """
    hook_fn = _adapter_hook_function()
    if hook_fn is None:
        return 0
    removed = 0
    for module in model.modules():
        hooks = getattr(module, "_forward_pre_hooks", None)
        if not hooks:
            continue
        for key in [
            k
            for k, h in hooks.items()
            if isinstance(h, functools.partial) and getattr(h, "func", None) is hook_fn
        ]:
            del hooks[key]
            module._forward_pre_hooks_with_kwargs.pop(key, None)
            removed += 1
    return removed


_FORWARD_LOCKS: weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_FORWARD_LOCKS_GUARD = threading.Lock()


def _forward_lock(model: torch.nn.Module) -> threading.RLock:
    with _FORWARD_LOCKS_GUARD:
        lock = _FORWARD_LOCKS.get(model)
        if lock is None:
            lock = _FORWARD_LOCKS[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def guarded_mixed_adapter_forward(model: torch.nn.Module) -> Iterator[None]:
    """Run a forward with ``adapter_names=``: one at a time per model, no peft hooks left if it raises.

    peft passes ``adapter_names`` to the LoRA layers through pre-forward hooks registered on the
    model's shared modules for the length of the forward (peft 0.21), so two such forwards of one
    model from two threads would read each other's adapter lists. Can go once peft passes them
    another way.
    """
    with _forward_lock(model):
        try:
            yield
        except BaseException:
            _remove_leftover_adapter_hooks(model)
            raise


#: generate's sampling warpers: they read the scores only, never the ids.
SAMPLING_WARPER_NAMES = frozenset(
    {
        "TemperatureLogitsWarper",
        "TopHLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
        "MinPLogitsWarper",
        "TypicalLogitsWarper",
        "EpsilonLogitsWarper",
        "EtaLogitsWarper",
    }
)
#: The processors generate appends after a user's ``logits_processor=`` entries (transformers
#: ``_get_logits_processor``): the sampling warpers, watermarking, and ``renormalize_logits``.
TRAILING_PROCESSOR_NAMES = SAMPLING_WARPER_NAMES | {
    "WatermarkLogitsProcessor",
    "SynthIDTextWatermarkLogitsProcessor",
    "LogitNormalization",
}


def run_builtin_decoding(
    model, input_ids, logits_processor, stopping_criteria, generation_config, streamer, **model_kwargs
):
    """Run transformers' own decoding loop (sampling, greedy or beam search) for ``generation_config``.

    Uses ``GENERATION_MODES_MAPPING``, the table ``generate`` itself dispatches with (transformers 5).
    """
    from transformers.generation.utils import GENERATION_MODES_MAPPING

    mode = generation_config.get_generation_mode()
    name = GENERATION_MODES_MAPPING.get(mode)
    if name is None or "/" in name or name == "_assisted_decoding":
        raise ValueError(f"Token-level guidance runs inside sampling, greedy or beam search; got {mode}.")
    method = getattr(type(model), name)
    extra = {"streamer": streamer} if name == "_sample" else {}
    return method(
        model,
        input_ids,
        logits_processor=logits_processor,
        stopping_criteria=stopping_criteria,
        generation_config=generation_config,
        **extra,
        **model_kwargs,
    )


@contextlib.contextmanager
def hub_progress_bars_off() -> Iterator[None]:
    """transformers' per-file loading/saving bars off while this runs; the global switch is restored."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
