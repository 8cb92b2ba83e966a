"""Search policies (selection, budget, chunk boundary) and cost accounting: each against a naive reference.

The loop's own oracles (scores equal fresh scoring, W=K=1 reproduces plain sampling, cached logits
equal a full recompute) are checked here for every policy where they are defined.
"""

from __future__ import annotations

import itertools
import math

import pytest
import tokenizer_zoo
import torch
from conftest import make_model, make_tokenizer
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reference import chi_square, chi_square_limit, next_logprobs, responses_of
from tokenizer_zoo import TOKENIZERS
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.stopping_criteria import StopStringCriteria

import w2s_generate as w2s
from w2s_generate.candidates import DecodedStopStrings, LocalModelSource
from w2s_generate.policies import Candidate, SearchCost

PROMPTS = ["the film was", "a quiet story about a family"]


# ------------------------------------------------------------------------------------ selection
candidate_lists = st.lists(
    st.builds(
        Candidate,
        score=st.floats(-5, 5, allow_nan=False),
        parent=st.one_of(st.none(), st.integers(0, 3)),
        finished=st.booleans(),
    ),
    min_size=1,
    max_size=12,
).map(lambda cs: sorted(cs, key=lambda c: -c.score))  # the search hands them best first


@settings(max_examples=200, deadline=None)
@given(candidate_lists, st.integers(1, 6))
def test_top_distinct_is_the_best_width(candidates, width):
    chosen = w2s.TopDistinct().choose(candidates, width)
    naive = sorted(range(len(candidates)), key=lambda i: (-candidates[i].score, i))[:width]
    assert chosen == naive


@settings(max_examples=300, deadline=None)
@given(candidate_lists, st.integers(1, 6), st.integers(1, 3))
@example([Candidate(1.0, 0, False), Candidate(0.5, 0, False), Candidate(0.1, 1, False)], 2, 1)
@example([Candidate(1.0, 0, False), Candidate(0.5, 0, False), Candidate(0.4, 0, True)], 3, 2)
def test_diverse_selection_properties(candidates, width, per_parent):
    chosen = w2s.DiverseSelection(per_parent).choose(candidates, width)
    assert len(chosen) == len(set(chosen)) == min(width, len(candidates))
    counts: dict[int, int] = {}
    for i in chosen:
        if candidates[i].parent is not None:
            counts[candidates[i].parent] = counts.get(candidates[i].parent, 0) + 1
    within_limit = all(c <= per_parent for c in counts.values())
    # Naive reference of the rule: a candidate left out while a worse one is kept must be one whose
    # parent already holds its quota among better-scored kept candidates (unless slots were filled up).
    for left in set(range(len(candidates))) - set(chosen):
        worse_kept = [i for i in chosen if candidates[i].score < candidates[left].score]
        if not worse_kept or not within_limit:
            continue
        parent = candidates[left].parent
        better_same = [
            i
            for i in chosen
            if candidates[i].parent == parent and candidates[i].score >= candidates[left].score
        ]
        assert parent is not None and len(better_same) >= per_parent
    if not within_limit:
        # Filled up: only possible when fewer than `width` candidates respect the quota.
        quota_respecting = sum(
            min(per_parent, sum(1 for c in candidates if c.parent == p))
            for p in {c.parent for c in candidates if c.parent is not None}
        ) + sum(1 for c in candidates if c.parent is None)
        assert quota_respecting < width


def test_stochastic_selection_near_zero_temperature_is_top_distinct():
    candidates = [Candidate(s, 0, False) for s in (0.3, 2.0, -1.0, 1.1, 0.9)]
    policy = w2s.StochasticSelection(temperature=1e-9, seed=0)
    ordered = sorted(candidates, key=lambda c: -c.score)
    for _ in range(20):
        assert policy.choose(ordered, 3) == w2s.TopDistinct().choose(ordered, 3)


def test_stochastic_selection_draws_survivors_by_softmax_without_replacement():
    """Gumbel-top-2 against the naive sequential draw (Plackett-Luce): chi-square over ordered pairs."""
    scores = [1.0, 0.5, 0.0, -0.7]
    temperature = 0.8
    candidates = [Candidate(s, i, False) for i, s in enumerate(scores)]
    policy = w2s.StochasticSelection(temperature=temperature, seed=123)
    n = 20000
    counts: dict[tuple[int, int], int] = {}
    for _ in range(n):
        first, second = policy.choose(candidates, 2)
        counts[(first, second)] = counts.get((first, second), 0) + 1
    weights = [math.exp(s / temperature) for s in scores]
    total = sum(weights)
    pairs = list(itertools.permutations(range(4), 2))
    probs = torch.tensor([weights[i] / total * weights[j] / (total - weights[i]) for i, j in pairs])
    observed = torch.tensor([counts.get(p, 0) for p in pairs])
    stat, df = chi_square(observed, probs)
    assert stat < chi_square_limit(df), (stat, df)


def stochastic_search(strong, pair, tokenizer, policy, seed):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    return strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 3, 2, selection=policy),
        do_sample=True,
        max_new_tokens=8,
        num_return_sequences=2,
        return_dict_in_generate=True,
        return_trace=True,
    )


def kept_rows(out):
    return [r.kept.tolist() for r in out.trace]


def test_stochastic_selection_is_reproducible_under_torch_manual_seed(strong, pair, tokenizer):
    """Two policies built alike, under one torch seed, keep the same rows; another seed keeps others."""
    runs = [stochastic_search(strong, pair, tokenizer, w2s.StochasticSelection(5.0), 0) for _ in range(2)]
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    assert kept_rows(runs[0]) == kept_rows(runs[1])
    others = [
        kept_rows(stochastic_search(strong, pair, tokenizer, w2s.StochasticSelection(5.0), s)) for s in (1, 2)
    ]
    assert any(k != kept_rows(runs[0]) for k in others)


def test_a_reused_stochastic_policy_repeats_an_identical_call(strong, pair, tokenizer):
    for policy in (w2s.StochasticSelection(5.0), w2s.StochasticSelection(5.0, seed=3)):
        first = stochastic_search(strong, pair, tokenizer, policy, 0)
        again = stochastic_search(strong, pair, tokenizer, policy, 0)
        assert torch.equal(first.sequences, again.sequences), policy
        assert kept_rows(first) == kept_rows(again), policy


def test_stochastic_selection_with_a_seed_or_a_generator():
    candidates = [Candidate(s, i % 2, False) for i, s in enumerate((2.0, 1.9, 1.8, 1.7, 1.6, 1.5))]
    seeded = w2s.StochasticSelection(50.0, seed=11)
    draws = []
    for torch_seed in (0, 1):  # seed= starts the same stream at every search, whatever torch's seed
        torch.manual_seed(torch_seed)
        seeded.reset()
        draws.append([seeded.choose(candidates, 3) for _ in range(6)])
    assert draws[0] == draws[1]
    # A generator of your own is drawn from as it stands: seeding it repeats the draws.
    generator = torch.Generator().manual_seed(4)
    own = w2s.StochasticSelection(50.0, generator=generator)
    first = [own.choose(candidates, 3) for _ in range(6)]
    generator.manual_seed(4)
    own.reset()  # leaves a given generator alone
    assert [own.choose(candidates, 3) for _ in range(6)] == first
    with pytest.raises(ValueError, match=r"either seed= .* or generator= .* not both"):
        w2s.StochasticSelection(1.0, seed=1, generator=generator)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator .*; got a int"):
        w2s.StochasticSelection(1.0, generator=4)
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0 \(or None\); got -1"):
        w2s.StochasticSelection(1.0, seed=-1)


def test_selection_policy_that_breaks_its_contract_is_refused(strong, pair, tokenizer):
    class Greedy:
        def choose(self, candidates, width):
            return list(range(len(candidates)))  # more than width

    inputs = tokenizer(["the film was"], return_tensors="pt")
    with pytest.raises(ValueError, match="at most 2 distinct indices"):
        strong.generate(
            **inputs,
            custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3, selection=Greedy()),
            do_sample=True,
            max_new_tokens=6,
        )


# ------------------------------------------------------------------------------------ budget
def test_scheduled_budget_follows_its_list_and_function():
    assert [w2s.ScheduledBudget([5, 3, 1]).successors(r, None, []) for r in range(5)] == [5, 3, 1, 1, 1]
    decaying = w2s.ScheduledBudget(lambda r: max(8 >> r, 1), max_successors=8)
    assert [decaying.successors(r, None, []) for r in range(5)] == [8, 4, 2, 1, 1]
    too_big = w2s.ScheduledBudget(lambda r: 9, max_successors=8)
    with pytest.raises(ValueError, match="returned 9 for round 0"):
        too_big.successors(0, None, [])


def test_adaptive_budget_closes_a_settled_prompt_only():
    budget = w2s.AdaptiveBudget(3, margin=0.5)
    assert budget.successors(1, None, [1.0]) == 3  # nothing finished
    assert budget.successors(1, 2.0, [1.6]) == 3  # lead 0.4 < 0.5
    assert budget.successors(1, 2.0, [1.5, 0.0]) == 0  # lead 0.5


@pytest.mark.parametrize(
    "policy, message",
    [
        (lambda: w2s.ScheduledBudget([]), "non-empty list"),
        (lambda: w2s.ScheduledBudget([2, 0]), "integers >= 1"),
        (lambda: w2s.ScheduledBudget(lambda r: 2), "needs max_successors"),
        (lambda: w2s.AdaptiveBudget(2, margin=-1), "margin must be a number >= 0"),
        (lambda: w2s.ConstantBudget(True), "successors_per_beam must be an integer"),
        (lambda: w2s.DiverseSelection(0), "max_per_parent must be an integer >= 1"),
        (lambda: w2s.StochasticSelection(0.0), "temperature must be a number > 0"),
        (lambda: w2s.StochasticSelection(float("inf")), "temperature must be finite"),
        (lambda: w2s.ChunkBoundary(0), "max_tokens must be an integer >= 1"),
        (lambda: w2s.ChunkBoundary(4, stop_strings="\n"), "wrap it"),
        (lambda: w2s.ChunkBoundary(4, stop_strings=[""]), "non-empty strings"),
        (lambda: w2s.ChunkBoundary(4, stop_token_ids=[-1]), "token ids"),
    ],
)
def test_bad_policy_settings(policy, message):
    with pytest.raises(ValueError, match=message):
        policy()


def test_scheduled_budget_sets_the_rows_of_every_round(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    schedule = [3, 1, 2]
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, w2s.ScheduledBudget(schedule), 3),
        do_sample=True,
        max_new_tokens=12,
        return_dict_in_generate=True,
        return_trace=True,
    )
    rows = [int((t.prompt_index == 0).sum()) for t in out.trace]
    assert rows == [2 * 3, 2 * 1, 2 * 2, 2 * 2]
    responses = responses_of(out.sequences, width, tokenizer.pad_token_id)
    torch.testing.assert_close(out.log_ratios, pair.score(PROMPTS, responses), atol=1e-4, rtol=1e-4)


def test_adaptive_budget_stops_a_settled_prompt_and_saves_its_budget(strong, pair, tokenizer):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    eos = list(range(100, 200))  # responses end early, some in the first rounds
    common = dict(do_sample=True, max_new_tokens=16, eos_token_id=eos, return_dict_in_generate=True)
    torch.manual_seed(3)
    constant = strong.generate(**inputs, custom_generate=w2s.ChunkBeamSearch(pair, 2, 3, 2), **common)
    torch.manual_seed(3)
    # margin 0: any finished response ahead of every live beam settles the prompt.
    adaptive = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, w2s.AdaptiveBudget(3, margin=0.0), 2),
        **common,
        return_trace=True,
    )
    assert adaptive.cost.large_tokens[0] <= constant.cost.large_tokens[0]
    responses = responses_of(adaptive.sequences, inputs["input_ids"].shape[1], tokenizer.pad_token_id)
    torch.testing.assert_close(
        adaptive.log_ratios, pair.score(["the film was"], responses), atol=1e-4, rtol=1e-4
    )
    # Where it stopped early, the best finished response led every beam kept in the last round.
    last = adaptive.trace[-1]
    live = last.scores[last.kept]
    if len(adaptive.trace) < len(constant.trace if constant.trace else []) and live.numel():
        assert float(adaptive.log_ratios[0]) >= float(live.max()) - 1e-5


# ------------------------------------------------------------------------------------ boundary
def naive_cut(text: str, before: str, stops: list[str]) -> str:
    """The shortest prefix of ``text`` after which ``before + prefix`` ends with a stop string."""
    for end in range(1, len(text) + 1):
        if any((before + text[:end]).endswith(s) for s in stops):
            return text[:end]
    return text


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="ab.\n ", max_size=12),
    st.text(alphabet="ab.\n ", max_size=6),
    st.lists(st.sampled_from(["\n\n", ".", "a.", "b b", "\n"]), min_size=1, max_size=3),
)
def test_cut_text_matches_the_naive_shortest_prefix(text, before, stops):
    cut, was_cut = w2s.ChunkBoundary(8, stop_strings=stops).cut_text(text, before)
    assert cut == naive_cut(text, before, stops)
    assert was_cut == (cut != text)


@pytest.mark.parametrize("chunk", [3, 6])
def test_width_one_with_stop_tokens_reproduces_plain_sampling(strong, pair, tokenizer, chunk):
    """Chunks that end at stop tokens change where rounds end, not what is sampled (one prompt)."""
    inputs = tokenizer(["the film was"], return_tensors="pt")
    boundary = w2s.ChunkBoundary(chunk, stop_token_ids=list(range(0, 300, 3)))
    early = False
    for seed in range(3):
        torch.manual_seed(seed)
        plain = strong.generate(**inputs, do_sample=True, top_k=50, max_new_tokens=15)
        torch.manual_seed(seed)
        searched = strong.generate(
            **inputs,
            custom_generate=w2s.ChunkBeamSearch(pair, 1, 1, boundary),
            do_sample=True,
            top_k=50,
            max_new_tokens=15,
            return_dict_in_generate=True,
            return_trace=True,
        )
        assert torch.equal(plain, searched.sequences)
        # Some round ended before its cap, at a stop token.
        early |= any(len(t.responses[0]) < chunk * (t.round + 1) for t in searched.trace[:-1])
    assert early


def test_rows_waiting_on_a_boundary_keep_exact_logits_and_cache(family, tokenizer):
    """After every round, each row's next-token logits equal a full recompute of prompt + response."""
    strong = make_model(family, len(tokenizer), 10, width=48, layers=3)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    config = GenerationConfig(
        max_length=inputs["input_ids"].shape[1] + 20, num_beams=1, num_return_sequences=1
    )
    boundary = w2s.ChunkBoundary(5, stop_token_ids=list(range(0, 300, 4)))  # chunks end at different steps
    cost = SearchCost.zeros(2)
    source = LocalModelSource(
        strong, inputs["input_ids"], inputs["attention_mask"], [], [], config, 0, boundary, 20, 6, cost
    )
    torch.manual_seed(0)
    source.expand([0, 1], [3, 3])
    prompts = [
        [t for t, m in zip(ids, mask) if m]
        for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist())
    ]
    uneven = False
    for _ in range(4):
        chunks = source.sample()
        uneven |= len(set(chunks.lengths.tolist())) > 1
        responses = source.responses()
        source.expand([0, 2, 4], [2, 2, 2])  # survivors: rows 0, 2 and 4, each twice
        kept = [responses[r] for r in (0, 0, 2, 2, 4, 4)]
        for row, response in enumerate(kept):
            reference = next_logprobs(strong, prompts[source.owners[row]] + response)
            torch.testing.assert_close(
                torch.log_softmax(source.logits[row], -1), reference, atol=1e-4, rtol=1e-4
            )
    assert uneven, "the stop tokens should end some chunks before others"


def completes_a_stop(tokenizer, response: list[int], stops: list[str]) -> bool:
    """The response's last token completes a stop string (which may end inside that token)."""
    text, before = tokenizer.decode(response), tokenizer.decode(response[:-1])
    return any(text.find(s, max(len(before) - len(s) + 1, 0)) != -1 for s in stops)


def assert_chunks_end_at_stops(trace, tokenizer, stops: list[str], cap: int, max_new_tokens: int) -> None:
    """Every chunk a round adds to a kept response is ``cap`` long or ends at the token completing a
    stop string (or ends the response); and some chunk ended early."""
    early = False
    for earlier, later in zip(trace, trace[1:]):
        parents = [r for r, k in zip(earlier.responses, earlier.kept.tolist()) if k]
        for response in later.responses:
            parent = max((p for p in parents if response[: len(p)] == p), key=len, default=None)
            ended = len(response) == max_new_tokens or tokenizer.eos_token_id in response
            if parent is None or ended:
                continue
            chunk = response[len(parent) :]
            assert len(chunk) == cap or completes_a_stop(tokenizer, response, stops), (chunk, response)
            early |= len(chunk) < cap
    assert early, "frequent stop strings should end some chunks early"


def test_stop_string_boundary_ends_chunks_at_the_string(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    stops = ["e", "a"]
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, w2s.ChunkBoundary(6, stop_strings=stops)),
        do_sample=True,
        max_new_tokens=18,
        return_dict_in_generate=True,
        return_trace=True,
    )
    responses = responses_of(out.sequences, width, tokenizer.pad_token_id)
    torch.testing.assert_close(out.log_ratios, pair.score(PROMPTS, responses), atol=1e-4, rtol=1e-4)
    # Each round adds to a kept response a chunk that ends in a stop string or is 6 tokens long.
    assert_chunks_end_at_stops(out.trace, tokenizer, stops, cap=6, max_new_tokens=18)


def test_processors_see_rows_without_the_gaps_of_waiting_rows(strong, pair, tokenizer):
    """A row waiting for the others leaves masked columns; processors must read n-grams without them."""
    views = []

    class Record(LogitsProcessor):
        def __call__(self, input_ids, scores):
            views.append(input_ids.clone())
            return scores

    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    pad = tokenizer.pad_token_id
    strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(
            pair, 2, 2, w2s.ChunkBoundary(5, stop_token_ids=list(range(1, 300, 4)))
        ),
        do_sample=True,
        max_new_tokens=15,
        suppress_tokens=[pad],  # the pad id is never sampled: any pad after a token is a gap
        logits_processor=LogitsProcessorList([Record()]),
    )
    assert views
    for view in views:
        for row in view.tolist():
            first = next(i for i, t in enumerate(row) if t != pad)
            assert pad not in row[first:], row


def test_width_based_processors_are_refused_with_an_early_boundary(strong, pair, tokenizer):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    cbs = w2s.ChunkBeamSearch(pair, 2, 2, w2s.ChunkBoundary(4, stop_token_ids=[3]))
    with pytest.raises(ValueError, match="reads a row's length from the batch width"):
        strong.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=8, min_new_tokens=3)


def test_stop_tokens_are_refused_through_a_text_sampler(pair):
    class Canned:
        def sample(self, prefixes, n, max_tokens):
            return [[w2s.Chunk(" fine.", True)] * n for _ in prefixes]

    cbs = w2s.ChunkBeamSearch(pair, 2, 2, w2s.ChunkBoundary(4, stop_token_ids=[3]))
    with pytest.raises(ValueError, match="use stop_strings instead"):
        cbs.run(["the film was"], sampler=Canned(), max_new_tokens=8)


def test_text_sampler_chunks_are_cut_at_stop_strings(pair):
    class Sentences:
        def sample(self, prefixes, n, max_tokens):
            return [[w2s.Chunk(" good. then bad", False) for _ in range(n)] for _ in prefixes]

    cbs = w2s.ChunkBeamSearch(pair, 1, 2, w2s.ChunkBoundary(4, stop_strings=["."]))
    out = cbs.run(["the film was"], sampler=Sentences(), max_new_tokens=8, return_trace=True)
    assert out.trace[0].responses[0] == " good."
    assert out.texts == [" good. good."]
    torch.testing.assert_close(
        out.log_ratios, pair.score(["the film was"], [" good. good."]), atol=1e-4, rtol=1e-4
    )
    assert out.cost.large_tokens == [2 * 4 + 2 * 4]  # tokens asked for, cut or not


# ------------------------------------------------------------------------------------ every policy
POLICIES = {
    "top": {},
    "diverse": {"selection": w2s.DiverseSelection(1)},
    "stochastic": {"selection": w2s.StochasticSelection(0.5, seed=0)},
    "scheduled": {"successors_per_beam": w2s.ScheduledBudget([4, 2])},
    "adaptive": {"successors_per_beam": w2s.AdaptiveBudget(3, margin=0.2)},
    "boundary": {"chunk_length": w2s.ChunkBoundary(4, stop_token_ids=list(range(0, 300, 5)))},
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_returns_fresh_scores_and_counts_its_cost(strong, pair, tokenizer, name):
    settings_ = {"successors_per_beam": 3, "chunk_length": 4, **POLICIES[name]}
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    forwards = []
    hook = strong.register_forward_hook(
        lambda m, a, k, out: forwards.append(k["input_ids"].shape), with_kwargs=True
    )
    try:
        torch.manual_seed(1)
        out = strong.generate(
            **inputs,
            custom_generate=w2s.ChunkBeamSearch(pair, 2, **settings_),
            do_sample=True,
            max_new_tokens=12,
            num_return_sequences=2,
            eos_token_id=list(range(100, 110)),
            return_dict_in_generate=True,
            return_trace=True,
        )
    finally:
        hook.remove()
    responses = responses_of(out.sequences, width, tokenizer.pad_token_id)
    prompts = [p for p in PROMPTS for _ in range(2)]
    torch.testing.assert_close(out.log_ratios, pair.score(prompts, responses), atol=1e-4, rtol=1e-4)
    # Cost against what the trace shows: every candidate's new tokens were sampled and scored once.
    sampled = [0, 0]
    seen: dict[int, list] = {0: [[]], 1: [[]]}
    for round_trace in out.trace:
        for b, response in zip(round_trace.prompt_index.tolist(), round_trace.responses):
            parent = max((p for p in seen[b] if response[: len(p)] == p), key=len)
            sampled[b] += len(response) - len(parent)
        seen = {
            b: [r for r, o in zip(round_trace.responses, round_trace.prompt_index.tolist()) if o == b]
            for b in (0, 1)
        }
        assert round_trace.cost is not None
    assert out.cost.large_tokens == sampled == out.cost.weak_tokens
    # Every forward ran over both prompts' rows here (both live to the end or the hook sees fewer).
    assert max(out.cost.large_forwards) == len(forwards)


def test_cost_of_plain_cbs_is_the_paper_budget(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 3, 4),
        do_sample=True,
        max_new_tokens=12,
        return_dict_in_generate=True,
    )
    # W*K rows x 12 tokens; forwards: prefill, 3 in each of 3 rounds, 1 survivor feed between rounds.
    assert out.cost.large_tokens == [2 * 3 * 12] * 2
    assert out.cost.weak_tokens == [2 * 3 * 12] * 2
    assert out.cost.large_forwards == [1 + 3 * 3 + 2] * 2


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_across_tokenizers_scores_the_decoded_text(name):
    strong_tok, weak_tok = make_tokenizer(300), make_tokenizer(280, seed_text="zebra quartz", bos=True)
    strong = make_model("gpt2", len(strong_tok), 10)
    pair = w2s.WeakPair(
        make_model("llama", len(weak_tok), 21), make_model("llama", len(weak_tok), 22), weak_tok
    )
    settings_ = {"successors_per_beam": 3, "chunk_length": 4, **POLICIES[name]}
    inputs = strong_tok(PROMPTS, return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    torch.manual_seed(0)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, tokenizer=strong_tok, **settings_),
        do_sample=True,
        max_new_tokens=10,
        return_dict_in_generate=True,
    )
    texts = [
        strong_tok.decode(ids + r, skip_special_tokens=True)[
            len(strong_tok.decode(ids, skip_special_tokens=True)) :
        ]
        for ids, r in zip(
            [
                [t for t, m in zip(i, k) if m]
                for i, k in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist())
            ],
            responses_of(out.sequences, width, strong_tok.pad_token_id),
        )
    ]
    torch.testing.assert_close(out.log_ratios, pair.score(PROMPTS, texts), atol=1e-4, rtol=1e-4)
    assert all(n > 0 for n in out.cost.weak_tokens)


def test_policies_through_a_text_sampler_score_their_texts(pair):
    class Words:
        def __init__(self):
            self.calls = 0

        def sample(self, prefixes, n, max_tokens):
            self.calls += 1
            words = [" fine", " dull", " bright", " odd.", " so"]
            return [
                [w2s.Chunk(words[(i + len(p)) % 5] * max_tokens, False) for i in range(n)] for p in prefixes
            ]

    for name, settings_ in POLICIES.items():
        if name == "boundary":
            settings_ = {"chunk_length": w2s.ChunkBoundary(3, stop_strings=["."])}
        cbs = w2s.ChunkBeamSearch(pair, 2, **{"successors_per_beam": 3, "chunk_length": 3, **settings_})
        out = cbs.run(PROMPTS, sampler=Words(), max_new_tokens=9, num_return_sequences=2)
        prompts = [p for p in PROMPTS for _ in range(2)]
        torch.testing.assert_close(out.log_ratios, pair.score(prompts, out.texts), atol=1e-4, rtol=1e-4)
        assert all(n > 0 for n in out.cost.large_tokens), name


# ------------------------------------------------------------------------------------ stop strings by decoding
@pytest.mark.parametrize("name", ["llama2", "gpt2"])
def test_decoded_stop_strings_agree_with_transformers_criterion(name):
    """The decoding fallback (for vocabularies StopStringCriteria cannot analyse) against StopStringCriteria."""
    tokenizer = TOKENIZERS[name]()
    stops = ["e ", "the", ".", "in"]
    reference = StopStringCriteria(tokenizer, stops)
    decoded = DecodedStopStrings(tokenizer, stops)
    generator = torch.Generator().manual_seed(0)
    text_ids = tokenizer(" ".join(tokenizer_zoo.TEXTS), add_special_tokens=False)["input_ids"]
    # Windows of real text (stop strings do occur) and of random ids.
    real = torch.tensor([text_ids[i : i + 12] for i in range(0, len(text_ids) - 12, 3)])
    noise = torch.randint(3, len(tokenizer), (200, 12), generator=generator)
    for ids in (real, noise):
        expected = reference(ids, None)
        assert expected.any() or ids is noise
        assert torch.equal(decoded(ids, None), expected)


def test_stop_string_boundary_with_a_word_level_tokenizer():
    """A word-level vocabulary: StopStringCriteria cannot analyse it, the decoding fallback takes over."""
    tokenizer = TOKENIZERS["word"]()
    v = len(tokenizer)
    strong = make_model("llama", v, 10, width=48, layers=3)
    pair = w2s.WeakPair(make_model("llama", v, 11), make_model("llama", v, 12), tokenizer)
    prompts = ["wonderful wonderful", "a café"]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    stop_word = tokenizer.convert_ids_to_tokens(7)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, w2s.ChunkBoundary(6, stop_strings=[stop_word])),
        do_sample=True,
        max_new_tokens=12,
        pad_token_id=0,
        eos_token_id=2,
        return_dict_in_generate=True,
        return_trace=True,
    )
    responses = responses_of(out.sequences, width, 0)
    torch.testing.assert_close(out.log_ratios, pair.score(prompts, responses), atol=1e-4, rtol=1e-4)
    assert_chunks_end_at_stops(out.trace, tokenizer, [stop_word], cap=6, max_new_tokens=12)


@pytest.mark.parametrize(
    "settings_",
    [
        {"selection": w2s.DiverseSelection(1)},
        {"selection": w2s.StochasticSelection(0.5, seed=0)},
        {"successors_per_beam": w2s.ScheduledBudget([1])},
        {"successors_per_beam": w2s.AdaptiveBudget(1, margin=0.0)},
    ],
    ids=["diverse", "stochastic", "scheduled", "adaptive"],
)
def test_width_one_reproduces_plain_sampling_under_every_policy(strong, pair, tokenizer, settings_):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    eos = list(range(100, 140))  # some responses end early
    for seed in range(3):
        torch.manual_seed(seed)
        plain = strong.generate(**inputs, do_sample=True, max_new_tokens=12, eos_token_id=eos)
        torch.manual_seed(seed)
        cbs = w2s.ChunkBeamSearch(pair, 1, **{"successors_per_beam": 1, "chunk_length": 4, **settings_})
        searched = strong.generate(
            **inputs, custom_generate=cbs, do_sample=True, max_new_tokens=12, eos_token_id=eos
        )
        assert torch.equal(plain, searched)
