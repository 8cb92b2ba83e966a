"""The real demo's gold reward (VADER, a third-party lexicon the search never sees) and fluency."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import torch

__all__ = ["encode_examples", "large_model_fluency", "response_logprobs", "vader_reward"]


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


def encode_examples(tokenizer, data: Iterable[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """``(ids, prompt length)`` per ``(opening, response)``: the response tokenized after its opening.

    The response is tokenized in the context of its opening (``opening + response``); where the
    opening's tokens are not a prefix of that, the response is tokenized alone.
    """
    examples = []
    for opening, response in data:
        prompt_ids = tokenizer(opening)["input_ids"]
        full = tokenizer(opening + response)["input_ids"]
        if full[: len(prompt_ids)] != prompt_ids:
            full = prompt_ids + tokenizer(response, add_special_tokens=False)["input_ids"]
        examples.append((full, len(prompt_ids)))
    return examples


def response_logprobs(model, examples: Sequence[tuple[list[int], int]], pad: int) -> torch.Tensor:
    """``[N]`` the summed log-prob of each example's response tokens, in one right-padded forward."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    keep = torch.zeros(len(examples), width - 1)
    for i, (row, prompt_len) in enumerate(examples):  # right padding: positions start at 0 for every row
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        keep[i, prompt_len - 1 : len(row) - 1] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    return (logprobs * keep).sum(-1)


@torch.no_grad()
def large_model_fluency(
    model, tokenizer, openings: Sequence[str], responses: Sequence[str], batch_size: int = 4
) -> list[float]:
    """The large model's mean token log-prob of each response given its opening (NaN when empty).

    The response is tokenized as `encode_examples` does.
    """
    rows = encode_examples(tokenizer, zip(openings, responses))
    pad = tokenizer.pad_token_id or 0
    scores: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        sums = response_logprobs(model, batch, pad).tolist()
        for (row, prompt_len), total in zip(batch, sums):
            scores.append(total / (len(row) - prompt_len) if len(row) > prompt_len else float("nan"))
    return scores
