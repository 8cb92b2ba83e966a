"""Where a chunk ends: a fixed length ``L``, or earlier at stop strings such as ``"\\n\\n"`` or at given
token ids, capped at ``L`` (step-level search)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from .policies import is_count


class ChunkBoundary:
    """Where a chunk ends: after ``max_tokens`` tokens, or earlier at a stop string or a stop token.

    Step-level search ends a step at a natural break (``"\\n\\n"``, a sentence end) rather than after a
    fixed count. A row whose chunk has ended waits (its slot masked, as for a finished row) until every
    row of the round has ended its chunk; the response goes on next round. On a local model a chunk
    ends with the token that completes a stop string (the string may end inside it, as with
    generate's ``stop_strings``); through a text sampler the chunk is cut right after the first stop
    string, and the tokens after it are counted as spent.

    Args:
        max_tokens: the cap ``L`` (``None``: whole responses, bounded by ``max_new_tokens``).
        stop_strings: texts that end a chunk once the response completes one.
        stop_token_ids: large-model token ids that end a chunk (local model only).

    Examples:
        >>> ChunkBoundary(8, stop_strings=["\\n\\n", ". "])
        ChunkBoundary(max_tokens=8, stop_strings=['\\n\\n', '. '], stop_token_ids=[])
        >>> cbs = ChunkBeamSearch(pair, 2, 2, chunk_length=ChunkBoundary(6, stop_token_ids=[5]))
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=12)
    """

    def __init__(
        self,
        max_tokens: int | None = 5,
        stop_strings: Sequence[str] | None = None,
        stop_token_ids: Sequence[int] | None = None,
    ) -> None:
        if max_tokens is not None and not is_count(max_tokens):
            raise ValueError(
                f"max_tokens must be an integer >= 1 or None (whole responses); got {max_tokens!r}."
            )
        if isinstance(stop_strings, str):
            raise ValueError(
                f"stop_strings must be a list of strings; got a str: wrap it, [{stop_strings!r}]."
            )
        strings = list(stop_strings or [])
        if not all(isinstance(s, str) and s for s in strings):
            raise ValueError(f"stop_strings must be non-empty strings; got {strings!r}.")
        if hasattr(stop_token_ids, "tolist") and not isinstance(stop_token_ids, str):
            stop_token_ids = stop_token_ids.tolist()  # a tensor or an array of ids
        if isinstance(stop_token_ids, numbers.Integral):
            raise TypeError(
                f"stop_token_ids must be a list of token ids; got an int: wrap it, [{stop_token_ids}]."
            )
        ids = list(stop_token_ids or [])
        if any(isinstance(i, str) for i in ids):
            raise ValueError(
                f"stop_token_ids must be token ids (integers >= 0); got {ids!r}: texts go in stop_strings=."
            )
        if not all(is_count(i, 0) for i in ids):
            raise ValueError(f"stop_token_ids must be token ids (integers >= 0); got {ids!r}.")
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.stop_strings = strings
        self.stop_token_ids = [int(i) for i in ids]

    def __repr__(self) -> str:
        return (
            f"ChunkBoundary(max_tokens={self.max_tokens}, stop_strings={self.stop_strings!r}, "
            f"stop_token_ids={self.stop_token_ids!r})"
        )

    @property
    def is_fixed(self) -> bool:
        """Every chunk is exactly ``max_tokens`` long (unless the response ends)."""
        return not self.stop_strings and not self.stop_token_ids

    def cut_text(self, text: str, response_before: str) -> tuple[str, bool]:
        """The chunk ``text`` up to and including the first stop string; whether it was cut.

        A stop string may begin in the response before the chunk (``response_before``), as it would
        when matched on the whole response.
        """
        if not self.stop_strings:
            return text, False
        joined = response_before + text
        start = len(response_before)
        ends = []
        for stop in self.stop_strings:
            # Only a match that ends inside the chunk: one ending before it was seen in an earlier round.
            at = joined.find(stop, max(start - len(stop) + 1, 0))
            if at != -1:
                ends.append(at + len(stop))
        if not ends:
            return text, False
        end = min(ends) - start
        return text[:end], end < len(text)


def token_stop(boundary: ChunkBoundary, device: torch.device) -> torch.Tensor | None:
    """The boundary's stop token ids as a tensor on ``device`` (``None`` when there are none)."""
    if not boundary.stop_token_ids:
        return None
    return torch.tensor(boundary.stop_token_ids, dtype=torch.long, device=device)
