"""The KV-cached scorer against a naive full recompute."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, make_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import full_logprob

import w2s_generate as w2s

PROMPTS = ["the film was", "a quiet story about a family in", "terrible"]
RESPONSES = [" wonderful and great", " a small town!", " pacing, weak characters and a boring script"]


def naive_score(pair: w2s.WeakPair, prompt: str, response: str) -> float:
    p = pair.encode_prompt(prompt)
    r = pair.encode_response(response)
    tuned, untuned = pair.sides[0].model, pair.sides[1].model
    return full_logprob(tuned, p, r) - full_logprob(untuned, p, r)


@pytest.fixture
def pair(family, tokenizer):
    return w2s.WeakPair(
        make_model(family, len(tokenizer), 1), make_model(family, len(tokenizer), 2), tokenizer
    )


def test_score_equals_full_recompute(pair):
    got = pair.score(PROMPTS, RESPONSES)
    want = torch.tensor([naive_score(pair, p, r) for p, r in zip(PROMPTS, RESPONSES)])
    assert got.shape == (3,)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, torch.zeros(3))


def test_incremental_chunks_equal_one_shot(pair):
    responses = [pair.encode_response(r) for r in RESPONSES]
    state = pair.start(PROMPTS)
    total = torch.zeros(3)
    width = max(map(len, responses))
    for start in range(0, width, 3):
        chunk = [r[start : start + 3] for r in responses]
        ids, lengths = w2s.scoring.right_pad(chunk, pair.pad_token_id)
        total += state.extend(ids, lengths)
    torch.testing.assert_close(state.scores, pair.score(PROMPTS, RESPONSES), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(total, state.scores, atol=1e-4, rtol=1e-4)


def test_select_duplicates_and_reorders_rows(pair):
    state = pair.start(PROMPTS)
    first = [pair.encode_response(r)[:2] for r in RESPONSES]
    state.extend(*w2s.scoring.right_pad(first, pair.pad_token_id))
    state.select(torch.tensor([2, 0, 0, 1]))
    rest = [" more", " and more", " or less", "!"]
    rest_ids = [pair.encode_response(r) for r in rest]
    state.extend(*w2s.scoring.right_pad(rest_ids, pair.pad_token_id))
    order = [2, 0, 0, 1]
    # Compare on ids directly (decode/encode may merge differently): naive on the id sequences.
    tuned, untuned = pair.sides[0].model, pair.sides[1].model
    want = torch.tensor(
        [
            full_logprob(tuned, pair.encode_prompt(PROMPTS[o]), first[o] + rest_ids[i])
            - full_logprob(untuned, pair.encode_prompt(PROMPTS[o]), first[o] + rest_ids[i])
            for i, o in enumerate(order)
        ]
    )
    torch.testing.assert_close(state.scores, want, atol=1e-4, rtol=1e-4)


def test_replace_tail_equals_scoring_the_new_text(pair):
    prompt = PROMPTS[:2]
    old = [pair.encode_response(" the plot was dul"), pair.encode_response(" terr")]
    state = pair.start(prompt)
    state.extend(*w2s.scoring.right_pad(old, pair.pad_token_id))
    new = [pair.encode_response(" the plot was dull and slow"), pair.encode_response(" terrible")]
    keep = []
    for o, n in zip(old, new):
        k = 0
        while k < min(len(o), len(n)) and o[k] == n[k]:
            k += 1
        keep.append(k)
    drop = torch.tensor([len(o) - k for o, k in zip(old, keep)])
    tails = [n[k:] for n, k in zip(new, keep)]
    assert int(drop.sum()) > 0, "the case must exercise a retraction"
    state.replace_tail(drop, *w2s.scoring.right_pad(tails, pair.pad_token_id))
    want = pair.score(prompt, new)
    torch.testing.assert_close(state.scores, want, atol=1e-4, rtol=1e-4)


def test_replace_tail_can_drop_the_whole_response(pair):
    state = pair.start(PROMPTS[:1])
    state.extend(torch.tensor([pair.encode_response(" wonderful")]))
    n = len(pair.encode_response(" wonderful"))
    state.replace_tail(torch.tensor([n]), torch.tensor([pair.encode_response(" awful")]))
    torch.testing.assert_close(state.scores, pair.score(PROMPTS[:1], [" awful"]), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="Cannot drop more tokens"):
        state.replace_tail(torch.tensor([50]), torch.tensor([[5]]))


def test_identical_sides_score_zero(family, tokenizer):
    model = make_model(family, len(tokenizer), 3)
    pair = w2s.WeakPair(model, model, tokenizer)
    assert torch.equal(pair.score(PROMPTS, RESPONSES), torch.zeros(3))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    family=st.sampled_from(["gpt2", "llama"]),
    seed=st.integers(0, 1000),
    batch=st.integers(1, 4),
    data=st.data(),
)
def test_property_cached_scoring_matches_recompute(tokenizer, family, seed, batch, data):
    vocab = len(tokenizer)
    pair = w2s.WeakPair(make_model(family, vocab, seed), make_model(family, vocab, seed + 1), tokenizer)
    ids = st.lists(st.integers(3, vocab - 1), min_size=1, max_size=7)
    prompts = [data.draw(ids) for _ in range(batch)]
    responses = [data.draw(st.lists(st.integers(3, vocab - 1), min_size=0, max_size=9)) for _ in range(batch)]
    chunk = data.draw(st.integers(1, 4))
    state = pair.start(prompts)
    for start in range(0, max(map(len, responses)) or 1, chunk):
        piece = [r[start : start + chunk] for r in responses]
        state.extend(*w2s.scoring.right_pad(piece, pair.pad_token_id))
    tuned, untuned = pair.sides[0].model, pair.sides[1].model
    want = torch.tensor(
        [full_logprob(tuned, p, r) - full_logprob(untuned, p, r) for p, r in zip(prompts, responses)]
    )
    torch.testing.assert_close(state.scores, want, atol=2e-4, rtol=2e-4)


def test_incremental_scoring_keeps_no_autograd_graph(pair):
    assert any(p.requires_grad for p in pair.sides[0].model.parameters())
    state = pair.start(["the film was"])
    out = state.extend(torch.tensor([[5, 6, 7]]))
    state.replace_tail(torch.tensor([1]), torch.tensor([[8]]), torch.tensor([1]))
    assert out.grad_fn is None and not state.side_scores.requires_grad


def naive_objective(pair: w2s.WeakPair, prompt: list[int], response: list[int]) -> float:
    """The pair's objective of one row, from one uncached forward per side."""
    return sum(
        c * full_logprob(side.model, prompt, response) for c, side in zip(pair.coefficients, pair.sides)
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    family=st.sampled_from(["gpt2", "llama"]),
    attention=st.sampled_from(["sdpa", "eager"]),
    seed=st.integers(0, 1000),
    data=st.data(),
)
def test_property_sequences_of_operations_match_one_shot_scoring(tokenizer, family, attention, seed, data):
    """Random sequences of extend / step / select (with duplicates) / replace_tail (retractions of
    overlapping depth, several in a row) against a naive one-shot score of every row after every operation,
    under both attention implementations whose one-token masks the state makes itself."""
    vocab = len(tokenizer)
    pair = w2s.WeakPair(
        make_model(family, vocab, seed, attention=attention),
        make_model(family, vocab, seed + 1, attention=attention),
        tokenizer,
    )
    token = st.integers(3, vocab - 1)
    n = data.draw(st.integers(1, 3), label="rows")
    prompts = [data.draw(st.lists(token, min_size=1, max_size=5), label="prompt") for _ in range(n)]
    responses: list[list[int]] = [[] for _ in range(n)]
    state = pair.start(prompts)
    for _ in range(data.draw(st.integers(1, 6), label="operations")):
        op = data.draw(
            st.sampled_from(["extend", "step", "select", "replace_tail", "replace_tail"]), label="op"
        )
        if op == "select":
            index = data.draw(
                st.lists(st.integers(0, len(prompts) - 1), min_size=1, max_size=4), label="index"
            )
            state.select(torch.tensor(index))
            prompts = [prompts[i] for i in index]
            responses = [list(responses[i]) for i in index]
            continue
        if op == "step":  # the token-level hot path: one token for every row
            tokens = [data.draw(token, label="token") for _ in prompts]
            state.step(torch.tensor(tokens))
            responses = [r + [t] for r, t in zip(responses, tokens)]
            continue
        drops = [0] * len(prompts)
        if op == "replace_tail":
            drops = [data.draw(st.integers(0, len(r)), label="drop") for r in responses]
        tails = [data.draw(st.lists(token, min_size=0, max_size=4), label="tail") for _ in prompts]
        before = state.scores.clone()
        change = state.replace_tail(torch.tensor(drops), *w2s.scoring.right_pad(tails, pair.pad_token_id))
        responses = [r[: len(r) - d] + t for r, d, t in zip(responses, drops, tails)]
        want = torch.tensor([naive_objective(pair, p, r) for p, r in zip(prompts, responses)])
        torch.testing.assert_close(state.scores, want, atol=2e-4, rtol=2e-4)
        torch.testing.assert_close(change, state.scores - before, atol=2e-4, rtol=2e-4)
    want = torch.tensor([naive_objective(pair, p, r) for p, r in zip(prompts, responses)])
    torch.testing.assert_close(state.scores, want, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_word_retokenized_twice_is_scored_once(tokenizer, family):
    """``[w, o] -> [w, on] -> [wond]``: two retractions of one region, the second deeper than the first."""
    vocab = len(tokenizer)
    pair = w2s.WeakPair(make_model(family, vocab, 5), make_model(family, vocab, 6), tokenizer)
    prompt = [[40, 41, 42]]
    state = pair.start(prompt)
    state.extend(torch.tensor([[50, 60]]))
    state.replace_tail(torch.tensor([1]), torch.tensor([[61]]))  # [50, 61]
    state.replace_tail(torch.tensor([2]), torch.tensor([[70]]))  # [70]
    torch.testing.assert_close(
        state.scores, torch.tensor([naive_objective(pair, prompt[0], [70])]), atol=1e-4, rtol=1e-4
    )


def sliding_window_pair(tokenizer, window: int) -> w2s.WeakPair:
    from transformers import MistralConfig, MistralForCausalLM

    def model(seed):
        torch.manual_seed(seed)
        config = MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            sliding_window=window,
            pad_token_id=0,
        )
        return MistralForCausalLM(config).eval()

    return w2s.WeakPair(model(1), model(2), tokenizer)


def test_sliding_window_models_are_exact_or_refused(tokenizer):
    pair = sliding_window_pair(tokenizer, window=4)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12]]  # the second row is left-padded: no gap inside it
    responses = [[20, 21, 22, 23, 24, 25, 26], [30, 31, 32, 33, 34, 35, 36]]
    state = pair.start(prompts)
    for start in range(0, 7, 2):  # equal lengths: no gaps, exact far past the window
        state.extend(torch.tensor([r[start : start + 2] for r in responses]))
    want = torch.tensor([naive_objective(pair, p, r) for p, r in zip(prompts, responses)])
    torch.testing.assert_close(state.scores, want, atol=1e-4, rtol=1e-4)
    # A gap (the second row grows by one token of two), then a forward spanning past the window.
    state = pair.start(prompts)
    state.extend(torch.tensor([[20, 21], [30, 0]]), torch.tensor([2, 1]))
    with pytest.raises(ValueError, match=r"sliding-window attention \(window 4\).*spans 8 cache positions"):
        state.extend(torch.tensor([[22, 23, 24, 25], [31, 32, 33, 34]]))


def test_sliding_window_gaps_inside_one_window_are_exact(tokenizer):
    pair = sliding_window_pair(tokenizer, window=16)
    state = pair.start([[5, 6]])
    state.extend(torch.tensor([[20, 21, 22]]))
    state.replace_tail(torch.tensor([2]), torch.tensor([[23, 24]]))
    torch.testing.assert_close(
        state.scores, torch.tensor([naive_objective(pair, [5, 6], [20, 23, 24])]), atol=1e-4, rtol=1e-4
    )


def test_a_step_past_a_learned_context_is_refused_by_name(tokenizer):
    """GPT-2's 256 positions: a 256th token steps in, a 257th is refused with the limit named."""
    pair = w2s.WeakPair(
        make_model("gpt2", len(tokenizer), 1), make_model("gpt2", len(tokenizer), 2), tokenizer
    )
    state = pair.start([[5 + i % 200 for i in range(255)]])
    state.step(torch.tensor([7]))
    with pytest.raises(ValueError, match="257 tokens, more than the weak model's context of 256 positions"):
        state.step(torch.tensor([8]))


def test_a_masked_step_leaves_a_row_as_it_was(pair):
    """``step(tokens, active)``: inactive rows keep their score and next-token distribution; what they
    take later is scored as if the masked token had never come."""
    state = pair.start(PROMPTS[:2])
    before = state.next_token_logprobs().clone()
    state.step(torch.tensor([17, 23]), active=torch.tensor([True, False]))
    torch.testing.assert_close(state.next_token_logprobs()[:, 1], before[:, 1])
    assert float(state.scores[1]) == 0.0
    state.step(torch.tensor([31, 41]))
    fresh = pair.score(PROMPTS[:2], [[17, 31], [41]])
    torch.testing.assert_close(state.scores, fresh, atol=1e-4, rtol=1e-4)


#: Prompts of unequal lengths (left padding in the cache), then steps with a masked one in between (a gap).
PADDED_PROMPTS = [[5, 6, 7, 8, 9, 10], [11], [12, 13, 14]]
STEPS_WITH_A_GAP = [([15, 16, 17], None), ([18, 19, 20], [True, False, True]), ([21, 22, 23], None)]


def assert_steps_equal_uncached_forwards(pair: w2s.WeakPair, state: w2s.GuidanceState) -> None:
    """Step ``state`` (started on ``PADDED_PROMPTS``) through ``STEPS_WITH_A_GAP``; every row's score and
    next-token distribution must equal an uncached forward over the row's own tokens."""
    responses: list[list[int]] = [[] for _ in PADDED_PROMPTS]
    for tokens, active in STEPS_WITH_A_GAP:
        state.step(torch.tensor(tokens), None if active is None else torch.tensor(active))
        responses = [
            r + [t] if active is None or active[i] else r for i, (r, t) in enumerate(zip(responses, tokens))
        ]
    want = torch.tensor([naive_objective(pair, p, r) for p, r in zip(PADDED_PROMPTS, responses)])
    torch.testing.assert_close(state.scores, want, atol=1e-4, rtol=1e-4)
    for side_index, side in enumerate(pair.sides):
        for row, (prompt, response) in enumerate(zip(PADDED_PROMPTS, responses)):
            with torch.no_grad():
                logits = side.model(torch.tensor([prompt + response])).logits[0, -1]
            torch.testing.assert_close(
                state.next_token_logprobs()[side_index, row],
                torch.log_softmax(logits, -1),
                atol=1e-4,
                rtol=1e-4,
            )


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_steps_from_left_padded_prompts_equal_one_shot_scoring(tokenizer, family, attention):
    """``step`` makes its one-token attention mask itself: from left-padded prompts, a masked step and
    later steps, every row equals an uncached forward."""
    vocab = len(tokenizer)
    pair = w2s.WeakPair(
        make_model(family, vocab, 3, attention=attention),
        make_model(family, vocab, 4, attention=attention),
        tokenizer,
    )
    state = pair.start(PADDED_PROMPTS)
    assert {group.one_token_mask_kind for group in state.groups} == {"sdpa": {"bool"}, "eager": {"additive"}}[
        attention
    ]
    assert_steps_equal_uncached_forwards(pair, state)


def test_a_model_that_reads_the_2d_mask_itself_steps_exactly(tokenizer):
    """Bloom builds its ALiBi biases from the 2-D attention mask as well as its attention mask: it keeps
    transformers' mask builder, and its steps from left-padded prompts equal uncached forwards."""
    from transformers import BloomConfig, BloomForCausalLM

    def bloom(seed: int) -> BloomForCausalLM:
        torch.manual_seed(seed)
        config = BloomConfig(
            vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=2, pad_token_id=0, eos_token_id=2
        )
        return BloomForCausalLM(config).eval()

    pair = w2s.WeakPair(bloom(1), bloom(2), tokenizer)
    state = pair.start(PADDED_PROMPTS)
    assert [group.one_token_mask_kind for group in state.groups] == [None, None]
    assert_steps_equal_uncached_forwards(pair, state)
