"""Where a search's candidates come from and how the pair scores them.

A *candidate source* samples one chunk for every live row and re-indexes its rows between rounds:
[`LocalModelSource`][w2s_generate.LocalModelSource] samples from a local large model with
its KV cache; [`TextSamplerSource`][w2s_generate.TextSamplerSource] asks a text sampler
(e.g. a completions server). A *scorer* keeps the pair's incremental state in step with the rows:
[`IdScorer`][w2s_generate.IdScorer] feeds the chunks' ids straight to the pair (shared
vocabulary), [`TextScorer`][w2s_generate.TextScorer] feeds the responses' text re-encoded
with the pair's tokenizer. The search loop (``search.py``) sees only these two interfaces.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.stopping_criteria import MaxLengthCriteria, StopStringCriteria

from ._compat import accepts_position_ids, forward_with_cache, new_cache, select_cache_rows
from .bridge import advance_texts
from .drafting import commit_round, fit_rows, round_masks, speculative_choice, stack_round
from .pairs import WeakPair
from .policies import ChunkBoundary, SearchCost, token_stop
from .row_processors import processors_for_rows
from .samplers import Chunk, ChunkSampler
from .scoring import GuidanceState


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
    ) -> None:
        self.model = model
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
        self.cache = new_cache(model)
        self.mask = prompt_mask.long()
        self._count_forward()
        self.logits = self._forward(prompt_ids)
        self.seqs = prompt_ids
        self.response_lengths = [0] * self.batch  # host copy, refreshed once a round
        self._fresh = True

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``[R, T] -> [R, V]`` next-token logits after feeding ``ids`` (the mask already covers them)."""
        positions = (
            (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :] if self.uses_position_ids else None
        )
        logits = forward_with_cache(
            self.model, ids, self.mask, self.cache, position_ids=positions, logits_to_keep=1
        ).logits[:, -1]
        return mask_rows_past(logits.float(), self.pair_rows)

    def _count_forward(self) -> None:
        """One large-model forward for every prompt that has a row in it."""
        counter = self.cost.large_forwards
        for prompt in self._present:
            counter[prompt] += 1

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
            self._count_forward()
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
        processors = processors_for_rows(self.processors, self.owners, self.batch, self.expand_rows)
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
            tokens = self._draw(torch.softmax(scores, dim=-1), slots, slot_of_row, host_active, host_waiting)
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
            self._count_forward()
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


class TextSamplerSource(CandidateSource):
    """Chunks asked of a text sampler (a large model reached only as text, e.g. a completions server).

    Each round asks the sampler for ``repeats[i]`` continuations of parent ``i``'s text (``prompt +
    response so far``), one request batch per distinct count. A chunk boundary with stop strings cuts
    each chunk after its first stop string (the tokens after it were spent all the same).

    Examples:
        >>> class Fixed:
        ...     def sample(self, prefixes, n, max_tokens):
        ...         return [[Chunk(" so good. Then", False)] * n for _ in prefixes]
        >>> boundary = ChunkBoundary(4, stop_strings=[". "])
        >>> source = TextSamplerSource(Fixed(), ["the film was"], boundary, 8, SearchCost.zeros(1))
        >>> source.expand([0], [1])
        >>> chunks = source.sample()
        >>> source.responses(), source.cost.large_tokens   # cut after the stop string; 4 tokens spent
        ([' so good. '], [4])
    """

    def __init__(
        self,
        sampler: ChunkSampler,
        prompts: list[str],
        boundary: ChunkBoundary,
        max_new: int,
        cost: SearchCost,
    ) -> None:
        if boundary.stop_token_ids:
            raise ValueError(
                "ChunkBoundary(stop_token_ids=...) needs the large model's token ids, which a text sampler does "
                "not return: use stop_strings instead."
            )
        self.sampler = sampler
        self.prompts = prompts
        self.boundary = boundary
        self.max_new = max_new
        self.chunk = boundary.max_tokens or max_new
        self.cost = cost
        self.owners = list(range(len(prompts)))
        self.texts = [""] * len(prompts)
        self.response_lengths = [0] * len(prompts)  # tokens asked for so far: the budget spent
        self._requests: list[tuple[int, int]] = []  # (parent text index, count), set by expand

    def expand(self, parents: Sequence[int], repeats: Sequence[int]) -> None:
        self._requests = list(zip(parents, repeats))
        self.owners = [self.owners[p] for p, r in self._requests for _ in range(r)]
        self.texts = [self.texts[p] for p, r in self._requests for _ in range(r)]
        self.response_lengths = [self.response_lengths[p] for p, r in self._requests for _ in range(r)]

    def sample(self) -> SampledChunks:
        steps = min(self.chunk, max(self.max_new - n for n in self.response_lengths))
        chunks: list[Chunk | None] = [None] * len(self.owners)
        # One sampler call per distinct count; rows are parent-major, each parent's copies in a run.
        starts = list(accumulate((count for _, count in self._requests), initial=0))
        for count in sorted({c for _, c in self._requests}):
            group = [i for i, (_, c) in enumerate(self._requests) if c == count]
            prefixes = [self.prompts[self.owners[starts[i]]] + self.texts[starts[i]] for i in group]
            sampled = _sample(self.sampler, prefixes, count, steps)
            for g, i in enumerate(group):
                chunks[starts[i] : starts[i] + count] = sampled[g * count : (g + 1) * count]
        finished = []
        for i, chunk in enumerate(chunks):
            text, cut = self.boundary.cut_text(chunk.text, self.texts[i])
            self.texts[i] += text
            self.response_lengths[i] += steps
            finished.append((chunk.finished and not cut) or self.response_lengths[i] >= self.max_new)
        self.cost.add("large_tokens", self.owners, [steps] * len(self.owners))
        present = sorted(set(self.owners))
        self.cost.add("large_forwards", present, [steps] * len(present))
        return SampledChunks(None, None, finished)

    def responses(self) -> list[str]:
        return list(self.texts)


def _sample(sampler: ChunkSampler, prefixes: list[str], n: int, max_tokens: int) -> list[Chunk]:
    """``n`` chunks per prefix, flattened prefix-major; a sampler that returns another count is refused."""
    sampled = sampler.sample(prefixes, n, max_tokens)
    counts = [len(per_prefix) for per_prefix in sampled]
    if len(sampled) != len(prefixes) or any(c != n for c in counts):
        raise ValueError(
            f"{type(sampler).__name__}.sample was asked for {n} continuations of each of {len(prefixes)} "
            f"prefixes and returned {counts}: a ChunkSampler returns exactly n Chunks per prefix."
        )
    chunks = [c for per_prefix in sampled for c in per_prefix]
    if not all(isinstance(c, Chunk) for c in chunks):
        bad = next(type(c).__name__ for c in chunks if not isinstance(c, Chunk))
        raise TypeError(
            f"{type(sampler).__name__}.sample returned a {bad}; it must return w2s_generate.Chunk objects."
        )
    for chunk in chunks:
        if not isinstance(chunk.text, str):
            raise TypeError(
                f"{type(sampler).__name__}.sample returned a Chunk whose text is {chunk.text!r:.40}: a Chunk's text is "
                "a str (the continuation; '' for none)."
            )
        if not isinstance(chunk.finished, bool):
            raise TypeError(
                f"{type(sampler).__name__}.sample returned a Chunk whose finished is {chunk.finished!r:.40}: it is a "
                "bool (whether the response ended)."
            )
    return chunks


class IdScorer:
    """The pair reads the large model's chunk ids directly (a shared vocabulary).

    Examples:
        >>> from w2s_generate.candidates import SampledChunks
        >>> scorer = IdScorer(pair.start(["the film was"]), SearchCost.zeros(1))
        >>> scorer.select([0, 0])   # two rows of prompt 0
        >>> chunks = SampledChunks(torch.tensor([[218, 257], [218, 0]]), torch.tensor([2, 1]), [False, False])
        >>> scorer.advance(chunks, None, [0, 0])
        >>> scorer.cost.weak_tokens, scorer.state.scores.shape
        ([3], torch.Size([2]))
    """

    def __init__(self, state: GuidanceState, cost: SearchCost) -> None:
        self.state = state
        self.cost = cost

    def select(self, index: Sequence[int]) -> None:
        self.state.select(torch.as_tensor(list(index), dtype=torch.long, device=self.state.scores.device))

    def advance(self, chunks: SampledChunks, responses: list, owners: list[int]) -> None:
        if chunks.scored:
            return  # the drafting source has stepped the state (and counted its tokens) already
        self.state.extend(chunks.ids, chunks.lengths)
        self.cost.add("weak_tokens", owners, chunks.lengths.tolist())


class TextScorer:
    """The pair reads each response's text, re-encoded with its own tokenizer (only changed tails are fed).

    Args:
        state: the pair's state, one row per candidate.
        pair: the weak pair.
        to_texts: ``(responses, owners) -> texts``: identity for a text source, decoding after the
            prompt for a local model with another tokenizer.
        cost: where the weak tokens fed are counted.

    Examples:
        >>> scorer = TextScorer(pair.start(["the film was"]), pair, lambda texts, owners: texts, SearchCost.zeros(1))
        >>> scorer.advance(None, [" so good"], [0])
        >>> torch.allclose(scorer.state.scores, pair.score(["the film was"], [" so good"]), atol=1e-5)
        True
    """

    def __init__(
        self,
        state: GuidanceState,
        pair: WeakPair,
        to_texts: Callable[[list, list[int]], list[str]],
        cost: SearchCost,
    ) -> None:
        self.state = state
        self.pair = pair
        self.to_texts = to_texts
        self.cost = cost
        self.weak_rows: list[list[int]] = [[] for _ in range(state.scores.shape[0])]

    def select(self, index: Sequence[int]) -> None:
        index = list(index)
        self.state.select(torch.as_tensor(index, dtype=torch.long, device=self.state.scores.device))
        self.weak_rows = [list(self.weak_rows[i]) for i in index]

    def advance(self, chunks: SampledChunks, responses: list, owners: list[int]) -> None:
        fed = advance_texts(self.pair, self.state, self.weak_rows, self.to_texts(responses, owners))
        self.cost.add("weak_tokens", owners, fed)


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
            self._count_forward()
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

    _count_forward = LocalModelSource._count_forward

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
            self._count_forward()
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
