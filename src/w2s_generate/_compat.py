"""Every transformers/peft version gate and private-API touch point lives here.

Each helper says when it can go. The rest of the package uses only public APIs and these helpers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
import warnings
import weakref
from collections.abc import Iterator

import torch
from transformers import DynamicCache, LogitsProcessorList, PreTrainedModel


class W2SWarning(UserWarning):
    """Warnings raised by w2s_generate (the test suite turns them into errors)."""


def base_model(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model under a peft wrapper (``model`` itself when it is not wrapped)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@functools.cache
def _cache_keyword_of(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def learned_position_limit(model: torch.nn.Module) -> int | None:
    """The size of a model's learned position table (GPT-2 and kin), or None when it has none."""
    config = base_model(model).config
    # Only absolute learned position tables are a hard limit; rotary models degrade but still run.
    if getattr(config, "model_type", "") in {"gpt2", "gpt_neo", "opt", "gptj", "bloom", "codegen"}:
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return None


def output_rows(model: torch.nn.Module) -> int | None:
    """Rows of ``model``'s output table (its vocabulary, maybe padded), through a peft wrapper; ``None``
    when it has no output embeddings to read."""
    model = base_model(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return None if weight is None else int(weight.shape[0])


def input_rows(model: torch.nn.Module) -> int | None:
    """Rows of ``model``'s input embedding table (the token ids it reads), through a peft wrapper;
    ``None`` when it has no input embeddings to read."""
    model = base_model(model)
    table = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(table, "weight", None)
    return None if weight is None else int(weight.shape[0])


def cache_keyword(model: torch.nn.Module) -> str:
    """The name under which ``model``'s forward takes its KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and goes in 5.40);
    earlier releases and remote-code models written for them take ``past_key_values``. Read from the
    forward's signature, so both work. Can go once 5.24 is the floor.
    """
    return _cache_keyword_of(type(base_model(model)))


def cache_in_forward_kwargs(kwargs: dict) -> DynamicCache | None:
    """The KV cache among a forward's keyword arguments, under either name (see ``cache_keyword``)."""
    cache = kwargs.get("cache")
    return cache if cache is not None else kwargs.get("past_key_values")


def decoder_only_output(sequences: torch.Tensor, cache: DynamicCache):
    """generate's ``GenerateDecoderOnlyOutput`` of ``sequences`` and the cache they were decoded into.

    transformers 5.24 renamed the output's ``past_key_values`` field to ``cache`` with the keyword.
    """
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    fields = {field.name for field in dataclasses.fields(GenerateDecoderOnlyOutput)}
    return GenerateDecoderOnlyOutput(
        sequences=sequences, **{"cache" if "cache" in fields else "past_key_values": cache}
    )


def forward_with_cache(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: DynamicCache,
    *,
    position_ids: torch.Tensor | None = None,
    logits_to_keep: int | None = None,
    **extra,
):
    """One forward of ``model`` from ``cache`` (updated in place); returns the model's output.

    ``[R, T]`` ids and positions, ``[R, P + T]`` mask over the cached and the fed tokens. The cache goes
    under the keyword this transformers version names (``cache_keyword``); ``position_ids`` and
    ``logits_to_keep`` are passed only when given.
    """
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": True, **extra}
    kwargs[cache_keyword(model)] = cache
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if logits_to_keep is not None:
        kwargs["logits_to_keep"] = logits_to_keep
    return model(**kwargs)


#: Model types whose forward reads the attention mask only to build the attention's own mask with
#: ``masking_utils.create_causal_mask`` (transformers 5.6-5.25). Others also read the 2-D mask
#: themselves: Bloom, MPT and Falcon build ALiBi biases from it, OPT counts positions from it, vision
#: models their rope indices. Those keep transformers' mask builder.
ONE_TOKEN_MASK_MODEL_TYPES = frozenset(
    {
        "cohere",
        "gemma",
        "gpt2",
        "gpt_neox",
        "granite",
        "llama",
        "mistral",
        "olmo2",
        "phi",
        "phi3",
        "qwen2",
        "qwen3",
        "smollm3",
        "stablelm",
        "starcoder2",
    }
)


@functools.cache
def _builds_masks_with_masking_utils(model_class: type) -> bool:
    import sys

    from transformers import masking_utils

    module = sys.modules.get(model_class.__module__)
    return getattr(module, "create_causal_mask", None) is masking_utils.create_causal_mask


def sliding_window(model: torch.nn.Module) -> int | None:
    """The attention window of a sliding-window model (Mistral, Qwen2 with it on, Gemma 2/3), else None."""
    config = base_model(model).config
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if not window or not getattr(config, "use_sliding_window", True):
        return None
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)


def one_token_mask_kind(model: torch.nn.Module, sliding_window: int | None) -> str | None:
    """How a one-token step of ``model`` can take its attention mask ready-made, or ``None``.

    transformers builds each forward's 4-D mask from the 2-D one in ``masking_utils`` (about 0.3 ms
    of Python a call on a CPU), and passes a 4-D mask through as it is. For one new token behind a
    cache, that mask is the 2-D one with two unit dimensions: every cached token precedes the new
    one, so causality removes nothing and only padding (or retracted tokens) is masked. Returns
    ``"bool"`` (sdpa: True attends), ``"additive"`` (eager: 0 or the dtype's minimum), or ``None``
    where the model needs something else: flash or flex attention, a sliding window, a model type
    not in ``ONE_TOKEN_MASK_MODEL_TYPES`` (it reads the 2-D mask itself), or a class whose module
    does not build its mask with ``masking_utils.create_causal_mask``. Can go if transformers
    makes its own one-token mask cheap.
    """
    if sliding_window is not None:
        return None
    model = base_model(model)
    if getattr(model.config, "model_type", None) not in ONE_TOKEN_MASK_MODEL_TYPES:
        return None
    if not _builds_masks_with_masking_utils(type(model)):
        return None
    attention = getattr(model.config, "_attn_implementation", None)
    return {"sdpa": "bool", "eager": "additive"}.get(attention)


def one_token_mask(mask: torch.Tensor, kind: str, dtype: torch.dtype) -> torch.Tensor:
    """``[R, K]`` 0/1 -> the ``[R, 1, 1, K]`` mask of a one-token step (see ``one_token_mask_kind``)."""
    attends = mask[:, None, None, :].bool()
    if kind == "bool":
        return attends
    return torch.zeros(attends.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~attends, torch.finfo(dtype).min
    )


def token_id_list(value) -> list[int]:
    """A token-id setting as generate takes it (None, an int, a list or a tensor) as a list of ints."""
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def eos_token_ids(config) -> list[int]:
    """A generation config's ``eos_token_id`` as a list of ints."""
    return token_id_list(config.eos_token_id)


def pad_token_id(config) -> int:
    """A generation config's pad id, else its first EOS id (as generate pads), else 0."""
    if config.pad_token_id is not None:
        return int(config.pad_token_id)
    eos = eos_token_ids(config)
    return eos[0] if eos else 0


def is_view(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` shares storage with another (generate hands processors views of its buffer)."""
    return tensor._base is not None


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
    return "position_ids" in inspect.signature(model.forward).parameters


def accepts_logits_to_keep(model: PreTrainedModel) -> bool:
    """Whether ``model.forward`` can skip the logits of all but the last positions."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@contextlib.contextmanager
def peft_deprecation_ignored() -> Iterator[None]:
    """Hide one FutureWarning peft raises on every wrap of a transformers-5 model.

    peft 0.21 reads transformers' deprecated ``is_gradient_checkpointing``; it is harmless and not
    ours to fix. Can go once peft reads ``is_activation_checkpointing``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


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


def adapter_routing_modules(model: torch.nn.Module, adapter_names: list[str]) -> list[torch.nn.Module] | None:
    """The modules through which peft routes a mixed-adapter batch, found once; ``None``: let peft route.

    For every forward with ``adapter_names=``, peft walks all of the model's modules twice (to check
    the names, then to attach a pre-forward hook to each LoRA layer and auxiliary wrapper such as
    ``modules_to_save``) and removes the hooks after: about 0.5 ms a forward on a 185-module model,
    a sixth of a one-token step. Found once here, the same hooks go on the same modules without the
    walks (``guarded_mixed_adapter_forward``). ``None`` where peft's own checks must speak (a name no
    LoRA layer knows, training mode) or where this peft lays its layers out otherwise (peft 0.18-0.21
    route through ``LoraLayer`` and ``AuxiliaryTrainingWrapper``). Can go once peft passes
    ``adapter_names`` without walking the model.
    """
    try:
        from peft.tuners.lora.layer import LoraLayer
        from peft.utils import AuxiliaryTrainingWrapper
    except ImportError:  # pragma: no cover - a peft without this layout routes itself
        return None
    if model.training:
        return None
    modules = [m for m in model.modules() if isinstance(m, (LoraLayer, AuxiliaryTrainingWrapper))]
    known: set[str] = set()
    for module in modules:
        if isinstance(module, LoraLayer):
            known |= set(module.lora_A.keys()) | set(module.lora_embedding_A.keys())
    if not known or {name for name in adapter_names if name != "__base__"} - known:
        return None
    return modules


def _route_adapter_names(module, args, kwargs, adapter_names):
    kwargs["adapter_names"] = adapter_names  # what peft's own pre-forward hook does
    return args, kwargs


@contextlib.contextmanager
def guarded_mixed_adapter_forward(
    model: torch.nn.Module, adapter_names: list[str], routing: list[torch.nn.Module] | None = None
) -> Iterator[dict]:
    """Run a forward with one adapter per row: one at a time per model, no hooks left after it.

    Yields the keyword arguments the forward takes besides its own: none when the hooks go on the
    ``routing`` modules (from ``adapter_routing_modules``) here, ``adapter_names`` when peft routes
    itself. Either way the adapter names reach the LoRA layers through pre-forward hooks on the
    model's shared modules for the length of the forward, so two such forwards of one model from
    two threads would read each other's lists: hence the lock. peft removes its hooks without
    ``try/finally`` (0.21); if its forward raises, the leftovers are removed here. Can go once peft
    passes adapter names another way.
    """
    with _forward_lock(model):
        if routing is None or model.training:
            try:
                yield {"adapter_names": adapter_names}
            except BaseException:
                _remove_leftover_adapter_hooks(model)
                raise
            return
        route = functools.partial(_route_adapter_names, adapter_names=adapter_names)
        handles = [module.register_forward_pre_hook(route, with_kwargs=True) for module in routing]
        try:
            yield {}
        finally:
            for handle in handles:
                handle.remove()


@dataclasses.dataclass(frozen=True)
class ProcessorTraits:
    """What the project needs to know of one of transformers' logits processors (by class name).

    Attributes:
        rows: how a search applies it to its own rows: ``"as is"``, ``"per prompt"`` (re-made per
            prompt) or ``"refused"``.
        refusal: why it is refused (for the error message), when ``rows == "refused"``.
        scores_only: it reads the scores only, never the ids, so a drafted round can apply it at every
            drafted position.
        trailing: generate appends it after a user's ``logits_processor=`` entries
            (transformers ``_get_logits_processor``).
        reads_width: the generate option it comes from, when it reads a row's length from the batch
            width.
    """

    rows: str = "as is"
    refusal: str = ""
    scores_only: bool = False
    trailing: bool = False
    reads_width: str = ""


_WARPER = ProcessorTraits(scores_only=True, trailing=True)
_MODEL_OWN = "it is {}'s own"

#: The one table of transformers' processors by class name (transformers 5.6-5.25). A processor not
#: listed here sees the search's rows as is.
PROCESSOR_TRAITS: dict[str, ProcessorTraits] = {
    # generate's sampling warpers: scores only, after the user's processors.
    "TemperatureLogitsWarper": _WARPER,
    "TopHLogitsWarper": _WARPER,
    "TopKLogitsWarper": _WARPER,
    "TopPLogitsWarper": _WARPER,
    "MinPLogitsWarper": _WARPER,
    "TypicalLogitsWarper": _WARPER,
    "EpsilonLogitsWarper": _WARPER,
    "EtaLogitsWarper": _WARPER,
    "LogitNormalization": _WARPER,
    "WatermarkLogitsProcessor": ProcessorTraits(trailing=True),
    "SynthIDTextWatermarkLogitsProcessor": ProcessorTraits(
        rows="refused", refusal="it keeps watermark state per generate row", trailing=True
    ),
    # Each row's own ids and scores only.
    "MinLengthLogitsProcessor": ProcessorTraits(reads_width="min_length"),
    "MinNewTokensLengthLogitsProcessor": ProcessorTraits(reads_width="min_new_tokens"),
    "ExponentialDecayLengthPenalty": ProcessorTraits(reads_width="exponential_decay_length_penalty"),
    "NoRepeatNGramLogitsProcessor": ProcessorTraits(),
    "SequenceBiasLogitsProcessor": ProcessorTraits(),
    "NoBadWordsLogitsProcessor": ProcessorTraits(),
    "ForcedBOSTokenLogitsProcessor": ProcessorTraits(),
    "ForcedEOSTokenLogitsProcessor": ProcessorTraits(),
    "InfNanRemoveLogitsProcessor": ProcessorTraits(),
    "SuppressTokensAtBeginLogitsProcessor": ProcessorTraits(),
    "SuppressTokensLogitsProcessor": ProcessorTraits(),
    # Tied to generate's row layout: re-made per prompt.
    "RepetitionPenaltyLogitsProcessor": ProcessorTraits(rows="per prompt"),
    "PrefixConstrainedLogitsProcessor": ProcessorTraits(rows="per prompt"),
    # Tied to generate's own rows or to another model.
    "ClassifierFreeGuidanceLogitsProcessor": ProcessorTraits(
        rows="refused", refusal="it expects the batch doubled with unconditional rows"
    ),
    "UnbatchedClassifierFreeGuidanceLogitsProcessor": ProcessorTraits(
        rows="refused", refusal="it runs its own model with a cache per generate row"
    ),
    "EncoderRepetitionPenaltyLogitsProcessor": ProcessorTraits(
        rows="refused", refusal="it reads an encoder's input ids (encoder-decoder models only)"
    ),
    "EncoderNoRepeatNGramLogitsProcessor": ProcessorTraits(
        rows="refused", refusal="it reads an encoder's input ids (encoder-decoder models only)"
    ),
    "WhisperTimeStampLogitsProcessor": ProcessorTraits(rows="refused", refusal=_MODEL_OWN.format("Whisper")),
    "WhisperNoSpeechDetection": ProcessorTraits(rows="refused", refusal=_MODEL_OWN.format("Whisper")),
    "AlternatingCodebooksLogitsProcessor": ProcessorTraits(rows="refused", refusal=_MODEL_OWN.format("Bark")),
    "BarkEosPrioritizerLogitsProcessor": ProcessorTraits(rows="refused", refusal=_MODEL_OWN.format("Bark")),
    "DiaClassifierFreeGuidanceLogitsProcessor": ProcessorTraits(
        rows="refused", refusal=_MODEL_OWN.format("Dia")
    ),
    "DiaEOSChannelFilterLogitsProcessor": ProcessorTraits(rows="refused", refusal=_MODEL_OWN.format("Dia")),
    "DiaEOSDelayPatternLogitsProcessor": ProcessorTraits(rows="refused", refusal=_MODEL_OWN.format("Dia")),
}

#: generate's stopping criteria a drafted round keeps exactly (EOS and the length budget).
DRAFTABLE_CRITERIA = frozenset({"MaxLengthCriteria", "EosTokenCriteria"})


def processor_traits(processor) -> ProcessorTraits:
    """The traits of one processor: the table's entry for transformers' own, the defaults otherwise."""
    from transformers.generation import logits_process

    if type(processor).__module__ != logits_process.__name__:
        return ProcessorTraits()  # a user's processor sees the search's rows as is
    return PROCESSOR_TRAITS.get(type(processor).__name__, ProcessorTraits())


def _extra_arguments(processor) -> list[str]:
    """The arguments past ``(input_ids, scores)`` of a processor's ``__call__``, as
    ``LogitsProcessorList`` reads them."""
    return list(inspect.signature(processor.__call__).parameters)[2:]


def _min_length_implied(first, second) -> bool:
    """Whether ``second``, applied right after ``first``, already masks everything ``first`` masks.

    ``generate(min_new_tokens=N)`` prepares a ``MinLengthLogitsProcessor`` (prompt width + N) and a
    ``MinNewTokensLengthLogitsProcessor`` (N) for the one setting; both only set end-of-sequence
    scores to ``-inf``, so the first adds nothing when the second covers its length and its ids.
    """
    from transformers import MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor

    # Exactly these classes: a subclass may mask more than its fields say.
    if type(first) is not MinLengthLogitsProcessor or type(second) is not MinNewTokensLengthLogitsProcessor:
        return False
    covered = first.min_length <= second.prompt_length_to_skip + second.min_new_tokens
    first_ids, second_ids = (set(torch.as_tensor(p.eos_token_id).view(-1).tolist()) for p in (first, second))
    return covered and first_ids <= second_ids


class ProcessorChain(LogitsProcessorList):
    """generate's processors, applied exactly as ``LogitsProcessorList`` applies them, with its
    per-call work done once.

    transformers' list reads every processor's signature at every call (``inspect.signature``,
    about 0.1 ms a processor on a CPU: a few percent of a decoding step of a small model). The chain
    reads them when first called, and again only when its entries have changed. It also skips a
    ``MinLengthLogitsProcessor`` that the ``MinNewTokensLengthLogitsProcessor`` right after it
    already covers (``generate(min_new_tokens=N)`` prepares both for the one setting).

    Examples:
        >>> from transformers import MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor
        >>> from w2s_generate._compat import ProcessorChain
        >>> chain = ProcessorChain([MinLengthLogitsProcessor(5, 0), MinNewTokensLengthLogitsProcessor(3, 2, 0)])
        >>> chain(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 4)).tolist()
        [[-inf, 0.0, 0.0, 0.0]]
        >>> len(chain.applied)   # the first is covered by the second
        1
    """

    _entries: tuple[int, ...] = ()
    _applied: list[tuple[object, list[str]]] | None = None

    @property
    def applied(self) -> list[object]:
        """The processors a call applies, in order."""
        return [processor for processor, _ in self._plan()]

    def _plan(self) -> list[tuple[object, list[str]]]:
        entries = tuple(map(id, self))
        if self._applied is None or entries != self._entries:
            kept = [p for p, after in zip(self, [*self[1:], None]) if not _min_length_implied(p, after)]
            self._applied = [(p, _extra_arguments(p)) for p in kept]
            self._entries = entries
        return self._applied

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        for processor, extra in self._plan():
            if extra:
                if not all(name in kwargs for name in extra):
                    raise ValueError(
                        f"Make sure that all the required parameters: {['input_ids', 'scores', *extra]} for "
                        f"{processor.__class__} are passed to the logits processor."
                    )
                scores = processor(input_ids, scores, **kwargs)
            else:
                scores = processor(input_ids, scores)
        return scores


def prefix_allowed_tokens_fn(processor):
    """The user's function inside transformers' ``PrefixConstrainedLogitsProcessor`` (a private field)."""
    return processor._prefix_allowed_tokens_fn


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
