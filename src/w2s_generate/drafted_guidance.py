"""Drafted token guidance: token-level guidance with fewer large-model forwards.

The target is the guided distribution of token-level guidance,
``p(v) ∝ warp(log_softmax(large logits) + beta * (log p_tuned(v) - log p_untuned(v)))``. Each round,
every row drafts from a weak-only emulation of that target (the untuned model in place of the large
one: ``log p_untuned + beta * guidance``, which for ``beta = 1`` is the tuned model) and the drafting
engine ([`drafting`][w2s_generate.speculative_choice]) verifies the drafts in one large-model forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList
from transformers.utils import ModelOutput

from ._compat import DRAFTABLE_CRITERIA, processor_traits
from .drafting import DraftingEngine, PairProposer, fit_rows


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


class GuidedProposer(PairProposer):
    """Drafts from the weak emulation of the guided target; verifies against the guided target.

    ``combine(logprobs [R, V], guidance [R, V]) -> [R, V]`` is the guided processor's own combination
    (shared rows, padding rows of a larger table at ``-inf``).
    """

    def __init__(self, state, warpers, vocab_rows, greedy, combine, base_side: int) -> None:
        super().__init__(state, warpers, vocab_rows, greedy)
        self.combine = combine
        self.base_side = base_side  # the side standing in for the large model
        self.guidance: list[torch.Tensor] = []

    def get_candidates(self, gamma, fed_mask, out):
        self.guidance = []  # the guidance at each drafted position, then after the last draft
        return super().get_candidates(gamma, fed_mask, out)

    def draft_scores(self) -> torch.Tensor:
        g = self.state.next_token_guidance()
        self.guidance.append(g)
        return self.combine(fit_rows(self.state.next_token_logprobs()[self.base_side], self.vocab_rows), g)

    def drafts_done(self) -> None:
        self.guidance.append(self.state.next_token_guidance())

    def target_scores(self, logits: torch.Tensor, position: int) -> torch.Tensor:
        return self.combine(torch.log_softmax(logits, dim=-1), self.guidance[position])


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

    ``vocab_rows`` is the number of rows of the large model's output table, when known: drafts are
    drawn over it, its padding rows at ``-inf``.
    """
    rows, prompt_width = input_ids.shape
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
    prompts = [[t for t, m in zip(r, mr) if m] for r, mr in zip(input_ids.tolist(), mask.tolist())]
    # The side with the smallest coefficient (the untuned one) stands in for the large model.
    base_side = min(range(len(pair.coefficients)), key=lambda s: pair.coefficients[s])
    proposer = GuidedProposer(pair.start(prompts), warpers, vocab_rows, greedy, combine, base_side)
    engine = DraftingEngine(model, input_ids, mask, proposer, eos_ids, pad_id, max_new_tokens, draft_tokens)
    large_forwards = int(engine.prefilled)
    room = torch.full(
        (rows,), max_new_tokens, dtype=torch.long, device=input_ids.device
    )  # [R] 0 once finished
    most_room = max_new_tokens  # host copy of room.max()
    while most_room > 0:
        done = engine.verify(room, most_room)
        large_forwards += 1
        finished = (room == 0) | done.wrote_eos | (engine.written >= max_new_tokens)
        room = torch.where(finished, torch.zeros_like(room), max_new_tokens - engine.written)
        most_room = int(room.max())  # the one host sync a round needs (replace_tail's aside)
        if most_room == 0:
            break
        engine.keep_continuing(done, finished)
    width = int(engine.written.max())
    return DraftedOutput(
        sequences=torch.cat([input_ids, engine.out[:, :width]], dim=1),
        large_forwards=large_forwards,
        drafted=int(engine.drafted),
        accepted=int(engine.accepted),
    )
