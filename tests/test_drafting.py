"""Drafted token guidance: the weak pair drafts, the large model verifies, nothing sampled changes.

Oracles: the acceptance/residual rule yields the target exactly (closed form, and by simulation);
greedy drafted decoding equals greedy non-drafted decoding token for token; sampled first and second
tokens follow the guided distribution computed from scratch (chi-square at a fixed seed).
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from reference import chi_square, chi_square_limit, next_logprobs

import w2s_generate as w2s
from w2s_generate.drafting import residual_distribution, speculative_choice

PROMPTS = ["the film was", "a quiet story about a family"]
EOS = list(range(100, 130))  # many stop ids: rows end at different rounds


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), vocab=st.integers(2, 12), sparse=st.booleans())
def test_accepting_min_one_p_over_q_and_the_residual_yield_p(seed, vocab, sparse):
    generator = torch.Generator().manual_seed(seed)
    p = torch.rand(vocab, generator=generator, dtype=torch.float64)
    q = torch.rand(vocab, generator=generator, dtype=torch.float64)
    if sparse:  # zeros on both sides, as top-k/top-p leave them
        p[torch.rand(vocab, generator=generator) < 0.3] = 0
        q[0] = 0
        p[-1] += 0.1
    p, q = p / p.sum(), q / q.sum()
    torch.testing.assert_close(residual_distribution(p, q), p)


def test_speculative_choice_samples_the_target():
    """By simulation: 200k rows draft one token from q; the verified first token follows p."""
    torch.manual_seed(0)
    vocab, rows = 6, 200_000
    p = torch.softmax(torch.randn(vocab) * 2, -1)
    q = torch.softmax(torch.randn(vocab) * 2, -1)
    after = torch.softmax(torch.randn(vocab), -1)
    drafts = torch.multinomial(q, rows, replacement=True)[:, None]
    target = torch.stack([p, after])[None].expand(rows, 2, vocab)
    kept, token = speculative_choice(target, q[None, None].expand(rows, 1, vocab), drafts, greedy=False)
    first = torch.where(kept == 1, drafts[:, 0], token)
    stat, df = chi_square(torch.bincount(first, minlength=vocab), p)
    assert stat < chi_square_limit(df), (stat, df)
    # Rows that kept their draft sample the next token from the target after it.
    stat, df = chi_square(torch.bincount(token[kept == 1], minlength=vocab), after)
    assert stat < chi_square_limit(df), (stat, df)


def lora_pair(family, tokenizer):
    base = make_model(family, len(tokenizer), 83)
    targets = ["c_attn"] if family == "gpt2" else ["q_proj", "v_proj"]
    torch.manual_seed(84)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    return w2s.WeakPair.from_peft(peft_model, tokenizer)


@pytest.mark.parametrize("pair_kind", ["two", "lora"])
def test_greedy_drafted_equals_greedy_token_by_token(family, tokenizer, pair_kind):
    strong = make_model(family, len(tokenizer), 80, width=48)
    if pair_kind == "two":
        pair = w2s.WeakPair(
            make_model(family, len(tokenizer), 81), make_model(family, len(tokenizer), 82), tokenizer
        )
    else:
        pair = lora_pair(family, tokenizer)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs = dict(do_sample=False, max_new_tokens=24, eos_token_id=EOS)
    plain = strong.generate(**inputs, custom_generate=w2s.TokenGuidance(pair, 2.0), **kwargs)
    for gamma in (1, 2, 4, 8):
        drafted = strong.generate(
            **inputs,
            custom_generate=w2s.TokenGuidance(pair, 2.0, draft_tokens=gamma),
            return_dict_in_generate=True,
            **kwargs,
        )
        assert torch.equal(plain, drafted.sequences), gamma
        assert drafted.large_forwards <= 1 + (plain.shape[1] - inputs["input_ids"].shape[1])


def test_sampled_tokens_follow_the_guided_distribution(tokenizer):
    """4000 rows of one prompt, two tokens each with 2 drafts per round, top-k 6 (so target and
    proposal have zeros): the first token against the guided distribution computed from scratch, the
    second given the most frequent first token."""
    vocab = len(tokenizer)
    strong = make_model("llama", vocab, 90, width=32)
    pair = w2s.WeakPair(make_model("llama", vocab, 91), make_model("llama", vocab, 92), tokenizer)
    beta, rows = 1.5, 4000
    prompt = tokenizer("the film was")["input_ids"]
    torch.manual_seed(5)
    out = strong.generate(
        input_ids=torch.tensor([prompt] * rows),
        custom_generate=w2s.TokenGuidance(pair, beta, draft_tokens=2),
        do_sample=True,
        top_k=6,
        max_new_tokens=2,
        eos_token_id=[],
    )
    tuned, untuned = pair.sides[0].model, pair.sides[1].model

    def guided(ids):
        scores = next_logprobs(strong, ids) + beta * (next_logprobs(tuned, ids) - next_logprobs(untuned, ids))
        kth = scores.topk(6).values[-1]
        return torch.softmax(scores.masked_fill(scores < kth, -math.inf), -1)

    first = out[:, len(prompt)]
    stat, df = chi_square(torch.bincount(first, minlength=vocab), guided(prompt))
    assert stat < chi_square_limit(df), (stat, df)
    mode = int(torch.bincount(first).argmax())
    second = out[first == mode, len(prompt) + 1]
    stat, df = chi_square(torch.bincount(second, minlength=vocab), guided(prompt + [mode]))
    assert stat < chi_square_limit(df), (stat, df)


def test_no_drafts_is_todays_path(family, tokenizer):
    strong = make_model(family, len(tokenizer), 80, width=48)
    pair = w2s.WeakPair(
        make_model(family, len(tokenizer), 81), make_model(family, len(tokenizer), 82), tokenizer
    )
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    outs = []
    for draft_tokens in (None, 0):
        torch.manual_seed(3)
        outs.append(
            strong.generate(
                **inputs,
                custom_generate=w2s.TokenGuidance(pair, 1.0, draft_tokens=draft_tokens),
                do_sample=True,
                max_new_tokens=10,
            )
        )
    torch.manual_seed(3)
    processor = w2s.WeakToStrongLogitsProcessor(pair, 1.0)
    want = strong.generate(**inputs, logits_processor=[processor], do_sample=True, max_new_tokens=10)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], want)


def test_what_drafting_cannot_keep_is_refused_by_name(tokenizer):
    strong = make_model("gpt2", len(tokenizer), 80, width=48)
    pair = w2s.WeakPair(
        make_model("gpt2", len(tokenizer), 81), make_model("gpt2", len(tokenizer), 82), tokenizer
    )
    inputs = tokenizer(PROMPTS[:1], return_tensors="pt")
    drafted = w2s.TokenGuidance(pair, 1.0, draft_tokens=3)
    with pytest.raises(ValueError, match="draft_tokens cannot apply RepetitionPenaltyLogitsProcessor"):
        strong.generate(
            **inputs, custom_generate=drafted, do_sample=True, repetition_penalty=1.3, max_new_tokens=4
        )
    with pytest.raises(ValueError, match="num_beams=2"):
        strong.generate(**inputs, custom_generate=drafted, num_beams=2, max_new_tokens=4)
    w2s.enable(strong)
    try:
        with pytest.raises(ValueError, match="stop strings"):
            strong.generate(
                **inputs,
                strategy=drafted,
                stop_strings=["x"],
                tokenizer=tokenizer,
                do_sample=True,
                max_new_tokens=4,
            )
    finally:
        w2s.disable(strong)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="draft_tokens must be None or an integer >= 0"):
            w2s.TokenGuidance(pair, 1.0, draft_tokens=bad)


def near_the_end_of_the_context(tokenizer):
    """GPT-2 (256 learned positions): a large model, a pair and a 5-token prompt."""
    vocab = len(tokenizer)
    strong = make_model("gpt2", vocab, 80, width=48)
    pair = w2s.WeakPair(make_model("gpt2", vocab, 81), make_model("gpt2", vocab, 82), tokenizer)
    prompt = torch.tensor([tokenizer("the film was wonderful and the acting")["input_ids"][:5]])
    return strong, pair, prompt


@pytest.mark.parametrize(("new_tokens", "gamma"), [(251, 6), (20, 255)])
def test_drafts_stop_at_the_budget_and_the_context(tokenizer, new_tokens, gamma):
    """Drafts are capped to the tokens a row may still take, so a request that fits the context runs,
    to the last position, and greedy drafted decoding still equals greedy decoding."""
    strong, pair, prompt = near_the_end_of_the_context(tokenizer)
    kwargs = dict(do_sample=False, max_new_tokens=new_tokens, eos_token_id=[])
    plain = strong.generate(input_ids=prompt, custom_generate=w2s.TokenGuidance(pair, 2.0), **kwargs)
    drafted = strong.generate(
        input_ids=prompt, custom_generate=w2s.TokenGuidance(pair, 2.0, draft_tokens=gamma), **kwargs
    )
    assert drafted.shape == (1, 5 + new_tokens)
    assert torch.equal(plain, drafted)


def test_finished_rows_do_not_grow(tokenizer):
    """Rows that end at EOS while others go on are fed masked: near the end of the context, the batch
    runs to the budget and greedy drafted decoding equals greedy decoding."""
    strong, pair, _ = near_the_end_of_the_context(tokenizer)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    new_tokens = 256 - inputs["input_ids"].shape[1]
    kwargs = dict(do_sample=False, max_new_tokens=new_tokens, eos_token_id=[130])
    plain = strong.generate(**inputs, custom_generate=w2s.TokenGuidance(pair, 2.0), **kwargs)
    drafted = strong.generate(
        **inputs, custom_generate=w2s.TokenGuidance(pair, 2.0, draft_tokens=6), **kwargs
    )
    assert torch.equal(plain, drafted)
    ended = (plain[:, inputs["input_ids"].shape[1] :] == 130).any(-1)
    assert ended.tolist() == [True, False]  # one row ends early, the other runs to the last position


@pytest.mark.parametrize("do_sample", [False, True])
def test_a_large_table_with_padding_rows(family, tokenizer, do_sample):
    """320 real rows + 3 padding rows in the large model's table: the pair drafts over its 320 rows (the
    padding rows' proposal is 0) and greedy drafted decoding equals greedy decoding (top_k=1 sampling
    too, where the acceptance test reads the proposal)."""
    strong = make_model(family, len(tokenizer), 80, width=48, extra_rows=3)
    pair = w2s.WeakPair(
        make_model(family, len(tokenizer), 81), make_model(family, len(tokenizer), 82), tokenizer
    )
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs = dict(do_sample=do_sample, max_new_tokens=16, eos_token_id=EOS)
    if do_sample:
        kwargs["top_k"] = 1
    plain = strong.generate(**inputs, custom_generate=w2s.TokenGuidance(pair, 2.0), **kwargs)
    for gamma in (1, 4):
        drafted = strong.generate(
            **inputs, custom_generate=w2s.TokenGuidance(pair, 2.0, draft_tokens=gamma), **kwargs
        )
        assert torch.equal(plain, drafted), gamma
