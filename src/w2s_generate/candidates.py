"""Where a search's candidates come from: the interface, and the local large model's source.

A *candidate source* samples one chunk for every live row and re-indexes its rows between rounds:
[`LocalModelSource`][w2s_generate.LocalModelSource] (here) samples from a local large model with
its KV cache; [`DraftedModelSource`][w2s_generate.DraftedModelSource] (``drafted_source.py``)
samples the same chunks with the pair drafting; [`TextSamplerSource`][w2s_generate.TextSamplerSource]
(``text_source.py``) asks a text sampler (e.g. a completions server). The pair's scores come from a
*scorer* (``scorers.py``). The search loop (``search.py``) sees only these two interfaces.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.stopping_criteria import MaxLengthCriteria, StopStringCriteria

from ._compat import (
    accepts_position_ids,
    base_model,
    forward_with_cache,
    new_cache,
    one_token_mask,
    one_token_mask_kind,
    select_cache_rows,
    sliding_window,
)
from .boundaries import ChunkBoundary, token_stop
from .policies import SearchCost
from .row_processors import processors_for_rows


@dataclass
class SampledChunks:
    """One round's chunks, one per live row.

    Attributes:
        ids: ``[R, T]`` the chunk's token ids, valid tokens first (``None`` from a text source).
        lengths: ``[R]`` valid tokens per row (``None`` from a text source).
        finished: per row, whether the response has ended (EOS, a stopping criterion, the token budget).
        scored: the pair's state already holds the chunks (a drafting source steps it while drafting).
    """

    ids: torch.Tensor | None
    lengths: torch.Tensor | None
    finished: list[bool]
    scored: bool = False


class CandidateSource:
    """What the search loop needs from wherever candidates come from.

    ``expand`` lays out the next round's rows (each parent repeated), ``sample`` draws one chunk for
    every row and ``responses`` gives each row's response so far; ``owners`` is each row's prompt.

    Examples:
        >>> class Fixed:   # a text sampler answering the same chunk every time
        ...     def sample(self, prefixes, n, max_tokens):
        ...         return [[Chunk(" so good", False)] * n for _ in prefixes]
        >>> source = TextSamplerSource(Fixed(), ["the film was"], ChunkBoundary(4), 8, SearchCost.zeros(1))
        >>> isinstance(source, CandidateSource)
        True
        >>> source.expand([0], [2])   # prompt 0's row, twice
        >>> source.sample().finished, source.responses(), source.owners
        ([False, False], [' so good', ' so good'], [0, 0])
    """

    owners: list[int]  # the prompt of each live row

    def expand(self, parents: Sequence[int], repeats: Sequence[int]) -> None:
        """Rows for the next round: ``parents[i]`` (a current row) ``repeats[i]`` times, in order."""
        raise NotImplementedError

    def sample(self) -> SampledChunks:
        """One chunk for every row, counting what it spends into the source's cost."""
        raise NotImplementedError

    def responses(self) -> list:
        """Each row's response so far (token ids or text), on the host."""
        raise NotImplementedError


class DecodedStopStrings:
    """Per row, whether its last token completes a stop string, found by decoding a short window.

    transformers' ``StopStringCriteria`` does this on the device without decoding, but its tokenizer
    analysis needs a vocabulary whose tokens decode with a fixed prefix, which some tokenizers (word
    level, for one) lack; this is the fallback. It decodes on the host, so it syncs once a step.
    """

    def __init__(self, tokenizer, stop_strings: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = stop_strings
        # A window this long holds every stop string even when each token decodes to one character.
        self.window = max(len(s) for s in stop_strings) + 1

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        rows = input_ids[:, -self.window :].tolist()
        texts = self.tokenizer.batch_decode(rows)
        before = self.tokenizer.batch_decode([r[:-1] for r in rows])
        done = [
            any(text.find(stop, max(len(head) - len(stop) + 1, 0)) != -1 for stop in self.stop_strings)
            for text, head in zip(texts, before)
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def stop_string_criterion(tokenizer, stop_strings: list[str]):
    """``(ids, scores) -> [R] bool``: whether each row's last token completes one of ``stop_strings``."""
    if tokenizer is None:
        raise ValueError(
            "ChunkBoundary(stop_strings=...) needs the large model's tokenizer to read its tokens as text: "
            "pass tokenizer= to ChunkBeamSearch (or to generate() with strategy=)."
        )
    try:
        return StopStringCriteria(tokenizer, stop_strings)
    except ValueError:  # a vocabulary StopStringCriteria cannot analyse (e.g. word level)
        return DecodedStopStrings(tokenizer, stop_strings)


def default_generator(device: torch.device) -> torch.Generator | None:
    """The generator ``torch.manual_seed`` seeds for ``device`` (what ``torch.multinomial`` draws from);
    ``None`` for a device type without one reachable through a public API."""
    if device.type == "cpu":
        return torch.default_generator
    module = getattr(torch, device.type, None)
    generators = getattr(module, "default_generators", None)
    if not generators:
        return None
    return generators[device.index if device.index is not None else module.current_device()]


class SkippedDraws:
    """The random draws a sampling slot skipped while its row waited, given back to that slot first.

    A token is drawn as ``torch.multinomial(probs, 1)`` draws it: ``argmax(probs / E)`` with
    ``E ~ Exp(1)``, one row of ``E`` per slot, all slots in one call. When chunks end at stop strings
    or tokens, a row whose chunk has ended waits while the others sample on, and the draws meant for
    its slot go by. Each slot keeps, in order, which draws it skipped; a row sampling in that slot
    takes them before the current one (whose row of ``E`` joins the end of the queue), so every slot
    uses every draw once and in order, as it would had it never waited. With one beam and one
    successor that is exactly plain sampling's stream, whatever the boundary.

    A skipped draw is not stored: the generator's state before it is, and the draw is made again from
    that state when needed (one ``[N, V]`` draw per skipped draw given back). Only a device whose
    generator is reachable (CPU, CUDA, XPU) keeps skipped draws; elsewhere they are dropped.

    Args:
        slots: sampling slots (rows of every draw).
        device: where the draws are made.
    """

    def __init__(self, slots: int, device: torch.device) -> None:
        self.generator = default_generator(device)
        self.device = device
        self.queues: list[deque[int]] = [deque() for _ in range(slots)]
        self.states: dict[int, torch.Tensor] = {}  # draw number -> generator state before it
        self.users: dict[int, int] = {}  # draw number -> slots still holding it
        self.draws = 0

    def reset(self) -> None:
        """Forget every skipped draw."""
        for queue in self.queues:
            queue.clear()
        self.states.clear()
        self.users.clear()

    def release(self, occupied: set[int]) -> None:
        """Drop the skipped draws of slots no row holds any more."""
        for slot, queue in enumerate(self.queues):
            if slot not in occupied:
                while queue:
                    self._unuse(queue.popleft())

    def draw(
        self, probs: torch.Tensor, slots: list[int], active: list[bool], waiting: list[bool]
    ) -> torch.Tensor:
        """``[N, V] -> [N]`` one token per slot; ``slots[r]`` is row ``r``'s slot, ``active[r]`` whether it
        samples now, ``waiting[r]`` whether it skips this draw and takes it later."""
        if self.generator is None:
            return torch.multinomial(probs, 1).squeeze(1)
        given_back = [s for s, a in zip(slots, active) if a and self.queues[s]]
        skipping = [s for s, w in zip(slots, waiting) if w]
        if not given_back and not skipping:
            return torch.multinomial(probs, 1).squeeze(1)
        number = self.draws
        self.draws += 1
        state = self.generator.get_state()
        noise = torch.empty_like(probs).exponential_(1)
        earlier: dict[int, list[int]] = {}
        for slot in given_back:
            earlier.setdefault(self.queues[slot].popleft(), []).append(slot)
        for slot in given_back + skipping:
            self.queues[slot].append(number)
        self.users[number] = len(given_back) + len(skipping)
        self.states[number] = state
        for old, takers in earlier.items():
            replay = torch.Generator(device=self.device)
            replay.set_state(self.states[old])
            rows = torch.tensor(takers, device=self.device)
            noise[rows] = torch.empty_like(probs).exponential_(1, generator=replay)[rows]
            for _ in takers:
                self._unuse(old)
        return (probs / noise).argmax(-1)

    def _unuse(self, number: int) -> None:
        self.users[number] -= 1
        if not self.users[number]:
            del self.users[number], self.states[number]


def mask_rows_past(logits: torch.Tensor, rows: int | None) -> torch.Tensor:
    """``[..., V] -> [..., V]`` a copy with the columns from ``rows`` on at ``-inf`` (``None``: ``logits``).

    A large model's output table may hold padding rows past the pair's vocabulary: ids the pair
    cannot read, never real tokens. Masked, they are never sampled.

    Examples:
        >>> from w2s_generate.candidates import mask_rows_past
        >>> mask_rows_past(torch.zeros(1, 4), 3)
        tensor([[0., 0., 0., -inf]])
    """
    if rows is None or rows >= logits.shape[-1]:
        return logits
    return logits.index_fill(-1, torch.arange(rows, logits.shape[-1], device=logits.device), -math.inf)


def _compact(seqs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[R, T] -> [R, T]`` each row's real tokens right-aligned, its holes moved to the left.

    A row that ended its chunk early leaves masked columns (holes) while others sample on; generate's
    processors and stopping criteria read n-grams and endings, so they get the rows without holes,
    left-padded as in a left-padded batch.
    """
    order = torch.sort(mask, dim=-1, stable=True).indices  # holes (0) first, tokens keep their order
    return seqs.gather(-1, order)


class LocalModelSource(CandidateSource):
    """Chunks sampled from a local large model, its KV cache prefilled once and re-indexed each round.

    Every row draws from its own fixed sampling slot (``slots_per_prompt`` per prompt), so a row's
    random stream never depends on how many rows other prompts hold, and a slot whose row waits for
    the others to end their chunks gets the draws it skipped back later (``SkippedDraws``): with one
    beam and one successor the search draws exactly what plain sampling draws.

    Examples:
        >>> from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
        >>> source = LocalModelSource(model, inputs["input_ids"], inputs["attention_mask"],
        ...                           LogitsProcessorList(), StoppingCriteriaList(),
        ...                           GenerationConfig(num_beams=1, num_return_sequences=1),
        ...                           0, ChunkBoundary(4), 8, 2, SearchCost.zeros(2))
        >>> source.expand([0, 1], [2, 2])   # two rows for each of the two prompts
        >>> chunks = source.sample()
        >>> chunks.ids.shape, chunks.lengths.tolist(), source.owners
        (torch.Size([4, 4]), [4, 4, 4, 4], [0, 0, 1, 1])
    """

    def __init__(
        self,
        model,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        processors: LogitsProcessorList,
        stopping: StoppingCriteriaList,
        config: GenerationConfig,
        pad: int,
        boundary: ChunkBoundary,
        max_new: int,
        slots_per_prompt: int,
        cost: SearchCost,
        stop_string_tokenizer=None,
        pair_rows: int | None = None,
        greedy: bool = False,
        cache: DynamicCache | None = None,
        generate_rows: bool = False,
    ) -> None:
        self.model = model
        # The rows are generate's own, in its layout: its prepared processors apply as they are.
        self.generate_rows = generate_rows
        self.greedy = greedy  # each row takes its most likely token (generate's greedy decoding)
        self.pair_rows = pair_rows  # the pair reads ids below this (None: it reads text)
        self.processors = processors
        self.pad = pad
        self.boundary = boundary
        self.max_new = max_new
        self.chunk = boundary.max_tokens or max_new or 1
        self.batch, self.prompt_len = prompt_ids.shape
        self.slots_per_prompt = slots_per_prompt
        self.expand_rows = max(config.num_beams, config.num_return_sequences)
        self.uses_position_ids = accepts_position_ids(model)
        self.one_token_mask_kind = one_token_mask_kind(model, sliding_window(model))
        self.dtype = base_model(model).dtype
        self.device = prompt_ids.device
        self.stop_ids = token_stop(boundary, self.device)
        self.stop_strings = (
            stop_string_criterion(stop_string_tokenizer, boundary.stop_strings)
            if boundary.stop_strings
            else None
        )
        if boundary.is_fixed:
            self.stopping = stopping
        else:
            # Rows with holes are shorter than the batch is wide: the token budget is counted per row.
            self.stopping = StoppingCriteriaList(
                [c for c in stopping if not isinstance(c, MaxLengthCriteria)]
            )
        self.owners = list(range(self.batch))
        self._present = self.owners
        self.cost = cost
        # Only chunks that end early leave rows waiting while others draw.
        self.skipped = None if boundary.is_fixed else SkippedDraws(self.batch * slots_per_prompt, self.device)
        # Prefill each prompt once.
        self.cache = new_cache(model) if cache is None else cache  # an empty one to fill: generate's own
        self.mask = prompt_mask.long()
        self.cost.count_forward(self._present)
        self.logits = self._forward(prompt_ids)
        self.seqs = prompt_ids
        self.response_lengths = [0] * self.batch  # host copy, refreshed once a round
        self._fresh = True

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``[R, T] -> [R, V]`` next-token logits after feeding ``ids`` (the mask already covers them)."""
        positions = (
            (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :] if self.uses_position_ids else None
        )
        mask = self.mask
        if ids.shape[1] == 1 and self.one_token_mask_kind is not None:
            # One token behind the cache: its 4-D mask made here in one operation (see _compat).
            mask = one_token_mask(mask, self.one_token_mask_kind, self.dtype)
        logits = forward_with_cache(
            self.model, ids, mask, self.cache, position_ids=positions, logits_to_keep=1
        ).logits[:, -1]
        return mask_rows_past(logits.float(), self.pair_rows)

    def expand(self, parents: Sequence[int], repeats: Sequence[int]) -> None:
        live = torch.as_tensor(list(parents), dtype=torch.long, device=self.device)
        owners = [self.owners[p] for p in parents]
        lengths = [self.response_lengths[p] for p in parents]
        if self._fresh:
            self._fresh = False  # just prefilled: every row's logits are current
        else:
            # Survivors only: feed each one's last sampled token (one forward for W rows, not W*K).
            select_cache_rows(self.cache, live)
            self.seqs, self.mask, self.logits = self.seqs[live], self.mask[live], self.logits[live]
            self.owners = owners
            self._present = sorted(set(owners))
            self.cost.count_forward(self._present)
            fresh = self._forward(self.seqs[:, -1:])
            if self.boundary.is_fixed:
                self.logits = fresh
            else:
                # A row whose chunk ended early has its last token fed already: its logits are kept.
                self.logits = torch.where(self.mask[:, -1:] == 1, fresh, self.logits)
            live = torch.arange(live.numel(), device=self.device)
        index = live.repeat_interleave(torch.as_tensor(list(repeats), dtype=torch.long, device=self.device))
        select_cache_rows(self.cache, index)
        self.seqs, self.mask, self.logits = self.seqs[index], self.mask[index], self.logits[index]
        self.owners = [o for o, r in zip(owners, repeats) for _ in range(r)]
        self._present = sorted(set(owners))
        self.response_lengths = [n for n, r in zip(lengths, repeats) for _ in range(r)]

    def _slots(self) -> list[int]:
        """Each row's fixed sampling slot: prompt ``b``'s rows take slots ``b * slots_per_prompt, ...``."""
        taken: dict[int, int] = {}
        slots = []
        for b in self.owners:
            slots.append(b * self.slots_per_prompt + taken.get(b, 0))
            taken[b] = taken.get(b, 0) + 1
        return slots

    def _draw(
        self,
        probs: torch.Tensor,
        slots: list[int],
        slot_of_row: torch.Tensor | None,
        active: list[bool],
        waiting: list[bool],
    ) -> torch.Tensor:
        """``[R, V] -> [R]`` one sampled token per row, drawn in the rows' fixed slots.

        ``slots`` (host) and ``slot_of_row`` (``None`` when the rows fill every slot in order) say
        where each row draws; ``active``/``waiting`` (host) which rows sample now, and which wait for
        the others and take this draw later.
        """
        full = probs
        if slot_of_row is not None:
            # Empty slots draw from any distribution: only their share of the random stream matters.
            full = probs.new_ones((self.batch * self.slots_per_prompt, probs.shape[-1]))
            full[slot_of_row] = probs
        if self.skipped is None:
            tokens = torch.multinomial(full, num_samples=1).squeeze(1)
        else:
            tokens = self.skipped.draw(full, slots, active, waiting)
        return tokens if slot_of_row is None else tokens[slot_of_row]

    def sample(self) -> SampledChunks:
        rows = self.seqs.shape[0]
        room = [self.max_new - n for n in self.response_lengths]
        steps = min(self.chunk, max(room))
        processors = (
            self.processors
            if self.generate_rows
            else processors_for_rows(self.processors, self.owners, self.batch, self.expand_rows)
        )
        slots = self._slots()
        in_order = len(slots) == self.batch * self.slots_per_prompt
        slot_of_row = None if in_order else torch.tensor(slots, dtype=torch.long, device=self.device)
        # A row samples while its response goes on, its chunk is open and its budget allows.
        cap = torch.tensor(room, device=self.device).clamp(max=steps)
        active = cap > 0
        ended = torch.zeros(rows, dtype=torch.bool, device=self.device)  # the response ended
        lengths = torch.zeros(rows, dtype=torch.long, device=self.device)
        holes = not self.boundary.is_fixed
        # Host copies for the draws: which rows sample, and which wait for the others' chunks to end.
        host_active, host_waiting = [r > 0 for r in room], [False] * rows
        if self.skipped is not None:
            self.skipped.release(set(slots))
        logits = self.logits
        taken = 0
        for step in range(steps):
            view = _compact(self.seqs, self.mask) if holes else self.seqs
            scores = processors(view, logits)
            if self.greedy:
                tokens = scores.argmax(-1)
            else:
                tokens = self._draw(
                    torch.softmax(scores, dim=-1), slots, slot_of_row, host_active, host_waiting
                )
            tokens = torch.where(active, tokens, torch.full_like(tokens, self.pad))
            self.seqs = torch.cat([self.seqs, tokens[:, None]], dim=-1)
            self.mask = torch.cat([self.mask, active[:, None].long()], dim=-1)
            lengths += active.long()
            view = _compact(self.seqs, self.mask) if holes else self.seqs
            stop = self.stopping(view, scores) & active
            ended |= stop
            was_active = active
            active = active & ~stop & (lengths < cap)
            if self.stop_ids is not None:
                active &= ~torch.isin(tokens, self.stop_ids)
            if self.stop_strings is not None:
                active &= ~self.stop_strings(view, scores)
            taken += 1
            if step + 1 == steps:
                break
            if holes:
                # A row waits when its chunk has ended but not its response nor its budget.
                waiting = ~active & ~ended & (lengths < cap)
                host_active, host_waiting = torch.stack([active, waiting]).tolist()
                any_active = any(host_active)
            else:
                any_active = bool(active.any())
            # Like generate: no more draws (nor forwards) once every row has ended its chunk.
            if not any_active:
                break
            self.cost.count_forward(self._present)
            fresh = self._forward(tokens[:, None])
            # A row whose chunk ended at this token keeps these logits for the next round.
            logits = torch.where(was_active[:, None], fresh, logits) if holes else fresh
        self.logits = logits
        host_lengths = lengths.tolist()
        self.cost.add("large_tokens", self.owners, host_lengths)
        self.response_lengths = [n + k for n, k in zip(self.response_lengths, host_lengths)]
        finished = [bool(e) or n >= self.max_new for e, n in zip(ended.tolist(), self.response_lengths)]
        # Once a row's chunk ends it stays ended within the round: its tokens lead its chunk.
        chunk = self.seqs[:, -taken:] if taken else self.seqs[:, :0]
        return SampledChunks(chunk, lengths, finished)

    def responses(self) -> list[list[int]]:
        ids = self.seqs[:, self.prompt_len :].tolist()
        if self.boundary.is_fixed:
            return [r[:n] for r, n in zip(ids, self.response_lengths)]
        mask = self.mask[:, self.prompt_len :].tolist()
        return [[t for t, m in zip(r, k) if m] for r, k in zip(ids, mask)]
