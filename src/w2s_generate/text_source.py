"""Candidates from a text sampler: the large model reached as text (e.g. a completions server).

[`TextSamplerSource`][w2s_generate.TextSamplerSource] asks a
[`ChunkSampler`][w2s_generate.ChunkSampler] for the continuations of each live row's text, one
request per distinct prefix, and counts what it asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

from .boundaries import ChunkBoundary
from .candidates import CandidateSource, SampledChunks
from .policies import SearchCost
from .samplers import Chunk, ChunkSampler


class TextSamplerSource(CandidateSource):
    """Chunks asked of a text sampler (a large model reached only as text, e.g. a completions server).

    Each round asks the sampler for ``repeats[i]`` continuations of parent ``i``'s text (``prompt +
    response so far``), one request batch per distinct count. A chunk boundary with stop strings cuts
    each chunk after its first stop string (the tokens after it were spent all the same).

    Examples:
        >>> class Fixed:
        ...     def sample(self, prefixes, n, max_tokens):
        ...         return [[Chunk(" so good. Then", False)] * n for _ in prefixes]
        >>> boundary = ChunkBoundary(4, stop_strings=[". "])
        >>> source = TextSamplerSource(Fixed(), ["the film was"], boundary, 8, SearchCost.zeros(1))
        >>> source.expand([0], [1])
        >>> chunks = source.sample()
        >>> source.responses(), source.cost.large_tokens   # cut after the stop string; 4 tokens spent
        ([' so good. '], [4])
    """

    def __init__(
        self,
        sampler: ChunkSampler,
        prompts: list[str],
        boundary: ChunkBoundary,
        max_new: int,
        cost: SearchCost,
    ) -> None:
        if boundary.stop_token_ids:
            raise ValueError(
                "ChunkBoundary(stop_token_ids=...) needs the large model's token ids, which a text sampler does "
                "not return: use stop_strings instead."
            )
        self.sampler = sampler
        self.prompts = prompts
        self.boundary = boundary
        self.max_new = max_new
        self.chunk = boundary.max_tokens or max_new
        self.cost = cost
        self.owners = list(range(len(prompts)))
        self.texts = [""] * len(prompts)
        self.response_lengths = [0] * len(prompts)  # tokens asked for so far: the budget spent
        self._requests: list[tuple[int, int]] = []  # (parent text index, count), set by expand

    def expand(self, parents: Sequence[int], repeats: Sequence[int]) -> None:
        self._requests = list(zip(parents, repeats))
        self.owners = [self.owners[p] for p, r in self._requests for _ in range(r)]
        self.texts = [self.texts[p] for p, r in self._requests for _ in range(r)]
        self.response_lengths = [self.response_lengths[p] for p, r in self._requests for _ in range(r)]

    def sample(self) -> SampledChunks:
        steps = min(self.chunk, max(self.max_new - n for n in self.response_lengths))
        chunks: list[Chunk | None] = [None] * len(self.owners)
        # One sampler call per distinct count; rows are parent-major, each parent's copies in a run.
        starts = list(accumulate((count for _, count in self._requests), initial=0))
        for count in sorted({c for _, c in self._requests}):
            group = [i for i, (_, c) in enumerate(self._requests) if c == count]
            prefixes = [self.prompts[self.owners[starts[i]]] + self.texts[starts[i]] for i in group]
            sampled = _sample(self.sampler, prefixes, count, steps)
            for g, i in enumerate(group):
                chunks[starts[i] : starts[i] + count] = sampled[g * count : (g + 1) * count]
        finished = []
        for i, chunk in enumerate(chunks):
            text, cut = self.boundary.cut_text(chunk.text, self.texts[i])
            self.texts[i] += text
            self.response_lengths[i] += steps
            finished.append((chunk.finished and not cut) or self.response_lengths[i] >= self.max_new)
        self.cost.add("large_tokens", self.owners, [steps] * len(self.owners))
        present = sorted(set(self.owners))
        self.cost.add("large_forwards", present, [steps] * len(present))
        return SampledChunks(None, None, finished)

    def responses(self) -> list[str]:
        return list(self.texts)


def _sample(sampler: ChunkSampler, prefixes: list[str], n: int, max_tokens: int) -> list[Chunk]:
    """``n`` chunks per prefix, flattened prefix-major; a sampler that returns another count is refused."""
    sampled = sampler.sample(prefixes, n, max_tokens)
    counts = [len(per_prefix) for per_prefix in sampled]
    if len(sampled) != len(prefixes) or any(c != n for c in counts):
        raise ValueError(
            f"{type(sampler).__name__}.sample was asked for {n} continuations of each of {len(prefixes)} "
            f"prefixes and returned {counts}: a ChunkSampler returns exactly n Chunks per prefix."
        )
    chunks = [c for per_prefix in sampled for c in per_prefix]
    if not all(isinstance(c, Chunk) for c in chunks):
        bad = next(type(c).__name__ for c in chunks if not isinstance(c, Chunk))
        raise TypeError(
            f"{type(sampler).__name__}.sample returned a {bad}; it must return w2s_generate.Chunk objects."
        )
    for chunk in chunks:
        if not isinstance(chunk.text, str):
            raise TypeError(
                f"{type(sampler).__name__}.sample returned a Chunk whose text is {chunk.text!r:.40}: a Chunk's text is "
                "a str (the continuation; '' for none)."
            )
        if not isinstance(chunk.finished, bool):
            raise TypeError(
                f"{type(sampler).__name__}.sample returned a Chunk whose finished is {chunk.finished!r:.40}: it is a "
                "bool (whether the response ended)."
            )
    return chunks
