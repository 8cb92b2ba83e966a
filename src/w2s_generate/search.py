"""Chunk-level beam search (CBS) and best-of-N over a frozen large model, scored by a weak pair.

One loop, the paper's pseudo-code, for a local large model and for one reached as text:

1. every live beam of every prompt samples ``K`` chunks (a [`BudgetPolicy`][w2s_generate.BudgetPolicy])
   ending where the [`ChunkBoundary`][w2s_generate.ChunkBoundary] says, from a
   [candidate source][w2s_generate.CandidateSource];
2. each candidate is scored by the pair's log-ratio of the whole response so far, incrementally;
3. a [`SelectionPolicy`][w2s_generate.SelectionPolicy] keeps ``W`` distinct hypotheses per prompt
   (finished ones wait in the prompt's pool);
4. the survivors are expanded: the large model's KV cache and the pair's state are re-indexed.
"""

from __future__ import annotations

import numbers

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedTokenizerBase, StoppingCriteriaList

from ._compat import eos_token_ids, output_rows, pad_token_id
from .boundaries import ChunkBoundary
from .bridge import TextBridge
from .candidates import CandidateSource, LocalModelSource
from .drafted_guidance import check_draftable
from .drafted_source import DraftedModelSource
from .pairs import WeakPair
from .policies import (
    BudgetPolicy,
    ConstantBudget,
    SearchCost,
    SelectionPolicy,
    TopDistinct,
    is_count,
)
from .prefix_streamer import PrefixStreamer
from .processor import check_shared_vocabulary, rows_look_padded
from .row_processors import check_processors
from .samplers import ChunkSampler
from .scorers import IdScorer, TextScorer
from .search_checks import check_boundary_processors, check_call, check_model_kwargs, check_stop_token_ids
from .search_loop import best_hypotheses, run_rounds
from .strategy import (
    SearchOutput,
    Strategy,
    TextSearchOutput,
    check_prompt_rows,
    check_weak_prompts,
    pair_type_error,
    refuse_class,
)
from .text_source import TextSamplerSource


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
    sequence's log-ratio and what the search cost, and ``return_trace=True`` adds the per-round trace.

    How the budget is spent is pluggable (see [policies](policies.md)): ``successors_per_beam`` takes a
    [`BudgetPolicy`][w2s_generate.BudgetPolicy], ``chunk_length`` a
    [`ChunkBoundary`][w2s_generate.ChunkBoundary], ``selection`` a
    [`SelectionPolicy`][w2s_generate.SelectionPolicy].

    Args:
        pair: the weak pair whose log-ratio scores candidates.
        beam_width: W, beams kept per prompt.
        successors_per_beam: K, chunks sampled from each beam per round, or a budget policy
            (e.g. [`ScheduledBudget`][w2s_generate.ScheduledBudget]`([8, 4, 2])`).
        chunk_length: L, tokens per chunk; ``None`` samples whole responses (best-of-N); or a
            [`ChunkBoundary`][w2s_generate.ChunkBoundary] that also ends chunks at stop strings or tokens.
        tokenizer: the large model's tokenizer. Needed when it differs from the pair's (text is then
            bridged by decoding and re-encoding); when not given, the pair's tokenizer is taken to be
            the large model's, which is refused if the output tables differ by more than 1% of rows.
            Rows of the large model's table past the pair's (padding) are never sampled when the pair
            reads the large model's ids.
        selection: which candidates survive a round; default [`TopDistinct`][w2s_generate.TopDistinct]
            (the W best distinct ones).
        draft_tokens: G > 0 drafts G tokens at a time from one side of the pair and verifies them with one
            large-model forward (speculative sampling: the chunks are still exact samples of the large
            model). Needs a shared vocabulary, fixed-length chunks and only the sampling warpers among
            generate's processors; ``None`` (default) or 0 samples token by token.
        draft_from: the side of the pair that drafts, ``"tuned"`` (default) or ``"untuned"``.

    Examples:
        >>> cbs = ChunkBeamSearch(pair, beam_width=2, successors_per_beam=2, chunk_length=4)
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=16)
        >>> diverse = ChunkBeamSearch(pair, 2, ScheduledBudget([4, 2]), 4, selection=DiverseSelection(1))
        >>> out = model.generate(**inputs, custom_generate=diverse, do_sample=True, max_new_tokens=16)
    """

    def __init__(
        self,
        pair: WeakPair,
        beam_width: int = 4,
        successors_per_beam: int | BudgetPolicy = 4,
        chunk_length: int | ChunkBoundary | None = 5,
        tokenizer: PreTrainedTokenizerBase | None = None,
        selection: SelectionPolicy | None = None,
        draft_tokens: int | None = None,
        draft_from: str = "tuned",
    ) -> None:
        super().__init__()
        if not isinstance(pair, WeakPair):
            raise pair_type_error(pair)
        refuse_class(successors_per_beam, "successors_per_beam")
        refuse_class(chunk_length, "chunk_length")
        refuse_class(selection, "selection")
        # Booleans are ints to Python, but beam_width=True is a mistake, not a width of 1.
        if not is_count(beam_width):
            raise ValueError(f"beam_width must be an integer >= 1; got {beam_width!r}.")
        if isinstance(successors_per_beam, numbers.Number) or successors_per_beam is None:
            if not is_count(successors_per_beam):
                raise ValueError(
                    f"successors_per_beam must be an integer >= 1; got {successors_per_beam!r}. For a K that "
                    "changes by round, pass a budget policy (e.g. ScheduledBudget([8, 4, 2]))."
                )
            budget: BudgetPolicy = ConstantBudget(int(successors_per_beam))
        elif callable(getattr(successors_per_beam, "successors", None)) and is_count(
            getattr(successors_per_beam, "max_successors", None)
        ):
            budget = successors_per_beam
        else:
            raise TypeError(
                "successors_per_beam must be an integer >= 1 or a budget policy (successors() and "
                f"max_successors, e.g. ScheduledBudget); got a {type(successors_per_beam).__name__}."
            )
        if isinstance(chunk_length, ChunkBoundary):
            boundary = chunk_length
        elif chunk_length is None or is_count(chunk_length):
            boundary = ChunkBoundary(chunk_length)
        else:
            raise ValueError(
                f"chunk_length must be an integer >= 1 or None (whole responses); got {chunk_length!r}. "
                "To end chunks at stop strings or tokens, pass a ChunkBoundary."
            )
        if selection is None:
            selection = TopDistinct()
        elif not callable(getattr(selection, "choose", None)):
            raise TypeError(
                f"selection must be a selection policy with a choose() method (e.g. DiverseSelection); "
                f"got a {type(selection).__name__}."
            )
        if tokenizer is not None and not hasattr(tokenizer, "get_vocab"):
            raise TypeError(
                f"tokenizer must be the large model's transformers tokenizer; got a {type(tokenizer).__name__}."
            )
        if draft_tokens is not None and draft_tokens != 0 and not is_count(draft_tokens):
            raise ValueError(
                f"draft_tokens must be an integer >= 1, or None/0 for no drafting; got {draft_tokens!r}."
            )
        if draft_from not in ("tuned", "untuned"):
            raise ValueError(
                f"draft_from must be 'tuned' or 'untuned' (the pair's side that drafts); got {draft_from!r}."
            )
        if draft_tokens and not boundary.is_fixed:
            raise ValueError(
                "draft_tokens needs chunks of a fixed length: a ChunkBoundary with stop strings or tokens cannot "
                "be checked on drafted tokens before the large model verifies them. Use one or the other."
            )
        self.draft_tokens = int(draft_tokens) if draft_tokens else None
        self.draft_from = draft_from
        self.pair = pair
        self.beam_width = int(beam_width)
        self.budget = budget
        self.boundary = boundary
        self.selection = selection
        self.tokenizer = tokenizer

    @property
    def successors_per_beam(self) -> int:
        """The largest K any round samples per beam."""
        return self.budget.max_successors

    @property
    def chunk_length(self) -> int | None:
        """The chunk cap L (``None``: whole responses)."""
        return self.boundary.max_tokens

    def __repr__(self) -> str:
        budget = self.budget.successors_per_beam if isinstance(self.budget, ConstantBudget) else self.budget
        boundary = self.boundary.max_tokens if self.boundary.is_fixed else self.boundary
        selection = "" if isinstance(self.selection, TopDistinct) else f", selection={self.selection!r}"
        drafts = f", draft_tokens={self.draft_tokens}" if self.draft_tokens else ""
        return (
            f"{type(self).__name__}(W={self.beam_width}, K={budget}, L={boundary}{selection}{drafts}, "
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
        check_model_kwargs(type(self).__name__, model_kwargs, config, return_trace)
        check_call(type(self).__name__, self.beam_width, model, config)
        check_processors(logits_processor, type(self).__name__)
        check_boundary_processors(self.boundary, logits_processor)
        check_stop_token_ids(self.boundary, model)
        tokenizer = self.bound_tokenizer or self.tokenizer
        # Before the prompts are read: a large model of another vocabulary is named as such, not by its ids.
        bridge = self._bridge(model, tokenizer)
        check_prompt_rows(
            model, config, input_ids, model_kwargs.get("attention_mask"), model_kwargs.get("position_ids")
        )
        expand = max(config.num_beams, config.num_return_sequences)
        prompt_ids = input_ids[::expand]
        mask = model_kwargs.get("attention_mask")
        mask = torch.ones_like(prompt_ids) if mask is None else mask[::expand]
        batch, prompt_len = prompt_ids.shape
        if weak_prompts is not None:
            weak_prompts = check_weak_prompts(weak_prompts, batch)
        stopping_criteria = self.extend_stopping_criteria(stopping_criteria)
        if self.boundary.stop_strings and tokenizer is None and bridge is None:
            tokenizer = self.pair.tokenizer  # a shared vocabulary: the pair's tokenizer decodes the ids
        streamer = self.bound_streamer
        if streamer is not None:
            if batch != 1:
                raise ValueError(f"A streamer takes one prompt at a time; got a batch of {batch}.")
            streamer.put(prompt_ids.cpu())
        cost = SearchCost.zeros(batch)
        max_new = max(config.max_length - prompt_len, 0)
        # The prompts as the large model saw them: its ids, or their text across tokenizers.
        prompt_rows = [
            [t for t, m in zip(ids, row) if m] for ids, row in zip(prompt_ids.tolist(), mask.tolist())
        ]
        if bridge is None:
            default_weak_prompts = prompt_rows
        else:
            default_weak_prompts = bridge.start(prompt_rows)  # also hands the prompts to the bridge
        if weak_prompts is not None:
            state = self.pair._start(weak_prompts, "weak_prompts")
        else:
            state = self.pair.start(default_weak_prompts)
        scorer = IdScorer(state, cost) if bridge is None else TextScorer(state, self.pair, bridge.texts, cost)
        if self.draft_tokens:
            source: CandidateSource = self._drafting_source(
                model,
                prompt_ids,
                mask,
                logits_processor,
                stopping_criteria,
                config,
                bridge,
                state,
                max_new,
                cost,
            )
        else:
            source = LocalModelSource(
                model,
                prompt_ids,
                mask,
                logits_processor,
                stopping_criteria,
                config,
                pad_token_id(config),
                self.boundary,
                max_new,
                self.beam_width * self.budget.max_successors,
                cost,
                stop_string_tokenizer=tokenizer,
                pair_rows=self.pair.vocab_rows if bridge is None else None,
            )
        stream = PrefixStreamer(streamer) if streamer is not None else None
        pools, trace = self._rounds(source, scorer, cost, return_trace, stream)
        rows: list[list[int]] = []
        scores: list[float] = []
        for b, hyps in enumerate(best_hypotheses(pools, config.num_return_sequences)):
            for score, response in hyps:
                rows.append(prompt_ids[b].tolist() + response)
                scores.append(score)
        width = max(len(r) for r in rows)
        sequences = torch.full((len(rows), width), pad_token_id(config), dtype=torch.long)
        for i, r in enumerate(rows):
            sequences[i, : len(r)] = torch.tensor(r)
        if stream is not None:
            stream.end(rows[0][prompt_len:])
        if not config.return_dict_in_generate:
            return sequences.to(prompt_ids.device)
        log_ratios = torch.tensor(scores)
        return SearchOutput(
            sequences=sequences.to(prompt_ids.device),
            log_ratios=log_ratios,
            sequences_scores=log_ratios,
            trace=trace or None,
            cost=cost,
        )

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
        cross-tokenizer path. The loop is the one ``generate`` runs.

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
            >>> out.texts[0], out.log_ratios[0], out.cost.large_tokens                # doctest: +SKIP
        """
        W = self.beam_width
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(
                f"prompts must be a non-empty list of strings (the large model's prompt text); got {prompts!r:.60}."
            )
        empty = [i for i, p in enumerate(prompts) if not p]
        if empty:
            raise ValueError(
                f"prompts[{empty[0]}] is empty: give the text the large model continues (at least its BOS text)."
            )
        if not is_count(num_return_sequences) or num_return_sequences > W:
            raise ValueError(
                f"num_return_sequences={num_return_sequences!r} must be an integer between 1 and beam_width={W}."
            )
        if not is_count(max_new_tokens):
            raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}.")
        if weak_prompts is not None:
            weak_prompts = check_weak_prompts(weak_prompts, len(prompts))
        if not callable(getattr(sampler, "sample", None)):
            raise TypeError(
                f"sampler must have a sample(prefixes, n, max_tokens) method (e.g. CompletionsSampler); "
                f"got a {type(sampler).__name__}."
            )
        if self.draft_tokens:
            raise ValueError(
                "draft_tokens needs the large model's logits to verify drafts; a text sampler returns text only. "
                "Drop draft_tokens for run()."
            )
        cost = SearchCost.zeros(len(prompts))
        source = TextSamplerSource(sampler, list(prompts), self.boundary, max_new_tokens, cost)
        state = (
            self.pair.start(list(prompts))
            if weak_prompts is None
            else self.pair._start(weak_prompts, "weak_prompts")
        )
        scorer = TextScorer(state, self.pair, lambda texts, owners: texts, cost)
        pools, trace = self._rounds(source, scorer, cost, return_trace)
        best = [h for hyps in best_hypotheses(pools, num_return_sequences) for h in hyps]
        scores = torch.tensor([score for score, _ in best])
        return TextSearchOutput(
            texts=[text for _, text in best],
            log_ratios=scores,
            sequences_scores=scores,
            trace=trace or None,
            cost=cost,
        )

    def _drafting_source(
        self, model, prompt_ids, mask, processors, stopping, config, bridge, state, max_new, cost
    ) -> DraftedModelSource:
        """The candidate source of a drafted search, after refusing what drafting cannot keep exact."""
        if bridge is not None:
            raise ValueError(
                "draft_tokens needs the pair to read the large model's tokens (a shared vocabulary): its drafts "
                "are large-model tokens. Drop draft_tokens for a pair with another tokenizer."
            )
        check_draftable(processors, stopping)
        coefficients = self.pair.coefficients
        pick = max if self.draft_from == "tuned" else min
        side = pick(range(len(coefficients)), key=lambda s: coefficients[s])
        return DraftedModelSource(
            model,
            prompt_ids,
            mask,
            processors,
            eos_token_ids(config),
            pad_token_id(config),
            self.boundary.max_tokens or max_new or 1,
            max_new,
            state,
            side,
            self.draft_tokens,
            cost,
            vocab_rows=output_rows(model),
            pair_rows=self.pair.vocab_rows,
        )

    def _rounds(
        self, source, scorer, cost: SearchCost, return_trace: bool, stream: PrefixStreamer | None = None
    ):
        """The search loop with this search's width, selection, budget and pair."""
        return run_rounds(
            source,
            scorer,
            cost,
            self.beam_width,
            self.selection,
            self._successors,
            self.pair.components,
            return_trace,
            stream,
        )

    def _successors(self, round_index: int, best_finished: float | None, live: list[float]) -> int:
        k = self.budget.successors(round_index, best_finished, live)
        if not is_count(k, 0) or k > self.budget.max_successors:
            raise ValueError(
                f"the budget policy {self.budget!r} returned {k!r} successors for round {round_index}: it must "
                f"return an integer between 0 and its max_successors={self.budget.max_successors}."
            )
        if round_index == 0 and k == 0:
            raise ValueError(f"the budget policy {self.budget!r} gave no successors for round 0.")
        return int(k)

    def _bridge(self, model, tokenizer) -> TextBridge | None:
        """``None`` when the pair reads the large model's token ids directly, else a text bridge."""
        strong_rows = output_rows(model)
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


class BestOfN(ChunkBeamSearch):
    """Best of ``n`` whole samples by the pair's log-ratio: CBS with W=1, K=n and whole responses.

    Examples:
        >>> bon = BestOfN(pair, n=16)
        >>> out = model.generate(**inputs, custom_generate=bon, do_sample=True, max_new_tokens=32)
    """

    def __init__(self, pair: WeakPair, n: int = 16, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        if not is_count(n):
            raise ValueError(f"n must be an integer >= 1; got {n!r}.")
        super().__init__(pair, beam_width=1, successors_per_beam=n, chunk_length=None, tokenizer=tokenizer)
        self.n = n

    def __repr__(self) -> str:
        return f"BestOfN(n={self.n}, pair={self.pair!r})"
