"""Chunk-level beam search (CBS) and best-of-N over a frozen large model, scored by a weak pair.

Each round, every live beam of every prompt samples ``K`` chunks of ``L`` tokens from the large model
(with its own logits processors, so temperature/top-k/top-p apply); each candidate is scored by the
pair's log-ratio of the whole response so far; the best ``W`` distinct candidates per prompt survive.
The large model's KV cache is prefilled once per prompt and re-indexed between rounds; the pair scores
each chunk incrementally from its own cache ([`GuidanceState`][w2s_generate.GuidanceState]).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedTokenizerBase, StoppingCriteriaList

from ._compat import accepts_position_ids, new_cache, select_cache_rows
from .bridge import TextBridge, advance_texts
from .pairs import WeakPair
from .processor import check_shared_vocabulary, rows_look_padded
from .row_processors import check_processors, processors_for_rows
from .samplers import Chunk, ChunkSampler
from .strategy import SearchOutput, Strategy, TextSearchOutput, check_prompt_rows


@dataclass
class RoundTrace:
    """What one round of the search saw and kept (returned with ``return_trace=True``).

    Attributes:
        round: 0-based round number.
        prompt_index: ``[R]`` which prompt each candidate belongs to.
        responses: each candidate's generated token ids so far (large-model vocabulary).
        scores: ``[R]`` each candidate's objective (the pair's log-ratio).
        side_scores: ``[S, R]`` each side's log-likelihood of the candidate.
        kept: ``[R]`` whether the candidate survived the round.
        component_scores: name -> ``[R]`` each pair's own score (one entry per pair of an ensemble):
            a strong model gaming one judge shows as one component rising while another falls.

    Examples:
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=8,
        ...                      return_dict_in_generate=True, return_trace=True)
        >>> first = out.trace[0]   # 2 prompts x W=2 beams x K=2 successors, chunks of 4 tokens
        >>> len(out.trace), first.scores.shape, int(first.kept.sum())
        (2, torch.Size([8]), 4)
    """

    round: int
    prompt_index: torch.Tensor
    responses: list[list[int]]
    scores: torch.Tensor
    side_scores: torch.Tensor
    kept: torch.Tensor
    component_scores: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Finished:
    response: list[int] | str
    score: float


@dataclass
class _Pool:
    """The W best distinct hypotheses of one prompt: live rows of the batch and finished responses."""

    finished: list[_Finished] = field(default_factory=list)
    done: bool = False


class ChunkBeamSearch(Strategy):
    """Chunk-level beam search steered by a weak pair (Zhou et al., 2024, arXiv 2405.19262).

    Use it with plain transformers (``custom_generate=``) or after
    [`w2s_generate.enable`][w2s_generate.enable] (``strategy=``). Pass ``do_sample=True`` and the
    usual sampling settings; ``max_new_tokens`` bounds the response. generate's processors
    (repetition penalty, bad words, minimum length, ``prefix_allowed_tokens_fn``, ...) apply to every
    candidate as in plain sampling, each row mapped to its prompt; those tied to generate's own row
    layout are refused by name. ``num_return_sequences <= beam_width`` returns the best ones (the
    best is repeated when fewer distinct hypotheses exist);
    ``return_dict_in_generate=True`` returns a [`SearchOutput`][w2s_generate.SearchOutput] with each
    sequence's log-ratio, and ``return_trace=True`` adds the per-round trace.

    Args:
        pair: the weak pair whose log-ratio scores candidates.
        beam_width: W, beams kept per prompt.
        successors_per_beam: K, chunks sampled from each beam per round.
        chunk_length: L, tokens per chunk; ``None`` samples whole responses (best-of-N).
        tokenizer: the large model's tokenizer. Needed when it differs from the pair's (text is then
            bridged by decoding and re-encoding); when not given, the pair's tokenizer is taken to be
            the large model's, which is refused if the output tables differ by more than 1% of rows.

    Examples:
        >>> cbs = ChunkBeamSearch(pair, beam_width=2, successors_per_beam=2, chunk_length=4)
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=16)
    """

    def __init__(
        self,
        pair: WeakPair,
        beam_width: int = 4,
        successors_per_beam: int = 4,
        chunk_length: int | None = 5,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(pair, WeakPair):
            raise TypeError(f"pair must be a w2s_generate.WeakPair; got {type(pair).__name__}.")
        # Booleans are ints to Python, but beam_width=True is a mistake, not a width of 1.
        for name, value in (("beam_width", beam_width), ("successors_per_beam", successors_per_beam)):
            if not _is_count(value):
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
        if chunk_length is not None and not _is_count(chunk_length):
            raise ValueError(
                f"chunk_length must be an integer >= 1 or None (whole responses); got {chunk_length!r}."
            )
        if tokenizer is not None and not hasattr(tokenizer, "get_vocab"):
            raise TypeError(
                f"tokenizer must be the large model's transformers tokenizer; got a {type(tokenizer).__name__}."
            )
        self.pair = pair
        self.beam_width = int(beam_width)
        self.successors_per_beam = int(successors_per_beam)
        self.chunk_length = None if chunk_length is None else int(chunk_length)
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(W={self.beam_width}, K={self.successors_per_beam}, L={self.chunk_length}, "
            f"pair={self.pair!r})"
        )

    # ------------------------------------------------------------------ entry point from generate()
    @torch.no_grad()
    def __call__(
        self,
        model,
        input_ids: torch.LongTensor,
        logits_processor: LogitsProcessorList,
        stopping_criteria: StoppingCriteriaList,
        generation_config: GenerationConfig,
        weak_prompts: list | None = None,
        return_trace: bool = False,
        **model_kwargs,
    ):
        config = generation_config
        self._check_call(model, config, input_ids, model_kwargs.get("attention_mask"))
        expand = max(config.num_beams, config.num_return_sequences)
        prompt_ids = input_ids[::expand]
        mask = model_kwargs.get("attention_mask")
        mask = torch.ones_like(prompt_ids) if mask is None else mask[::expand]
        batch = prompt_ids.shape[0]
        if weak_prompts is not None and len(weak_prompts) != batch:
            raise ValueError(
                f"weak_prompts has {len(weak_prompts)} entries for {batch} prompts: give one per prompt."
            )
        stopping_criteria = self.extend_stopping_criteria(stopping_criteria)
        tokenizer = self.bound_tokenizer or self.tokenizer
        bridge = self._bridge(model, tokenizer)
        pad = _pad_token_id(config)
        streamer = self.bound_streamer
        if streamer is not None:
            if batch != 1:
                raise ValueError(f"A streamer takes one prompt at a time; got a batch of {batch}.")
            streamer.put(prompt_ids.cpu())
        result = _Search(
            self,
            model,
            prompt_ids,
            mask,
            logits_processor,
            stopping_criteria,
            config,
            pad,
            bridge,
            weak_prompts,
            streamer,
        ).run(return_trace)
        if streamer is not None:
            streamer.end()
        if config.return_dict_in_generate:
            return result
        return result.sequences

    @torch.no_grad()
    def run(
        self,
        prompts: list[str],
        sampler: ChunkSampler,
        *,
        weak_prompts: list | None = None,
        max_new_tokens: int = 128,
        num_return_sequences: int = 1,
        return_trace: bool = False,
    ) -> TextSearchOutput:
        """Search with a large model reached only as text (e.g. a completions server).

        Every round asks ``sampler`` for K continuations of at most L tokens of each live beam's text
        (``prompt + response so far``); the pair scores the texts incrementally, as in the
        cross-tokenizer path.

        Args:
            prompts: the prompts exactly as the large model should see them (already templated).
            sampler: where chunks come from, e.g.
                [`CompletionsSampler`][w2s_generate.CompletionsSampler].
            weak_prompts: the prompts as the pair should see them (text or chat messages);
                default ``prompts``.
            max_new_tokens: token budget of each response (L per round).
            num_return_sequences: how many of the best hypotheses to return per prompt (<= W).
            return_trace: add the per-round trace.

        Examples:
            >>> sampler = CompletionsSampler("http://127.0.0.1:8000/v1", "my-model")   # doctest: +SKIP
            >>> out = cbs.run(["The movie was"], sampler=sampler, max_new_tokens=50)  # doctest: +SKIP
            >>> out.texts[0], out.log_ratios[0]                                       # doctest: +SKIP
        """
        W, K = self.beam_width, self.successors_per_beam
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(
                f"prompts must be a non-empty list of strings (the large model's prompt text); got {prompts!r:.60}."
            )
        empty = [i for i, p in enumerate(prompts) if not p]
        if empty:
            raise ValueError(
                f"prompts[{empty[0]}] is empty: give the text the large model continues (at least its BOS text)."
            )
        if not _is_count(num_return_sequences) or num_return_sequences > W:
            raise ValueError(
                f"num_return_sequences={num_return_sequences!r} must be an integer between 1 and beam_width={W}."
            )
        if not _is_count(max_new_tokens):
            raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}.")
        if isinstance(weak_prompts, str):
            raise ValueError(
                f"weak_prompts must be a list (one per prompt); got a str: wrap it, [{weak_prompts!r:.40}]."
            )
        if not callable(getattr(sampler, "sample", None)):
            raise TypeError(
                f"sampler must have a sample(prefixes, n, max_tokens) method (e.g. CompletionsSampler); "
                f"got a {type(sampler).__name__}."
            )
        weak_prompts = list(prompts) if weak_prompts is None else list(weak_prompts)
        if len(weak_prompts) != len(prompts):
            raise ValueError(f"weak_prompts has {len(weak_prompts)} entries for {len(prompts)} prompts.")
        chunk = self.chunk_length or max_new_tokens
        owners = [b for b in range(len(prompts)) for _ in range(W * K)]
        state = self.pair.start(weak_prompts)
        state.select(torch.tensor(owners))
        texts = [""] * len(owners)
        weak_rows: list[list[int]] = [[] for _ in owners]
        pools = [_Pool() for _ in prompts]
        trace: list[RoundTrace] = []
        steps = min(chunk, max_new_tokens)
        children = _sample(sampler, list(prompts), W * K, steps)
        generated, round_index = 0, 0
        while True:
            generated += steps
            texts = [t + c.text for t, c in zip(texts, children)]
            finished = [c.finished or generated >= max_new_tokens for c in children]
            advance_texts(self.pair, state, weak_rows, texts)
            scores = state.scores
            keep, kept_finished = select_hypotheses(pools, owners, texts, scores.tolist(), finished, W)
            if return_trace:
                kept = torch.zeros(len(owners), dtype=torch.bool)
                kept[keep + kept_finished] = True
                trace.append(
                    RoundTrace(
                        round_index,
                        torch.tensor(owners),
                        list(texts),
                        scores.cpu(),
                        state.side_scores.cpu(),
                        kept,
                        {
                            n: torch.tensor(v) @ state.side_scores.cpu()
                            for n, v in self.pair.components.items()
                        },
                    )
                )
            round_index += 1
            if not keep or generated >= max_new_tokens:
                break
            # Survivors, each repeated K times, on both sides; then K chunks per survivor.
            expand = [r for r in keep for _ in range(K)]
            state.select(torch.tensor(expand))
            owners = [owners[r] for r in expand]
            weak_rows = [list(weak_rows[r]) for r in expand]
            texts = [texts[r] for r in expand]
            steps = min(chunk, max_new_tokens - generated)
            children = _sample(
                sampler, [prompts[owners[i * K]] + texts[i * K] for i in range(len(keep))], K, steps
            )
        live_scores = scores.tolist()
        out_texts: list[str] = []
        out_scores: list[float] = []
        for b, pool in enumerate(pools):
            hyps = [(f.score, f.response) for f in pool.finished]
            hyps += [(live_scores[r], texts[r]) for r in keep if owners[r] == b]
            hyps.sort(key=lambda h: -h[0])
            hyps += [hyps[0]] * max(num_return_sequences - len(hyps), 0)
            for score, text in hyps[:num_return_sequences]:
                out_texts.append(text)
                out_scores.append(score)
        scores = torch.tensor(out_scores)
        return TextSearchOutput(
            texts=out_texts, log_ratios=scores, sequences_scores=scores, trace=trace or None
        )

    def _check_call(
        self,
        model,
        config: GenerationConfig,
        input_ids: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(
                f"{type(self).__name__} drives decoder-only models; {model.config.model_type} is encoder-decoder."
            )
        if input_ids is not None:
            check_prompt_rows(model, config, input_ids, mask)
        if not config.do_sample:
            raise ValueError(
                f"{type(self).__name__} samples candidate chunks: pass do_sample=True (with temperature/top_k/top_p "
                "as wished)."
            )
        if config.num_beams != 1:
            raise ValueError(
                f"num_beams={config.num_beams}: {type(self).__name__} keeps its own beams; set beam_width instead."
            )
        if config.num_return_sequences > self.beam_width:
            raise ValueError(
                f"num_return_sequences={config.num_return_sequences} exceeds beam_width={self.beam_width}: the search "
                "keeps only beam_width hypotheses per prompt. Raise beam_width or ask for fewer sequences."
            )

    def _bridge(self, model, tokenizer) -> TextBridge | None:
        """``None`` when the pair reads the large model's token ids directly, else a text bridge."""
        strong_rows = int(model.get_output_embeddings().weight.shape[0])
        if tokenizer is None:
            if rows_look_padded(strong_rows, self.pair.vocab_rows):
                return None
            raise ValueError(
                f"The large model has {strong_rows} output rows and the weak pair {self.pair.vocab_rows}: they do not "
                f"share a vocabulary, so pass the large model's tokenizer (tokenizer=... to {type(self).__name__}, or "
                "to generate() with strategy=) to bridge the two through text."
            )
        try:
            check_shared_vocabulary(self.pair, tokenizer)
        except ValueError:
            return TextBridge(tokenizer, self.pair)
        return None


def _is_count(value: object) -> bool:
    """An integer >= 1 that is not a bool (numpy integers are fine)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


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
    return chunks


class BestOfN(ChunkBeamSearch):
    """Best of ``n`` whole samples by the pair's log-ratio: CBS with W=1, K=n and whole responses.

    Examples:
        >>> bon = BestOfN(pair, n=16)
        >>> out = model.generate(**inputs, custom_generate=bon, do_sample=True, max_new_tokens=32)
    """

    def __init__(self, pair: WeakPair, n: int = 16, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        if not _is_count(n):
            raise ValueError(f"n must be an integer >= 1; got {n!r}.")
        super().__init__(pair, beam_width=1, successors_per_beam=n, chunk_length=None, tokenizer=tokenizer)
        self.n = n

    def __repr__(self) -> str:
        return f"BestOfN(n={self.n}, pair={self.pair!r})"


def select_hypotheses(
    pools: list[_Pool],
    owners: list[int],
    responses: list,
    scores: list[float],
    finished: list[bool],
    width: int,
) -> tuple[list[int], list[int]]:
    """Keep the best ``width`` distinct hypotheses of each prompt among its pool and this round's rows.

    Responses are token-id lists or texts; identical ones take one slot. Finished rows that survive
    move into their prompt's pool. Returns the live rows to expand and the finished rows kept.
    """
    by_prompt: dict[int, list[int]] = {}
    for row, owner in enumerate(owners):
        by_prompt.setdefault(owner, []).append(row)
    keep_rows: list[int] = []
    kept_finished_rows: list[int] = []
    for b, pool in enumerate(pools):
        if pool.done:
            continue
        candidates: list[tuple[float, object, int | None, _Finished | None]] = []
        for item in pool.finished:
            candidates.append((item.score, _key(item.response), None, item))
        for row in by_prompt.get(b, []):
            candidates.append((scores[row], _key(responses[row]), row, None))
        # Higher score first; among ties the earlier candidate (the pool, then row order).
        order = sorted(range(len(candidates)), key=lambda i: -candidates[i][0])
        seen: set = set()
        kept: list[_Finished] = []
        live: list[int] = []
        for i in order:
            score, key, row, item = candidates[i]
            if key in seen:
                continue  # identical hypotheses take one slot
            seen.add(key)
            if item is not None:
                kept.append(item)
            elif finished[row]:
                kept.append(_Finished(responses[row], score))
                kept_finished_rows.append(row)
            else:
                live.append(row)
            if len(seen) == width:
                break
        pool.finished = kept
        pool.done = not live
        keep_rows.extend(live)
    return keep_rows, kept_finished_rows


def _key(response: list[int] | str):
    return response if isinstance(response, str) else tuple(response)


def _pad_token_id(config: GenerationConfig) -> int:
    if config.pad_token_id is not None:
        return int(config.pad_token_id)
    eos = config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return int(eos) if eos is not None else 0


class _Search:
    """One run of the search over a batch of prompts. Rows: the live candidates of all prompts."""

    def __init__(
        self,
        strategy,
        model,
        prompt_ids,
        prompt_mask,
        processors,
        stopping,
        config,
        pad,
        bridge,
        weak_prompts,
        streamer,
    ):
        self.s = strategy
        self.model = model
        self.prompt_ids = prompt_ids
        self.prompt_mask = prompt_mask.long()
        self.processors = processors
        self.stopping = stopping
        self.config = config
        self.pad = pad
        self.bridge = bridge
        self.streamer = streamer
        self.streamed = 0
        self.batch = prompt_ids.shape[0]
        self.prompt_len = prompt_ids.shape[1]
        self.max_new = max(config.max_length - self.prompt_len, 0)
        self.chunk = strategy.chunk_length or self.max_new or 1
        self.uses_position_ids = accepts_position_ids(model)
        # generate's rows per prompt, for which its processors were prepared.
        self.expand = max(config.num_beams, config.num_return_sequences)
        check_processors(processors, type(strategy).__name__)
        default_weak_prompts = self._default_weak_prompts()  # also hands the prompts to the bridge
        self.weak_prompts = weak_prompts if weak_prompts is not None else default_weak_prompts
        self.trace: list[RoundTrace] = []

    # ------------------------------------------------------------------ helpers (tensors)
    def _default_weak_prompts(self) -> list:
        """The prompts as the large model saw them: its ids, or their text across tokenizers."""
        rows = [
            [t for t, m in zip(ids, mask) if m]
            for ids, mask in zip(self.prompt_ids.tolist(), self.prompt_mask.tolist())
        ]
        return rows if self.bridge is None else self.bridge.start(rows)

    @staticmethod
    def _slots(owners: list[int], per_prompt: int, batch: int) -> torch.Tensor | None:
        """Each row's fixed sampling slot (``None`` when the rows fill all ``batch * per_prompt``).

        Rows of prompt ``b`` take slots ``b * per_prompt, ...``; every step draws for all slots, so
        the random stream of a slot never depends on how many rows other prompts still hold (with
        ``W = K = 1`` it is plain sampling's, row for row, also after some rows have finished).
        """
        if len(owners) == batch * per_prompt:
            return None  # rows are prompt-major and full: slot i is row i
        taken: dict[int, int] = {}
        slots = []
        for b in owners:
            slots.append(b * per_prompt + taken.get(b, 0))
            taken[b] = taken.get(b, 0) + 1
        return torch.tensor(slots, dtype=torch.long)

    @staticmethod
    def _draw(probs: torch.Tensor, slot_of_row: torch.Tensor | None, slots: int) -> torch.Tensor:
        """``[R, V] -> [R]`` one sampled token per row, drawn in the rows' fixed slots."""
        if slot_of_row is None:
            return torch.multinomial(probs, num_samples=1).squeeze(1)
        # Empty slots draw from any distribution: only their share of the random stream matters.
        full = probs.new_ones((slots, probs.shape[-1]))
        full[slot_of_row] = probs
        return torch.multinomial(full, num_samples=1).squeeze(1)[slot_of_row]

    def _forward(self, ids: torch.Tensor, cache) -> torch.Tensor:
        """``[R, T] -> [R, V]`` next-token logits after feeding ``ids`` (the mask already covers them)."""
        kwargs = {"input_ids": ids, "attention_mask": self.mask, "past_key_values": cache, "use_cache": True}
        if self.uses_position_ids:
            kwargs["position_ids"] = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        return self.model(**kwargs, logits_to_keep=1).logits[:, -1].float()

    # ------------------------------------------------------------------ the search
    def run(self, return_trace: bool) -> SearchOutput:
        W, K = self.s.beam_width, self.s.successors_per_beam
        device = self.prompt_ids.device
        # Prefill each prompt once, then expand its cache to the first round's W*K rows.
        cache = new_cache(self.model)
        self.mask = self.prompt_mask
        logits = self._forward(self.prompt_ids, cache)
        first = torch.arange(self.batch, device=device).repeat_interleave(W * K)
        select_cache_rows(cache, first)
        logits, self.mask = logits[first], self.mask[first]
        seqs = self.prompt_ids[first]
        prompt_of_row = first
        weak = self.s.pair.start(self.weak_prompts)
        weak.select(first)
        weak_rows = [[] for _ in range(first.numel())] if self.bridge is not None else None
        pools = [_Pool() for _ in range(self.batch)]
        resp_len = torch.zeros(first.numel(), dtype=torch.long, device=device)
        owners = first.tolist()  # host copy of prompt_of_row
        generated = 0
        round_index = 0
        while True:
            # 1. Sample one chunk of L tokens for every live row from the large model, with
            #    generate's processors told which prompt each row belongs to.
            steps = min(self.chunk, self.max_new - generated)
            rows = seqs.shape[0]
            processors = processors_for_rows(self.processors, owners, self.batch, self.expand)
            slot_of_row = self._slots(owners, W * K, self.batch)
            if slot_of_row is not None:
                slot_of_row = slot_of_row.to(device)
            unfinished = torch.ones(rows, dtype=torch.bool, device=device)
            lengths = torch.zeros(rows, dtype=torch.long, device=device)
            taken = 0
            for step in range(steps):
                scores = processors(seqs, logits)
                probs = torch.softmax(scores, dim=-1)
                tokens = self._draw(probs, slot_of_row, self.batch * W * K)
                tokens = torch.where(unfinished, tokens, torch.full_like(tokens, self.pad))
                seqs = torch.cat([seqs, tokens[:, None]], dim=-1)
                self.mask = torch.cat([self.mask, unfinished[:, None].long()], dim=-1)
                lengths += unfinished.long()
                unfinished = unfinished & ~self.stopping(seqs, scores)
                taken += 1
                # Like generate: no more draws (nor forwards) once every row has finished.
                if step + 1 == steps or not bool(unfinished.any()):
                    break
                logits = self._forward(tokens[:, None], cache)
            generated += steps
            resp_len = resp_len + lengths
            chunk = seqs[:, -taken:] if taken else seqs[:, :0]
            finished = ~unfinished | (generated >= self.max_new)
            # 2. Score every candidate by the pair's log-ratio of its whole response so far.
            if self.bridge is None:
                weak.extend(chunk, lengths)
            else:
                self.bridge.advance(weak, weak_rows, seqs[:, self.prompt_len :], resp_len, prompt_of_row)
            scores_now = weak.scores
            # 3. Keep the best W distinct hypotheses per prompt (finished ones stay in the pool).
            keep_rows = self._select(pools, prompt_of_row, seqs, resp_len, finished, scores_now, W)
            if return_trace:
                kept = torch.zeros(rows, dtype=torch.bool)
                kept[keep_rows + self._kept_finished] = True
                self.trace.append(
                    RoundTrace(
                        round_index,
                        prompt_of_row.cpu(),
                        [r[:n] for r, n in zip(seqs[:, self.prompt_len :].tolist(), resp_len.tolist())],
                        scores_now.cpu(),
                        weak.side_scores.cpu(),
                        kept,
                        {
                            name: torch.tensor(vector) @ weak.side_scores.cpu()
                            for name, vector in self.s.pair.components.items()
                        },
                    )
                )
            self._stream(pools, seqs, keep_rows, prompt_of_row)
            round_index += 1
            if not keep_rows or generated >= self.max_new:
                live = torch.as_tensor(keep_rows, dtype=torch.long, device=device)
                return self._finish(
                    pools,
                    seqs[live],
                    resp_len[live],
                    prompt_of_row[live],
                    weak.scores[live.to(weak.scores.device)],
                )
            # 4. Re-index both caches: survivors, each repeated K times.
            live = torch.as_tensor(keep_rows, dtype=torch.long, device=device)
            select_cache_rows(cache, live)
            seqs, self.mask, prompt_of_row, resp_len = (
                seqs[live],
                self.mask[live],
                prompt_of_row[live],
                resp_len[live],
            )
            logits = self._forward(seqs[:, -1:], cache)
            expand = torch.arange(live.numel(), device=device).repeat_interleave(K)
            owners = [owners[r] for r in keep_rows for _ in range(K)]
            select_cache_rows(cache, expand)
            seqs, self.mask, prompt_of_row = seqs[expand], self.mask[expand], prompt_of_row[expand]
            logits, resp_len = logits[expand], resp_len[expand]
            weak.select(live.to(weak.scores.device)[expand.to(weak.scores.device)])
            if weak_rows is not None:
                weak_rows = [list(weak_rows[int(live[int(i)])]) for i in expand.tolist()]

    def _select(self, pools, prompt_of_row, seqs, resp_len, finished, scores, W) -> list[int]:
        """Update each prompt's pool; return the live rows to expand next round (host sync, once a round)."""
        responses = [r[:n] for r, n in zip(seqs[:, self.prompt_len :].tolist(), resp_len.tolist())]
        keep_rows, self._kept_finished = select_hypotheses(
            pools, prompt_of_row.tolist(), responses, scores.tolist(), finished.tolist(), W
        )
        return keep_rows

    def _stream(self, pools, seqs, keep_rows, prompt_of_row) -> None:
        """Send the prefix shared by every surviving hypothesis to the streamer."""
        if self.streamer is None:
            return
        hyps = [f.response for f in pools[0].finished] + [
            seqs[r, self.prompt_len :].tolist() for r in keep_rows
        ]
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

    def _finish(self, pools, live_seqs, live_len, live_owner, live_scores) -> SearchOutput:
        """Best ``num_return_sequences`` hypotheses per prompt, right-padded into one tensor."""
        n_return = self.config.num_return_sequences
        live_responses = [r[:n] for r, n in zip(live_seqs[:, self.prompt_len :].tolist(), live_len.tolist())]
        live_scores_list = live_scores.tolist()
        owners = live_owner.tolist()
        rows: list[list[int]] = []
        scores: list[float] = []
        for b, pool in enumerate(pools):
            hyps = [(f.score, f.response) for f in pool.finished]
            hyps += [(live_scores_list[i], live_responses[i]) for i, o in enumerate(owners) if o == b]
            hyps.sort(key=lambda h: -h[0])
            # Fewer distinct hypotheses than asked for (e.g. top_k=1): repeat the best, as generate would.
            hyps += [hyps[0]] * max(n_return - len(hyps), 0)
            for score, response in hyps[:n_return]:
                rows.append(self.prompt_ids[b].tolist() + response)
                scores.append(score)
        width = max(len(r) for r in rows)
        sequences = torch.full((len(rows), width), self.pad, dtype=torch.long)
        for i, r in enumerate(rows):
            sequences[i, : len(r)] = torch.tensor(r)
        if self.streamer is not None and rows:
            rest = rows[0][self.prompt_len + self.streamed :]
            if rest:
                self.streamer.put(torch.tensor(rest))
        log_ratios = torch.tensor(scores)
        return SearchOutput(
            sequences=sequences.to(self.prompt_ids.device),
            log_ratios=log_ratios,
            sequences_scores=log_ratios,
            trace=self.trace or None,
        )
