"""Token-level guidance against a closed form computed by a naive full recompute."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_model_for, make_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import next_logprobs
from tokenizer_zoo import gpt2_style
from transformers import LogitsProcessor, LogitsProcessorList

import w2s_generate as w2s

PROMPTS = ["the film was", "a quiet story about a family in a small", "terrible"]


def strip(row: list[int], pad: int) -> list[int]:
    i = 0
    while i < len(row) - 1 and row[i] == pad:
        i += 1
    return row[i:]


class ClosedFormCheck(LogitsProcessor):
    """Placed after the guided processor: asserts each row's scores equal the closed form from scratch."""

    def __init__(self, strong, pair, beta, pad):
        self.strong, self.pair, self.beta, self.pad, self.calls = strong, pair, beta, pad, 0

    def __call__(self, input_ids, scores):
        tuned, untuned = self.pair.sides[0].model, self.pair.sides[1].model
        for row, got in zip(input_ids.tolist(), scores):
            ids = strip(row, self.pad)
            want = next_logprobs(self.strong, ids) + self.beta * (
                next_logprobs(tuned, ids) - next_logprobs(untuned, ids)
            )
            torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)
        self.calls += 1
        return scores


@pytest.fixture
def setup(family, tokenizer):
    vocab = len(tokenizer)
    strong = make_model(family, vocab, 10, width=64, layers=3)
    pair = w2s.WeakPair(make_model(family, vocab, 11), make_model(family, vocab, 12), tokenizer)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    return strong, pair, inputs, tokenizer


def test_beta_zero_reproduces_sampling(setup):
    strong, pair, inputs, tok = setup
    processor = w2s.WeakToStrongLogitsProcessor(pair, beta=0.0)
    torch.manual_seed(0)
    plain = strong.generate(**inputs, do_sample=True, top_k=20, temperature=0.8, max_new_tokens=12)
    torch.manual_seed(0)
    guided = strong.generate(
        **inputs, do_sample=True, top_k=20, temperature=0.8, max_new_tokens=12, logits_processor=[processor]
    )
    assert torch.equal(plain, guided)


def test_identical_pair_reproduces_sampling(setup, family):
    strong, _, inputs, tok = setup
    same = make_model(family, len(tok), 11)
    processor = w2s.WeakToStrongLogitsProcessor(w2s.WeakPair(same, same, tok), beta=3.0)
    torch.manual_seed(1)
    plain = strong.generate(**inputs, do_sample=True, top_p=0.9, max_new_tokens=10, num_return_sequences=2)
    torch.manual_seed(1)
    guided = strong.generate(
        **inputs,
        do_sample=True,
        top_p=0.9,
        max_new_tokens=10,
        num_return_sequences=2,
        logits_processor=[processor],
    )
    assert torch.equal(plain, guided)


@pytest.mark.parametrize(
    "mode",
    [
        dict(do_sample=False),
        dict(do_sample=True, temperature=0.7, top_k=30),
        dict(do_sample=True, num_return_sequences=2),
        dict(do_sample=False, num_beams=3, num_return_sequences=2),
    ],
)
def test_every_step_equals_closed_form(setup, mode):
    strong, pair, inputs, tok = setup
    beta = 1.5
    processor = w2s.WeakToStrongLogitsProcessor(pair, beta=beta)
    check = ClosedFormCheck(strong, pair, beta, tok.pad_token_id)
    torch.manual_seed(0)
    out = strong.generate(
        **inputs, max_new_tokens=6, logits_processor=LogitsProcessorList([processor, check]), **mode
    )
    assert check.calls == 6 or (mode.get("num_beams") and check.calls >= 1)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_guided_greedy_is_argmax_of_closed_form(setup):
    strong, pair, inputs, tok = setup
    beta = 2.0
    out = strong.generate(
        **inputs,
        do_sample=False,
        max_new_tokens=8,
        logits_processor=[w2s.WeakToStrongLogitsProcessor(pair, beta)],
    )
    tuned, untuned = pair.sides[0].model, pair.sides[1].model
    start = inputs["input_ids"].shape[1]
    changed = 0
    for row in out.tolist():
        ids = strip(row[:start], tok.pad_token_id)
        for token in row[start:]:
            strong_lp = next_logprobs(strong, ids)
            want = strong_lp + beta * (next_logprobs(tuned, ids) - next_logprobs(untuned, ids))
            assert token == int(want.argmax())
            changed += int(token != int(strong_lp.argmax()))
            ids.append(token)
    assert changed > 0, "guidance should change some greedy choice on random models"


def test_reusable_across_calls_and_scores_untouched(setup):
    strong, pair, inputs, tok = setup
    processor = w2s.WeakToStrongLogitsProcessor(pair, beta=1.0)
    first = strong.generate(**inputs, max_new_tokens=5, logits_processor=[processor])
    second = strong.generate(**inputs, max_new_tokens=5, logits_processor=[processor])
    assert torch.equal(first, second)
    processor.reset()
    ids = inputs["input_ids"]
    scores = torch.randn(ids.shape[0], strong.config.vocab_size)
    before = scores.clone()
    out = processor(ids, scores)
    assert torch.equal(scores, before) and not torch.equal(out, scores)


def test_begin_uses_the_real_mask(setup):
    strong, pair, inputs, tok = setup
    processor = w2s.WeakToStrongLogitsProcessor(pair, beta=1.0)
    processor.begin(inputs["input_ids"], inputs["attention_mask"])
    state = processor.state
    processor(inputs["input_ids"], torch.zeros(3, strong.config.vocab_size))
    assert processor.state is state


def test_vocabulary_mismatch_is_a_clear_error(setup, family):
    strong, pair, inputs, tok = setup
    other = make_tokenizer(200)
    with pytest.raises(ValueError, match=r"\(259 tokens\).*\(320 tokens\).*ChunkBeamSearch"):
        w2s.WeakToStrongLogitsProcessor(pair, strong_tokenizer=other)
    small = w2s.WeakPair(make_model(family, 259, 1), make_model(family, 259, 2), other)
    processor = w2s.WeakToStrongLogitsProcessor(small)
    with pytest.raises(ValueError, match="320 rows in the large model vs 259.*ChunkBeamSearch"):
        strong.generate(
            **other(["the film"], return_tensors="pt"), max_new_tokens=2, logits_processor=[processor]
        )


def test_padded_vocabulary_uses_shared_rows(family, tokenizer):
    vocab = len(tokenizer)
    strong = make_model(family, vocab, 10, extra_rows=64)
    pair = w2s.WeakPair(make_model(family, vocab, 11), make_model(family, vocab, 12), tokenizer)
    processor = w2s.WeakToStrongLogitsProcessor(pair, beta=1.0, strong_tokenizer=tokenizer)
    ids = tokenizer(["the film"], return_tensors="pt")["input_ids"]
    out = processor(ids, torch.zeros(1, vocab + 64))
    assert torch.isinf(out[:, vocab:]).all() and torch.isfinite(out[:, :vocab]).all()
    generated = strong.generate(
        input_ids=ids, do_sample=True, max_new_tokens=20, logits_processor=[processor]
    )
    assert int(generated.max()) < vocab


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1"])
def test_bad_beta(setup, bad):
    with pytest.raises(ValueError, match="beta must be a finite number"):
        w2s.WeakToStrongLogitsProcessor(setup[1], beta=bad)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    family=st.sampled_from(["gpt2", "llama"]),
    seed=st.integers(0, 500),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    beta=st.floats(-2.0, 4.0),
    sample=st.booleans(),
)
def test_property_guided_generate_matches_closed_form(tokenizer, family, seed, lengths, beta, sample):
    vocab = len(tokenizer)
    strong = make_model(family, vocab, seed, width=48)
    pair = w2s.WeakPair(make_model(family, vocab, seed + 1), make_model(family, vocab, seed + 2), tokenizer)
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
    width = max(lengths)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = (ids != 0).long()
    check = ClosedFormCheck(strong, pair, beta, 0)
    torch.manual_seed(seed)
    strong.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=4,
        do_sample=sample,
        logits_processor=LogitsProcessorList([w2s.WeakToStrongLogitsProcessor(pair, beta), check]),
    )
    assert check.calls >= 1


def guided_greedy(strong, pair, beta: float, ids: list[int], steps: int) -> list[int]:
    """Guided greedy decoding from scratch: argmax of the closed form at every step."""
    ids = list(ids)
    tuned, untuned = pair.sides[0].model, pair.sides[1].model
    for _ in range(steps):
        guided = next_logprobs(strong, ids) + beta * (next_logprobs(tuned, ids) - next_logprobs(untuned, ids))
        ids.append(int(guided.argmax()))
    return ids


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_prompt_starting_with_the_padding_id_is_scored_whole(family):
    """GPT-2 pads with EOS; generate passes no mask for an unpadded prompt, so the leading
    <|endoftext|> is a real token the pair must read, not padding to strip."""
    tok = gpt2_style()
    strong = make_model_for(tok, family, 50, width=48)
    pair = w2s.WeakPair(make_model_for(tok, family, 51), make_model_for(tok, family, 52), tok)
    ids = [tok.eos_token_id] + tok("the film was")["input_ids"]
    out = strong.generate(
        input_ids=torch.tensor([ids]),
        custom_generate=w2s.TokenGuidance(pair, 3.0),
        do_sample=False,
        max_new_tokens=8,
    )
    assert out[0].tolist() == guided_greedy(strong, pair, 3.0, ids, 8)
    stripped = guided_greedy(strong, pair, 3.0, ids[1:], 8)
    assert out[0, 1:].tolist() != stripped, "the case must tell the two prompts apart"
