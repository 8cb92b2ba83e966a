"""The search loop on its own, without models: a candidate source that grows words over a fixed alphabet and
a scorer that sums fixed letter values, against a naive beam search written here."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from w2s_generate.candidates import CandidateSource, SampledChunks
from w2s_generate.policies import SearchCost, TopDistinct
from w2s_generate.search_loop import best_hypotheses, run_rounds


class Letters(CandidateSource):
    """Row ``i`` of a parent's ``k`` copies appends letter ``i`` of the alphabet; responses end after ``rounds``."""

    def __init__(self, prompts: int, alphabet: str, rounds: int) -> None:
        self.alphabet, self.rounds = alphabet, rounds
        self.owners = list(range(prompts))
        self.texts = [""] * prompts
        self.slots: list[int] = [0] * prompts

    def expand(self, parents, repeats) -> None:
        self.texts = [self.texts[p] for p, r in zip(parents, repeats) for _ in range(r)]
        self.owners = [self.owners[p] for p, r in zip(parents, repeats) for _ in range(r)]
        self.slots = [i for r in repeats for i in range(r)]

    def sample(self) -> SampledChunks:
        self.texts = [t + self.alphabet[s % len(self.alphabet)] for t, s in zip(self.texts, self.slots)]
        return SampledChunks(None, None, [len(t) >= self.rounds for t in self.texts])

    def responses(self) -> list:
        return list(self.texts)


@dataclass
class State:
    scores: torch.Tensor
    side_scores: torch.Tensor


class LetterValues:
    """Scores a response by the sum of its letters' values."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values
        self.cost = SearchCost.zeros(1)
        self.state = State(torch.zeros(0), torch.zeros(2, 0))

    def select(self, index) -> None:
        pass

    def advance(self, chunks, responses, owners) -> None:
        scores = torch.tensor([sum(self.values[c] for c in r) for r in responses], dtype=torch.float32)
        self.state = State(scores, torch.stack([scores, torch.zeros_like(scores)]))


def naive_beam_search(alphabet: str, values: dict[str, float], width: int, k: int, rounds: int) -> list[str]:
    """Round 0 grows ``width * k`` copies of the prompt, later rounds ``k`` of each beam (copy ``i`` adds
    letter ``i``); keep the ``width`` best distinct responses, best first, ties in the order grown."""
    grown = [alphabet[i % len(alphabet)] for i in range(width * k)]
    beams: list[str] = []
    for round_index in range(rounds):
        if round_index:
            grown = [b + alphabet[i % len(alphabet)] for b in beams for i in range(k)]
        distinct = list(dict.fromkeys(grown))
        distinct.sort(key=lambda t: -sum(values[c] for c in t))
        beams = distinct[:width]
    return beams


def run(alphabet: str, values: dict[str, float], width: int, k: int, rounds: int, prompts: int = 1):
    source = Letters(prompts, alphabet, rounds)
    scorer = LetterValues(values)
    pools, trace = run_rounds(
        source,
        scorer,
        SearchCost.zeros(prompts),
        width,
        TopDistinct(),
        lambda round_index, best_finished, live: k,
        {"pair": [1.0, -1.0]},
        return_trace=True,
    )
    return pools, trace


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 5),
    st.lists(st.integers(-5, 5), min_size=4, max_size=4, unique=True),
)
def test_the_loop_keeps_what_a_naive_beam_search_keeps(width, k, rounds, letter_values):
    alphabet = "abcd"
    values = dict(zip(alphabet, map(float, letter_values)))
    pools, trace = run(alphabet, values, width, k, rounds)
    expected = naive_beam_search(alphabet, values, width, k, rounds)
    got = [response for _, response in best_hypotheses(pools, width)[0]]
    assert got[: len(expected)] == expected
    assert got[len(expected) :] == [expected[0]] * (width - len(expected))  # too few: the best repeated
    assert len(trace) == rounds
    assert all(int(t.kept.sum()) <= width for t in trace)


def test_prompts_are_searched_apart():
    alphabet = "abc"
    values = {"a": 0.0, "b": 2.0, "c": 1.0}
    pools, trace = run(alphabet, values, width=2, k=3, rounds=3, prompts=3)
    best = [hyps[0][1] for hyps in best_hypotheses(pools, 1)]
    assert best == ["bbb"] * 3
    assert trace[0].prompt_index.tolist() == [0] * 6 + [1] * 6 + [2] * 6


def test_a_policy_with_no_successors_for_round_zero_is_refused():
    with pytest.raises(ValueError, match="no successors for round 0"):
        run_rounds(
            Letters(1, "ab", 2),
            LetterValues({"a": 0.0, "b": 1.0}),
            SearchCost.zeros(1),
            2,
            TopDistinct(),
            lambda *args: 0,
            {},
        )
