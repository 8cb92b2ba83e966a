"""Entry points into ``model.generate``: ``strategy=`` after ``enable``, a mixin, token guidance.

See [`enable`][w2s_generate.enable], [`W2SGenerationMixin`][w2s_generate.W2SGenerationMixin] and
[`TokenGuidance`][w2s_generate.TokenGuidance].
"""

from __future__ import annotations

import functools

import torch
from transformers import DynamicCache, LogitsProcessorList

from ._compat import (
    ProcessorChain,
    cache_in_forward_kwargs,
    decoder_only_output,
    eos_token_ids,
    output_rows,
    pad_token_id,
    processor_traits,
    run_builtin_decoding,
)
from .pairs import WeakPair
from .policies import is_count
from .processor import WeakToStrongLogitsProcessor
from .strategy import Strategy, check_prompt_rows, refuse_options

_ENABLED = "_w2s_original_generate"

#: generate options drafted token guidance does not apply: option -> why.
DRAFTED_NOT_APPLIED = {
    "output_scores": "drafted rounds return the tokens and what drafting saved, not per-step scores",
    "output_logits": "drafted rounds return the tokens and what drafting saved, not per-step logits",
    "output_attentions": "drafted rounds return no per-step model outputs",
    "output_hidden_states": "drafted rounds return no per-step model outputs",
}


class TokenGuidance(Strategy):
    """Token-level guidance as a strategy: generate's decoding with the guided processor.

    The guided processor sits where transformers puts a user's ``logits_processor=``: after its own
    processors (repetition penalty, bad words, minimum length, ...) and before the sampling warpers
    (temperature, top-k, top-p, ...), so ``TokenGuidance(pair, beta)`` and
    ``logits_processor=[WeakToStrongLogitsProcessor(pair, beta)]`` decode alike. It is given the
    prompts' real attention mask (all ones when ``generate`` passes none). Greedy, sampling and beam
    search all work.

    Greedy decoding and sampling run in the searches' large-model loop, one chunk per row
    (``LocalModelSource``): the same tokens and random draws as transformers' loop, each prompt
    prefilled once, and one-token steps that take their attention mask ready-made. Whatever that
    loop does not do runs in transformers' own loop, which keeps its meaning: beam search,
    streamers, per-step outputs (``output_scores``, ...), a prefilled or static cache,
    ``use_cache=False``, model inputs other than ids, a mask and generate's own positions, and
    decoding without an EOS criterion.

    With ``draft_tokens=G`` the weak pair drafts ``G`` tokens per round and the large model verifies
    them in one forward (speculative sampling, see
    [`speculative_choice`][w2s_generate.speculative_choice]): the tokens are still exact samples of
    the same guided distribution (greedy: the same tokens), with fewer large-model forwards. Drafted
    rounds support the sampling warpers, EOS and ``max_new_tokens``; other processors and stopping
    criteria are refused by name, as are beam search, streamers and per-step outputs
    (``output_scores``, ``output_logits``, ...).

    Args:
        pair: a weak pair sharing the large model's vocabulary.
        beta: guidance strength.
        draft_tokens: tokens the pair drafts per round; ``None`` (or 0) decodes one token per
            large-model forward.

    Examples:
        >>> out = model.generate(**inputs, custom_generate=TokenGuidance(pair, beta=1.0), do_sample=True,
        ...                      max_new_tokens=10)
        >>> drafted = TokenGuidance(pair, beta=1.0, draft_tokens=4)
        >>> out = model.generate(**inputs, custom_generate=drafted, do_sample=True, max_new_tokens=10,
        ...                      return_dict_in_generate=True)
        >>> out.large_forwards <= 11   # one per round of up to 5 tokens, plus the prefill
        True
    """

    def __init__(self, pair: WeakPair, beta: float = 1.0, draft_tokens: int | None = None) -> None:
        super().__init__()
        if draft_tokens is not None and not is_count(draft_tokens, 0):
            raise ValueError(f"draft_tokens must be None or an integer >= 0; got {draft_tokens!r}.")
        self.processor = WeakToStrongLogitsProcessor(pair, beta)
        self.pair = pair
        self.beta = float(beta)
        self.draft_tokens = int(draft_tokens) if draft_tokens else None

    def __repr__(self) -> str:
        drafts = f", draft_tokens={self.draft_tokens}" if self.draft_tokens else ""
        return f"TokenGuidance(beta={self.beta}{drafts}, pair={self.pair!r})"

    @torch.no_grad()
    def __call__(
        self, model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs
    ):
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(
                f"TokenGuidance drives decoder-only models; {model.config.model_type} is encoder-decoder: the "
                "weak pair would score the decoder's tokens without the encoder's input."
            )
        check_prompt_rows(
            model,
            generation_config,
            input_ids,
            model_kwargs.get("attention_mask"),
            model_kwargs.get("position_ids"),
        )
        processor = WeakToStrongLogitsProcessor(
            self.pair, self.beta, self.bound_tokenizer, pad_token_id=self.processor.pad_token_id
        )
        rows = output_rows(model)
        if rows is not None:
            # Before the pair reads the prompts: another vocabulary's ids are not bad prompt ids.
            processor.check_rows(rows)
        if self.draft_tokens:
            return _drafted_call(
                self,
                model,
                input_ids,
                processor,
                logits_processor,
                stopping_criteria,
                generation_config,
                model_kwargs,
            )
        mask = model_kwargs.get("attention_mask")
        # generate passes no mask when it is all ones: then no prompt token is padding. Greedy
        # decoding and sampling never reorder rows: no history to compare at each step.
        processor.begin(
            input_ids,
            torch.ones_like(input_ids) if mask is None else mask,
            rows_keep_order=not generation_config.num_beams or generation_config.num_beams == 1,
        )
        processors = insert_before_warpers(logits_processor, processor)
        streamer = self.bound_streamer
        stopping = self.extend_stopping_criteria(stopping_criteria)
        if own_loop_applies(generation_config, stopping, streamer, input_ids, model_kwargs):
            return _own_loop_call(model, input_ids, processors, stopping, generation_config, model_kwargs)
        if streamer is not None:
            streamer.put(input_ids.cpu())
        return run_builtin_decoding(
            model,
            input_ids,
            processors,
            stopping,
            generation_config,
            streamer,
            **model_kwargs,
        )


#: What generate hands a strategy that the own loop applies as generate's loop would.
OWN_LOOP_MODEL_KWARGS = frozenset({"attention_mask", "position_ids", "logits_to_keep", "use_cache", "cache",
                                   "past_key_values"})  # fmt: skip


def own_loop_applies(config, stopping, streamer, input_ids: torch.Tensor, model_kwargs: dict) -> bool:
    """Whether token guidance can decode in its own loop here (see ``_own_loop_call``).

    It does for greedy decoding and sampling into a fresh dynamic cache with an EOS criterion (a row
    that ends writes the pad id), no streamer and no per-step outputs; everything else (beam search,
    ``output_scores``, a prefilled or static cache, ``use_cache=False``, inputs other than ids and a
    mask, positions other than the mask's, no EOS) runs in transformers' loop, which keeps its meaning.
    """
    if config.num_beams != 1 or streamer is not None or model_kwargs.get("use_cache") is False:
        return False
    if input_ids.shape[1] >= config.max_length:  # generate still samples one token; its loop does that
        return False
    if any(getattr(config, option, False) for option in DRAFTED_NOT_APPLIED):
        return False
    # Without an EOS criterion transformers lets a row stopped early go on sampling; only its loop does that.
    if not any(hasattr(criterion, "eos_token_id") for criterion in stopping):
        return False
    if not OWN_LOOP_MODEL_KWARGS.issuperset(k for k, v in model_kwargs.items() if v is not None):
        return False
    cache = cache_in_forward_kwargs(model_kwargs)
    if cache is not None and (type(cache) is not DynamicCache or cache.get_seq_length()):
        return False
    positions, mask = model_kwargs.get("position_ids"), model_kwargs.get("attention_mask")
    if positions is None:
        return True
    # generate counts positions from the mask, as the own loop does; a caller's own positions keep
    # transformers' loop. Positions of padding are never attended to: only real tokens' must agree.
    mask = torch.ones_like(positions) if mask is None else mask.long()
    if positions.shape != mask.shape:
        return False
    counted = mask.cumsum(-1) - 1
    return torch.equal(positions.masked_fill(mask == 0, 0), counted.masked_fill(mask == 0, 0))


def _own_loop_call(model, input_ids, processors, stopping, config, model_kwargs):
    """Token guidance's sampling or greedy loop: the large model's chunk source, one chunk of the
    whole response per row.

    The same draws and tokens as transformers' ``_sample`` (rows that end write the pad id, stopping
    criteria see the processed scores, generate's prepared processors see generate's own rows), with
    each prompt prefilled once, the large model's one-token steps taking a ready-made mask and none
    of ``generate``'s per-step input preparation.
    """
    from .boundaries import ChunkBoundary
    from .candidates import LocalModelSource
    from .policies import SearchCost

    rows, width = input_ids.shape
    per_prompt = config.num_return_sequences  # generate repeated each prompt this often, in order
    prompts = rows // per_prompt
    prompt_ids, mask = input_ids[::per_prompt], model_kwargs.get("attention_mask")
    source = LocalModelSource(
        model,
        prompt_ids,
        torch.ones_like(prompt_ids) if mask is None else mask[::per_prompt],
        processors,
        stopping,
        config,
        pad_token_id(config),
        ChunkBoundary(max_tokens=None),
        max(config.max_length - width, 0),
        per_prompt,
        SearchCost.zeros(prompts),
        greedy=not config.do_sample,
        cache=cache_in_forward_kwargs(model_kwargs),
        generate_rows=True,
    )
    source.expand(range(prompts), [per_prompt] * prompts)
    source.sample()
    if not config.return_dict_in_generate:
        return source.seqs
    return decoder_only_output(source.seqs, source.cache)


def _drafted_call(
    strategy, model, input_ids, processor, logits_processor, stopping_criteria, config, model_kwargs
):
    """``TokenGuidance(..., draft_tokens=G)``: drafted rounds instead of transformers' loop."""
    from .drafted_guidance import check_draftable, drafted_guidance

    if config.num_beams != 1:
        raise ValueError(
            f"draft_tokens works with greedy decoding and sampling; got num_beams={config.num_beams}."
        )
    if strategy.bound_streamer is not None or strategy.bound_stop_strings:
        raise ValueError(
            "draft_tokens does not stream nor stop at stop strings; drop streamer=/stop_strings=."
        )
    refuse_options(config, "TokenGuidance with draft_tokens", DRAFTED_NOT_APPLIED)
    check_draftable(logits_processor, stopping_criteria)
    eos_ids = eos_token_ids(config)
    out = drafted_guidance(
        model,
        input_ids,
        model_kwargs.get("attention_mask"),
        strategy.pair,
        processor.combine,
        logits_processor,
        strategy.draft_tokens,
        max(config.max_length - input_ids.shape[1], 0),
        eos_ids,
        pad_token_id(config),
        greedy=not config.do_sample,
        vocab_rows=output_rows(model),
    )
    return out if config.return_dict_in_generate else out.sequences


def insert_before_warpers(processors: LogitsProcessorList, processor) -> LogitsProcessorList:
    """``processors`` with ``processor`` where generate puts a user's: before the trailing warpers.

    Examples:
        >>> from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper
        >>> from w2s_generate.generate import insert_before_warpers
        >>> prepared = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(0.7)])
        >>> [type(p).__name__ for p in insert_before_warpers(prepared, "mine")]
        ['RepetitionPenaltyLogitsProcessor', 'str', 'TemperatureLogitsWarper']
    """
    position = len(processors)
    while position > 0 and processor_traits(processors[position - 1]).trailing:
        position -= 1
    return ProcessorChain([*processors[:position], processor, *processors[position:]])


def _generate_with_strategy(original, *args, strategy: Strategy | None = None, **kwargs):
    if strategy is None:
        return original(*args, **kwargs)
    if isinstance(strategy, type):
        raise TypeError(
            f"strategy is the class {strategy.__name__}: pass an instance, e.g. {strategy.__name__}(pair, ...)."
        )
    if not callable(strategy):
        raise TypeError(
            f"strategy must be a w2s_generate strategy (or any callable); got {type(strategy).__name__}."
        )
    if kwargs.get("custom_generate") is not None:
        raise ValueError("Pass either strategy= or custom_generate=, not both.")
    if kwargs.get("assistant_model") is not None:
        raise ValueError(
            f"assistant_model: {type(strategy).__name__} runs no assisted decoding (transformers hands a strategy no "
            "assistant); drop it. For fewer large-model forwards, use draft_tokens= (the weak pair drafts)."
        )
    _check_input_ids(args[0] if args else kwargs.get("inputs", kwargs.get("input_ids")))
    if isinstance(strategy, Strategy):
        # transformers drops these for callable strategies; the strategy handles them itself.
        strategy = strategy.bind(
            streamer=kwargs.pop("streamer", None),
            tokenizer=kwargs.pop("tokenizer", None),
            stop_strings=kwargs.pop("stop_strings", None),
        )
    return original(*args, custom_generate=strategy, **kwargs)


def _check_input_ids(input_ids) -> None:
    """Refuse prompt ids transformers would fail on deep inside generate: not a tensor, or 1-D."""
    if input_ids is None:
        return
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(
            f"input_ids must be a torch tensor of token ids; got a {type(input_ids).__name__}: "
            "tokenizer(texts, return_tensors='pt', padding=True) gives one."
        )
    if input_ids.ndim == 1:
        raise ValueError("input_ids is 1-D: add the batch dimension, input_ids[None] (one row per prompt).")


def enable(model):
    """Let ``model.generate`` take ``strategy=`` (an instance-level wrapper; idempotent).

    Examples:
        >>> import w2s_generate as w2s
        >>> model = w2s.enable(model)
        >>> out = model.generate(**inputs, strategy=w2s.BestOfN(pair, n=8), do_sample=True, max_new_tokens=10)
    """
    if not isinstance(model, torch.nn.Module) or not callable(getattr(model, "generate", None)):
        raise TypeError(
            f"enable takes a transformers model (with generate()); got a {type(model).__name__}. Pass the large "
            "model itself, e.g. AutoModelForCausalLM.from_pretrained(...)."
        )
    if getattr(model, _ENABLED, None) is not None:
        return model
    original = model.generate
    setattr(model, _ENABLED, original)
    model.generate = functools.partial(_generate_with_strategy, original)
    return model


def disable(model):
    """Undo [`enable`][w2s_generate.enable].

    Examples:
        >>> model = disable(enable(model))
        >>> "strategy" in str(type(model).generate.__doc__)   # the class's own generate is back
        False
    """
    original = getattr(model, _ENABLED, None)
    if original is not None:
        del model.generate
        delattr(model, _ENABLED)
    return model


class W2SGenerationMixin:
    """Mixin for your own model classes: ``generate(strategy=...)`` without calling ``enable``.

    The class-level counterpart of [`enable`][w2s_generate.enable].

    Examples:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> class MyLM(W2SGenerationMixin, LlamaForCausalLM): ...
        >>> mine = MyLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
        ...                         num_hidden_layers=1, num_attention_heads=2, pad_token_id=0))
        >>> out = mine.generate(**inputs, strategy=BestOfN(pair, n=2), do_sample=True, max_new_tokens=4)
    """

    def generate(self, *args, strategy: Strategy | None = None, **kwargs):
        return _generate_with_strategy(super().generate, *args, strategy=strategy, **kwargs)
