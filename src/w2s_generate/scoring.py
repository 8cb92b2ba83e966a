"""Incremental, KV-cached scoring of responses under a weighted sum of small-model log-likelihoods.

A weak pair scores a response ``y`` to a prompt ``x`` by ``log p_tuned(y|x) - log p_untuned(y|x)``.
Here that is the special case of a *guidance objective*: a list of [`Side`][w2s_generate.Side]
objects (a model, maybe a peft adapter name, maybe a conditioning text) with one coefficient each
(``+1`` and ``-1``). Sides that share one model object run in ONE forward over a stacked batch
(``adapter_names`` selects the adapter per row for peft models), so a base with a LoRA adapter keeps
one copy of its weights.

[`GuidanceState`][w2s_generate.GuidanceState] holds ``N`` rows (hypotheses). It is prefilled once
with the prompts, then extended by a few tokens at a time; rows can be selected or duplicated (beams)
in place; tokens at the tail of a row can be replaced (used when text is re-tokenized across
vocabularies). No prefix is ever encoded twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ._compat import (
    accepts_logits_to_keep,
    accepts_position_ids,
    adapter_routing_modules,
    base_model,
    forward_with_cache,
    guarded_mixed_adapter_forward,
    learned_position_limit,
    new_cache,
    one_token_mask,
    one_token_mask_kind,
    select_cache_rows,
    sliding_window,
)


@dataclass(frozen=True, eq=False)
class Side:
    """One term of a guidance objective.

    Attributes:
        model: a causal LM (a plain transformers model or a peft model).
        adapter_name: for a peft model, the adapter this side uses (``"__base__"`` for the base
            weights); ``None`` for a plain model.
        condition: a text this side reads before every prompt (a system prompt, a principle, a
            persona), or a function giving one per prompt (an explanation written for it): the
            tuned side of a prompt-conditioned pair; ``None`` for none.

    Examples:
        >>> [(side.adapter_name, side.condition) for side in harmless.sides]   # a PromptPair's two sides
        [(None, 'Be harmless.'), (None, None)]
    """

    model: torch.nn.Module
    adapter_name: str | None = None
    condition: str | Callable[[object], str] | None = None

    def condition_for(self, prompt: object) -> str | None:
        """This side's conditioning text for ``prompt`` (a fixed text, or one chosen per prompt)."""
        if self.condition is None or isinstance(self.condition, str):
            return self.condition
        return self.condition(prompt)


@dataclass
class _Group:
    """The sides that share one model object, stacked side-major: rows ``[s * N + n]``."""

    model: torch.nn.Module
    side_indices: list[int]
    adapter_names: list[str] | None
    uses_position_ids: bool
    keeps_logits: bool
    max_positions: int | None
    sliding_window: int | None = None
    one_token_mask_kind: str | None = None  # a one-token step's mask made here (see _compat), or None
    dtype: torch.dtype = torch.float32  # the model's (an additive mask's dtype)
    adapter_routing: list | None = None  # the peft modules that route adapter_names (see _compat)
    side_rows: torch.Tensor | None = None  # [S_g] which sides this group holds
    longest: int = 0  # at least the most attended tokens in any row (a bound, counted when it matters)
    attended: torch.Tensor | None = None  # [S_g*N, 1] attended tokens per row (None: count again)
    # Columns of ids / token_logp appended by step(), joined to them only when a retraction or a
    # selection needs them (one concatenation then, instead of two per token).
    pending: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    cache: object = None
    mask: torch.Tensor | None = None  # [S_g*N, T] 1 for tokens the rows attend to
    ids: torch.Tensor | None = None  # [S_g*N, T] every token fed so far (to re-feed one after a retraction)
    token_logp: torch.Tensor | None = None  # [S_g*N, T] counted log-prob of each fed token (0 if not counted)
    last_logp: torch.Tensor | None = None  # [S_g*N, V] log-probs of the next token


def _join_pending(group: _Group) -> None:
    """Append the columns ``step`` left pending to the group's ids and token log-probs."""
    if group.pending:
        ids, logp = zip(*group.pending)
        group.ids = torch.cat([group.ids, *ids], dim=1)
        group.token_logp = torch.cat([group.token_logp, *logp], dim=1)
        group.pending.clear()


def _left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[[ids...], ...] -> (ids [R, T], mask [R, T])`` left-padded."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r) :] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def right_pad(
    rows: Sequence[Sequence[int]], pad_id: int = 0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[[ids...], ...] -> (ids [R, T], lengths [R])`` right-padded; ``T >= 1``."""
    width = max([len(r) for r in rows] + [1])
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return ids.to(device), lengths.to(device)


@dataclass
class GuidanceState:
    """KV-cached state of ``N`` rows under a guidance objective.

    Create it with [`WeakPair.start`][w2s_generate.WeakPair.start]. ``scores`` holds the running
    objective of each row (summed over the response tokens so far) and ``side_scores`` its per-side
    log-likelihoods.

    Examples:
        >>> state = pair.start(["the film was"])
        >>> state.extend(torch.tensor([[218, 257]]), torch.tensor([1]))   # only the first token counts
        tensor([...])
        >>> state.side_scores.shape   # each side's log-likelihood of each row
        torch.Size([2, 1])
    """

    sides: list[Side]
    coefficients: torch.Tensor  # [S]
    pad_token_id: int
    groups: list[_Group] = field(default_factory=list)
    side_scores: torch.Tensor | None = None  # [S, N] float32
    rows: int = 0
    _weights: list[float] = field(init=False, repr=False)  # ``coefficients`` as host numbers

    def __post_init__(self) -> None:
        # Read once here so that no decoding step reads the coefficients back from the device.
        self._weights = [float(c) for c in self.coefficients.tolist()]

    # ------------------------------------------------------------------ construction
    @classmethod
    @torch.no_grad()
    def prefill(
        cls,
        sides: list[Side],
        coefficients: Sequence[float],
        prompt_ids: Sequence[Sequence[Sequence[int]]],
        pad_token_id: int,
    ) -> GuidanceState:
        """Encode each prompt once on every side: ``prompt_ids[s][n]`` for side s -> a state of ``N`` rows."""
        if len(prompt_ids) != len(sides):
            raise ValueError(f"prompt_ids holds {len(prompt_ids)} sides' prompts for {len(sides)} sides.")
        if not prompt_ids[0]:
            raise ValueError("prompt_ids is empty: give at least one prompt.")
        device = base_model(sides[0].model).device
        state = cls(
            sides=sides,
            coefficients=torch.tensor(list(coefficients), dtype=torch.float32, device=device),
            pad_token_id=pad_token_id,
            rows=len(prompt_ids[0]),
        )
        by_model: dict[int, _Group] = {}
        for index, side in enumerate(sides):
            group = by_model.get(id(side.model))
            if group is None:
                window = sliding_window(side.model)
                group = _Group(
                    model=side.model,
                    side_indices=[],
                    adapter_names=None,
                    uses_position_ids=accepts_position_ids(base_model(side.model)),
                    keeps_logits=accepts_logits_to_keep(base_model(side.model)),
                    max_positions=learned_position_limit(side.model),
                    sliding_window=window,
                    one_token_mask_kind=one_token_mask_kind(side.model, window),
                    dtype=base_model(side.model).dtype,
                )
                by_model[id(side.model)] = group
                state.groups.append(group)
            group.side_indices.append(index)
        for group in state.groups:
            names = [sides[i].adapter_name for i in group.side_indices]
            if any(n is not None for n in names):
                if any(n is None for n in names):
                    raise ValueError(
                        "Sides on one peft model must all name an adapter (use '__base__' for the base weights); "
                        f"got adapter names {names}."
                    )
                group.adapter_names = [n for n in names for _ in range(state.rows)]
                group.adapter_routing = adapter_routing_modules(group.model, names)
            rows = [list(p) for i in group.side_indices for p in prompt_ids[i]]
            if any(len(r) == 0 for r in rows):
                raise ValueError("A prompt encodes to zero tokens on the weak side; give a non-empty prompt.")
            ids, mask = _left_pad(rows, pad_token_id, device)
            group.side_rows = torch.as_tensor(group.side_indices, device=device)
            group.longest = mask.shape[1]
            state._check_length(group, group.longest, exact=True)
            group.cache = new_cache(base_model(group.model))
            logits = state._forward(group, ids, mask, last_only=True)
            group.mask, group.ids = mask, ids
            group.token_logp = torch.zeros(ids.shape, dtype=torch.float32, device=device)
            group.last_logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
        state.side_scores = torch.zeros((len(sides), state.rows), dtype=torch.float32, device=device)
        return state

    # ------------------------------------------------------------------ queries
    @property
    def scores(self) -> torch.Tensor:
        """``[N]`` the objective of each row: ``sum_s coefficient_s * log p_s(response | prompt)``."""
        return self.coefficients @ self.side_scores

    def _next_token_tables(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(side index, [N, V] log-probabilities of the next token)`` for every side, as views."""
        for group in self.groups:
            per_side = group.last_logp.view(len(group.side_indices), self.rows, -1)
            yield from zip(group.side_indices, per_side)

    def next_token_logprobs(self) -> torch.Tensor:
        """``[S, N, V]`` each side's log-probabilities of the next token of every row."""
        out: list[torch.Tensor | None] = [None] * len(self.sides)
        for side_index, table in self._next_token_tables():
            out[side_index] = table
        return torch.stack(out)  # type: ignore[arg-type]

    def next_token_guidance(self) -> torch.Tensor:
        """``[N, V]`` the objective's next-token term: ``sum_s coefficient_s * log p_s(v | row)``."""
        # Summed side by side with the coefficients as numbers: no stacked copy of the sides' tables.
        total: torch.Tensor | None = None
        for side_index, table in self._next_token_tables():
            weight = self._weights[side_index]
            total = table * weight if total is None else total.add(table, alpha=weight)
        return total  # type: ignore[return-value]

    # ------------------------------------------------------------------ updates
    def select(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (duplicates allowed), in that order: ``N -> len(index)`` rows, in place."""
        index = index.to(self.side_scores.device, torch.long)
        for group in self.groups:
            _join_pending(group)
            n_sides = len(group.side_indices)
            offsets = torch.arange(n_sides, device=index.device).repeat_interleave(index.numel()) * self.rows
            stacked = index.repeat(n_sides) + offsets
            select_cache_rows(group.cache, stacked)
            group.mask = group.mask[stacked]
            group.ids = group.ids[stacked]
            group.token_logp = group.token_logp[stacked]
            group.last_logp = group.last_logp[stacked]
            if group.adapter_names is not None:
                group.adapter_names = [
                    group.adapter_names[i * self.rows] for i in range(n_sides) for _ in range(index.numel())
                ]
            # group.longest stays a bound: selecting rows never makes one longer
            group.attended = None
        self.side_scores = self.side_scores[:, index]
        self.rows = int(index.numel())

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Append one token to every row and score it: ``[N]`` ids (the token-level hot path).

        The same as ``extend(tokens[:, None])`` without its general bookkeeping: one forward per
        model, no host synchronization (sliding-window models excepted), positions counted on.

        Args:
            tokens: ``[N]`` the token each row takes.
            active: ``[N]`` bool, rows that take their token (default all); the others take part in
                the forward masked, so their tokens, scores, positions and next-token
                distributions stay as they were.
        """
        tokens = tokens.to(self.side_scores.device, torch.long)
        for group in self.groups:
            n_sides = len(group.side_indices)
            ids = tokens.repeat(n_sides)[:, None]  # [S_g*N, 1], a copy: the caller may write on tokens later
            token_logp = group.last_logp.gather(-1, ids)  # [S_g*N, 1]
            live = None if active is None else active.to(ids.device).bool().repeat(n_sides)[:, None]
            if live is not None:
                token_logp = torch.where(live, token_logp, torch.zeros_like(token_logp))
            self.side_scores.index_add_(0, group.side_rows, token_logp.view(n_sides, self.rows))
            group.longest += 1  # a bound on the longest row
            self._check_length(group, group.longest, adding=1 if live is None else live.view(-1).long())
            if group.attended is None:
                group.attended = group.mask.sum(-1, keepdim=True)
            positions = group.attended  # the new token's position in each row
            if live is None:
                group.attended = positions + 1
                new_column = torch.ones_like(ids)
            else:
                group.attended = positions + live.long()
                new_column = live.long()
                # A masked token's position only has to exist in a learned table.
                positions = torch.where(live, positions, (positions - 1).clamp(min=0))
            group.mask = torch.cat([group.mask, new_column], dim=1)
            logits = self._forward(group, ids, group.mask, last_only=True, positions=positions)
            last_logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
            group.last_logp = last_logp if live is None else torch.where(live, last_logp, group.last_logp)
            group.pending.append((ids, token_logp))

    @torch.no_grad()
    def extend(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Append ``tokens[n, :lengths[n]]`` to each row and score them.

        Args:
            tokens: ``[N, T]`` token ids (right-padded where ``lengths < T``).
            lengths: ``[N]`` how many leading tokens of each row are real; default all ``T``.

        Returns:
            ``[N]`` the change of each row's objective.
        """
        return self.replace_tail(torch.zeros(self.rows, dtype=torch.long), tokens, lengths)

    @torch.no_grad()
    def replace_tail(
        self, drop: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forget the last ``drop[n]`` scored tokens of each row, then append ``tokens[n, :lengths[n]]``.

        Dropped tokens are masked out of the cache rather than recomputed; the token before them is
        fed once more (uncounted) so the next-token distribution is the one after the kept prefix.

        Returns:
            ``[N]`` the change of each row's objective.
        """
        device = self.side_scores.device
        tokens = tokens.to(device)
        n, width = tokens.shape
        if n != self.rows:
            raise ValueError(f"tokens has {n} rows but the state holds {self.rows}.")
        given_lengths = lengths is not None
        lengths = (
            torch.full((n,), width, dtype=torch.long, device=device)
            if lengths is None
            else lengths.to(device)
        )
        drop = drop.to(device, torch.long)
        refeed = drop > 0
        any_refeed = bool(refeed.any())  # host sync: shapes below depend on it
        if any_refeed:
            self._check_drops(drop)
        # New token matrix per row: [re-fed token?] + tokens[:length], left-aligned.
        shift = refeed.long()
        total_len = lengths + shift
        if not n:
            new_width = 0
        elif given_lengths:
            new_width = int(total_len.max())
        else:  # every row takes all `width` tokens: no need to ask the device
            new_width = width + int(any_refeed)
        if new_width == 0:
            return torch.zeros(n, device=device)
        cols = torch.arange(new_width, device=device)
        src = (cols[None, :] - shift[:, None]).clamp(min=0, max=max(width - 1, 0))
        new_tokens = (
            torch.gather(tokens, 1, src)
            if width > 0
            else torch.zeros((n, new_width), dtype=torch.long, device=device)
        )
        valid = cols[None, :] < total_len[:, None]
        counted = valid & (cols[None, :] >= shift[:, None])
        before = self.side_scores.clone()
        for group in self.groups:
            _join_pending(group)
            group.attended = None
            n_sides = len(group.side_indices)
            side_rows = torch.as_tensor(group.side_indices, device=device)
            group_drop = drop.repeat(n_sides)
            group_refeed = refeed.repeat(n_sides)
            refed_logp = torch.zeros(group_refeed.shape, dtype=torch.float32, device=device)
            if any_refeed:
                refed_ids, refed_logp, removed = self._mask_tail(group, group_drop)
                # removed: [S_g*N] log-prob mass taken off each row (the re-fed token's stays counted)
                self.side_scores[side_rows] -= removed.view(n_sides, n)
                ids = new_tokens.repeat(n_sides, 1)
                ids[:, 0] = torch.where(group_refeed, refed_ids, ids[:, 0])
            else:
                ids = new_tokens.repeat(n_sides, 1)
            group_valid = valid.repeat(n_sides, 1)
            mask = torch.cat([group.mask, group_valid.long()], dim=1)
            group.longest += new_width  # a bound: retractions only shrink rows
            group.mask = mask
            self._check_length(group, group.longest)
            logits = self._forward(group, ids, mask, last_only=False).float()
            # log p(token_t | prefix): the distribution before position t is last_logp for t=0, logits[t-1] after.
            lse = torch.logsumexp(logits, dim=-1)  # [R, T]
            first = group.last_logp.gather(-1, ids[:, :1]).squeeze(-1)
            token_logp = torch.cat([first.unsqueeze(-1), self._shift_logp(logits, lse, ids)], dim=1)
            group_counted = counted.repeat(n_sides, 1)
            token_logp = torch.where(group_counted, token_logp, torch.zeros_like(token_logp))
            self.side_scores[side_rows] += token_logp.sum(-1).view(n_sides, n)
            # The re-fed token's log-prob is still part of the score: record it at its new column, so
            # a later, deeper retraction that drops it takes it off again.
            token_logp[:, 0] = torch.where(group_refeed, refed_logp, token_logp[:, 0])
            # The next-token distribution comes from each row's last real token.
            last_index = (total_len.repeat(n_sides) - 1).clamp(min=0)
            last_logits = logits[torch.arange(logits.shape[0], device=device), last_index]
            has_new = total_len.repeat(n_sides) > 0
            group.last_logp = torch.where(
                has_new[:, None], torch.log_softmax(last_logits, dim=-1), group.last_logp
            )
            group.mask = mask
            group.ids = torch.cat([group.ids, ids], dim=1)
            group.token_logp = torch.cat([group.token_logp, token_logp], dim=1)
        return self.coefficients @ (self.side_scores - before)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _shift_logp(logits: torch.Tensor, lse: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``[R, T, V], [R, T], [R, T] -> [R, T-1]``: log p(ids[t] | ..., ids[t-1]) for t >= 1."""
        if ids.shape[1] < 2:
            return ids.new_zeros((ids.shape[0], 0), dtype=torch.float32)
        return logits[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) - lse[:, :-1]

    def _mask_tail(
        self, group: _Group, drop: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask out the last ``drop+1`` attended tokens of rows with ``drop > 0``.

        Returns, per row: the id of the earliest masked token (to re-feed), its counted log-prob (it
        stays in the score and moves with the token) and the counted log-prob mass removed, not
        including that re-fed token.
        """
        attended = group.mask.bool()
        # How many attended tokens sit at or after each column.
        from_right = attended.flip(-1).long().cumsum(-1).flip(-1)
        to_mask = attended & (from_right <= (drop + 1)[:, None]) & (drop > 0)[:, None]
        refed_pos = (attended & (from_right == (drop + 1)[:, None])).long().argmax(-1)
        refed_ids = group.ids.gather(1, refed_pos[:, None]).squeeze(1)
        refed_logp = group.token_logp.gather(1, refed_pos[:, None]).squeeze(1)
        removed = torch.where(to_mask, group.token_logp, torch.zeros_like(group.token_logp)).sum(-1)
        removed = torch.where(drop > 0, removed - refed_logp, removed)
        group.mask = torch.where(to_mask, torch.zeros_like(group.mask), group.mask)
        group.token_logp = torch.where(to_mask, torch.zeros_like(group.token_logp), group.token_logp)
        return refed_ids, refed_logp, removed

    def _check_drops(self, drop: torch.Tensor) -> None:
        """Refuse to drop more tokens than a row holds (its prompt's last token stays), on every side."""
        too_deep = [
            (
                (drop.repeat(len(group.side_indices)) + 1 > group.mask.sum(-1))
                & (drop.repeat(len(group.side_indices)) > 0)
            ).any()
            for group in self.groups
        ]
        if bool(torch.stack(too_deep).any()):
            raise ValueError("Cannot drop more tokens than a row holds.")

    def _check_length(
        self, group: _Group, length: int, exact: bool = False, adding: int | torch.Tensor = 0
    ) -> None:
        """Refuse a row longer than an absolute-position model's table; ``length`` may be a bound.

        ``adding`` (an int or ``[S_g*N]``) counts the tokens about to join each row beyond its mask.
        """
        if group.max_positions is not None and length > group.max_positions and not exact:
            # The bound is too coarse: count, the tokens being added included.
            length = group.longest = int((group.mask.sum(-1) + adding).max())
        if group.max_positions is not None and length > group.max_positions:
            raise ValueError(
                f"A weak-side row would hold {length} tokens, more than the weak model's context of "
                f"{group.max_positions} positions: shorten the prompt given to the pair (weak_prompts=) or "
                "max_new_tokens."
            )

    @staticmethod
    def _check_window(group: _Group, mask: torch.Tensor) -> None:
        """Refuse a sliding-window forward whose window would span masked gaps in a row.

        The window counts cache positions, so masked gaps (retracted tokens, padding of rows that
        grew by fewer tokens) would leave fewer real tokens in it than the model attends to. Rows
        whose tokens all fit in one window are exact whatever their gaps.
        """
        attended = mask.bool()
        started = attended.long().cummax(-1).values.bool()
        still_to_come = attended.flip(-1).long().cummax(-1).values.flip(-1).bool()
        gaps = (started & still_to_come & ~attended).any(-1)
        span = mask.shape[1] - attended.long().argmax(-1)
        if bool((gaps & (span > group.sliding_window)).any()):
            name = type(base_model(group.model)).__name__
            raise ValueError(
                f"The weak model ({name}) uses sliding-window attention (window {group.sliding_window}) and a row "
                f"now spans {int(span[gaps].max())} cache positions with masked gaps (from re-tokenized text across "
                "tokenizers, or rows that grew by different numbers of tokens): its scores would be wrong. Use a "
                "weak pair without sliding-window attention, or keep prompt + response within the window."
            )

    def _forward(
        self,
        group: _Group,
        ids: torch.Tensor,
        mask: torch.Tensor,
        last_only: bool,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One forward of a group's stacked rows from its cache: returns logits ``[R, T, V]``.

        ``positions`` (``[R, T]``) saves counting them from the mask when the caller knows them.
        """
        width = ids.shape[1]
        if group.sliding_window is not None:
            self._check_window(group, mask)
        if group.uses_position_ids and positions is None:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        if width == 1 and group.one_token_mask_kind is not None:
            # One token behind the cache: the model's 4-D mask is the 2-D one reshaped, made here
            # in one operation instead of by transformers' mask builder at every step.
            mask = one_token_mask(mask, group.one_token_mask_kind, group.dtype)
        kwargs: dict = {
            "position_ids": positions if group.uses_position_ids else None,
            "logits_to_keep": 1 if last_only and group.keeps_logits else None,
        }
        if group.adapter_names is not None:
            with guarded_mixed_adapter_forward(
                group.model, group.adapter_names, group.adapter_routing
            ) as extra:
                return forward_with_cache(group.model, ids, mask, group.cache, **extra, **kwargs).logits
        return forward_with_cache(group.model, ids, mask, group.cache, **kwargs).logits
