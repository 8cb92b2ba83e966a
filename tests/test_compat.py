"""The transformers touch points in `_compat`: the cache keyword, EOS/pad settings, processor traits."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import make_model
from transformers import DynamicCache, GenerationConfig

from w2s_generate._compat import (
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
