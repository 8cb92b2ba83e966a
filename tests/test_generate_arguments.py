"""Every strategy keeps the meaning of generate's own arguments, on left-padded batches.

Oracles: where guidance is a no-op (``W = K = 1``, best-of-1, ``beta = 0``) a strategy reproduces
plain ``generate`` token for token under each setting, also when rows end at different times; the
two spellings of token guidance agree; constraints hold in every returned sequence of a real search.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_model
from transformers import DynamicCache
from transformers.generation.logits_process import UnbatchedClassifierFreeGuidanceLogitsProcessor

import w2s_generate as w2s
from w2s_generate._compat import cache_keyword
from w2s_generate.row_processors import classify

PROMPTS = ["the film was", "terrible pacing, weak characters and", "a"]
EOS = list(range(100, 140))  # many stop ids: rows end early, at different steps


def only_own_half(batch_id: int, input_ids: torch.Tensor) -> list[int]:
    """Prompt 0 may write even ids, the others odd ones; EOS ids are always allowed."""
    return [t for t in range(3, 320) if t % 2 == (batch_id > 0) % 2 or t in EOS]


SETTINGS = {
    "repetition_penalty": dict(repetition_penalty=1.6),
    "no_repeat_ngram_size": dict(no_repeat_ngram_size=2),
    "bad_words_ids": dict(bad_words_ids=[[5], [7, 8], [101]]),
    "min_new_tokens": dict(min_new_tokens=5),
    "prefix_allowed_tokens_fn": dict(prefix_allowed_tokens_fn=only_own_half),
    "all_together": dict(
        repetition_penalty=1.3,
        no_repeat_ngram_size=3,
        bad_words_ids=[[5]],
        min_new_tokens=3,
        prefix_allowed_tokens_fn=only_own_half,
    ),
}


@pytest.fixture
def strong(family, tokenizer):
    return make_model(family, len(tokenizer), 40, width=48, layers=2)


@pytest.fixture
def pair(family, tokenizer):
    return w2s.WeakPair(
        make_model(family, len(tokenizer), 41), make_model(family, len(tokenizer), 42), tokenizer
    )


def generate(model, inputs, seed, **kwargs):
    torch.manual_seed(seed)
    return model.generate(**inputs, do_sample=True, max_new_tokens=14, eos_token_id=EOS, top_k=40, **kwargs)


@pytest.mark.parametrize("setting", SETTINGS)
def test_no_op_strategies_reproduce_plain_sampling(strong, pair, tokenizer, setting):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs = SETTINGS[setting]
    no_ops = {
        "cbs-W1-K1-L1": w2s.ChunkBeamSearch(pair, 1, 1, 1),
        "cbs-W1-K1-L4": w2s.ChunkBeamSearch(pair, 1, 1, 4),
        "best-of-1": w2s.BestOfN(pair, n=1),
        "token-beta-0": w2s.TokenGuidance(pair, beta=0.0),
    }
    ended_apart = False
    for seed in range(3):
        plain = generate(strong, inputs, seed, **kwargs)
        lengths = (plain[:, inputs["input_ids"].shape[1] :] != tokenizer.pad_token_id).sum(-1)
        ended_apart |= len(set(lengths.tolist())) > 1
        for name, strategy in no_ops.items():
            got = generate(strong, inputs, seed, custom_generate=strategy, **kwargs)
            assert torch.equal(plain, got), f"{name} under {setting}, seed {seed}"
    assert ended_apart, "the case must have rows that end at different times"


@pytest.mark.parametrize("setting", SETTINGS)
def test_token_guidance_spellings_agree(strong, pair, tokenizer, setting):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs = SETTINGS[setting]
    as_strategy = generate(strong, inputs, 5, custom_generate=w2s.TokenGuidance(pair, 1.5), **kwargs)
    as_processor = generate(
        strong, inputs, 5, logits_processor=[w2s.WeakToStrongLogitsProcessor(pair, 1.5)], **kwargs
    )
    assert torch.equal(as_strategy, as_processor)


LOOP_SETTINGS = {
    "sampling": dict(),
    "greedy": dict(do_sample=False),
    "two_per_prompt": dict(
        num_return_sequences=2, repetition_penalty=1.3, prefix_allowed_tokens_fn=only_own_half
    ),
    "greedy_min_new_tokens": dict(do_sample=False, min_new_tokens=6, no_repeat_ngram_size=2),
    "as_dict": dict(return_dict_in_generate=True, bad_words_ids=[[5], [7, 8]]),
    "output_scores": dict(return_dict_in_generate=True, output_scores=True),  # transformers' loop
    "callers_cache": dict(return_dict_in_generate=True),  # an empty cache of the caller's, filled
}


@pytest.mark.parametrize("setting", LOOP_SETTINGS)
def test_token_guidance_own_loop_equals_transformers_loop(strong, pair, tokenizer, setting, monkeypatch):
    """TokenGuidance samples in its own loop where it can; transformers' loop with the processor is the oracle."""
    from w2s_generate import generate as generate_module

    own_loop_calls = []
    own_loop = generate_module._own_loop_call
    monkeypatch.setattr(
        generate_module, "_own_loop_call", lambda *a, **k: own_loop_calls.append(1) or own_loop(*a, **k)
    )
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs = dict(LOOP_SETTINGS[setting])
    if kwargs.get("do_sample") is False:
        kwargs["top_k"] = None
    for seed in range(2):
        torch.manual_seed(seed)
        common = dict(max_new_tokens=14, eos_token_id=EOS, do_sample=True, top_k=40) | kwargs
        caches = [DynamicCache(), DynamicCache()] if setting == "callers_cache" else [None, None]
        keyword = cache_keyword(strong)
        got = strong.generate(
            **inputs, custom_generate=w2s.TokenGuidance(pair, 1.5), **{keyword: caches[0]}, **common
        )
        torch.manual_seed(seed)
        want = strong.generate(
            **inputs,
            logits_processor=[w2s.WeakToStrongLogitsProcessor(pair, 1.5)],
            **{keyword: caches[1]},
            **common,
        )
        if setting == "callers_cache":
            assert caches[0].get_seq_length() == caches[1].get_seq_length() > inputs["input_ids"].shape[1]
        if kwargs.get("return_dict_in_generate"):
            got, want = got.sequences, want.sequences
        assert torch.equal(got, want), f"{setting}, seed {seed}"
    assert len(own_loop_calls) == (0 if setting == "output_scores" else 2)


def check_constraints(sequences: torch.Tensor, prompt_width: int, prompts_of_rows: list[int], setting: str):
    kwargs = SETTINGS[setting]
    for row, batch_id in zip(sequences.tolist(), prompts_of_rows):
        response = row[prompt_width:]
        while response and response[-1] == 0:
            response.pop()
        real = [t for t in response if t not in EOS]
        if "no_repeat_ngram_size" in kwargs:
            n = kwargs["no_repeat_ngram_size"]
            full = [t for t in row[:prompt_width] if t != 0] + response
            grams = [tuple(full[i : i + n]) for i in range(len(full) - n + 1)]
            assert len(grams) == len(set(grams)), f"repeated {n}-gram in {full}"
        for word in kwargs.get("bad_words_ids", []):
            n = len(word)
            assert all(response[i : i + n] != word for i in range(len(response) - n + 1))
        if "min_new_tokens" in kwargs:
            ends = [i for i, t in enumerate(response) if t in EOS]
            assert not ends or ends[0] >= kwargs["min_new_tokens"]
        if "prefix_allowed_tokens_fn" in kwargs:
            assert all(t % 2 == (batch_id > 0) % 2 for t in real), (batch_id, response)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("kind", ["cbs", "bon"])
def test_search_keeps_every_constraint(strong, pair, tokenizer, setting, kind):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    strategy = w2s.ChunkBeamSearch(pair, 2, 3, 3) if kind == "cbs" else w2s.BestOfN(pair, n=4)
    n_return = 2 if kind == "cbs" else 1
    seen_batch_ids: set[int] = set()
    kwargs = dict(SETTINGS[setting])
    if "prefix_allowed_tokens_fn" in kwargs:

        def recording(batch_id, input_ids):
            # The prompt part of a row is its prompt's: batch_id is the prompt's index.
            assert torch.equal(input_ids[: inputs["input_ids"].shape[1]], inputs["input_ids"][batch_id])
            seen_batch_ids.add(batch_id)
            return only_own_half(batch_id, input_ids)

        kwargs["prefix_allowed_tokens_fn"] = recording
    out = generate(strong, inputs, 1, custom_generate=strategy, num_return_sequences=n_return, **kwargs)
    owners = [b for b in range(len(PROMPTS)) for _ in range(n_return)]
    check_constraints(out, inputs["input_ids"].shape[1], owners, setting)
    if "prefix_allowed_tokens_fn" in kwargs:
        assert seen_batch_ids == {0, 1, 2}


def test_stop_strings_with_no_op_strategies(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    plain = generate(strong, inputs, 0)
    texts = tokenizer.batch_decode(plain[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    stop = next(c for text in texts for c in text[2:] if c.isalpha())
    want = generate(strong, inputs, 0, stop_strings=[stop], tokenizer=tokenizer)
    assert not torch.equal(want, plain), "the stop string must cut a row"
    w2s.enable(strong)
    try:
        for strategy in [
            w2s.ChunkBeamSearch(pair, 1, 1, 3),
            w2s.BestOfN(pair, n=1),
            w2s.TokenGuidance(pair, 0.0),
        ]:
            got = generate(strong, inputs, 0, strategy=strategy, stop_strings=[stop], tokenizer=tokenizer)
            assert torch.equal(want[:, : got.shape[1]], got) and (want[:, got.shape[1] :] == 0).all(), (
                strategy
            )
    finally:
        w2s.disable(strong)


def test_processors_tied_to_generate_rows_are_refused_by_name(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS[:1], return_tensors="pt")
    with pytest.raises(ValueError, match="UnbatchedClassifierFreeGuidanceLogitsProcessor.*TokenGuidance"):
        generate(strong, inputs, 0, custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 2), guidance_scale=1.5)


def test_every_transformers_processor_is_classified():
    """A processor added to transformers must be placed in one of the three kinds by hand."""
    from transformers.generation import logits_process as lp

    from w2s_generate._compat import PROCESSOR_TRAITS

    known = set(PROCESSOR_TRAITS)
    classes = [
        c
        for c in vars(lp).values()
        if isinstance(c, type) and issubclass(c, lp.LogitsProcessor) and c.__module__ == lp.__name__
    ]
    missing = sorted(c.__name__ for c in classes if c.__name__ not in known and c is not lp.LogitsProcessor)
    assert not missing, f"classify these for searches: {missing}"
    assert (
        classify(
            UnbatchedClassifierFreeGuidanceLogitsProcessor.__new__(
                UnbatchedClassifierFreeGuidanceLogitsProcessor
            )
        )
        == "refused"
    )
