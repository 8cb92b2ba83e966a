"""Naive references computed from scratch (no cache, no batching): the oracles of the test suite."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def full_logprob(model, prompt_ids: list[int], response_ids: list[int], **forward_kwargs) -> float:
    """log p(response | prompt) by one uncached forward over prompt + response."""
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    logits = model(input_ids=ids, **forward_kwargs).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids)
    return float(sum(logp[start - 1 + i, t] for i, t in enumerate(response_ids)))


@torch.no_grad()
def next_logprobs(model, ids: list[int], **forward_kwargs) -> torch.Tensor:
    """log p(. | ids) from one uncached forward."""
    logits = model(input_ids=torch.tensor([list(ids)]), **forward_kwargs).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1)


def responses_of(sequences: torch.Tensor, prompt_width: int, pad: int) -> list[list[int]]:
    """Generated ids per returned row, trailing padding removed."""
    rows = []
    for row in sequences.tolist():
        r = row[prompt_width:]
        while r and r[-1] == pad:
            r.pop()
        rows.append(r)
    return rows


def chi_square_limit(df: int, z: float = 3.09) -> float:
    """The chi-square quantile at 1 - 0.001 (Wilson-Hilferty), without scipy."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic over bins with expected count >= 5 (the rest pooled into one bin)."""
    total = counts.sum()
    expected = probs * total
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum()[None]]).double()
    wanted = torch.cat([expected[big], expected[~big].sum()[None]]).double()
    keep = wanted > 0
    stat = float(((observed[keep] - wanted[keep]) ** 2 / wanted[keep]).sum())
    return stat, int(keep.sum()) - 1
