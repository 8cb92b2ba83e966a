"""Candidates from a local large model with the pair drafting: exact samples, fewer large-model forwards."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessorList

from .candidates import CandidateSource, SampledChunks, mask_rows_past
from .drafting import DraftingEngine, PairProposer, fit_rows
from .policies import SearchCost
from .scoring import GuidanceState


class SideProposer(PairProposer):
    """Drafts from one side of the pair; the target is the large model's own (warped) distribution."""

    def __init__(self, state, warpers, vocab_rows, side: int) -> None:
        super().__init__(state, warpers, vocab_rows)
        self.side = side

    def draft_scores(self) -> torch.Tensor:
        return fit_rows(self.state.next_token_logprobs()[self.side], self.vocab_rows)

    def target_scores(self, logits: torch.Tensor, position: int) -> torch.Tensor:
        return logits


class DraftedModelSource(CandidateSource):
    """Chunks of exact large-model samples, drafted by the weak pair and verified by the large model.

    Each drafting round, every row drafts ``gamma`` tokens from one side of the pair (its next-token
    distribution, warped like the large model's), and ONE large-model forward over the row's last
    committed token and the drafts gives the large model's distribution at all ``gamma + 1`` positions.
    Speculative sampling ([`speculative_choice`][w2s_generate.speculative_choice]) keeps each
    draft with probability ``min(1, p / q)`` and samples the token after the kept ones from the
    residual (or from ``p`` when all are kept): every committed token is an exact sample of the large
    model, as in the undrafted search. Rows commit different numbers of tokens per round (masks and
    positions per row) and stop at the chunk length, EOS or the token budget; a round drafts at most
    ``min(gamma, room - 1)`` tokens for the roomiest row, and rows with less room take part masked past
    it, so no row's cache or positions grow past its end. A large model whose output table has
    padding rows past the pair's gets drafts over the pair's rows only (the padding rows' proposal
    is 0), and with ``pair_rows`` its own distribution is masked there too, so no padding id is
    committed.

    The pair's state is shared with the search's scorer: drafting steps it through the drafts, and the
    rejected ones are retracted, so the pair has scored every kept token by the end of the chunk
    without a second pass.

    Examples:
        >>> from transformers import LogitsProcessorList
        >>> one = tok(["the film was"], return_tensors="pt")
        >>> state = pair.start(one["input_ids"].tolist())
        >>> source = DraftedModelSource(model, one["input_ids"], one["attention_mask"], LogitsProcessorList(),
        ...                             [], 0, 4, 8, state, 0, 2, SearchCost.zeros(1))
        >>> source.expand([0], [1])
        >>> chunks = source.sample()   # 4 exact samples of the large model, the pair drafting 2 at a time
        >>> chunks.lengths.tolist(), len(source.responses()[0]), source.cost.large_tokens
        ([4], 4, [4])
    """

    def __init__(
        self,
        model,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        warpers: LogitsProcessorList,
        eos_ids: list[int],
        pad: int,
        chunk: int,
        max_new: int,
        state: GuidanceState,
        proposal_side: int,
        draft_tokens: int,
        cost: SearchCost,
        vocab_rows: int | None = None,
        pair_rows: int | None = None,
    ) -> None:
        self.chunk = chunk
        self.max_new = max_new
        self.state = state
        self.cost = cost
        self.device = prompt_ids.device
        self.owners = list(range(prompt_ids.shape[0]))
        self._present = self.owners
        proposer = SideProposer(state, warpers, vocab_rows, proposal_side)
        # pair_rows: the large model's rows past the pair's table are masked (never committed).
        self.engine = DraftingEngine(
            model,
            prompt_ids,
            prompt_mask,
            proposer,
            eos_ids,
            pad,
            max_new,
            draft_tokens,
            logits_hook=lambda logits: mask_rows_past(logits, pair_rows),
        )
        if self.engine.prefilled:
            self.cost.count_forward(self._present)

    @property
    def drafted(self) -> torch.Tensor:
        """Drafts proposed, all rounds."""
        return self.engine.drafted

    @property
    def accepted(self) -> torch.Tensor:
        """Drafts committed, all rounds."""
        return self.engine.accepted

    def expand(self, parents: Sequence[int], repeats: Sequence[int]) -> None:
        index = torch.as_tensor(list(parents), dtype=torch.long, device=self.device).repeat_interleave(
            torch.as_tensor(list(repeats), dtype=torch.long, device=self.device)
        )
        self.engine.select_rows(index)
        owners = [self.owners[p] for p in parents]
        self.owners = [o for o, r in zip(owners, repeats) for _ in range(r)]
        self._present = sorted(set(owners))

    def sample(self) -> SampledChunks:
        engine = self.engine
        rows = engine.last.shape[0]
        room = (self.max_new - engine.written).clamp(min=0, max=self.chunk)  # [R] tokens this chunk may take
        taken = torch.zeros(rows, dtype=torch.long, device=self.device)
        ended = torch.zeros(rows, dtype=torch.bool, device=self.device)
        weak_fed = torch.zeros(rows, dtype=torch.long, device=self.device)
        while True:
            room_now = torch.where(ended, torch.zeros_like(taken), room - taken)  # [R] 0 once done
            most_room = int(room_now.max())  # the one host sync a drafting round needs
            if most_room <= 0:
                break
            self.cost.count_forward(self._present)
            done = engine.verify(room_now, most_room)
            ended |= done.wrote_eos
            taken += done.count
            # The pair's state is the scorer's: it must hold every committed token by the chunk's end.
            weak_fed += engine.keep_committed(done)
        self.cost.add("large_tokens", self.owners, taken.tolist())
        self.cost.add("weak_tokens", self.owners, weak_fed.tolist())
        written = engine.written.tolist()
        finished = [bool(e) or n >= self.max_new for e, n in zip(ended.tolist(), written)]
        return SampledChunks(None, taken, finished, scored=True)

    def responses(self) -> list[list[int]]:
        return self.engine.responses()
