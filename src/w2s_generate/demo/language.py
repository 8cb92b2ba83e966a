"""A tiny synthetic review language: word lists, a sampler, and a real acceptor for its grammar.

The demo task mirrors the paper's controlled-sentiment experiment without downloading anything: a
"review" is 2-4 lowercase sentences built from the grammar below, and its sentiment is carried by
a handful of clearly positive or clearly negative words. Because the language is regular, we can
decide exactly whether a generated sentence is grammatical (see ``is_grammatical_sentence``),
which gives an honest fluency measure for the demo (``w2s_generate.demo.reward``).

Grammar (``[x]`` optional, ``|`` alternatives, every sentence ends with the token ``.``)::

    S       -> CLAUSE [CONJ CLAUSE] "."
             | "i" VERB NP "."
             | "overall" "it" PRED "."
             | "rating" ":" RATING "."
    CLAUSE  -> NP PRED | "i" OPINION NP PRED
    PRED    -> COPULA ADJP
    ADJP    -> [INTENS] ADJ ["and" [INTENS] ADJ]
    NP      -> DET NOUN

Example: ``rating : positive . the film was really great . i loved the music .``
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "GRAMMAR_VERSION",
    "NEGATIVE_WORDS",
    "POSITIVE_WORDS",
    "SENTIMENTS",
    "VOCABULARY",
    "is_grammatical_prefix",
    "is_grammatical_sentence",
    "language_fingerprint",
    "prompts",
    "sample_corpus",
    "sample_review",
    "split_sentences",
]

# Bump when the grammar or the word lists change: cached models trained on the old language are
# then retrained instead of silently reused (the fingerprint goes into the cache manifest).
GRAMMAR_VERSION = "1"

DETERMINERS = ("the", "this", "that")
NOUNS = (
    "film",
    "movie",
    "acting",
    "plot",
    "story",
    "ending",
    "music",
    "cast",
    "script",
    "dialogue",
    "pacing",
    "camera",
    "battery",
    "screen",
    "design",
    "price",
    "service",
    "sound",
)
COPULAS = ("was", "is", "seemed")
OPINION_VERBS = ("thought", "felt", "think", "feel", "believe")
INTENSIFIERS = ("very", "really", "quite", "so", "truly", "rather", "extremely")
POSITIVE_ADJECTIVES = (
    "great",
    "wonderful",
    "excellent",
    "brilliant",
    "amazing",
    "delightful",
    "superb",
    "charming",
    "beautiful",
    "fantastic",
    "lovely",
    "enjoyable",
)
NEGATIVE_ADJECTIVES = (
    "terrible",
    "awful",
    "boring",
    "dull",
    "horrible",
    "dreadful",
    "poor",
    "bad",
    "weak",
    "disappointing",
    "annoying",
    "tedious",
)
NEUTRAL_ADJECTIVES = (
    "long",
    "short",
    "loud",
    "quiet",
    "simple",
    "familiar",
    "typical",
    "modern",
    "plain",
    "average",
    "unusual",
    "different",
)
POSITIVE_VERBS = ("loved", "enjoyed", "liked", "adored", "admired")
NEGATIVE_VERBS = ("hated", "disliked", "loathed", "despised", "regretted")
NEUTRAL_VERBS = ("watched", "saw", "bought", "noticed", "remember")
# "and" joins two adjectives as well as two clauses; the acceptor is an NFA, so the overlap is fine.
CONJUNCTIONS = ("but", "and", "while")
RATINGS = ("positive", "negative", "neutral", "mixed")
FUNCTION_WORDS = ("i", "it", "overall", "rating", ":", ".")

SENTIMENTS = ("positive", "negative", "neutral", "mixed")

# The sentiment lexicon the gold reward counts. Rating labels are deliberately *not* in it: a
# rating line is metadata, and the reward should measure what the review itself says.
POSITIVE_WORDS = frozenset(POSITIVE_ADJECTIVES + POSITIVE_VERBS)
NEGATIVE_WORDS = frozenset(NEGATIVE_ADJECTIVES + NEGATIVE_VERBS)

VOCABULARY: tuple[str, ...] = tuple(
    sorted(
        set(
            DETERMINERS
            + NOUNS
            + COPULAS
            + OPINION_VERBS
            + INTENSIFIERS
            + POSITIVE_ADJECTIVES
            + NEGATIVE_ADJECTIVES
            + NEUTRAL_ADJECTIVES
            + POSITIVE_VERBS
            + NEGATIVE_VERBS
            + NEUTRAL_VERBS
            + CONJUNCTIONS
            + RATINGS
            + FUNCTION_WORDS
        )
    )
)


def language_fingerprint() -> str:
    """A short hash of the grammar version and vocabulary, used to invalidate stale model caches."""
    payload = GRAMMAR_VERSION + "\n" + " ".join(VOCABULARY)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Acceptor: the grammar as a regular expression over word sets, compiled to an NFA (Thompson).
# Simulating the NFA decides membership and prefix-membership without enumerating any strings.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sym:
    words: frozenset[str]


@dataclass(frozen=True)
class _Seq:
    parts: tuple[_Node, ...]


@dataclass(frozen=True)
class _Alt:
    options: tuple[_Node, ...]


@dataclass(frozen=True)
class _Opt:
    inner: _Node


_Node = _Sym | _Seq | _Alt | _Opt


def _w(*words: str) -> _Sym:
    return _Sym(frozenset(words))


def _seq(*parts: _Node) -> _Seq:
    return _Seq(parts)


def _alt(*options: _Node) -> _Alt:
    return _Alt(options)


_ADJECTIVES = _w(*POSITIVE_ADJECTIVES, *NEGATIVE_ADJECTIVES, *NEUTRAL_ADJECTIVES)
_NP = _seq(_w(*DETERMINERS), _w(*NOUNS))
_ADJ_TERM = _seq(_Opt(_w(*INTENSIFIERS)), _ADJECTIVES)
_ADJP = _seq(_ADJ_TERM, _Opt(_seq(_w("and"), _ADJ_TERM)))
_PRED = _seq(_w(*COPULAS), _ADJP)
_CLAUSE = _alt(_seq(_NP, _PRED), _seq(_w("i"), _w(*OPINION_VERBS), _NP, _PRED))
_SENTENCE = _alt(
    _seq(_CLAUSE, _Opt(_seq(_w(*CONJUNCTIONS), _CLAUSE)), _w(".")),
    _seq(_w("i"), _w(*POSITIVE_VERBS, *NEGATIVE_VERBS, *NEUTRAL_VERBS), _NP, _w(".")),
    _seq(_w("overall"), _w("it"), _PRED, _w(".")),
    _seq(_w("rating"), _w(":"), _w(*RATINGS), _w(".")),
)


@dataclass
class _NFA:
    """Thompson NFA: word-set edges and epsilon edges; state 0 is the start."""

    edges: list[list[tuple[frozenset[str], int]]] = field(default_factory=list)
    eps: list[list[int]] = field(default_factory=list)
    accept: int = -1

    def new_state(self) -> int:
        self.edges.append([])
        self.eps.append([])
        return len(self.edges) - 1

    def build(self, node: _Node, start: int, end: int) -> None:
        if isinstance(node, _Sym):
            self.edges[start].append((node.words, end))
        elif isinstance(node, _Seq):
            cur = start
            for i, part in enumerate(node.parts):
                nxt = end if i == len(node.parts) - 1 else self.new_state()
                self.build(part, cur, nxt)
                cur = nxt
        elif isinstance(node, _Alt):
            for option in node.options:
                self.build(option, start, end)
        else:  # _Opt
            self.build(node.inner, start, end)
            self.eps[start].append(end)

    def closure(self, states: Iterable[int]) -> frozenset[int]:
        stack = list(states)
        seen = set(stack)
        while stack:
            for nxt in self.eps[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return frozenset(seen)

    def run(self, words: Sequence[str]) -> frozenset[int]:
        """The set of states reachable after reading ``words`` (empty once the input is rejected)."""
        current = self.closure([0])
        for word in words:
            current = self.closure(
                target for state in current for allowed, target in self.edges[state] if word in allowed
            )
            if not current:
                break
        return current


def _compile(root: _Node) -> _NFA:
    nfa = _NFA()
    start, end = nfa.new_state(), nfa.new_state()
    nfa.build(root, start, end)
    nfa.accept = end
    return nfa


_SENTENCE_NFA = _compile(_SENTENCE)


def _words(text: str | Sequence[str]) -> list[str]:
    return text.split() if isinstance(text, str) else list(text)


def is_grammatical_sentence(sentence: str | Sequence[str]) -> bool:
    """Whether ``sentence`` is exactly one sentence of the grammar, final ``.`` included.

    Args:
        sentence: Space-separated words (e.g. ``"the film was great ."``) or a list of words.

    Returns:
        True if the grammar derives the whole word sequence.
    """
    return _SENTENCE_NFA.accept in _SENTENCE_NFA.run(_words(sentence))


def is_grammatical_prefix(words: str | Sequence[str]) -> bool:
    """Whether ``words`` can be extended to a grammatical sentence (the empty sequence can).

    Every NFA state built above lies on a path to the accepting state, so "some state is still
    alive" is the same as "some completion exists".
    """
    return bool(_SENTENCE_NFA.run(_words(words)))


def split_sentences(text: str) -> tuple[list[str], str]:
    """Split text at ``.`` tokens.

    Args:
        text: Space-separated words.

    Returns:
        ``(sentences, trailing)``: the complete sentences, each ending with ``" ."``, and the words
        after the last ``.`` (``""`` when the text ends with a full stop), e.g. a generation that
        ran out of tokens mid-sentence.
    """
    sentences: list[str] = []
    current: list[str] = []
    for word in text.split():
        current.append(word)
        if word == ".":
            sentences.append(" ".join(current))
            current = []
    return sentences, " ".join(current)


# --------------------------------------------------------------------------------------------------
# Sampler.
# --------------------------------------------------------------------------------------------------

# Per-slot polarity distributions, by the mood of the sentence being written. A little noise keeps
# the classes overlapping the way real reviews do, so a classifier-free lexical preference (what
# the tuned weak model learns) has something to shift.
_SLOT_POLARITY: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "positive": (("pos", "neu", "neg"), (0.85, 0.12, 0.03)),
    "negative": (("neg", "neu", "pos"), (0.85, 0.12, 0.03)),
    "neutral": (("neu", "pos", "neg"), (0.80, 0.10, 0.10)),
}
_ADJECTIVES_BY_POLARITY = {"pos": POSITIVE_ADJECTIVES, "neg": NEGATIVE_ADJECTIVES, "neu": NEUTRAL_ADJECTIVES}
_VERBS_BY_POLARITY = {"pos": POSITIVE_VERBS, "neg": NEGATIVE_VERBS, "neu": NEUTRAL_VERBS}
_OPPOSITE = {"positive": "negative", "negative": "positive", "neutral": "neutral"}


def _polarity(rng: random.Random, mood: str) -> str:
    labels, weights = _SLOT_POLARITY[mood]
    return rng.choices(labels, weights)[0]


def _np(rng: random.Random) -> list[str]:
    return [rng.choice(DETERMINERS), rng.choice(NOUNS)]


def _adj_term(rng: random.Random, mood: str) -> list[str]:
    words = [rng.choice(INTENSIFIERS)] if rng.random() < 0.3 else []
    return words + [rng.choice(_ADJECTIVES_BY_POLARITY[_polarity(rng, mood)])]


def _pred(rng: random.Random, mood: str) -> list[str]:
    words = [rng.choice(COPULAS)] + _adj_term(rng, mood)
    if rng.random() < 0.25:
        words += ["and"] + _adj_term(rng, mood)
    return words


def _clause(rng: random.Random, mood: str) -> list[str]:
    if rng.random() < 0.35:
        return ["i", rng.choice(OPINION_VERBS)] + _np(rng) + _pred(rng, mood)
    return _np(rng) + _pred(rng, mood)


def _sentence(rng: random.Random, mood: str, *, contrast: bool, last: bool) -> list[str]:
    if last and rng.random() < 0.3:
        return ["overall", "it"] + _pred(rng, mood) + ["."]
    kind = rng.random()
    if kind < 0.25:
        return ["i", rng.choice(_VERBS_BY_POLARITY[_polarity(rng, mood)])] + _np(rng) + ["."]
    if kind < 0.5:
        # Compound sentence: a mixed review contrasts the two clauses, the others continue.
        second = _OPPOSITE[mood] if contrast else mood
        conj = rng.choice(("but", "while")) if second != mood else "and"
        return _clause(rng, mood) + [conj] + _clause(rng, second) + ["."]
    return _clause(rng, mood) + ["."]


def sample_review(rng: random.Random, sentiment: str, *, rating_prob: float = 0.0) -> str:
    """Sample one review of 2-4 sentences with the given overall sentiment.

    Args:
        rng: Source of randomness (the only one used, so results are reproducible).
        sentiment: ``"positive"``, ``"negative"``, ``"neutral"`` or ``"mixed"``. Positive reviews
            use mostly positive words, negative mostly negative, neutral mostly neutral ones; a
            mixed review alternates positive and negative sentences and contrasts clauses.
        rating_prob: Probability of an extra opening sentence ``rating : <sentiment> .`` so that a
            conditioning text carries meaning for the models trained on this language.

    Returns:
        Lowercase words separated by single spaces; every sentence ends with the token ``.``.
    """
    if sentiment not in SENTIMENTS:
        raise ValueError(f"sentiment must be one of {SENTIMENTS}, got {sentiment!r}")
    words: list[str] = []
    if rng.random() < rating_prob:
        words += ["rating", ":", sentiment, "."]
    n_sentences = rng.randint(2, 4)
    start = rng.choice(("positive", "negative"))
    for i in range(n_sentences):
        if sentiment == "mixed":
            mood = start if i % 2 == 0 else _OPPOSITE[start]
        else:
            mood = sentiment
        words += _sentence(rng, mood, contrast=sentiment == "mixed", last=i == n_sentences - 1)
    return " ".join(words)


DEFAULT_MIX: Mapping[str, float] = {s: 0.25 for s in SENTIMENTS}


def sample_corpus(
    n: int, seed: int, mix: Mapping[str, float] | None = None, *, rating_prob: float = 0.3
) -> list[str]:
    """Sample ``n`` reviews whose sentiments are drawn from ``mix``.

    Args:
        n: Number of reviews.
        seed: Seed of the private ``random.Random`` used for everything.
        mix: Weight per sentiment (need not sum to 1); defaults to an even four-way mix, which
            keeps a model trained on it sentiment-neutral on average.
        rating_prob: Share of reviews that open with a ``rating : <sentiment> .`` line.

    Returns:
        The reviews, in sampling order.
    """
    mix = DEFAULT_MIX if mix is None else mix
    unknown = set(mix) - set(SENTIMENTS)
    if unknown:
        raise ValueError(f"unknown sentiments in mix: {sorted(unknown)}")
    rng = random.Random(seed)
    labels = list(mix)
    weights = [mix[label] for label in labels]
    return [sample_review(rng, rng.choices(labels, weights)[0], rating_prob=rating_prob) for _ in range(n)]


def prompts(n: int, seed: int) -> list[str]:
    """Short, sentiment-free review openings, each a proper prefix of a grammatical sentence.

    They contain no lexicon word, so any sentiment in a continuation comes from the model.

    Args:
        n: Number of prompts.
        seed: Seed of the private ``random.Random``.

    Returns:
        Openings such as ``"the film was"`` or ``"i thought the acting"``.
    """
    rng = random.Random(seed)
    templates = (
        lambda: [rng.choice(DETERMINERS), rng.choice(NOUNS), rng.choice(COPULAS)],
        lambda: ["i", rng.choice(OPINION_VERBS), rng.choice(DETERMINERS), rng.choice(NOUNS)],
        lambda: ["i", rng.choice(OPINION_VERBS), "the", rng.choice(NOUNS), rng.choice(COPULAS)],
        lambda: [rng.choice(DETERMINERS), rng.choice(NOUNS)],
        lambda: ["overall", "it", rng.choice(COPULAS)],
    )
    weights = (0.4, 0.2, 0.2, 0.1, 0.1)
    return [" ".join(rng.choices(templates, weights)[0]()) for _ in range(n)]
