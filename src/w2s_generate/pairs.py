"""Weak pairs: the small tuned/untuned models whose log-likelihood ratio steers the large model."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ._compat import base_model, output_rows
from .loading import (
    adapter_dir,
    check_weights_format,
    from_pretrained,
    load_adapters,
    load_kwargs,
    load_tokenizer,
)
from .prompt_format import (
    CONDITION_SEPARATOR,
    encode_prompt,
    has_chat_template,
    read_prompt_format,
    resolve_chat_template,
)
from .scoring import GuidanceState, Side, right_pad

Message = Mapping[str, str]
#: A prompt for the weak side: plain text, chat messages (formatted with the weak tokenizer's chat
#: template), or token ids already formatted for the weak tokenizer.
Prompt = str | Sequence[Message] | Sequence[int]
#: A response: text (encoded without special tokens) or weak-tokenizer ids.
Response = str | Sequence[int]


def check_causal_lm(model: torch.nn.Module, role: str) -> None:
    config = getattr(base_model(model), "config", None)
    if config is None:
        raise TypeError(f"{role} must be a transformers causal LM; got {type(model).__name__}.")
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"{role} is an encoder-decoder model ({config.model_type}); weak pairs need decoder-only causal LMs."
        )
    if output_rows(model) is None:
        raise TypeError(
            f"{role} has no output embeddings ({type(base_model(model)).__name__}): a weak side scores tokens with its "
            "language-model head; load it with AutoModelForCausalLM."
        )


def clearly_not_its_tokenizer(tokens: int, rows: int) -> bool:
    """Whether a tokenizer of ``tokens`` tokens cannot be the one of a model with ``rows`` output rows.

    More tokens than rows never fit. Fewer are normal where the table is padded for speed (GPT-2:
    50257 tokens in 50304 rows; Qwen2: 151646 in 151936; Phi-2: 50295 in 51200, under 2%), so only a
    shortfall beyond ``max(2% of rows, 128)`` is taken as another model's tokenizer.
    """
    return tokens > rows or rows - tokens > max(0.02 * rows, 128)


def _check_sequence(value: object, name: str) -> None:
    """Refuse a lone text where a list is expected (a string is a sequence of one-letter prompts)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | torch.Tensor):
        raise TypeError(
            f"{name} must be a list (one entry per row); got a {type(value).__name__}"
            + (f": wrap it, [{value!r:.40}]" if isinstance(value, str) else ".")
        )


def _items(value: object, what: str, kind: str) -> list:
    """The entries of a prompt or response given as a list, a tuple or a 1-D tensor or array."""
    if value is None:
        raise TypeError(
            f"{what} is None: a {kind} is text"
            + (", chat messages" if kind == "prompt" else "")
            + " or token ids."
        )
    if hasattr(value, "tolist") and hasattr(value, "ndim"):  # a torch tensor or a numpy array
        if value.ndim != 1:
            form = "tensor" if isinstance(value, torch.Tensor) else "array"
            raise TypeError(
                f"{what} is a {value.ndim}-D {form} of shape {tuple(value.shape)}: a {kind} of token ids is one row "
                f"(1-D); give each row as its own {kind}."
            )
        return value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, bytes):
        raise TypeError(
            f"{what} is a {type(value).__name__} ({value!r:.40}). A {kind} must be text"
            + (", a list of chat messages" if kind == "prompt" else "")
            + " or a list of token ids."
        )
    items = list(value)
    if items and all(isinstance(t, str) for t in items):
        raise TypeError(
            f"{what} is a list of str: join the pieces into one text, or give token ids (integers); got {items!r:.60}."
        )
    return items


def _token_ids(items: list, what: str, kind: str) -> list[int]:
    """``items`` as ints, refusing anything that is not an integer (a float, a bool, a nested list)."""
    bad = next((t for t in items if isinstance(t, bool) or not isinstance(t, numbers.Integral)), _NONE)
    if bad is not _NONE:
        raise TypeError(
            f"{what}: a {kind}'s token ids must be integers; got {bad!r:.40} ({type(bad).__name__}). Give text to "
            "have it encoded, or the ids the pair's tokenizer gives."
        )
    return [int(t) for t in items]


_NONE = object()


class WeakPair:
    """A tuned and an untuned small causal LM scoring ``log p_tuned(y|x) - log p_untuned(y|x)``.

    The two models share one tokenizer. Both are put in eval mode. For one base model with a LoRA
    adapter switched on and off, use [`from_peft`][w2s_generate.WeakPair.from_peft]; to load from disk
    or the hub, use [`from_pretrained`][w2s_generate.WeakPair.from_pretrained].

    Args:
        tuned: the small model tuned toward the preferred behaviour.
        untuned: the same small model before tuning.
        tokenizer: the tokenizer both models use.

    Examples:
        >>> pair = WeakPair(tuned_model, untuned_model, tokenizer)
        >>> pair.score(["Review:"], [" A wonderful film."])
        tensor([...])
    """

    def __init__(
        self,
        tuned: torch.nn.Module,
        untuned: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        chat_template: bool | None = None,
    ) -> None:
        check_causal_lm(tuned, "tuned")
        check_causal_lm(untuned, "untuned")
        self._check_same_placement(tuned, untuned)
        rows_tuned, rows_untuned = output_rows(tuned), output_rows(untuned)
        if rows_tuned != rows_untuned:
            raise ValueError(
                f"tuned and untuned models have different vocabularies ({rows_tuned} vs {rows_untuned} rows): "
                "a weak pair is one small model before and after tuning, sharing one tokenizer."
            )
        tuned.eval()
        untuned.eval()
        self._init(tokenizer, [Side(tuned), Side(untuned)], [1.0, -1.0], chat_template=chat_template)

    def _init(
        self,
        tokenizer: PreTrainedTokenizerBase,
        sides: list[Side],
        coefficients: list[float],
        components: dict[str, list[float]] | None = None,
        *,
        chat_template: bool | None = None,
    ) -> None:
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(
                f"tokenizer must be a transformers tokenizer; got a {type(tokenizer).__name__} ({tokenizer!r:.60}). "
                "Load it with AutoTokenizer.from_pretrained(...)."
            )
        self.tokenizer = tokenizer
        #: Whether text prompts go through the tokenizer's chat template (`prompt_format`'s one rule).
        self.chat_template = resolve_chat_template(tokenizer, chat_template)
        self.sides = sides
        self.coefficients = coefficients
        #: name -> coefficients over ``sides`` of each scored component (one per pair of an ensemble).
        self.components = components or {"pair": list(coefficients)}
        rows = output_rows(sides[0].model)
        if len(tokenizer) < rows // 2:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens for weak models with {rows} output rows: it is not "
                "theirs (an empty tokenizer loads from a folder without tokenizer files). Pass tokenizer=."
            )
        if len(tokenizer) > rows:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the weak models only {rows} output rows: "
                "pass the tokenizer the weak models were trained with."
            )
        if clearly_not_its_tokenizer(len(tokenizer), rows):
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the weak models {rows} output rows, more than "
                "padding of the table explains: it is another model's tokenizer. Pass the tokenizer the weak "
                "models were trained with."
            )
        self.vocab_rows = rows

    @staticmethod
    def _check_same_placement(*models: torch.nn.Module) -> None:
        params = [next(base_model(m).parameters()) for m in models]
        devices = {p.device for p in params}
        if len(devices) > 1:
            raise ValueError(
                f"The weak models sit on different devices ({sorted(map(str, devices))}): move them to one "
                "device, e.g. model.to('cuda:0')."
            )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_peft(
        cls,
        peft_model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        adapter_name: str = "default",
        *,
        chat_template: bool | None = None,
    ) -> WeakPair:
        """A pair from one base model with a LoRA adapter: tuned = adapter on, untuned = adapter off.

        Both sides run in ONE forward over a mixed batch (peft's ``adapter_names``), so only one copy
        of the base weights is in memory.

        Args:
            peft_model: a ``peft.PeftModel`` holding the adapter.
            tokenizer: the base model's tokenizer.
            adapter_name: which adapter is the tuned side.
            chat_template: whether text prompts go through the tokenizer's chat template; ``None``:
                when it has one. Use what the adapter was trained with.

        Examples:
            >>> from peft import LoraConfig, get_peft_model
            >>> peft_model = get_peft_model(base, LoraConfig(target_modules=["c_attn"]))
            >>> pair = WeakPair.from_peft(peft_model, tokenizer)
        """
        _check_peft_adapter(peft_model, adapter_name)
        check_causal_lm(peft_model, "peft_model")
        peft_model.eval()
        pair = cls.__new__(cls)
        pair._init(
            tokenizer,
            [Side(peft_model, adapter_name), Side(peft_model, "__base__")],
            [1.0, -1.0],
            chat_template=chat_template,
        )
        return pair

    @classmethod
    def from_pretrained(
        cls,
        tuned: str | os.PathLike,
        untuned: str | os.PathLike | None = None,
        *,
        tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
        dtype: torch.dtype | str | None = None,
        device_map: str | dict | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        chat_template: bool | None = None,
        **model_kwargs: Any,
    ) -> WeakPair:
        """Load a pair from local paths or hub ids.

        A LoRA adapter directory (or hub repo) as ``tuned`` with ``untuned=None`` means "that adapter
        on its base model": one base in memory, [`from_peft`][w2s_generate.WeakPair.from_peft] semantics.

        Args:
            tuned: the tuned checkpoint, or a peft adapter.
            untuned: the untuned checkpoint; ``None`` only when ``tuned`` is an adapter.
            tokenizer: a tokenizer or where to load it; default: next to ``tuned`` (or its base).
            dtype: weights dtype, e.g. ``torch.bfloat16``.
            device_map: passed to ``from_pretrained`` (e.g. ``"auto"``).
            allow_pickle: also load ``.bin`` (pickle) weights; safetensors only by default.
            trust_remote_code: run model code from the repository; off unless asked for.
            chat_template: whether text prompts go through the tokenizer's chat template. ``None``: as
                the adapter folder records (``w2s_prompt_format.json``, written by
                ``examples/train_weak_lora.py``), else when the tokenizer has one.
            **model_kwargs: passed to ``AutoModelForCausalLM.from_pretrained``.

        Examples:
            >>> pair = WeakPair.from_pretrained("lvwerra/gpt2-imdb", "gpt2")   # doctest: +SKIP
            >>> pair = WeakPair.from_pretrained("path/to/my-lora-adapter")     # doctest: +SKIP
        """
        load = load_kwargs(model_kwargs, dtype, device_map, allow_pickle, trust_remote_code)
        adapter_folder = adapter_dir(tuned, allow_pickle)
        if adapter_folder is not None:
            if untuned is not None:
                raise ValueError(
                    f"tuned={str(tuned)!r} is a LoRA adapter, whose untuned side is its own base model; "
                    "leave untuned=None (or merge the adapter and pass two full checkpoints)."
                )
            peft_model, tok = load_adapters([adapter_folder], ["default"], tokenizer, load, allow_pickle)
            if chat_template is None:
                chat_template = read_prompt_format(adapter_folder)
            return cls.from_peft(peft_model, tok, "default", chat_template=chat_template)
        if untuned is None:
            raise ValueError(
                f"untuned is missing: {str(tuned)!r} is a full checkpoint, not a LoRA adapter, so the pair needs "
                "the untuned checkpoint too, e.g. WeakPair.from_pretrained('lvwerra/gpt2-imdb', 'gpt2')."
            )
        check_weights_format(tuned, allow_pickle, "tuned")
        check_weights_format(untuned, allow_pickle, "untuned")
        tuned_model = from_pretrained(tuned, load, allow_pickle, "tuned")
        untuned_model = from_pretrained(untuned, load, allow_pickle, "untuned")
        candidates = [tuned, untuned] if tokenizer is None else tokenizer
        tok = load_tokenizer(candidates, trust_remote_code=trust_remote_code)
        return cls(tuned_model, untuned_model, tok, chat_template=chat_template)

    # ------------------------------------------------------------------ encoding
    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0  # pragma: no cover

    def encode_prompt(self, prompt: Prompt, condition: str | None = None) -> list[int]:
        """Weak-side token ids of one prompt, under the pair's one rule (`prompt_format.encode_prompt`).

        Text goes through the weak chat template as a user message when ``self.chat_template``, else it
        is encoded raw; chat messages always go through the template; token ids (a list, or a 1-D
        tensor or array) are taken as they are. A ``condition`` (prompt-conditioned sides) becomes a
        system message for chat prompts and a preceding paragraph for text and token-id prompts.
        """
        return self._encode_prompt(prompt, condition, "the prompt")

    def _encode_prompt(self, prompt: Prompt, condition: str | None, what: str) -> list[int]:
        """``encode_prompt``, its errors naming the prompt as ``what`` (e.g. ``prompts[2]``)."""
        tok = self.tokenizer
        if condition is not None and (not isinstance(condition, str) or not condition.strip()):
            raise ValueError(
                f"The condition for the prompt {prompt!r:.60} is {condition!r:.60}: a conditioned side needs a "
                "non-empty text (an empty one would make both sides read the same)."
            )
        if isinstance(prompt, str):
            return encode_prompt(tok, prompt, chat_template=self.chat_template, condition=condition)
        if isinstance(prompt, Mapping):
            raise TypeError(
                f"{what} is one message (a dict): a chat prompt is a list of messages, wrap it: [{prompt!r:.60}]."
            )
        items = _items(prompt, what, "prompt")
        if not items:
            raise ValueError(
                f"{what} is an empty list: a prompt needs text, chat messages or at least one token id."
            )
        if all(isinstance(m, Mapping) for m in items):
            # Chat messages are formatted by the template whatever the rule for text prompts.
            return encode_prompt(tok, items, chat_template=has_chat_template(tok), condition=condition)
        ids = self._check_ids(_token_ids(items, what, "prompt"), "prompt")
        if condition is None:
            return ids
        return list(tok(condition + CONDITION_SEPARATOR, add_special_tokens=True)["input_ids"]) + ids

    def encode_response(self, response: Response) -> list[int]:
        """Weak-side token ids of a response: text (encoded without special tokens), or token ids (a list,
        or a 1-D tensor or array) of the pair's tokenizer."""
        return self._encode_response(response, "the response")

    def _encode_response(self, response: Response, what: str) -> list[int]:
        if isinstance(response, str):
            return list(self.tokenizer(response, add_special_tokens=False)["input_ids"])
        if isinstance(response, Mapping):
            raise TypeError(
                f"{what} is a dict: a response is text or a list of token ids (for a chat reply, its content text)."
            )
        items = _items(response, what, "response")
        return self._check_ids(_token_ids(items, what, "response"), "response")

    def _check_ids(self, ids: list[int], what: str) -> list[int]:
        """``ids`` if each is a row of the weak models' table, else a ValueError naming the first bad one."""
        bad = next((t for t in ids if not 0 <= t < self.vocab_rows), None)
        if bad is not None:
            raise ValueError(
                f"A {what} holds token id {bad}, outside the weak models' {self.vocab_rows} rows: token ids must "
                "come from the pair's tokenizer (give text to have them encoded)."
            )
        return ids

    # ------------------------------------------------------------------ scoring
    def start(self, prompts: Sequence[Prompt]) -> GuidanceState:
        """Prefill the prompts once: a KV-cached state with one row per prompt.

        The state is a [`GuidanceState`][w2s_generate.GuidanceState].

        Examples:
            >>> state = pair.start(["Review:"])
            >>> state.extend(torch.tensor([[218, 257]]))   # the log-ratio of the two tokens so far
            tensor([...])
        """
        return self._start(prompts, "prompts")

    def _start(self, prompts: Sequence[Prompt], name: str) -> GuidanceState:
        """``start``, its errors naming the prompts as the argument ``name`` (e.g. ``weak_prompts``)."""
        _check_sequence(prompts, name)
        plain = [self._encode_prompt(p, None, f"{name}[{i}]") for i, p in enumerate(prompts)]
        per_side = [
            plain
            if side.condition is None
            else [
                self._encode_prompt(p, side.condition_for(p), f"{name}[{i}]") for i, p in enumerate(prompts)
            ]
            for side in self.sides
        ]
        return GuidanceState.prefill(self.sides, self.coefficients, per_side, self.pad_token_id)

    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], responses: Sequence[Response]) -> torch.Tensor:
        """``log p_tuned(y|x) - log p_untuned(y|x)`` summed over each response's tokens: ``[B]`` floats.

        Examples:
            >>> pair.score(["Review:", "Review:"], [" Great.", " Awful."])
            tensor([..., ...])
        """
        _check_sequence(prompts, "prompts")
        _check_sequence(responses, "responses")
        if len(prompts) != len(responses):
            raise ValueError(
                f"{len(prompts)} prompts but {len(responses)} responses: give one response per prompt."
            )
        # Every response is read before the prompts are prefilled: a bad one fails before any forward.
        encoded = [self._encode_response(r, f"responses[{i}]") for i, r in enumerate(responses)]
        state = self.start(prompts)
        ids, lengths = right_pad(encoded, self.pad_token_id)
        state.extend(ids, lengths)
        return state.scores

    def __repr__(self) -> str:
        kinds = ", ".join(
            f"{type(base_model(s.model)).__name__}" + (f"[{s.adapter_name}]" if s.adapter_name else "")
            for s in self.sides
        )
        return f"{type(self).__name__}({kinds}, chat_template={self.chat_template})"


def _check_peft_adapter(peft_model: torch.nn.Module, adapter_name: str) -> None:
    configs = getattr(peft_model, "peft_config", None)
    if configs is None:
        raise TypeError(
            f"from_peft needs a peft.PeftModel; got {type(peft_model).__name__}. Wrap the base with "
            "peft.get_peft_model or load an adapter with PeftModel.from_pretrained."
        )
    if adapter_name not in configs:
        raise ValueError(f"adapter_name={adapter_name!r} is not loaded; the model holds {sorted(configs)}.")
    config = configs[adapter_name]
    if getattr(config, "use_dora", False):
        raise ValueError(
            f"Adapter {adapter_name!r} uses DoRA, which peft cannot mix with the base in one batch: use a plain "
            "LoRA adapter, or merge it and pass two checkpoints to WeakPair(tuned, untuned, tokenizer)."
        )
    for module in peft_model.modules():
        if getattr(module, "merged", False) and hasattr(module, "lora_A"):
            raise ValueError(
                "The peft model has merged adapter weights, so the base weights are gone and the untuned side "
                "cannot be computed: call peft_model.unmerge_adapter() first."
            )
