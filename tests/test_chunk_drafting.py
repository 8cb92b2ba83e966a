"""Chunk-level search with drafting: the weak pair drafts, the large model verifies (speculative sampling).

Oracles: the chunks are exact samples of the large model (chi-square against the distribution computed
from scratch), the returned scores equal fresh scoring, a proposal equal to the target keeps every
draft (and needs one large forward per G+1 tokens), and no drafting is today's path.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer
from reference import chi_square, chi_square_limit, next_logprobs, responses_of
from transformers import TopKLogitsWarper

import w2s_generate as w2s

PROMPTS = ["the film was", "a quiet story about a family"]


@pytest.mark.parametrize("gamma", [1, 3])
def test_drafted_search_returns_fresh_scores(strong, pair, tokenizer, gamma):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 3, 4, draft_tokens=gamma),
        do_sample=True,
        max_new_tokens=13,
        eos_token_id=list(range(100, 115)),  # some responses end early, inside a drafting round
        num_return_sequences=2,
        return_dict_in_generate=True,
        return_trace=True,
    )
    responses = responses_of(out.sequences, inputs["input_ids"].shape[1], tokenizer.pad_token_id)
    prompts = [p for p in PROMPTS for _ in range(2)]
    torch.testing.assert_close(out.log_ratios, pair.score(prompts, responses), atol=1e-4, rtol=1e-4)
    # Every round's candidates too: the pair's state kept exactly the committed tokens.
    for round_trace in out.trace:
        owners = [PROMPTS[b] for b in round_trace.prompt_index.tolist()]
        fresh = pair.score(owners, round_trace.responses)
        torch.testing.assert_close(round_trace.scores, fresh, atol=1e-4, rtol=1e-4)
    # Chunks are 4 tokens (the last one 1), whatever the drafts kept: a response that has not ended
    # holds exactly the tokens of its rounds.
    stops = set(range(100, 115))
    ongoing = [(t.round, r) for t in out.trace for r in t.responses if not stops & set(r)]
    assert ongoing and all(len(r) == min(4 * (k + 1), 13) for k, r in ongoing)


def test_drafted_chunks_are_exact_samples_of_the_large_model(family):
    """Round 0 of CBS(W=1, K=N) holds N independent two-token samples: compare with p_large."""
    tokenizer = make_tokenizer(120, seed_text="sunny fog")
    v = len(tokenizer)
    strong = make_model(family, v, 10, width=48, layers=3)
    pair = w2s.WeakPair(make_model(family, v, 11), make_model(family, v, 12), tokenizer)
    inputs = tokenizer(["the film was"], return_tensors="pt")
    n = 6000
    torch.manual_seed(0)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 1, n, 2, draft_tokens=2),
        do_sample=True,
        temperature=0.8,
        top_k=20,
        max_new_tokens=2,
        return_dict_in_generate=True,
        return_trace=True,
    )
    samples = torch.tensor(out.trace[0].responses)  # [N, 2]
    prompt = inputs["input_ids"][0].tolist()
    warp = TopKLogitsWarper(20)

    def target(ids):
        scores = warp(None, (next_logprobs(strong, ids) / 0.8)[None])[0]
        return torch.softmax(scores, -1)

    stat, df = chi_square(torch.bincount(samples[:, 0], minlength=v), target(prompt))
    assert stat < chi_square_limit(df), (stat, df)
    first = int(torch.bincount(samples[:, 0]).argmax())
    second = samples[samples[:, 0] == first, 1]
    stat, df = chi_square(torch.bincount(second, minlength=v), target(prompt + [first]))
    assert stat < chi_square_limit(df), (stat, df)


def test_a_proposal_equal_to_the_target_keeps_every_draft(strong, tokenizer, family):
    """The pair's tuned side is the large model itself: every draft is kept, G+1 tokens per forward."""
    pair = w2s.WeakPair(strong, make_model(family, len(tokenizer), 12), tokenizer)
    inputs = tokenizer(["the film was"], return_tensors="pt")
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 1, 1, 6, draft_tokens=3),
        do_sample=True,
        max_new_tokens=16,
        return_dict_in_generate=True,
    )
    # Chunks of 6, 6, 4 tokens: 4 + 2 (a round cut short by the chunk), 4 + 2, then 4; after the prefill.
    assert out.cost.large_tokens == [16]
    assert out.cost.large_forwards == [1 + 2 + 2 + 1]


def test_no_drafting_is_todays_path(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    runs = []
    for draft_tokens in (None, 0):
        torch.manual_seed(3)
        runs.append(
            strong.generate(
                **inputs,
                custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3, draft_tokens=draft_tokens),
                do_sample=True,
                max_new_tokens=9,
            )
        )
    torch.manual_seed(3)
    plain = strong.generate(
        **inputs, custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3), do_sample=True, max_new_tokens=9
    )
    assert torch.equal(runs[0], plain) and torch.equal(runs[1], plain)


def test_what_drafting_cannot_keep_exact_is_refused(strong, pair, tokenizer):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    drafted = w2s.ChunkBeamSearch(pair, 2, 2, 3, draft_tokens=2)
    with pytest.raises(ValueError, match="cannot apply RepetitionPenaltyLogitsProcessor"):
        strong.generate(
            **inputs, custom_generate=drafted, do_sample=True, max_new_tokens=6, repetition_penalty=1.3
        )
    with pytest.raises(ValueError, match="draft_tokens needs chunks of a fixed length"):
        w2s.ChunkBeamSearch(pair, 2, 2, w2s.ChunkBoundary(4, stop_token_ids=[3]), draft_tokens=2)
    with pytest.raises(ValueError, match="draft_tokens must be an integer >= 1"):
        w2s.ChunkBeamSearch(pair, 2, 2, 3, draft_tokens=-1)
    with pytest.raises(ValueError, match="draft_from must be"):
        w2s.ChunkBeamSearch(pair, 2, 2, 3, draft_tokens=2, draft_from="large")

    class Canned:
        def sample(self, prefixes, n, max_tokens):
            return [[w2s.Chunk(" fine.", True)] * n for _ in prefixes]

    with pytest.raises(ValueError, match="a text sampler returns text only"):
        drafted.run(["the film was"], sampler=Canned(), max_new_tokens=4)
    other = make_tokenizer(280, seed_text="zebra quartz", bos=True)
    cross = w2s.WeakPair(make_model("llama", len(other), 21), make_model("llama", len(other), 22), other)
    with pytest.raises(ValueError, match="draft_tokens needs the pair to read the large model's tokens"):
        strong.generate(
            **inputs,
            custom_generate=w2s.ChunkBeamSearch(cross, 2, 2, 3, tokenizer=tokenizer, draft_tokens=2),
            do_sample=True,
            max_new_tokens=6,
        )


@pytest.mark.parametrize(("new_tokens", "gamma"), [(251, 6), (20, 255)])
def test_drafted_search_runs_to_the_end_of_the_context(tokenizer, new_tokens, gamma):
    """GPT-2 (256 learned positions), a 5-token prompt: drafts are capped to the room left in the chunk
    and the budget, so the search reaches the last position, with fresh scores."""
    vocab = len(tokenizer)
    strong = make_model("gpt2", vocab, 10, width=48, layers=3)
    pair = w2s.WeakPair(make_model("gpt2", vocab, 11), make_model("gpt2", vocab, 12), tokenizer)
    prompt = tokenizer("the film was wonderful and the acting")["input_ids"][:5]
    torch.manual_seed(0)
    out = strong.generate(
        input_ids=torch.tensor([prompt]),
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 16, draft_tokens=gamma),
        do_sample=True,
        max_new_tokens=new_tokens,
        eos_token_id=[],
        return_dict_in_generate=True,
    )
    assert out.sequences.shape == (1, 5 + new_tokens)
    fresh = pair.score([prompt], out.sequences[:, 5:].tolist())
    torch.testing.assert_close(out.log_ratios, fresh, atol=1e-3, rtol=1e-4)


def test_a_large_table_with_padding_rows(family, tokenizer, pair):
    """320 real rows + 3 padding rows in the large model's table: the pair drafts over its 320 rows (the
    padding rows' proposal is 0), and with top_k=1 (greedy) drafted chunks equal undrafted ones."""
    strong = make_model(family, len(tokenizer), 10, width=48, layers=3, extra_rows=3)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    kwargs = dict(do_sample=True, top_k=1, max_new_tokens=12)
    plain = strong.generate(**inputs, custom_generate=w2s.ChunkBeamSearch(pair, 1, 1, 4), **kwargs)
    for gamma in (1, 3):
        drafted = strong.generate(
            **inputs, custom_generate=w2s.ChunkBeamSearch(pair, 1, 1, 4, draft_tokens=gamma), **kwargs
        )
        assert torch.equal(plain, drafted), gamma
