"""The transformers touch points in `_compat`: the cache keyword, EOS/pad settings, processor traits."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from w2s_generate._compat import (
    ProcessorChain,
    cache_in_forward_kwargs,
    cache_keyword,
    eos_token_ids,
    forward_with_cache,
    one_token_mask_kind,
    pad_token_id,
    processor_traits,
    token_id_list,
)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_forward_with_cache_matches_a_full_forward_and_warns_nothing(family):
    model = make_model(family, 320, seed=0).eval()
    ids = torch.randint(3, 320, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        cache = DynamicCache(config=model.config)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a deprecated keyword would raise here
            forward_with_cache(model, ids[:, :-1], mask[:, :-1], cache, logits_to_keep=1)
            last = forward_with_cache(model, ids[:, -1:], mask, cache, logits_to_keep=1).logits[:, -1]
    assert cache.get_seq_length() == 7
    torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)


def test_cache_keyword_is_the_one_the_forward_names():
    import inspect

    model = make_model("llama", 320, seed=0)
    name = cache_keyword(model)
    assert name in inspect.signature(type(model).forward).parameters
    cache = DynamicCache()
    assert cache_in_forward_kwargs({name: cache}) is cache
    assert cache_in_forward_kwargs({"past_key_values": cache}) is cache
    assert cache_in_forward_kwargs({"input_ids": 1}) is None


def test_cache_keyword_looks_through_a_peft_wrapper():
    from peft import LoraConfig, get_peft_model

    model = make_model("gpt2", 320, seed=0)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    assert cache_keyword(wrapped) == cache_keyword(model)


def test_eos_and_pad_from_a_generation_config():
    assert eos_token_ids(GenerationConfig()) == []
    assert eos_token_ids(GenerationConfig(eos_token_id=2)) == [2]
    assert eos_token_ids(GenerationConfig(eos_token_id=[2, 5])) == [2, 5]
    assert token_id_list(torch.tensor([4, 6])) == [4, 6]
    assert pad_token_id(GenerationConfig(pad_token_id=7, eos_token_id=2)) == 7
    assert pad_token_id(GenerationConfig(eos_token_id=[3, 2])) == 3
    assert pad_token_id(GenerationConfig()) == 0


def test_processor_traits_come_from_one_table():
    from transformers import (
        LogitsProcessor,
        MinNewTokensLengthLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
    )

    class TemperatureLike(LogitsProcessor):  # a user's class: never taken for transformers' own
        def __call__(self, input_ids, scores):
            return scores

    warper = processor_traits(TemperatureLogitsWarper(0.7))
    assert warper.scores_only and warper.trailing and warper.rows == "as is"
    assert processor_traits(RepetitionPenaltyLogitsProcessor(1.2)).rows == "per prompt"
    assert processor_traits(MinNewTokensLengthLogitsProcessor(1, 2, 0)).reads_width == "min_new_tokens"
    mine = processor_traits(TemperatureLike())
    assert not mine.scores_only and not mine.trailing and mine.rows == "as is"


def test_a_one_token_mask_is_made_only_where_transformers_would_make_the_same():
    """sdpa and eager models built with ``masking_utils`` get a ready-made one-token mask; flex
    attention, a sliding window and a model class whose module builds its mask otherwise do not."""
    from transformers import LlamaForCausalLM

    assert one_token_mask_kind(make_model("gpt2", 320, 0, attention="sdpa"), None) == "bool"
    assert one_token_mask_kind(make_model("llama", 320, 0, attention="eager"), None) == "additive"
    assert one_token_mask_kind(make_model("llama", 320, 0), sliding_window=16) is None
    flex = make_model("llama", 320, 0)
    flex.config._attn_implementation = "flex_attention"  # what set_attn_implementation records
    assert one_token_mask_kind(flex, None) is None

    class OwnMasks(LlamaForCausalLM):  # defined in a module that has no create_causal_mask
        pass

    own = OwnMasks(make_model("llama", 320, 0).config)
    assert one_token_mask_kind(own, None) is None


# ---------------------------------------------------------------------- the processor chain
class _NeedsTheStep(LogitsProcessor):
    """A user's processor with an argument past (input_ids, scores), as LogitsProcessorList allows."""

    def __call__(self, input_ids, scores, step):
        return scores + step


VOCAB = 12


def _processor(draw):
    """One of transformers' processors (or a user's), with settings that cross its thresholds."""
    eos = draw(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=2))
    kind = draw(st.sampled_from(["min_length", "min_new", "repetition", "temperature", "top_k", "top_p",
                                 "ngram", "suppress", "needs_step"]))  # fmt: skip
    if kind == "min_length":
        return MinLengthLogitsProcessor(draw(st.integers(0, 8)), eos)
    if kind == "min_new":
        return MinNewTokensLengthLogitsProcessor(draw(st.integers(0, 4)), draw(st.integers(0, 4)), eos)
    if kind == "repetition":
        return RepetitionPenaltyLogitsProcessor(draw(st.sampled_from([0.8, 1.3])))
    if kind == "temperature":
        return TemperatureLogitsWarper(draw(st.sampled_from([0.5, 1.5])))
    if kind == "top_k":
        return TopKLogitsWarper(draw(st.integers(1, VOCAB)))
    if kind == "top_p":
        return TopPLogitsWarper(draw(st.sampled_from([0.3, 0.9])))
    if kind == "ngram":
        return NoRepeatNGramLogitsProcessor(2)
    if kind == "suppress":
        return SuppressTokensLogitsProcessor(eos)
    return _NeedsTheStep()


def _outcome(processors, ids, scores, kwargs):
    try:
        return processors(ids, scores.clone(), **kwargs)
    except ValueError as error:
        return f"ValueError: {error}"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_processor_chain_applies_what_a_processor_list_applies_through_any_edits(data):
    """Oracle: transformers' own ``LogitsProcessorList``, edited and called in the same order. The
    min-length pairs ``generate(min_new_tokens=)`` prepares appear in the draws, covered or not."""
    draw = data.draw
    pair = [
        MinLengthLogitsProcessor(draw(st.integers(0, 8)), [1]),
        MinNewTokensLengthLogitsProcessor(2, 3, [1, 2]),
    ]
    entries = [_processor(draw) for _ in range(draw(st.integers(0, 4)))]
    entries[draw(st.integers(0, len(entries))) : 0] = pair
    chain, reference = ProcessorChain(entries), LogitsProcessorList(entries)
    for _ in range(draw(st.integers(1, 6))):
        operation = draw(st.sampled_from(["call", "call", "call", "append", "pop", "replace"]))
        if operation == "call":
            width = draw(st.integers(1, 9))
            ids = torch.tensor([draw(st.lists(st.integers(0, VOCAB - 1), min_size=width, max_size=width))])
            scores = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
            kwargs = {"step": 0.5} if draw(st.booleans()) else {}
            got = _outcome(chain, ids, scores, kwargs)
            want = _outcome(reference, ids, scores, kwargs)
            if isinstance(want, str):
                assert got == want
            else:
                assert torch.equal(got, want)
        elif operation == "append":
            added = _processor(draw)
            chain.append(added)
            reference.append(added)
        elif operation == "pop" and reference:
            index = draw(st.integers(0, len(reference) - 1))
            chain.pop(index)
            reference.pop(index)
        elif operation == "replace" and reference:
            index, added = draw(st.integers(0, len(reference) - 1)), _processor(draw)
            chain[index] = added
            reference[index] = added


def test_the_min_length_pair_generate_prepares_is_applied_once():
    """``generate(min_new_tokens=N)`` prepares a minimum-length processor twice over; the chain
    applies the one, and EOS stays masked for exactly N tokens."""
    strong = make_model("gpt2", 20, seed=0).eval()
    prepared = {}

    def keep(model, input_ids, logits_processor, stopping_criteria, generation_config, **kwargs):
        prepared["list"] = logits_processor
        return input_ids

    ids = torch.tensor([[5, 6, 7]])
    strong.generate(
        ids, custom_generate=keep, min_new_tokens=4, max_new_tokens=6, eos_token_id=2, do_sample=False
    )
    names = [type(p).__name__ for p in prepared["list"]]
    assert names.count("MinLengthLogitsProcessor") == 1 and "MinNewTokensLengthLogitsProcessor" in names
    chain = ProcessorChain(prepared["list"])
    assert [type(p).__name__ for p in chain.applied].count("MinLengthLogitsProcessor") == 0
    for width, masked in [(3, True), (6, True), (7, False)]:
        scores = chain(torch.full((1, width), 5), torch.zeros(1, 20))
        assert (scores[0, 2] == -math.inf) == masked
