"""The search loop: rounds of sample, score, select and expand over a candidate source and a scorer.

It knows nothing of models: a [candidate source][w2s_generate.CandidateSource] samples and
re-indexes rows, a [scorer][w2s_generate.Scorer] scores them, a
[`SelectionPolicy`][w2s_generate.SelectionPolicy] keeps ``W`` distinct hypotheses per prompt
(finished ones wait in the prompt's pool) and a budget gives each prompt's successors per round.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .candidates import CandidateSource
from .policies import Candidate, SearchCost, SelectionPolicy, TopDistinct
from .scorers import Scorer


@dataclass
class RoundTrace:
    """What one round of the search saw and kept (returned with ``return_trace=True``).

    Attributes:
        round: 0-based round number.
        prompt_index: ``[R]`` which prompt each candidate belongs to.
        responses: each candidate's generated token ids so far (large-model vocabulary).
        scores: ``[R]`` each candidate's objective (the pair's log-ratio).
        side_scores: ``[S, R]`` each side's log-likelihood of the candidate.
        kept: ``[R]`` whether the candidate survived the round.
        component_scores: name -> ``[R]`` each pair's own score (one entry per pair of an ensemble):
            a strong model gaming one judge shows as one component rising while another falls.
        cost: what the search had spent per prompt by the end of the round.

    Examples:
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=8,
        ...                      return_dict_in_generate=True, return_trace=True)
        >>> first = out.trace[0]   # 2 prompts x W=2 beams x K=2 successors, chunks of 4 tokens
        >>> len(out.trace), first.scores.shape, int(first.kept.sum())
        (2, torch.Size([8]), 4)
    """

    round: int
    prompt_index: torch.Tensor
    responses: list[list[int]]
    scores: torch.Tensor
    side_scores: torch.Tensor
    kept: torch.Tensor
    component_scores: dict[str, torch.Tensor] = field(default_factory=dict)
    cost: SearchCost | None = None


@dataclass
class Finished:
    response: list[int] | str
    score: float


@dataclass
class Pool:
    """The W best distinct hypotheses of one prompt: live rows of the batch and finished responses."""

    finished: list[Finished] = field(default_factory=list)
    done: bool = False


def run_rounds(
    source: CandidateSource,
    scorer: Scorer,
    cost: SearchCost,
    width: int,
    selection: SelectionPolicy,
    successors: Callable[[int, float | None, list[float]], int],
    components: dict[str, list[float]],
    return_trace: bool = False,
    stream: Any = None,
) -> tuple[list[Pool], list[RoundTrace]]:
    """Rounds of sample -> score -> select -> expand until no prompt has a live beam.

    Args:
        source: samples one chunk per live row and re-indexes its rows.
        scorer: keeps the pair's state in step with the rows; ``scorer.state.scores`` ranks them.
        cost: what the search spends, per prompt (shared with the source and the scorer).
        width: W, the hypotheses kept per prompt.
        selection: chooses the survivors among each prompt's distinct candidates.
        successors: ``(round, best finished score or None, live scores) -> K`` for one prompt
            (0: the prompt is settled).
        components: name -> coefficients over the pair's sides, for the trace's per-pair scores.
        return_trace: record a [`RoundTrace`][w2s_generate.RoundTrace] per round.
        stream: an object with ``round(pool, live_responses)`` told each round's survivors of prompt 0.

    Returns:
        Each prompt's pool (its finished hypotheses) and the trace.
    """
    W = width
    batch = len(source.owners)
    pools = [Pool() for _ in range(batch)]
    reset = getattr(selection, "reset", None)
    if callable(reset):
        reset()  # a policy's per-search state (e.g. StochasticSelection(seed=...)'s generator)
    trace: list[RoundTrace] = []
    # Round 0: W copies of each prompt, each with K_0 successors.
    k0 = successors(0, None, [])
    if k0 == 0:
        raise ValueError("the budget gave no successors for round 0: nothing to sample.")
    parents, repeats = list(range(batch)), [W * k0] * batch
    parent_of_row = [i // k0 for i in range(W * k0)] * batch
    round_index = 0
    while True:
        source.expand(parents, repeats)
        scorer.select([p for p, r in zip(parents, repeats) for _ in range(r)])
        # 1. Sample one chunk for every live row.
        chunks = source.sample()
        responses = source.responses()
        owners = source.owners
        # 2. Score every candidate by the pair's log-ratio of its whole response so far.
        scorer.advance(chunks, responses, owners)
        scores = scorer.state.scores
        # 3. Keep W distinct hypotheses per prompt (finished ones stay in the pool).
        keep, kept_finished = select_hypotheses(
            pools, owners, responses, scores.tolist(), chunks.finished, W, selection, parent_of_row
        )
        if return_trace:
            kept = torch.zeros(len(owners), dtype=torch.bool)
            kept[keep + kept_finished] = True
            side_scores = scorer.state.side_scores.cpu()
            trace.append(
                RoundTrace(
                    round_index,
                    torch.tensor(owners),
                    list(responses),
                    scores.cpu(),
                    side_scores,
                    kept,
                    {n: torch.tensor(v) @ side_scores for n, v in components.items()},
                    cost.copy(),
                )
            )
        if stream is not None:
            stream.round(pools[0], [responses[r] for r in keep])
        round_index += 1
        # 4. Expand the survivors by each prompt's budget for the next round.
        live_scores: dict[int, list[float]] = {}
        host_scores = scores.tolist()
        for r in keep:
            live_scores.setdefault(owners[r], []).append(host_scores[r])
        budget = {
            b: successors(round_index, max((f.score for f in pools[b].finished), default=None), live)
            for b, live in live_scores.items()
        }
        for r in keep:
            if budget[owners[r]] == 0:  # the prompt is settled: its live beams are final
                pools[owners[r]].finished.append(Finished(responses[r], host_scores[r]))
                pools[owners[r]].done = True
        keep = [r for r in keep if budget[owners[r]] > 0]
        if not keep:
            return pools, trace
        parents, repeats = keep, [budget[owners[r]] for r in keep]
        parent_of_row = [i for i, k in enumerate(repeats) for _ in range(k)]


def select_hypotheses(
    pools: list[Pool],
    owners: list[int],
    responses: list,
    scores: list[float],
    finished: list[bool],
    width: int,
    policy: SelectionPolicy | None = None,
    parents: list[int] | None = None,
) -> tuple[list[int], list[int]]:
    """Keep ``width`` distinct hypotheses of each prompt among its pool and this round's rows.

    Responses are token-id lists or texts; identical ones take one slot (the best-scored copy).
    ``policy`` chooses among the distinct candidates (default: the best ``width``); ``parents`` gives
    each row's parent beam for it. Finished rows that survive move into their prompt's pool.
    Returns the live rows to expand and the finished rows kept.
    """
    policy = policy or TopDistinct()
    by_prompt: dict[int, list[int]] = {}
    for row, owner in enumerate(owners):
        by_prompt.setdefault(owner, []).append(row)
    keep_rows: list[int] = []
    kept_finished_rows: list[int] = []
    for b, pool in enumerate(pools):
        if pool.done:
            continue
        entries: list[tuple[float, object, int | None, Finished | None]] = []
        for item in pool.finished:
            entries.append((item.score, _key(item.response), None, item))
        for row in by_prompt.get(b, []):
            entries.append((scores[row], _key(responses[row]), row, None))
        # Higher score first; among ties the earlier entry (the pool, then row order). Identical
        # hypotheses keep their best-scored copy.
        seen: set = set()
        distinct = []
        for i in sorted(range(len(entries)), key=lambda i: -entries[i][0]):
            if entries[i][1] not in seen:
                seen.add(entries[i][1])
                distinct.append(entries[i])
        candidates = [
            Candidate(
                score,
                None if row is None or parents is None else parents[row],
                item is not None or finished[row],
            )
            for score, _, row, item in distinct
        ]
        returned = policy.choose(candidates, width)
        if isinstance(returned, (list, tuple, range)):
            chosen = list(returned)
        elif getattr(returned, "ndim", None) == 1 and hasattr(returned, "tolist"):
            chosen = returned.tolist()  # a 1-D tensor or array of indices
        else:
            chosen = None
        if (
            chosen is None
            or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in chosen)
            or len(set(chosen)) != len(chosen)
            or len(chosen) > width
            or not all(0 <= i < len(distinct) for i in chosen)
        ):
            raise ValueError(
                f"the selection policy {policy!r} returned {returned!r} for {len(distinct)} candidates: it must "
                f"return a list of at most {width} distinct indices (integers) into the candidates."
            )
        kept: list[Finished] = []
        live: list[int] = []
        for i in chosen:
            score, _, row, item = distinct[i]
            if item is not None:
                kept.append(item)
            elif finished[row]:
                kept.append(Finished(responses[row], score))
                kept_finished_rows.append(row)
            else:
                live.append(row)
        pool.finished = kept
        pool.done = not live
        keep_rows.extend(live)
    return keep_rows, kept_finished_rows


def best_hypotheses(pools: list[Pool], n_return: int) -> list[list[tuple[float, list[int] | str]]]:
    """Each prompt's best ``n_return`` hypotheses, best first (the best repeated if too few exist)."""
    best = []
    for pool in pools:
        hyps = sorted(((f.score, f.response) for f in pool.finished), key=lambda h: -h[0])
        # Fewer distinct hypotheses than asked for (e.g. top_k=1): repeat the best, as generate would.
        hyps += [hyps[0]] * max(n_return - len(hyps), 0)
        best.append(hyps[:n_return])
    return best


def _key(response: list[int] | str):
    return response if isinstance(response, str) else tuple(response)
