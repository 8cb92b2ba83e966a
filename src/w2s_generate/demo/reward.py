"""Gold metrics for the demo task: a sentiment score and a grammaticality score.

Neither is visible to the search; they play the role of the paper's held-out sentiment classifier
and are used only to *measure* what guidance did.
"""

from __future__ import annotations

from .language import NEGATIVE_WORDS, POSITIVE_WORDS, is_grammatical_prefix, is_grammatical_sentence

__all__ = ["fluency", "gold_reward"]


def _content_sentences(text: str) -> list[list[str]]:
    """Word lists of the sentences of ``text``, rating lines dropped, a trailing fragment kept."""
    sentences: list[list[str]] = []
    current: list[str] = []
    for word in text.split():
        current.append(word)
        if word == ".":
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    # "rating : positive ." is metadata, not an opinion: it must neither earn reward nor dilute it.
    return [s for s in sentences if s[0] != "rating"]


def gold_reward(text: str) -> float:
    """Lexicon sentiment: mean over sentences of ``#positive words - #negative words``.

    A plain count: the lexicon is the demo language's positive and negative adjectives and verbs
    (``POSITIVE_WORDS`` / ``NEGATIVE_WORDS``); the grammar has
    no negation, and intensifiers are not weighted, so each word counts +1 or -1. Sentences are
    split at ``.``; a trailing unfinished sentence counts as one, and ``rating : ... .`` lines are
    ignored. Typical values: about +1 for positive reviews, 0 for neutral or mixed ones, -1 for
    negative ones.

    Args:
        text: Space-separated words (a prompt plus its continuation, usually).

    Returns:
        The score; 0.0 for text with no sentences.
    """
    sentences = _content_sentences(text)
    if not sentences:
        return 0.0
    score = sum(
        sum(word in POSITIVE_WORDS for word in s) - sum(word in NEGATIVE_WORDS for word in s)
        for s in sentences
    )
    return score / len(sentences)


def fluency(text: str, *, allow_truncated: bool = True) -> float:
    """Share of the sentences of ``text`` that the grammar accepts.

    Args:
        text: Space-separated words.
        allow_truncated: If True, words after the last ``.`` that still form a grammatical
            prefix are ignored, because a generation cut off by its token budget is not an error;
            a trailing fragment that no completion can fix counts as one rejected sentence. If
            False, any trailing fragment counts as a rejected sentence.

    Returns:
        A number in ``[0, 1]``; 0.0 when there is nothing to judge (e.g. an empty response).
    """
    accepted = total = 0
    current: list[str] = []
    for word in text.split():
        current.append(word)
        if word == ".":
            total += 1
            accepted += is_grammatical_sentence(current)
            current = []
    if current and not (allow_truncated and is_grammatical_prefix(current)):
        total += 1
    return accepted / total if total else 0.0
