"""Token-level weak-to-strong guidance as a transformers ``LogitsProcessor``."""

from __future__ import annotations

import math
import numbers

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from ._compat import is_view
from .pairs import WeakPair
from .scoring import GuidanceState
from .strategy import pair_type_error


def check_shared_vocabulary(pair: WeakPair, strong_tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise unless the large model's tokenizer maps every token to the same id as the pair's.

    The decision is made on the two token -> id maps, never on sizes: two tokenizers of one size can
    still give a token different ids. Rows of the large model's table past its tokenizer (padding) are
    never real tokens and do not count.
    """
    if not hasattr(strong_tokenizer, "get_vocab"):
        raise TypeError(
            f"the large model's tokenizer must be a transformers tokenizer; got a {type(strong_tokenizer).__name__}."
        )
    weak_vocab = pair.tokenizer.get_vocab()
    strong_vocab = strong_tokenizer.get_vocab()
    if weak_vocab != strong_vocab:
        example = next(
            (
                f"{t!r} is {i} for the large model but "
                + (f"{weak_vocab[t]} for the pair" if t in weak_vocab else "not in the pair's")
                for t, i in sorted(strong_vocab.items(), key=lambda item: item[1])
                if weak_vocab.get(t) != i
            ),
            None,
        ) or next(
            f"{t!r} ({i}) is only in the pair's" for t, i in weak_vocab.items() if t not in strong_vocab
        )
        raise ValueError(
            f"The large model's tokenizer ({len(strong_vocab)} tokens) and the weak pair's ({len(weak_vocab)} tokens) "
            f"differ ({example}): token-level guidance needs a shared vocabulary. Use w2s.ChunkBeamSearch, which "
            "bridges tokenizers through text."
        )


def rows_look_padded(rows_a: int, rows_b: int) -> bool:
    """Whether two output-table sizes differ only by the padding of one model family (under 1%).

    Without the large model's tokenizer this is the only evidence of a shared vocabulary, e.g.
    32000 vs 32064 or 50257 vs 50304 rows.
    """
    return abs(rows_a - rows_b) <= 0.01 * min(rows_a, rows_b)


class WeakToStrongLogitsProcessor(LogitsProcessor):
    """Add ``beta * (log p_tuned - log p_untuned)`` of the next token to the large model's log-probs.

    Returns ``log_softmax(scores) + beta * (logp_tuned - logp_untuned)``. The weak pair advances one
    token per step from its own KV cache; rows reordered by beam search are followed; left padding is
    stripped from the weak side (so absolute-position models see the right positions). The processor
    resets itself when a new ``generate`` call starts, so one instance can be reused.

    Args:
        pair: the weak pair; it must share the large model's vocabulary.
        beta: guidance strength; ``0`` leaves the distribution unchanged.
        strong_tokenizer: the large model's tokenizer, checked against the pair's at construction.
            Without it, output tables that differ by more than 1% of rows are refused.
        pad_token_id: id used for left padding of the prompts; default the pair tokenizer's.

    Examples:
        >>> processor = WeakToStrongLogitsProcessor(pair, beta=1.0)
        >>> out = model.generate(**inputs, logits_processor=[processor], do_sample=True, max_new_tokens=10)
    """

    def __init__(
        self,
        pair: WeakPair,
        beta: float = 1.0,
        strong_tokenizer: PreTrainedTokenizerBase | None = None,
        pad_token_id: int | None = None,
    ) -> None:
        if not isinstance(pair, WeakPair):
            raise pair_type_error(pair)
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not math.isfinite(beta):
            raise ValueError(f"beta must be a finite number; got {beta!r}.")
        if pad_token_id is not None and (
            isinstance(pad_token_id, bool)
            or not isinstance(pad_token_id, numbers.Integral)
            or not 0 <= pad_token_id < pair.vocab_rows
        ):
            raise ValueError(
                f"pad_token_id must be a token id of the pair's vocabulary (0 to {pair.vocab_rows - 1}); "
                f"got {pad_token_id!r}."
            )
        if strong_tokenizer is not None:
            check_shared_vocabulary(pair, strong_tokenizer)
        self.pair = pair
        self._vocabulary_checked = strong_tokenizer is not None
        self.beta = float(beta)
        self.pad_token_id = pair.pad_token_id if pad_token_id is None else int(pad_token_id)
        self.state: GuidanceState | None = None
        self._seen: torch.Tensor | None = None  # [N, T] the input_ids of the last call
        self._rows_checked: tuple[int, int] | None = None  # output table sizes found compatible
        self._rows_keep_order = False  # set by begin() for loops that never reorder rows
        self._prompt_mask: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the weak-side state; the next call starts from its ``input_ids`` as prompts."""
        self.state = None
        self._seen = None
        self._prompt_mask = None

    def begin(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, rows_keep_order: bool = False
    ) -> None:
        """Start from these prompts with their real attention mask (instead of guessing padding).

        Args:
            input_ids: ``[N, T]`` the prompts, left-padded.
            attention_mask: ``[N, T]`` their mask (None: no padding).
            rows_keep_order: the caller's loop never reorders rows (greedy decoding, sampling), so
                no step compares histories to follow them (no host sync).
        """
        self.reset()
        self._rows_keep_order = rows_keep_order
        self._prompt_mask = None if attention_mask is None else attention_mask.bool()
        self._start(input_ids)

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        if self.beta == 0.0:
            return logprobs
        # Before the pair reads any id: another vocabulary's prompt ids must not be taken for bad ids.
        self.check_rows(scores.shape[-1])
        self._advance(input_ids)
        guidance = self.state.next_token_guidance().to(scores.device)
        return self.combine(logprobs, guidance)

    def check_rows(self, strong_rows: int, weak_rows: int | None = None) -> int:
        """Refuse a large model's output table of another vocabulary; returns the rows both share.

        Called before the pair reads any prompt id, so a large model of another vocabulary is named
        as such whatever its prompt ids (not as a prompt id outside the pair's table).

        Args:
            strong_rows: rows of the large model's output table.
            weak_rows: rows of the pair's (default ``pair.vocab_rows``).
        """
        weak_rows = self.pair.vocab_rows if weak_rows is None else weak_rows
        shared = min(strong_rows, weak_rows)
        if (strong_rows, weak_rows) == self._rows_checked:
            return shared
        if len(self.pair.tokenizer) > shared or not (
            self._vocabulary_checked or rows_look_padded(strong_rows, weak_rows)
        ):
            raise ValueError(
                f"Vocabularies differ ({strong_rows} rows in the large model vs {weak_rows} in the weak pair, whose "
                f"tokenizer has {len(self.pair.tokenizer)} tokens): token-level guidance needs a shared vocabulary. "
                "Use w2s.ChunkBeamSearch, which bridges tokenizers through text."
            )
        self._rows_checked = (strong_rows, weak_rows)
        return shared

    # ------------------------------------------------------------------ steps
    def combine(self, logprobs: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """``[N, Vs], [N, Vw] -> [N, Vs]``: ``logprobs + beta * guidance`` over the shared rows.

        Rows of the large model's table past the pair's vocabulary (padding) get ``-inf``.
        """
        strong_rows, weak_rows = logprobs.shape[-1], guidance.shape[-1]
        if (strong_rows, weak_rows) == self._rows_checked and strong_rows == weak_rows:
            return logprobs.add(guidance, alpha=self.beta)  # the common case, checked on the first step
        shared = self.check_rows(strong_rows, weak_rows)
        out = logprobs.clone()
        out[:, :shared] += self.beta * guidance[:, :shared]
        # Rows past the pair's vocabulary are padding of a larger embedding table: never real tokens.
        out[:, shared:] = -math.inf
        return out

    def _advance(self, input_ids: torch.Tensor) -> None:
        seen = self._seen
        if (
            seen is not None
            and seen.shape == input_ids.shape
            and torch.equal(seen, input_ids.to(seen.device))
        ):
            return  # prompts registered by begin(): the state is already here
        if seen is None or seen.shape[1] + 1 != input_ids.shape[1]:
            self._start(input_ids)
            return
        history = input_ids[:, :-1].to(seen.device)
        if self._rows_keep_order and history.shape == seen.shape:
            parents = None  # the caller's loop never reorders rows: nothing to compare (no host sync)
        elif history.shape == seen.shape and torch.equal(history, seen):
            parents = None
        else:
            # Beam search reorders rows: find each row's previous row by its whole history.
            matches = (history[:, None, :] == seen[None, :, :]).all(-1)  # [N, N_prev]
            if not bool(matches.any(-1).all()):
                self._start(input_ids)
                return
            parents = matches.float().argmax(-1)
        if parents is not None:
            self.state.select(parents)
        self.state.step(input_ids[:, -1])
        # generate's sampling loop makes a new tensor each step; beam search hands a view of a
        # buffer it writes on in place, which must be copied.
        self._seen = input_ids.clone() if is_view(input_ids) else input_ids

    def _start(self, input_ids: torch.Tensor) -> None:
        if self._prompt_mask is not None and self._prompt_mask.shape == input_ids.shape:
            mask = self._prompt_mask.to(input_ids.device)
        else:
            # Leading pad tokens are left padding.
            mask = (input_ids != self.pad_token_id).long().cumsum(-1) > 0
        prompts = []
        for row, row_mask in zip(input_ids.tolist(), mask.tolist()):
            kept = [t for t, m in zip(row, row_mask) if m]
            prompts.append(kept or row[-1:])
        self.state = self.pair.start(prompts)
        self._seen = input_ids.clone()
        self._prompt_mask = None
