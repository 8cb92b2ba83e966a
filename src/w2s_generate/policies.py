"""How a search spends its budget: which candidates survive and how many successors each gets.

The search loop ([`ChunkBeamSearch`][w2s_generate.ChunkBeamSearch]) is the paper's pseudo-code:
sample chunks from every live beam, score each candidate by the pair's log-ratio, keep the best,
expand. Each choice in it is a small object here, so policies from the literature can be tried on the
same pair, inside ``generate``, batched, and compared at equal cost ([`SearchCost`][w2s_generate.SearchCost]):

- selection: [`TopDistinct`][w2s_generate.TopDistinct] (the paper's), [`DiverseSelection`][w2s_generate.DiverseSelection]
  (at most ``m`` survivors per parent, as in diversity-aware search), [`StochasticSelection`][w2s_generate.StochasticSelection]
  (survivors drawn from a softmax over scores);
- budget: [`ConstantBudget`][w2s_generate.ConstantBudget] (the paper's ``K``), [`ScheduledBudget`][w2s_generate.ScheduledBudget]
  (``K`` per round, e.g. decaying as in AdaSearch), [`AdaptiveBudget`][w2s_generate.AdaptiveBudget]
  (a prompt stops expanding once a finished response leads every live beam by a margin);
- chunk boundary: [`ChunkBoundary`][w2s_generate.ChunkBoundary] (in ``boundaries.py``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch


def is_count(value: object, minimum: int = 1) -> bool:
    """An integer >= ``minimum`` that is not a bool (numpy integers are fine)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


# ---------------------------------------------------------------------------------------------- cost
@dataclass
class SearchCost:
    """What a search spent, per prompt: the figures to compare methods at equal cost.

    Attributes:
        large_tokens: tokens sampled from the large model for each prompt, kept or discarded (through a
            text sampler: the tokens asked for, ``max_tokens`` per chunk, an upper bound).
        large_forwards: large-model forward passes each prompt took part in (prefill included; through a
            text sampler: the longest chunk asked for per round, what a server batching the K samples of
            a request needs at most).
        weak_tokens: response tokens fed through the weak pair for each prompt (across tokenizers,
            tokens re-fed after a retraction count again).

    Examples:
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=8,
        ...                      return_dict_in_generate=True)
        >>> out.cost.large_tokens   # 2 prompts x (W*K = 4 rows) x 8 tokens
        [32, 32]
    """

    large_tokens: list[int] = field(default_factory=list)
    large_forwards: list[int] = field(default_factory=list)
    weak_tokens: list[int] = field(default_factory=list)

    @classmethod
    def zeros(cls, prompts: int) -> SearchCost:
        return cls([0] * prompts, [0] * prompts, [0] * prompts)

    def add(self, what: str, owners: Sequence[int], amounts: Sequence[int]) -> None:
        """Add ``amounts[i]`` to prompt ``owners[i]``'s ``what`` counter."""
        counter = getattr(self, what)
        for owner, amount in zip(owners, amounts):
            counter[owner] += int(amount)

    def count_forward(self, prompts: Sequence[int]) -> None:
        """One large-model forward for each of ``prompts`` (those with a row in it)."""
        for prompt in prompts:
            self.large_forwards[prompt] += 1

    def copy(self) -> SearchCost:
        return SearchCost(list(self.large_tokens), list(self.large_forwards), list(self.weak_tokens))

    def to_dict(self, prompt: int) -> dict[str, int]:
        """One prompt's figures as plain numbers (the command line's JSON lines)."""
        return {
            "large_tokens": self.large_tokens[prompt],
            "large_forwards": self.large_forwards[prompt],
            "weak_tokens": self.weak_tokens[prompt],
        }


# ---------------------------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class Candidate:
    """One distinct hypothesis of a prompt, as a selection policy sees it.

    Attributes:
        score: the pair's log-ratio of the whole response.
        parent: the beam it was sampled from this round (``None`` for a finished response kept from an
            earlier round). In the first round the ``W`` copies of the prompt are the parents.
        finished: whether the response has ended.

    Examples:
        >>> Candidate(score=1.25, parent=0, finished=False)
        Candidate(score=1.25, parent=0, finished=False)
    """

    score: float
    parent: int | None
    finished: bool


class SelectionPolicy(Protocol):
    """Chooses the survivors of one prompt among its distinct candidates.

    ``choose`` returns indices into ``candidates`` (at most ``width``, no repeats); the search has
    already merged identical responses into one candidate (the best-scored copy), and gives them
    best score first. A policy with a ``reset()`` method has it called at the start of every search
    (e.g. to re-seed a generator of its own).

    Examples:
        >>> class FinishedFirst:   # prefer responses that have ended, then the best scores
        ...     def choose(self, candidates, width):
        ...         order = sorted(range(len(candidates)), key=lambda i: (not candidates[i].finished, -candidates[i].score))
        ...         return order[:width]
        >>> cbs = ChunkBeamSearch(pair, 2, 2, 4, selection=FinishedFirst())
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=8)
    """

    def choose(self, candidates: Sequence[Candidate], width: int) -> list[int]: ...


def _by_score(candidates: Sequence[Candidate]) -> list[int]:
    """Indices, best score first; ties keep the earlier candidate (the pool, then row order)."""
    return sorted(range(len(candidates)), key=lambda i: -candidates[i].score)


@dataclass(frozen=True)
class TopDistinct:
    """Keep the ``W`` best distinct hypotheses (the paper's rule and the default).

    Examples:
        >>> TopDistinct().choose([Candidate(0.1, 0, False), Candidate(0.9, 0, False), Candidate(0.5, 1, False)], 2)
        [1, 2]
    """

    def choose(self, candidates: Sequence[Candidate], width: int) -> list[int]:
        return _by_score(candidates)[:width]


@dataclass(frozen=True)
class DiverseSelection:
    """Keep the best hypotheses, at most ``max_per_parent`` from any one beam; fill up if too few.

    One strong beam whose K children all outscore the rest would otherwise take every slot, and the
    search collapses onto one prefix (the failure diversity-aware search, e.g. IRO arXiv 2506.17828,
    addresses). Slots left empty because too few parents exist are filled with the best of the rest,
    so the beam never shrinks. Finished responses kept from earlier rounds have no parent.

    Args:
        max_per_parent: survivors allowed per parent beam before others are preferred.

    Examples:
        >>> picks = DiverseSelection(max_per_parent=1).choose(
        ...     [Candidate(0.9, 0, False), Candidate(0.8, 0, False), Candidate(0.1, 1, False)], 2)
        >>> picks   # the second child of beam 0 gives way to beam 1's
        [0, 2]
    """

    max_per_parent: int = 1

    def __post_init__(self) -> None:
        if not is_count(self.max_per_parent):
            raise ValueError(f"max_per_parent must be an integer >= 1; got {self.max_per_parent!r}.")

    def choose(self, candidates: Sequence[Candidate], width: int) -> list[int]:
        order = _by_score(candidates)
        taken: dict[int, int] = {}
        chosen: list[int] = []
        for i in order:
            parent = candidates[i].parent
            if parent is not None and taken.get(parent, 0) >= self.max_per_parent:
                continue
            chosen.append(i)
            if parent is not None:
                taken[parent] = taken.get(parent, 0) + 1
            if len(chosen) == width:
                return chosen
        rest = [i for i in order if i not in chosen]
        return chosen + rest[: width - len(chosen)]


class StochasticSelection:
    """Draw the ``W`` survivors without replacement, with probabilities ``softmax(score / temperature)``.

    Sampling survivors instead of taking the top keeps some lower-scored beams alive, trading
    exploitation of the pair's score for exploration. The draw is the Gumbel-top-k trick: adding
    Gumbel noise to ``score / temperature`` and taking the top W samples W items without replacement,
    each next one with probability proportional to ``exp(score / temperature)`` among those left.
    A prompt with no more candidates than ``W`` keeps them all, best first, and draws nothing.

    Where the noise comes from:

    - by default, torch's default CPU generator, so ``torch.manual_seed`` makes a search
      reproducible and a policy reused for an identical call under the same seed repeats it (with a
      large model on the CPU its sampling shares that generator: the chunks then differ from a
      search under [`TopDistinct`][w2s_generate.TopDistinct] with the same seed);
    - ``seed=``: a generator of the policy's own, seeded with ``seed`` at the start of every search
      ([`reset`][w2s_generate.StochasticSelection.reset]): the same draws in every search whatever
      torch's seed, and the large model's random stream untouched;
    - ``generator=``: your ``torch.Generator``, drawn from as it stands (never re-seeded).

    Args:
        temperature: softness of the draw; near 0 it is [`TopDistinct`][w2s_generate.TopDistinct].
        seed: seed of a generator of the policy's own, re-seeded at every search (``None``: no own
            generator).
        generator: a ``torch.Generator`` to draw from (``None``: torch's default CPU generator).

    Examples:
        >>> policy = StochasticSelection(temperature=1e-6, seed=0)
        >>> policy.choose([Candidate(0.1, 0, False), Candidate(0.9, 0, False), Candidate(0.5, 1, False)], 2)
        [1, 2]
    """

    def __init__(
        self, temperature: float = 1.0, seed: int | None = None, generator: torch.Generator | None = None
    ) -> None:
        if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool) or not temperature > 0:
            raise ValueError(f"temperature must be a number > 0; got {temperature!r}.")
        if not math.isfinite(temperature):
            raise ValueError(f"temperature must be finite; got {temperature!r}.")
        if seed is not None and not is_count(seed, 0):
            raise ValueError(f"seed must be an integer >= 0 (or None); got {seed!r}.")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator (or None for torch's default); got a {type(generator).__name__}."
            )
        if seed is not None and generator is not None:
            raise ValueError(
                "Pass either seed= (a generator of the policy's own, re-seeded at every search) or generator= "
                "(yours, drawn from as it stands), not both."
            )
        self.temperature = float(temperature)
        self.seed = None if seed is None else int(seed)
        self.generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else generator

    def __repr__(self) -> str:
        source = f", seed={self.seed}" if self.seed is not None else ""
        source += ", generator=..." if self.seed is None and self.generator is not None else ""
        return f"StochasticSelection(temperature={self.temperature}{source})"

    def reset(self) -> None:
        """Start a search: with ``seed=``, re-seed the policy's own generator (otherwise nothing)."""
        if self.seed is not None:
            self.generator.manual_seed(self.seed)

    def choose(self, candidates: Sequence[Candidate], width: int) -> list[int]:
        if len(candidates) <= width:
            return _by_score(candidates)  # every candidate survives: nothing to draw
        device = self.generator.device if self.generator is not None else "cpu"
        uniform = torch.rand(len(candidates), dtype=torch.float64, generator=self.generator, device=device)
        # Gumbel noise -log(-log(u)); u = 0 would give -inf: the smallest normal float instead.
        gumbel = -torch.log(-torch.log(uniform.clamp(min=torch.finfo(torch.float64).tiny)))
        keys = [c.score / self.temperature + g for c, g in zip(candidates, gumbel.tolist())]
        return sorted(range(len(candidates)), key=lambda i: -keys[i])[:width]


# ---------------------------------------------------------------------------------------------- budget
class BudgetPolicy(Protocol):
    """How many successors each surviving beam of a prompt samples in a round.

    ``successors`` gets the 0-based round about to be sampled, the prompt's best finished score
    (``None`` if none) and its live beams' scores (empty in round 0); it returns ``K >= 0`` for every
    live beam of that prompt. ``0`` stops expanding the prompt: its best hypotheses so far are final.
    ``max_successors`` bounds ``K`` over all rounds (the search reserves sampling slots for it).

    Examples:
        >>> class TwoRoundsWide:   # 4 successors in the first two rounds, then 1 (a sampled rollout)
        ...     max_successors = 4
        ...     def successors(self, round_index, best_finished, live_scores):
        ...         return 4 if round_index < 2 else 1
        >>> cbs = ChunkBeamSearch(pair, 2, TwoRoundsWide(), 4)
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=16)
    """

    max_successors: int

    def successors(
        self, round_index: int, best_finished: float | None, live_scores: Sequence[float]
    ) -> int: ...


@dataclass(frozen=True)
class ConstantBudget:
    """``K`` successors per beam every round (the paper's rule and the default).

    Examples:
        >>> ConstantBudget(4).successors(3, None, [0.2, 0.1])
        4
    """

    successors_per_beam: int = 4

    def __post_init__(self) -> None:
        if not is_count(self.successors_per_beam):
            raise ValueError(
                f"successors_per_beam must be an integer >= 1; got {self.successors_per_beam!r}."
            )

    @property
    def max_successors(self) -> int:
        return int(self.successors_per_beam)

    def successors(self, round_index: int, best_finished: float | None, live_scores: Sequence[float]) -> int:
        return int(self.successors_per_beam)


class ScheduledBudget:
    """``K`` set per round by a list (its last entry repeats) or a function of the round.

    Spending more samples early, while beams are short and differ most, and fewer later is the idea
    of decaying per-round budgets (AdaSearch, arXiv 2510.23334).

    Args:
        schedule: ``[K_0, K_1, ...]`` (each an integer >= 1), or ``round -> K``.
        max_successors: with a function, the largest ``K`` it returns (a list knows its own).

    Examples:
        >>> budget = ScheduledBudget([8, 4, 2])
        >>> [budget.successors(r, None, []) for r in range(5)]
        [8, 4, 2, 2, 2]
        >>> ScheduledBudget(lambda r: max(8 >> r, 1), max_successors=8).successors(2, None, [])
        2
    """

    def __init__(
        self, schedule: Sequence[int] | Callable[[int], int], max_successors: int | None = None
    ) -> None:
        if callable(schedule):
            if not is_count(max_successors):
                raise ValueError(
                    f"a schedule given as a function needs max_successors (the largest K it returns); "
                    f"got {max_successors!r}."
                )
            self._function: Callable[[int], int] | None = schedule
            self._list: list[int] = []
            self.max_successors = int(max_successors)
        else:
            if not isinstance(schedule, Sequence) or isinstance(schedule, str):
                raise TypeError(
                    f"schedule must be a list (its order is the rounds'); got a {type(schedule).__name__}: "
                    f"{schedule!r:.40}."
                )
            values = list(schedule)
            if not values or not all(is_count(k) for k in values):
                raise ValueError(f"schedule must be a non-empty list of integers >= 1; got {schedule!r}.")
            self._function = None
            self._list = [int(k) for k in values]
            self.max_successors = max(self._list)

    def __repr__(self) -> str:
        return f"ScheduledBudget({self._function or self._list!r})"

    def successors(self, round_index: int, best_finished: float | None, live_scores: Sequence[float]) -> int:
        if self._function is None:
            return self._list[min(round_index, len(self._list) - 1)]
        k = self._function(round_index)
        if not is_count(k) or k > self.max_successors:
            raise ValueError(
                f"the budget schedule returned {k!r} for round {round_index}: it must return an integer "
                f"between 1 and max_successors={self.max_successors}."
            )
        return int(k)


@dataclass(frozen=True)
class AdaptiveBudget:
    """``K`` successors per beam until a finished response leads every live beam by ``margin``.

    The pair's log-ratio of a live beam can still rise, so no beam is provably beaten; the margin says
    how large a lead counts as settled. A settled prompt stops sampling, and the budget it no longer
    spends is the saving (see ``cost`` in the output).

    Args:
        successors_per_beam: ``K`` while the prompt is open.
        margin: lead of the best finished score over every live score that closes the prompt.

    Examples:
        >>> budget = AdaptiveBudget(successors_per_beam=4, margin=1.0)
        >>> budget.successors(2, best_finished=3.0, live_scores=[1.5, 0.2])   # leads by 1.5
        0
        >>> budget.successors(2, best_finished=3.0, live_scores=[2.5])        # leads by 0.5 only
        4
    """

    successors_per_beam: int = 4
    margin: float = 1.0

    def __post_init__(self) -> None:
        if not is_count(self.successors_per_beam):
            raise ValueError(
                f"successors_per_beam must be an integer >= 1; got {self.successors_per_beam!r}."
            )
        if isinstance(self.margin, bool) or not isinstance(self.margin, numbers.Real) or not self.margin >= 0:
            raise ValueError(f"margin must be a number >= 0; got {self.margin!r}.")

    @property
    def max_successors(self) -> int:
        return int(self.successors_per_beam)

    def successors(self, round_index: int, best_finished: float | None, live_scores: Sequence[float]) -> int:
        if best_finished is not None and live_scores and best_finished >= max(live_scores) + self.margin:
            return 0
        return int(self.successors_per_beam)
