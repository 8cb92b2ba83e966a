"""Streaming a search's output: the prefix every surviving hypothesis shares, as it grows."""

from __future__ import annotations

import torch

from .search_loop import Pool


class PrefixStreamer:
    """Sends a streamer the prefix shared by every surviving hypothesis of the (single) prompt."""

    def __init__(self, streamer) -> None:
        self.streamer = streamer
        self.streamed = 0

    def round(self, pool: Pool, live_responses: list[list[int]]) -> None:
        hyps = [f.response for f in pool.finished] + live_responses
        if not hyps:
            return
        common = min(len(h) for h in hyps)
        for i in range(common):
            if any(h[i] != hyps[0][i] for h in hyps):
                common = i
                break
        if common > self.streamed:
            self.streamer.put(torch.tensor(hyps[0][self.streamed : common]))
            self.streamed = common

    def end(self, best_response: list[int]) -> None:
        rest = best_response[self.streamed :]
        if rest:
            self.streamer.put(torch.tensor(rest))
        self.streamer.end()
