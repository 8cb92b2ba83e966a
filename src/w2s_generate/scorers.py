"""How the pair scores a search's candidates: a scorer keeps the pair's incremental state in step with the rows.

[`IdScorer`][w2s_generate.IdScorer] feeds the chunks' ids straight to the pair (shared vocabulary);
[`TextScorer`][w2s_generate.TextScorer] feeds the responses' text re-encoded with the pair's
tokenizer. The search loop sees only the [`Scorer`][w2s_generate.Scorer] protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import torch

from .bridge import advance_texts
from .pairs import WeakPair
from .policies import SearchCost
from .scoring import GuidanceState

if TYPE_CHECKING:
    from .candidates import SampledChunks


class Scorer(Protocol):
    """What the search loop asks of a scorer.

    Attributes:
        state: the pair's incremental state, one row per live candidate (``state.scores`` are the
            candidates' log-ratios so far).
        cost: where the weak tokens fed are counted.

    Examples:
        >>> from w2s_generate import IdScorer, Scorer, SearchCost, TextScorer
        >>> def scores_after(scorer: Scorer, responses: list) -> list[float]:
        ...     scorer.select([0])
        ...     scorer.advance(None, responses, [0])
        ...     return scorer.state.scores.tolist()
        >>> scorer = TextScorer(pair.start(["the film was"]), pair, lambda texts, owners: texts, SearchCost.zeros(1))
        >>> len(scores_after(scorer, [" so good"]))
        1
    """

    state: GuidanceState
    cost: SearchCost

    def select(self, index: Sequence[int]) -> None:
        """Keep (and repeat) the rows ``index``, in that order."""

    def advance(self, chunks: SampledChunks, responses: list, owners: list[int]) -> None:
        """Score one round's chunks: the rows' ``responses`` so far, row ``i`` of prompt ``owners[i]``."""


class IdScorer:
    """The pair reads the large model's chunk ids directly (a shared vocabulary).

    Examples:
        >>> from w2s_generate.candidates import SampledChunks
        >>> scorer = IdScorer(pair.start(["the film was"]), SearchCost.zeros(1))
        >>> scorer.select([0, 0])   # two rows of prompt 0
        >>> chunks = SampledChunks(torch.tensor([[218, 257], [218, 0]]), torch.tensor([2, 1]), [False, False])
        >>> scorer.advance(chunks, None, [0, 0])
        >>> scorer.cost.weak_tokens, scorer.state.scores.shape
        ([3], torch.Size([2]))
    """

    def __init__(self, state: GuidanceState, cost: SearchCost) -> None:
        self.state = state
        self.cost = cost

    def select(self, index: Sequence[int]) -> None:
        self.state.select(torch.as_tensor(list(index), dtype=torch.long, device=self.state.scores.device))

    def advance(self, chunks: SampledChunks, responses: list, owners: list[int]) -> None:
        if chunks.scored:
            return  # the drafting source has stepped the state (and counted its tokens) already
        self.state.extend(chunks.ids, chunks.lengths)
        self.cost.add("weak_tokens", owners, chunks.lengths.tolist())


class TextScorer:
    """The pair reads each response's text, re-encoded with its own tokenizer (only changed tails are fed).

    Args:
        state: the pair's state, one row per candidate.
        pair: the weak pair.
        to_texts: ``(responses, owners) -> texts``: identity for a text source, decoding after the
            prompt for a local model with another tokenizer.
        cost: where the weak tokens fed are counted.

    Examples:
        >>> scorer = TextScorer(pair.start(["the film was"]), pair, lambda texts, owners: texts, SearchCost.zeros(1))
        >>> scorer.advance(None, [" so good"], [0])
        >>> torch.allclose(scorer.state.scores, pair.score(["the film was"], [" so good"]), atol=1e-5)
        True
    """

    def __init__(
        self,
        state: GuidanceState,
        pair: WeakPair,
        to_texts: Callable[[list, list[int]], list[str]],
        cost: SearchCost,
    ) -> None:
        self.state = state
        self.pair = pair
        self.to_texts = to_texts
        self.cost = cost
        self.weak_rows: list[list[int]] = [[] for _ in range(state.scores.shape[0])]

    def select(self, index: Sequence[int]) -> None:
        index = list(index)
        self.state.select(torch.as_tensor(index, dtype=torch.long, device=self.state.scores.device))
        self.weak_rows = [list(self.weak_rows[i]) for i in index]

    def advance(self, chunks: SampledChunks, responses: list, owners: list[int]) -> None:
        fed = advance_texts(self.pair, self.state, self.weak_rows, self.to_texts(responses, owners))
        self.cost.add("weak_tokens", owners, fed)
