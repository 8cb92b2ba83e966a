"""The drafting engine: the weak pair drafts, the large model verifies, every kept token is exact.

Used by drafted token guidance ([`TokenGuidance`][w2s_generate.TokenGuidance] with ``draft_tokens``,
whose target is the guided distribution) and by drafted chunks
([`DraftedModelSource`][w2s_generate.DraftedModelSource], whose target is the large model itself). Each
round, a proposer (shaped like transformers' ``CandidateGenerator``: ``get_candidates`` and
``update_candidate_strategy``) drafts ``gamma`` tokens per row from the pair's state, then ONE
large-model forward over the last committed token and the drafts gives the target at all ``gamma + 1``
positions. Speculative sampling (Leviathan et al., 2023; Chen et al., 2023) keeps draft ``j`` with
probability ``min(1, p_j(d_j) / q_j(d_j))``; at the first rejection it samples from
``norm(max(p_j - q_j, 0))``, and when every draft is kept it samples one more token from
``p_{gamma+1}``. Every token is then an exact sample of the target, whatever the proposal. Greedy
decoding keeps drafts while they equal the target's argmax and then takes that argmax.

Rows keep different numbers of tokens: rejected drafts are masked out of the large model's cache and
retracted from the pair's state, per row, with positions counted from the masks. A round drafts at
most ``min(gamma, room - 1)`` tokens where ``room`` is the most tokens a row may still take (the token
after the kept drafts fills the last slot); a row with less room takes part in the round's forwards
masked past its own room, and a finished row masked entirely, so no row's cache or positions grow
past its end (nor past a learned position table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList

from ._compat import ProcessorChain, accepts_position_ids, forward_with_cache, new_cache, select_cache_rows
from .scoring import GuidanceState


def speculative_choice(
    target: torch.Tensor, proposal: torch.Tensor, drafts: torch.Tensor, greedy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which drafts to keep and the token after them, row by row.

    Args:
        target: ``[R, G+1, V]`` the target distribution at each draft position and after the last.
        proposal: ``[R, G, V]`` the distribution each draft was sampled from.
        drafts: ``[R, G]`` the drafted tokens.
        greedy: keep drafts while they are the target's argmax (no randomness).

    Returns:
        ``([R] kept drafts a, [R] the next token)``: the row continues with ``drafts[:a]`` and the token.

    Examples:
        >>> from w2s_generate.drafting import speculative_choice
        >>> target = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # the target is sure of token 1, then 0
        >>> proposal = torch.tensor([[[0.5, 0.5]]])
        >>> speculative_choice(target, proposal, torch.tensor([[1]]), greedy=False)
        (tensor([1]), tensor([0]))
    """
    rows, gamma = drafts.shape
    # A large model's table may have padding rows past the pair's: the proposal gives them nothing.
    proposal = fit_rows(proposal, target.shape[-1], fill=0.0)
    picked_target = target[:, :gamma].gather(-1, drafts[..., None]).squeeze(-1)  # [R, G]
    if greedy:
        keep = drafts == target[:, :gamma].argmax(-1)
    else:
        picked_proposal = proposal.gather(-1, drafts[..., None]).squeeze(-1)
        keep = torch.rand_like(picked_target) * picked_proposal < picked_target  # u < p/q, no division
    kept = keep.long().cumprod(-1).sum(-1)  # leading drafts kept
    at = kept.view(rows, 1, 1).expand(rows, 1, target.shape[-1])
    next_target = target.gather(1, at).squeeze(1)  # [R, V]
    if greedy:
        return kept, next_target.argmax(-1)
    padded = torch.cat([proposal, proposal.new_zeros((rows, 1, proposal.shape[-1]))], dim=1)  # none after
    residual = (next_target - padded.gather(1, at).squeeze(1)).clamp(min=0)
    total = residual.sum(-1, keepdim=True)
    # A residual of zero mass can only follow a rejection of probability zero; use the target then.
    residual = torch.where(total > 0, residual / total.clamp(min=1e-30), next_target)
    return kept, torch.multinomial(residual, 1).squeeze(1)


def fit_rows(scores: torch.Tensor, rows: int | None, fill: float = -math.inf) -> torch.Tensor:
    """``[..., V] -> [..., rows]``: the first ``rows`` columns, padded with ``fill`` past ``V``.

    Fits the pair's distributions to a large model's output table of ``rows`` rows (padding rows
    past the pair's vocabulary get ``fill``: ``-inf`` for scores, 0 for probabilities); ``None`` keeps
    ``scores`` as they are.

    Examples:
        >>> from w2s_generate.drafting import fit_rows
        >>> fit_rows(torch.tensor([[0.5, 0.5]]), 3, fill=0.0)
        tensor([[0.5000, 0.5000, 0.0000]])
    """
    width = scores.shape[-1]
    if rows is None or rows == width:
        return scores
    if rows < width:
        return scores[..., :rows]
    return torch.nn.functional.pad(scores, (0, rows - width), value=fill)


def round_masks(room: torch.Tensor, gamma: int) -> torch.Tensor:
    """``[R] -> [R, G+1]`` which of a round's fed tokens (the last committed one, then the drafts) count.

    A row with ``room`` tokens left can commit at most ``room`` tokens this round: its last committed
    token and its first ``room - 1`` drafts are fed (the draft after them, when kept, is verified by
    the target at the last fed token and needs no forward of its own). A row with no room is fed
    masked throughout. Draft ``j`` enters the pair's state exactly when its column ``j + 1`` counts.

    Examples:
        >>> from w2s_generate.drafting import round_masks
        >>> round_masks(torch.tensor([5, 2, 0]), 3).long()
        tensor([[1, 1, 1, 1],
                [1, 1, 0, 0],
                [0, 0, 0, 0]])
    """
    position = torch.arange(gamma + 1, device=room.device)
    return position[None, :] < room[:, None]


def stack_round(
    drafts: list[torch.Tensor], proposal: list[torch.Tensor], rows: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``G x [R], G x [R, V] -> ([R, G], [R, G, V])``; a round of no drafts gives ``[R, 0]``, ``[R, 0, 1]``."""
    if drafts:
        return torch.stack(drafts, dim=1), torch.stack(proposal, dim=1)
    return torch.zeros((rows, 0), dtype=torch.long, device=device), torch.zeros((rows, 0, 1), device=device)


def residual_distribution(target: torch.Tensor, proposal: torch.Tensor) -> torch.Tensor:
    """``[..., V] -> [..., V]`` the distribution of one verified token, in closed form.

    ``P(v) = q(v) min(1, p(v)/q(v)) + (1 - sum_w q(w) min(1, p(w)/q(w))) norm(max(p - q, 0))(v)``,
    which equals the target ``p``: the reason speculative sampling is exact.

    Examples:
        >>> from w2s_generate.drafting import residual_distribution
        >>> p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.2, 0.2, 0.6])
        >>> torch.allclose(residual_distribution(p, q), p)
        True
    """
    kept = torch.minimum(proposal, target)  # q(v) * min(1, p(v)/q(v))
    rejected = 1 - kept.sum(-1, keepdim=True)
    residual = (target - proposal).clamp(min=0)
    residual = residual / residual.sum(-1, keepdim=True).clamp(min=1e-30)
    return kept + rejected * residual


def commit_round(
    drafts: torch.Tensor,
    kept: torch.Tensor,
    next_token: torch.Tensor,
    eos: torch.Tensor,
    room: torch.Tensor,
    out: torch.Tensor,
    written: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Write each row's tokens of one verified round into ``out``; ``written`` advances in place.

    A row commits its kept drafts and the token after them, cut after its first EOS and at ``room``
    (0 for a row that takes nothing this round).

    Args:
        drafts: ``[R, G]`` the drafted tokens.
        kept: ``[R]`` leading drafts the large model kept.
        next_token: ``[R]`` the token after them.
        eos: ``[E]`` end-of-sequence ids.
        room: ``[R]`` tokens each row may still take.
        out: ``[R, W]`` response buffer (columns ``written ... written + G`` must exist).
        written: ``[R]`` tokens already in ``out``.

    Returns:
        ``([R, G+1] the round's tokens, [R] tokens committed, [R] whether the row wrote an EOS)``.
    """
    gamma = drafts.shape[1]
    position = torch.arange(gamma + 1, device=drafts.device)
    new = torch.cat([drafts, drafts.new_zeros((drafts.shape[0], 1))], dim=1)
    new.scatter_(1, kept[:, None], next_token[:, None])  # kept drafts, the token, then junk
    count = kept + 1
    is_eos = torch.isin(new, eos) & (position[None, :] < count[:, None])
    first_eos = torch.where(is_eos.any(-1), is_eos.long().argmax(-1) + 1, count)
    count = torch.minimum(first_eos, room).clamp(min=0)
    wrote_eos = is_eos.any(-1) & (first_eos <= count) & (count > 0)
    columns = written[:, None] + position[None, :]
    writing = position[None, :] < count[:, None]
    out.scatter_(1, columns, torch.where(writing, new, out.gather(1, columns)))
    written += count
    return new, count, wrote_eos


class PairProposer:
    """Drafts from the weak pair's state and says what the large model's verification targets.

    Shaped like transformers' ``CandidateGenerator``: ``get_candidates`` drafts a round (stepping the
    pair's state through the drafts), ``update_candidate_strategy`` rolls the state back to what the
    round committed. Subclasses say which distribution drafts come from (``draft_scores``) and what
    the large model's logits become at each verified position (``target_scores``).

    Args:
        state: the pair's incremental state over the rows being drafted for.
        warpers: the sampling warpers, applied to proposal and target alike.
        vocab_rows: rows of the large model's output table (drafts are drawn over it, padding rows
            past the pair's at ``-inf``); ``None`` for the pair's own.
        greedy: draft each row's most likely token instead of sampling.
    """

    def __init__(
        self, state: GuidanceState, warpers: LogitsProcessorList, vocab_rows: int | None, greedy: bool = False
    ) -> None:
        self.state = state
        self.warpers = ProcessorChain(warpers)
        self.vocab_rows = vocab_rows
        self.greedy = greedy

    def draft_scores(self) -> torch.Tensor:
        """``[R, V]`` the scores the next draft is sampled from (before the warpers)."""
        raise NotImplementedError

    def drafts_done(self) -> None:
        """Called after a round's last draft, before the large model's forward."""

    def target_scores(self, logits: torch.Tensor, position: int) -> torch.Tensor:
        """``[R, V] -> [R, V]`` the target's scores at a verified position, from the large model's logits."""
        raise NotImplementedError

    def get_candidates(
        self, gamma: int, fed_mask: torch.Tensor, out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``([R, G] drafts, [R, G, V] the distribution each was drawn from)``; draft ``j`` enters the
        pair's state exactly where ``fed_mask[:, j + 1]`` holds."""
        drafts, proposal = [], []
        for j in range(gamma):
            q = torch.softmax(self.warpers(out, self.draft_scores()), dim=-1)
            d = q.argmax(-1) if self.greedy else torch.multinomial(q, 1).squeeze(1)
            proposal.append(q)
            drafts.append(d)
            self.state.step(d, active=fed_mask[:, j + 1])
        self.drafts_done()
        return stack_round(drafts, proposal, fed_mask.shape[0], fed_mask.device)

    def target(self, logits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``[R, G+1, V]`` logits -> the target distribution at every verified position."""
        scores = [self.warpers(out, self.target_scores(logits[:, j], j)) for j in range(logits.shape[1])]
        return torch.softmax(torch.stack(scores, dim=1), dim=-1)

    def update_candidate_strategy(
        self, drop: torch.Tensor, tokens: torch.Tensor, appends: torch.Tensor | None = None
    ) -> None:
        """Retract ``drop`` drafts per row from the pair's state and append ``tokens`` (``appends`` of them)."""
        self.state.replace_tail(drop, tokens[:, None], appends)


@dataclass
class VerifiedRound:
    """What one drafting round verified: each row's drafts, how many the large model kept, what it wrote.

    Attributes:
        room: ``[R]`` the tokens each row could take this round (0: not fed).
        fed_mask: ``[R, G+1]`` which of the fed tokens (the last committed, then the drafts) counted.
        drafts: ``[R, G]`` the drafted tokens.
        kept: ``[R]`` leading drafts the large model kept.
        next_token: ``[R]`` the token after them.
        new: ``[R, G+1]`` the round's tokens (kept drafts, the token, then junk).
        count: ``[R]`` tokens committed (cut after EOS and at the room).
        wrote_eos: ``[R]`` whether the row wrote an EOS.
    """

    room: torch.Tensor
    fed_mask: torch.Tensor
    drafts: torch.Tensor
    kept: torch.Tensor
    next_token: torch.Tensor
    new: torch.Tensor
    count: torch.Tensor
    wrote_eos: torch.Tensor


class DraftingEngine:
    """The large model's side of drafted decoding: its cache, the committed tokens, verification.

    The cache holds every committed token but each row's last one, which the next round's forward
    feeds first. ``out`` holds the response tokens (not the prompt), with room for one round past the
    budget so every round writes its ``gamma + 1`` slots at distinct columns.

    Args:
        model: the large model.
        prompt_ids: ``[R, P]`` left-padded prompts.
        prompt_mask: ``[R, P]`` their attention mask.
        proposer: drafts each round and rolls the pair's state back.
        eos_ids: end-of-sequence ids.
        pad: the id that fills ``out`` past each row's tokens.
        max_new: tokens per row at most.
        draft_tokens: drafts per round at most (``gamma``).
        logits_hook: applied to the large model's float logits before the proposer's target (e.g.
            masking padding rows of its output table).
    """

    def __init__(
        self,
        model,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        proposer: PairProposer,
        eos_ids: list[int],
        pad: int,
        max_new: int,
        draft_tokens: int,
        logits_hook=None,
    ) -> None:
        self.model = model
        self.proposer = proposer
        self.gamma = draft_tokens
        self.logits_hook = logits_hook
        self.device = prompt_ids.device
        rows, width = prompt_ids.shape
        self.eos = torch.tensor(eos_ids or [-1], device=self.device)
        self.uses_position_ids = accepts_position_ids(model)
        mask = prompt_mask.long()
        self.cache = new_cache(model)
        self.prefilled = width > 1
        if self.prefilled:
            positions = (mask[:, :-1].cumsum(-1) - 1).clamp(min=0) if self.uses_position_ids else None
            forward_with_cache(
                model, prompt_ids[:, :-1], mask[:, :-1], self.cache, position_ids=positions, logits_to_keep=1
            )
        self.cache_mask = mask[:, :-1]
        self.last = prompt_ids[:, -1]
        self.out = torch.full(
            (rows, max_new + min(draft_tokens, max_new) + 1), pad, dtype=torch.long, device=self.device
        )
        self.written = torch.zeros(rows, dtype=torch.long, device=self.device)
        self.drafted = torch.zeros((), dtype=torch.long, device=self.device)  # drafts proposed, all rounds
        self.accepted = torch.zeros((), dtype=torch.long, device=self.device)  # drafts committed

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep (and repeat) the rows ``index`` names, cache included."""
        select_cache_rows(self.cache, index)
        self.cache_mask, self.last = self.cache_mask[index], self.last[index]
        self.out, self.written = self.out[index], self.written[index]

    def verify(self, room: torch.Tensor, most_room: int) -> VerifiedRound:
        """One round: draft, one large-model forward, keep what speculative sampling accepts, write it.

        Args:
            room: ``[R]`` tokens each row may take this round (0: a row that is done).
            most_room: ``room.max()`` as a host int (the caller's one sync per round), at least 1.
        """
        # A round commits at most most_room tokens per row: no drafts past the budget (nor the context).
        gamma = min(self.gamma, most_room - 1)
        fed_mask = round_masks(room, gamma)  # [R, G+1]
        # 1. Draft; drafts past a row's room (all of a finished row's) leave the pair's state as it is.
        drafts, proposal = self.proposer.get_candidates(gamma, fed_mask, self.out)
        # 2. One large-model forward over each row's last committed token and its drafts, masked past
        #    each row's room.
        fed = torch.cat([self.last[:, None], drafts], dim=1)
        mask = torch.cat([self.cache_mask, fed_mask.long()], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -fed.shape[1] :] if self.uses_position_ids else None
        logits = forward_with_cache(self.model, fed, mask, self.cache, position_ids=positions).logits.float()
        if self.logits_hook is not None:
            logits = self.logits_hook(logits)
        target = self.proposer.target(logits, self.out)
        # 3. Keep what the target accepts, then one more token from the target (or the residual). EOS
        #    ends a row after it; the room caps what is written (a row whose room ends at a fed draft
        #    may keep the draft after it: the target at the last fed token verified it).
        kept, next_token = speculative_choice(target, proposal, drafts, self.proposer.greedy)
        self.drafted += room.clamp(max=gamma).sum()
        new, count, wrote_eos = commit_round(drafts, kept, next_token, self.eos, room, self.out, self.written)
        self.accepted += torch.minimum(kept, count).sum()
        return VerifiedRound(room, fed_mask, drafts, kept, next_token, new, count, wrote_eos)

    def keep_committed(self, done: VerifiedRound) -> torch.Tensor:
        """Roll both sides back to exactly the committed tokens; ``[R]`` tokens fed to the pair.

        The large cache keeps the fed last token and the committed drafts but the newest (fed first
        next round); the pair drops the drafts it took past the committed ones and appends the newest
        committed token when it did not take it as a draft. A row may resume in a later round.
        """
        position = torch.arange(done.fed_mask.shape[1], device=self.device)
        self.cache_mask = torch.cat(
            [self.cache_mask, (position[None, :] < done.count[:, None]).long()], dim=1
        )
        newest = done.new.gather(1, (done.count - 1).clamp(min=0)[:, None]).squeeze(1)
        self.last = torch.where(done.count > 0, newest, self.last)
        stepped = done.fed_mask[:, 1:].sum(-1)  # drafts each row's pair state took
        in_state = torch.minimum(torch.minimum(done.kept, done.count), stepped)
        appends = (done.count > in_state).long()
        self.proposer.update_candidate_strategy(stepped - in_state, newest, appends)
        return stepped + appends

    def keep_continuing(self, done: VerifiedRound, finished: torch.Tensor) -> None:
        """Roll back for rows that never resume once ``finished``: those leave the large cache masked
        and swap their last token in the pair's state for the new one, so neither grows (and the pair
        needs no per-row lengths: no host sync)."""
        position = torch.arange(done.fed_mask.shape[1], device=self.device)
        keeps = (position[None, :] < done.count[:, None]) & ~finished[:, None]
        self.cache_mask = torch.cat([self.cache_mask, keeps.long()], dim=1)
        self.last = done.next_token
        stepped = done.fed_mask[:, 1:].sum(-1)
        drop = torch.where(
            done.room > 0, stepped - torch.minimum(done.kept, stepped), torch.ones_like(stepped)
        )
        self.proposer.update_candidate_strategy(drop, done.next_token)

    def responses(self) -> list[list[int]]:
        """Each row's committed tokens."""
        return [row[:n] for row, n in zip(self.out.tolist(), self.written.tolist())]
