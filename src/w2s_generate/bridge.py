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

    A response's text is what it adds to the decoded prompt: ``decode(prompt + response)`` past
    ``decode(prompt)``, as ``TextStreamer`` does. Decoding a response on its own would lose what
    depends on its context: SentencePiece-style decoders (Llama-2, Mistral) strip the first space
    of a sequence, so ``" wonderful"`` alone decodes to ``"wonderful"``.

    Each row's weak-side tokens are cached. When a row's text grows, it is re-encoded and only the
    tokens after the first one that changed go through the weak models (a word split across two
    chunks re-tokenizes at the boundary, so the tail of the old encoding may be replaced). The
    score therefore always equals ``pair.score(weak_prompt, response_text)``.

    Args:
        strong_tokenizer: the large model's tokenizer.
        pair: the weak pair, with a tokenizer of its own.

    Examples:
        >>> from w2s_generate.bridge import TextBridge
        >>> bridge = TextBridge(tok, pair)
        >>> bridge.start([tok("the film was")["input_ids"]])   # the prompts' text: the pair reads it
        ['the film was']
    """

    def __init__(self, strong_tokenizer: PreTrainedTokenizerBase, pair: WeakPair) -> None:
        self.strong_tokenizer = strong_tokenizer
        self.pair = pair
        self._prompt_rows: list[list[int]] = []
        self._prompt_text_lengths: list[int] = []

    def start(self, prompt_rows: list[list[int]]) -> list[str]:
        """Remember the prompts (large-model ids, no padding); returns their decoded text."""
        texts = self.strong_tokenizer.batch_decode(prompt_rows, skip_special_tokens=True)
        self._prompt_rows = [list(r) for r in prompt_rows]
        self._prompt_text_lengths = [len(t) for t in texts]
        return texts

    def texts(self, responses: list[list[int]], prompt_of_row: list[int]) -> list[str]:
        """Each row's response text (its large-model ids), decoded after its prompt, special tokens dropped."""
        rows = [self._prompt_rows[b] + list(r) for b, r in zip(prompt_of_row, responses)]
        full = self.strong_tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [text[self._prompt_text_lengths[b] :] for b, text in zip(prompt_of_row, full)]


def advance_texts(
    pair: WeakPair, state: GuidanceState, weak_rows: list[list[int]], texts: list[str]
) -> list[int]:
    """Bring ``state`` up to each row's response text, feeding only the tokens after the first change.

    ``weak_rows`` holds each row's weak-side response ids so far and is updated in place. Returns the
    number of tokens fed per row.
    """
    encoded = pair.tokenizer(texts, add_special_tokens=False)["input_ids"]
    drops, tails = [], []
    for i, new in enumerate(encoded):
        old = weak_rows[i]
        keep = common_prefix_length(old, new)
        drops.append(len(old) - keep)
        tails.append(new[keep:])
        weak_rows[i] = list(new)
    fed = [len(t) for t in tails]
    if not any(drops) and not any(fed):
        return fed
    ids, tail_lengths = right_pad(tails, pair.pad_token_id)
    state.replace_tail(torch.tensor(drops), ids, tail_lengths)
    return fed
