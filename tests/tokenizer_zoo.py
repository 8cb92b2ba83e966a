"""Realistic tokenizers built in code (nothing is downloaded), for the cross-tokenizer oracles.

- :func:`llama2_style`: transformers' ``LlamaTokenizer`` (SentencePiece-style BPE, ``Metaspace``
  pre-tokenizer, byte fallback, a decoder that strips the first space) from a vocabulary and merges
  trained here, so a response decoded on its own loses its leading space as with Llama-2 or Mistral.
- :func:`gpt2_style`: transformers' ``GPT2Tokenizer`` (byte-level BPE) with merges deep enough that
  common words are single tokens, so a word growing character by character is re-tokenized several
  times (``[Ġw, o] -> [Ġw, on] -> [Ġwond]``); one special token serves as BOS, EOS and padding.
- :func:`word_level`: whole words split on whitespace, unknown words to ``<unk>``.
"""

from __future__ import annotations

import functools
import json

from conftest import CORPUS
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Tokenizer, LlamaTokenizer, PreTrainedTokenizerFast

# The shared test corpus, plus multi-byte characters and one word in several growing forms.
TEXTS = [
    *dict.fromkeys(CORPUS),
    "a café in Zürich, crème brûlée and a naïve hero — 日本の映画 😀",
    "wonderful wonderful wonderfully wonder wondering",
] * 8

BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def _trained_bpe(pre_tokenizer, vocab_size: int, special: list[str], alphabet: list[str]) -> dict:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(TEXTS, trainer)
    model = json.loads(tok.to_str())["model"]
    return {
        "vocab": model["vocab"],
        "merges": [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]],
    }


@functools.cache
def _llama2_parts(vocab_size: int) -> tuple[dict, list]:
    trained = _trained_bpe(
        # Pieces never span words, as with SentencePiece's default split_by_whitespace.
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        vocab_size,
        ["<unk>", "<s>", "</s>"],
        [],
    )
    # Llama-2's layout: <unk>, <s>, </s>, then the 256 byte-fallback tokens, then the merged pieces.
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for token in BYTE_TOKENS + sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(token, len(vocab))
    return vocab, trained["merges"]


def llama2_style(vocab_size: int = 500) -> LlamaTokenizer:
    """A Llama-2-style tokenizer: ids <unk>=0 (also padding), <s>=1, </s>=2, bytes 3-258."""
    vocab, merges = _llama2_parts(vocab_size)
    tok = LlamaTokenizer(
        vocab=dict(vocab), merges=list(merges), add_prefix_space=True, legacy=False, add_bos_token=True
    )
    tok.pad_token = tok.unk_token
    tok.padding_side = "left"
    return tok


@functools.cache
def _gpt2_parts(vocab_size: int) -> tuple[dict, list]:
    trained = _trained_bpe(
        pre_tokenizers.ByteLevel(add_prefix_space=False),
        vocab_size,
        [],
        pre_tokenizers.ByteLevel.alphabet(),
    )
    vocab = dict(trained["vocab"])
    vocab["<|endoftext|>"] = len(vocab)  # last, as in GPT-2
    return vocab, trained["merges"]


def gpt2_style(vocab_size: int = 700) -> GPT2Tokenizer:
    """A GPT-2-style byte-level BPE tokenizer whose one special token is BOS, EOS and padding."""
    vocab, merges = _gpt2_parts(vocab_size)
    tok = GPT2Tokenizer(vocab=dict(vocab), merges=list(merges))
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def word_level() -> PreTrainedTokenizerFast:
    """Whole words: <pad>=0, <unk>=1, <eos>=2, then every word of the texts (decoding joins with spaces)."""
    words = sorted({w for t in TEXTS for w in t.split()})
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<eos>", *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<eos>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


TOKENIZERS = {"llama2": llama2_style, "gpt2": gpt2_style, "word": word_level}
