"""generate()'s logits processors on a search's own rows.

``generate`` prepares its processors for its own row layout: ``B * expand`` rows, row ``i`` belonging
to prompt ``i // expand``. A search holds a different number of rows per prompt every round (the
live candidates of each prompt), so the processors that keep something per row must be told which
prompt each row belongs to. Each known transformers processor is one of three kinds:

- row-agnostic (it reads only the row's own ids and scores): used as it is;
- per-row but mappable (``repetition_penalty`` on a padded batch keeps each row's padding length;
  ``prefix_allowed_tokens_fn`` is called with the prompt's batch index): re-made for the rows;
- tied to generate's own layout (classifier-free guidance, SynthID watermarks, Whisper, Bark, Dia):
  refused by name.

Processors of other classes (your own) are used as they are: they see the search's rows, with the
prompt-major order of ``generate``'s rows but a varying number of rows per prompt.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ._compat import ProcessorChain, prefix_allowed_tokens_fn, processor_traits


def check_processors(processors: LogitsProcessorList, strategy_name: str) -> None:
    """Refuse, by name, the processors a search cannot apply to its own rows."""
    for processor in processors:
        name = type(processor).__name__
        if classify(processor) == "refused":
            raise ValueError(
                f"{strategy_name} cannot apply generate()'s {name}: {processor_traits(processor).refusal}, and the search holds "
                "rows of its own. Drop that setting, or use w2s.TokenGuidance, which runs inside "
                "transformers' own decoding loop."
            )


class PrefixConstraintForRows(LogitsProcessor):
    """``prefix_allowed_tokens_fn`` on a search's rows: called with each row's prompt index.

    Like transformers' ``PrefixConstrainedLogitsProcessor``: tokens outside the allowed list get
    ``-inf``; where every row of one prompt has only ``-inf`` left, that prompt's rows keep the
    constraint alone (score 0 for allowed tokens), so the constraint always holds.

    Args:
        prefix_allowed_tokens_fn: ``fn(batch_id, input_ids) -> allowed token ids``, as for ``generate``.
        prompt_of_row: each row's prompt index (its ``batch_id``).

    Examples:
        >>> from w2s_generate.row_processors import PrefixConstraintForRows
        >>> allow_two = PrefixConstraintForRows(lambda batch_id, ids: [5, 6], [0, 0, 1])
        >>> out = allow_two(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 10))
        >>> out[0].tolist()[:8]
        [-inf, -inf, -inf, -inf, -inf, 0.0, 0.0, -inf]
    """

    def __init__(
        self, prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]], prompt_of_row: list[int]
    ):
        self.fn = prefix_allowed_tokens_fn
        self.prompt_of_row = list(prompt_of_row)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, -math.inf)
        for row, batch_id in enumerate(self.prompt_of_row):
            allowed = self.fn(batch_id, input_ids[row])
            if len(allowed) == 0:
                raise ValueError(
                    f"prefix_allowed_tokens_fn returned an empty list for batch ID {batch_id}: the constraint "
                    "cannot be met. Check your prefix_allowed_tokens_fn."
                )
            mask[row, allowed] = 0
        constrained = scores + mask
        row_dead = constrained.amax(dim=-1).isneginf()
        owners = torch.as_tensor(self.prompt_of_row, device=scores.device)
        prompts = int(owners.max()) + 1 if owners.numel() else 0
        alive = torch.zeros(prompts, dtype=torch.bool, device=scores.device).index_put_(
            (owners,), ~row_dead, accumulate=True
        )
        dead_prompt = ~alive[owners]
        return torch.where(dead_prompt[:, None], mask, constrained)


def classify(processor: LogitsProcessor) -> str:
    """How a search applies ``processor``: ``"as is"``, ``"per prompt"`` (re-made) or ``"refused"``.

    Examples:
        >>> from transformers import TopKLogitsWarper, RepetitionPenaltyLogitsProcessor
        >>> from w2s_generate.row_processors import classify
        >>> classify(TopKLogitsWarper(50)), classify(RepetitionPenaltyLogitsProcessor(1.2))
        ('as is', 'per prompt')
    """
    return processor_traits(processor).rows


def processors_for_rows(
    processors: LogitsProcessorList, prompt_of_row: list[int], batch: int, expand: int
) -> LogitsProcessorList:
    """The prepared processors, re-made where needed for rows owned by prompts ``prompt_of_row``.

    Args:
        processors: the list ``generate`` prepared (for ``batch * expand`` rows).
        prompt_of_row: the prompt index of each of the search's rows.
        batch: the number of prompts.
        expand: rows per prompt in ``generate``'s layout (``max(num_beams, num_return_sequences)``).

    Examples:
        >>> from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor
        >>> from w2s_generate.row_processors import processors_for_rows
        >>> padded = RepetitionPenaltyLogitsProcessor(1.2, prompt_ignore_length=torch.tensor([0, 3]))
        >>> remade = processors_for_rows(LogitsProcessorList([padded]), [1, 1, 0], batch=2, expand=1)
        >>> remade[0].prompt_ignore_length.tolist()   # each row gets its prompt's padding length
        [3, 3, 0]
    """
    rows: list[LogitsProcessor] = []
    for processor in processors:
        name = type(processor).__name__
        if classify(processor) != "per prompt":
            rows.append(processor)
        elif name == "RepetitionPenaltyLogitsProcessor" and isinstance(
            processor.prompt_ignore_length, torch.Tensor
        ):
            # One padding length per generate row; give each search row its prompt's.
            lengths = processor.prompt_ignore_length
            index = torch.as_tensor(prompt_of_row, dtype=torch.long, device=lengths.device)
            if lengths.shape[0] == batch * expand:
                index = index * expand
            elif lengths.shape[0] != batch:
                raise ValueError(
                    f"repetition_penalty holds {lengths.shape[0]} padding lengths for {batch} prompts "
                    f"({batch * expand} generate rows): it was prepared for another batch."
                )
            remade = copy.copy(processor)
            remade.prompt_ignore_length = lengths[index]
            rows.append(remade)
        elif name == "PrefixConstrainedLogitsProcessor":
            rows.append(PrefixConstraintForRows(prefix_allowed_tokens_fn(processor), prompt_of_row))
        else:
            rows.append(processor)
    return ProcessorChain(rows)
