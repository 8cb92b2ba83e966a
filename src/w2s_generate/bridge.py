"""Bridging the large model's tokens to a weak pair with another tokenizer, through text."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from .pairs import WeakPair
from .scoring import GuidanceState, right_pad


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Number of leading ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class TextBridge:
    """Feeds a weak pair the text of the large model's responses, re-encoded with the pair's tokenizer.

    Each row's weak-side tokens are cached. When a row's text grows, it is re-encoded and only the
    tokens after the first one that changed go through the weak models (a word split across two
    chunks re-tokenizes at the boundary, so the tail of the old encoding may be replaced). The
    score therefore always equals ``pair.score(prompt, full_text)``.
    """

    def __init__(self, strong_tokenizer: PreTrainedTokenizerBase, pair: WeakPair) -> None:
        self.strong_tokenizer = strong_tokenizer
        self.pair = pair

    def texts(self, responses: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """``[R, T], [R] -> R`` decoded responses (special tokens such as EOS dropped)."""
        rows = [r[:n] for r, n in zip(responses.tolist(), lengths.tolist())]
        return self.strong_tokenizer.batch_decode(rows, skip_special_tokens=True)

    def advance(
        self, state: GuidanceState, weak_rows: list[list[int]], responses: torch.Tensor, lengths: torch.Tensor
    ) -> None:
        """Bring ``state`` (and each row's cached weak ids, in place) up to the responses' current text."""
        advance_texts(self.pair, state, weak_rows, self.texts(responses, lengths))


def advance_texts(pair: WeakPair, state: GuidanceState, weak_rows: list[list[int]], texts: list[str]) -> None:
    """Bring ``state`` up to each row's response text, feeding only the tokens after the first change.

    ``weak_rows`` holds each row's weak-side response ids so far and is updated in place.
    """
    encoded = pair.tokenizer(texts, add_special_tokens=False)["input_ids"]
    drops, tails = [], []
    for i, new in enumerate(encoded):
        old = weak_rows[i]
        keep = common_prefix_length(old, new)
        drops.append(len(old) - keep)
        tails.append(new[keep:])
        weak_rows[i] = list(new)
    if not any(drops) and not any(tails):
        return
    ids, tail_lengths = right_pad(tails, pair.pad_token_id)
    state.replace_tail(torch.tensor(drops), ids, tail_lengths)
