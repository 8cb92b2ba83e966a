"""The word-level tokenizer shared by the demo's strong and weak models.

Weak-to-strong search compares token log-probabilities across models, which is simplest when all
models share one vocabulary; a word-level tokenizer over the demo language gives exactly that, and
makes every token a readable word.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .language import VOCABULARY

__all__ = ["BOS", "EOS", "PAD", "SPECIAL_TOKENS", "UNK", "build_tokenizer"]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
# Fixed order, so the special ids are always pad=0, unk=1, bos=2, eos=3.
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)


def build_tokenizer(vocab_words: Sequence[str] | None = None) -> PreTrainedTokenizerFast:
    """Build a word-level fast tokenizer.

    Args:
        vocab_words: The words of the vocabulary (order kept, duplicates dropped); defaults to the
            demo language's ``VOCABULARY``.

    Returns:
        A tokenizer that splits on whitespace, maps unknown words to ``<unk>``, prepends ``<bos>``
        when ``add_special_tokens=True``, and decodes by joining words with single spaces, so
        ``decode(encode(text), skip_special_tokens=True) == text`` for single-spaced text. Padding
        is on the left, as batched generation with a decoder-only model needs.
    """
    words = list(dict.fromkeys(VOCABULARY if vocab_words is None else vocab_words))
    clash = set(words) & set(SPECIAL_TOKENS)
    if clash:
        raise ValueError(f"vocabulary words clash with special tokens: {sorted(clash)}")
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A $B",
        special_tokens=[(BOS, vocab[BOS])],
    )
    # The WordPiece decoder puts one space before every token that lacks its continuation prefix;
    # no word here starts with "##", so it joins all words with spaces. cleanup=False keeps " ."
    # as is instead of gluing the full stop to the previous word.
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)

    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        # transformers' own cleanup would also turn "great ." into "great." and break round-trips.
        clean_up_tokenization_spaces=False,
    )
