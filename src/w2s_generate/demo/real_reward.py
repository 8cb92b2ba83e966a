"""The real demo's gold reward (VADER, a third-party lexicon the search never sees) and fluency."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

__all__ = ["large_model_fluency", "vader_reward"]


@functools.cache
def _vader():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as error:
        raise ImportError(
            "The real demo's gold reward is VADER: run `pip install vaderSentiment` "
            "(or `pip install 'w2s-generate[real]'`)."
        ) from error
    return SentimentIntensityAnalyzer()


def vader_reward(text: str) -> float:
    """VADER's compound sentiment of ``text``, in ``[-1, 1]`` (0.0 for empty text).

    Examples:
        >>> vader_reward(" a wonderful, moving film") > 0.5
        True
    """
    if not text.strip():
        return 0.0
    return float(_vader().polarity_scores(text)["compound"])


@torch.no_grad()
def large_model_fluency(
    model, tokenizer, openings: Sequence[str], responses: Sequence[str], batch_size: int = 4
) -> list[float]:
    """The large model's mean token log-prob of each response given its opening (NaN when empty).

    The response is tokenized in the context of its opening (``opening + response``); where the
    opening's tokens are not a prefix of that, the response is tokenized alone.
    """
    rows: list[tuple[list[int], int]] = []
    for opening, response in zip(openings, responses):
        prompt_ids = tokenizer(opening)["input_ids"]
        full = tokenizer(opening + response)["input_ids"]
        if full[: len(prompt_ids)] != prompt_ids:
            full = prompt_ids + tokenizer(response, add_special_tokens=False)["input_ids"]
        rows.append((full, len(prompt_ids)))
    scores: list[float] = []
    pad = tokenizer.pad_token_id or 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (row, _) in enumerate(batch):  # right padding: positions start at 0 for every row
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        for i, (row, prompt_len) in enumerate(batch):
            if len(row) <= prompt_len:
                scores.append(float("nan"))
                continue
            logprobs = torch.log_softmax(logits[i, prompt_len - 1 : len(row) - 1], dim=-1)
            targets = torch.tensor(row[prompt_len:])
            scores.append(float(logprobs.gather(-1, targets[:, None]).mean()))
    return scores
