"""Token-level guidance with fewer large-model forwards: the weak pair drafts, the large model verifies.

The target is the guided distribution of token-level guidance,
``p(v) ∝ warp(log_softmax(large logits) + beta * (log p_tuned(v) - log p_untuned(v)))``. Each round,
every row drafts ``gamma`` tokens from a weak-only emulation of that target (the untuned model in
place of the large one: ``log p_untuned + beta * guidance``, which for ``beta = 1`` is the tuned
model), then ONE large-model forward over the last committed token and the drafts gives the target at
all ``gamma + 1`` positions. Speculative sampling (Leviathan et al., 2023; Chen et al., 2023) keeps
draft ``j`` with probability ``min(1, p_j(d_j) / q_j(d_j))``; at the first rejection it samples from
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
from transformers import LogitsProcessorList, StoppingCriteriaList
from transformers.utils import ModelOutput

from ._compat import DRAFTABLE_CRITERIA, accepts_position_ids, forward_with_cache, new_cache, processor_traits


@dataclass
class DraftedOutput(ModelOutput):
    """What drafted token guidance returns with ``return_dict_in_generate=True``.

    Attributes:
        sequences: ``[B, T]`` prompt + response ids, right-padded.
        large_forwards: forwards of the large model (prefill included).
        drafted: draft tokens proposed, over all rows and rounds.
        accepted: draft tokens the large model kept.

    Examples:
        >>> out = model.generate(**inputs, custom_generate=TokenGuidance(pair, draft_tokens=2), do_sample=True,
        ...                      max_new_tokens=6, return_dict_in_generate=True)
        >>> type(out).__name__, out.sequences.shape[0], out.accepted <= out.drafted
        ('DraftedOutput', 2, True)
    """

    sequences: torch.LongTensor | None = None
    large_forwards: int | None = None
    drafted: int | None = None
    accepted: int | None = None


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


def check_draftable(processors: LogitsProcessorList, stopping: StoppingCriteriaList) -> None:
    """Refuse, by name, what a drafted round cannot apply exactly at every drafted position."""
    for processor in processors:
        if not processor_traits(processor).scores_only:
            raise ValueError(
                f"draft_tokens cannot apply {type(processor).__name__}: drafted rounds support the sampling "
                "warpers (temperature, top_k, top_p, min_p, typical_p, epsilon/eta cutoffs) only. Drop that "
                "setting or use TokenGuidance without draft_tokens."
            )
    for criterion in stopping:
        if type(criterion).__name__ not in DRAFTABLE_CRITERIA:
            raise ValueError(
                f"draft_tokens cannot apply {type(criterion).__name__}: drafted rounds stop at EOS and "
                "max_new_tokens only. Drop that setting or use TokenGuidance without draft_tokens."
            )


@torch.no_grad()
def drafted_guidance(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    pair,
    beta: float,
    combine,
    warpers: LogitsProcessorList,
    draft_tokens: int,
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    greedy: bool,
    vocab_rows: int | None = None,
) -> DraftedOutput:
    """Guided decoding of ``max_new_tokens`` per row in drafted rounds (see the module docstring).

    ``combine(logprobs [R, V], guidance [R, V]) -> [R, V]`` is the guided processor's own combination
    (shared rows, padding rows of a larger table at ``-inf``). ``vocab_rows`` is the number of rows of
    the large model's output table, when known: drafts are drawn over it, its padding rows at ``-inf``.
    """
    device = input_ids.device
    rows, prompt_width = input_ids.shape
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
    prompts = [[t for t, m in zip(r, mr) if m] for r, mr in zip(input_ids.tolist(), mask.tolist())]
    state = pair.start(prompts)
    base_side = min(range(len(pair.coefficients)), key=lambda s: pair.coefficients[s])
    uses_positions = accepts_position_ids(model)
    eos = torch.tensor(eos_ids or [-1], device=device)

    # The large model's cache holds every committed token but the last one, which the next
    # round's forward feeds first.
    cache = new_cache(model)
    large_forwards = 0
    if prompt_width > 1:
        forward_with_cache(
            model,
            input_ids[:, :-1],
            mask[:, :-1],
            cache,
            position_ids=(mask[:, :-1].cumsum(-1) - 1).clamp(min=0) if uses_positions else None,
            logits_to_keep=1,
        )
        large_forwards += 1
    cache_mask = mask[:, :-1]
    last = input_ids[:, -1]
    # Room for one round past the budget, so each round writes its gamma + 1 slots at distinct columns.
    out = torch.full(
        (rows, prompt_width + max_new_tokens + min(draft_tokens, max_new_tokens) + 1),
        pad_id,
        dtype=torch.long,
        device=device,
    )
    out[:, :prompt_width] = input_ids
    written = torch.zeros(rows, dtype=torch.long, device=device)
    room = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)  # [R] 0 once finished
    most_room = max_new_tokens  # host copy of room.max()
    drafted = torch.zeros((), dtype=torch.long, device=device)
    accepted = torch.zeros((), dtype=torch.long, device=device)
    while most_room > 0:
        # A round commits at most most_room tokens per row: no drafts past the budget (nor the context).
        gamma = min(draft_tokens, most_room - 1)
        position = torch.arange(gamma + 1, device=device)
        fed_mask = round_masks(room, gamma)  # [R, G+1]
        # 1. Draft gamma tokens per row from the weak emulation of the target; drafts past a row's
        #    room (all of a finished row's) leave the pair's state as it is.
        guidance, proposal, drafts = [], [], []
        for j in range(gamma):
            g = state.next_token_guidance()
            base = fit_rows(state.next_token_logprobs()[base_side], vocab_rows)
            q = torch.softmax(warpers(out, combine(base, g)), dim=-1)
            d = q.argmax(-1) if greedy else torch.multinomial(q, 1).squeeze(1)
            guidance.append(g)
            proposal.append(q)
            drafts.append(d)
            state.step(d, active=fed_mask[:, j + 1])
        guidance.append(state.next_token_guidance())
        drafts_t, proposal_t = stack_round(drafts, proposal, rows, device)  # [R, G], [R, G, V]
        # 2. One large-model forward over the last committed token and the drafts, masked past each
        #    row's room.
        fed = torch.cat([last[:, None], drafts_t], dim=1)  # [R, G+1]
        forward_mask = torch.cat([cache_mask, fed_mask.long()], dim=1)
        positions = (forward_mask.cumsum(-1) - 1).clamp(min=0)[:, -fed.shape[1] :]
        logits = forward_with_cache(
            model, fed, forward_mask, cache, position_ids=positions if uses_positions else None
        ).logits.float()  # [R, G+1, V]
        large_forwards += 1
        logprobs = torch.log_softmax(logits, dim=-1)
        target_scores = torch.stack(
            [warpers(out, combine(logprobs[:, j], guidance[j])) for j in range(gamma + 1)], dim=1
        )
        target = torch.softmax(target_scores, dim=-1)
        # 3. Keep the drafts the target accepts, then one more token from the target (or residual).
        #    EOS ends a row after it; the room caps what is written (a row whose room ends at a fed
        #    draft may keep the draft after it: the target at the last fed token verified it).
        kept, next_token = speculative_choice(target, proposal_t, drafts_t, greedy)
        drafted += room.clamp(max=gamma).sum()
        _, count, wrote_eos = commit_round(
            drafts_t, kept, next_token, eos, room, out[:, prompt_width:], written
        )
        accepted += torch.minimum(kept, count).sum()
        finished = (room == 0) | wrote_eos | (written >= max_new_tokens)
        room_next = torch.where(finished, torch.zeros_like(room), max_new_tokens - written)
        most_room = int(room_next.max())  # the one host sync a round needs (replace_tail's aside)
        if most_room == 0:
            break
        # 4. Roll both sides back to what each row kept. A row that goes on committed its kept
        #    drafts and the token after them: the large cache keeps the fed token and the kept drafts,
        #    the pair retracts the rest and takes the token. A finished row leaves the large cache
        #    masked and swaps its last token in the pair's state for the new one, so neither grows.
        cache_keeps = (position[None, :] < count[:, None]) & ~finished[:, None]
        cache_mask = torch.cat([cache_mask, cache_keeps.long()], dim=1)
        last = next_token
        stepped = fed_mask[:, 1:].sum(-1)  # drafts each row's pair state took
        drop = torch.where(room > 0, stepped - torch.minimum(kept, stepped), torch.ones_like(stepped))
        state.replace_tail(drop, next_token[:, None])
        room = room_next
    width = prompt_width + int(written.max())
    return DraftedOutput(
        sequences=out[:, :width], large_forwards=large_forwards, drafted=int(drafted), accepted=int(accepted)
    )
