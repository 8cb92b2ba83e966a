"""Candidates from a local large model with the pair drafting: exact samples, fewer large-model forwards."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessorList

from ._compat import accepts_position_ids, forward_with_cache, new_cache, select_cache_rows
from .candidates import CandidateSource, SampledChunks, mask_rows_past
from .drafting import commit_round, fit_rows, round_masks, speculative_choice, stack_round
from .policies import SearchCost
from .scoring import GuidanceState


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
        self.model = model
        self.vocab_rows = vocab_rows  # rows of the large model's output table (None: the pair's)
        self.pair_rows = pair_rows  # rows of the pair's table: the large model's past them are masked
        self.warpers = warpers
        self.pad = pad
        self.chunk = chunk
        self.max_new = max_new
        self.state = state
        self.proposal_side = proposal_side
        self.gamma = draft_tokens
        self.cost = cost
        self.device = prompt_ids.device
        self.batch, width = prompt_ids.shape
        self.eos = torch.tensor(eos_ids or [-1], device=self.device)
        self.uses_position_ids = accepts_position_ids(model)
        self.owners = list(range(self.batch))
        self._present = self.owners
        mask = prompt_mask.long()
        # The cache holds every committed token but the last, which the next forward feeds first.
        self.cache = new_cache(model)
        if width > 1:
            self.cost.count_forward(self._present)
            positions = (mask[:, :-1].cumsum(-1) - 1).clamp(min=0) if self.uses_position_ids else None
            forward_with_cache(
                model, prompt_ids[:, :-1], mask[:, :-1], self.cache, position_ids=positions, logits_to_keep=1
            )
        self.cache_mask = mask[:, :-1]
        self.last = prompt_ids[:, -1]
        # Room for one drafting round past the budget, so every round writes at distinct columns.
        self.out = torch.full(
            (self.batch, max_new + min(draft_tokens, max_new) + 1), pad, dtype=torch.long, device=self.device
        )
        self.written = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self.drafted = torch.zeros((), dtype=torch.long, device=self.device)  # drafts proposed, all rounds
        self.accepted = torch.zeros((), dtype=torch.long, device=self.device)  # drafts committed

    def expand(self, parents: Sequence[int], repeats: Sequence[int]) -> None:
        index = torch.as_tensor(list(parents), dtype=torch.long, device=self.device).repeat_interleave(
            torch.as_tensor(list(repeats), dtype=torch.long, device=self.device)
        )
        select_cache_rows(self.cache, index)
        self.cache_mask, self.last = self.cache_mask[index], self.last[index]
        self.out, self.written = self.out[index], self.written[index]
        owners = [self.owners[p] for p in parents]
        self.owners = [o for o, r in zip(owners, repeats) for _ in range(r)]
        self._present = sorted(set(owners))

    def _forward(self, fed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[R, G+1] -> [R, G+1, V]`` the large model's logits at every fed position."""
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -fed.shape[1] :] if self.uses_position_ids else None
        logits = forward_with_cache(self.model, fed, mask, self.cache, position_ids=positions).logits
        return mask_rows_past(logits.float(), self.pair_rows)

    def sample(self) -> SampledChunks:
        rows = self.last.shape[0]
        room = (self.max_new - self.written).clamp(min=0, max=self.chunk)  # [R] tokens this chunk may take
        taken = torch.zeros(rows, dtype=torch.long, device=self.device)
        ended = torch.zeros(rows, dtype=torch.bool, device=self.device)
        weak_fed = torch.zeros(rows, dtype=torch.long, device=self.device)
        while True:
            room_now = torch.where(ended, torch.zeros_like(taken), room - taken)  # [R] 0 once done
            most_room = int(room_now.max())  # the one host sync a drafting round needs
            if most_room <= 0:
                break
            # A round commits at most most_room tokens per row: no drafts past the chunk, the budget
            # or the context.
            gamma = min(self.gamma, most_room - 1)
            position = torch.arange(gamma + 1, device=self.device)
            fed_mask = round_masks(room_now, gamma)  # [R, G+1]
            # 1. Draft gamma tokens per row from the proposal side of the pair; drafts past a row's
            #    room leave the pair's state as it is.
            proposal, drafts = [], []
            for j in range(gamma):
                scores = fit_rows(self.state.next_token_logprobs()[self.proposal_side], self.vocab_rows)
                q = torch.softmax(self.warpers(self.out, scores), -1)
                d = torch.multinomial(q, 1).squeeze(1)
                proposal.append(q)
                drafts.append(d)
                self.state.step(d, active=fed_mask[:, j + 1])
            drafts_t, proposal_t = stack_round(drafts, proposal, rows, self.device)
            # 2. One large-model forward over each row's last committed token and its drafts, masked
            #    past each row's room (all of it for rows whose chunk is done).
            fed = torch.cat([self.last[:, None], drafts_t], dim=1)
            mask = torch.cat([self.cache_mask, fed_mask.long()], dim=1)
            self.cost.count_forward(self._present)
            logits = self._forward(fed, mask)
            target = torch.softmax(
                torch.stack([self.warpers(self.out, logits[:, j]) for j in range(gamma + 1)], dim=1), -1
            )
            # 3. Keep what speculative sampling accepts, then the token after it; EOS and the chunk's
            #    room cut a row's tokens (a row whose room ends at a fed draft may keep the draft after
            #    it: the target at the last fed token verified it).
            kept, next_token = speculative_choice(target, proposal_t, drafts_t, greedy=False)
            new, count, wrote_eos = commit_round(
                drafts_t, kept, next_token, self.eos, room_now, self.out, self.written
            )
            ended |= wrote_eos
            taken += count
            self.drafted += room_now.clamp(max=gamma).sum()
            # 4. Both sides keep exactly the committed tokens. The large cache keeps the fed last token
            #    and the committed drafts but the newest (fed first next round); the pair drops the
            #    drafts it took past the committed ones and appends the newest committed token when it
            #    did not take it as a draft.
            keeps_drafts = torch.minimum(kept, count)
            self.accepted += keeps_drafts.sum()
            cache_keeps = fed_mask & ((position[None, :] == 0) | (position[None, :] < count[:, None]))
            self.cache_mask = torch.cat([self.cache_mask, cache_keeps.long()], dim=1)
            newest = new.gather(1, (count - 1).clamp(min=0)[:, None]).squeeze(1)
            self.last = torch.where(count > 0, newest, self.last)
            stepped = fed_mask[:, 1:].sum(-1)  # drafts each row's pair state took
            in_state = torch.minimum(keeps_drafts, stepped)
            appends = (count > in_state).long()
            self.state.replace_tail(stepped - in_state, newest[:, None], appends)
            weak_fed += stepped + appends
        host_taken = taken.tolist()
        self.cost.add("large_tokens", self.owners, host_taken)
        self.cost.add("weak_tokens", self.owners, weak_fed.tolist())
        written = self.written.tolist()
        finished = [bool(e) or n >= self.max_new for e, n in zip(ended.tolist(), written)]
        return SampledChunks(None, taken, finished, scored=True)

    def responses(self) -> list[list[int]]:
        return [row[:n] for row, n in zip(self.out.tolist(), self.written.tolist())]
