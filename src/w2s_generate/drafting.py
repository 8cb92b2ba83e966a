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
retracted from the pair's state, per row, with positions counted from the masks.
"""

from __future__ import annotations

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
    padded = torch.cat([proposal, torch.zeros_like(proposal[:, :1])], dim=1)  # no proposal after the last
    residual = (next_target - padded.gather(1, at).squeeze(1)).clamp(min=0)
    total = residual.sum(-1, keepdim=True)
    # A residual of zero mass can only follow a rejection of probability zero; use the target then.
    residual = torch.where(total > 0, residual / total.clamp(min=1e-30), next_target)
    return kept, torch.multinomial(residual, 1).squeeze(1)


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
    new = torch.cat([drafts, torch.zeros_like(drafts[:, :1])], dim=1)
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
) -> DraftedOutput:
    """Guided decoding of ``max_new_tokens`` per row in drafted rounds (see the module docstring).

    ``combine(logprobs [R, V], guidance [R, V]) -> [R, V]`` is the guided processor's own combination
    (shared rows, padding rows of a larger table at ``-inf``).
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
        (rows, prompt_width + max_new_tokens + draft_tokens + 1), pad_id, dtype=torch.long, device=device
    )
    out[:, :prompt_width] = input_ids
    written = torch.zeros(rows, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    drafted = torch.zeros((), dtype=torch.long, device=device)
    accepted = torch.zeros((), dtype=torch.long, device=device)
    gamma = draft_tokens
    position = torch.arange(gamma + 1, device=device)
    while True:
        # 1. Draft gamma tokens per row from the weak emulation of the target.
        guidance, proposal, drafts = [], [], []
        for _ in range(gamma):
            g = state.next_token_guidance()
            base = state.next_token_logprobs()[base_side]
            q = torch.softmax(warpers(out, combine(base, g)), dim=-1)
            d = q.argmax(-1) if greedy else torch.multinomial(q, 1).squeeze(1)
            guidance.append(g)
            proposal.append(q)
            drafts.append(d)
            state.step(d)
        guidance.append(state.next_token_guidance())
        drafts_t = torch.stack(drafts, dim=1)  # [R, G]
        # 2. One large-model forward over the last committed token and the drafts.
        fed = torch.cat([last[:, None], drafts_t], dim=1)  # [R, G+1]
        forward_mask = torch.cat([cache_mask, torch.ones_like(fed)], dim=1)
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
        kept, next_token = speculative_choice(target, torch.stack(proposal, dim=1), drafts_t, greedy)
        # EOS ends a row after it; the budget caps what is written; finished rows write nothing.
        room = torch.where(finished, torch.zeros_like(written), max_new_tokens - written)
        drafted += gamma * (~finished).sum()
        _, count, wrote_eos = commit_round(
            drafts_t, kept, next_token, eos, room, out[:, prompt_width:], written
        )
        accepted += torch.minimum(kept, count).sum()
        finished = finished | wrote_eos | (written >= max_new_tokens)
        if bool(finished.all()):  # the one host sync a round needs (replace_tail's aside)
            break
        # 4. Roll both sides back to what each row kept: rejected drafts leave the large cache's
        #    attention (the fed token and the kept drafts stay); the pair retracts them.
        kept_columns = position[None, :] < (kept + 1)[:, None]
        cache_mask = torch.cat([cache_mask, kept_columns.long()], dim=1)
        last = next_token
        drop = gamma - kept
        state.replace_tail(drop, next_token[:, None])
    width = prompt_width + int(written.max())
    return DraftedOutput(
        sequences=out[:, :width], large_forwards=large_forwards, drafted=int(drafted), accepted=int(accepted)
    )
