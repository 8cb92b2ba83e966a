"""The paper's controlled-sentiment setting on real pretrained models, offline.

The large model is Gemma-3-270M (base); the weak pair is SmolLM2-135M-Instruct untuned and the same
model with a positive-sentiment LoRA adapter trained here on a CPU, on the model's own continuations
of neutral review openings sorted by VADER (positive ones preferred to neutral or negative ones of the
same opening). The two models have different tokenizers, so
best-of-N and chunk-level beam search score the large model's text with the pair (token guidance
needs a shared vocabulary and is left out). The gold reward is VADER's compound score of the response
(a third-party lexicon the search never sees); fluency is the large model's own mean token log-prob
of the response given the prompt.

Both models install from the package index as GGUF files (`w2s_generate.gguf_models`) and are
converted once to safetensors under ``<cache root>/real-v1``; the adapter and its manifest are cached
next to them, so a second run only loads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._compat import peft_deprecation_ignored
from ..gguf_models import REAL_MODELS
from .compare import Method, MethodResult, compare_methods
from .openings import EVAL_OPENINGS
from .real_adapter import (
    ADAPTER_DIR,
    COMPARISON_TEMPERATURE,
    LARGE_MODEL,
    RECIPE,
    WEAK_MODEL,
    AdapterRecipe,
    adapter_folder,
    cached_manifest,
    load_real_model,
    say,
    train_positive_adapter,
)
from .real_reward import large_model_fluency, vader_reward

__all__ = [
    "ADAPTER_DIR",
    "LARGE_MODEL",
    "RECIPE",
    "WEAK_MODEL",
    "AdapterRecipe",
    "RealDemoModels",
    "adapter_folder",
    "large_model_fluency",
    "load_real_models",
    "real_methods",
    "run_real_comparison",
    "train_positive_adapter",
    "vader_reward",
]


@dataclass
class RealDemoModels:
    """The real demo's models, loaded and in eval mode.

    Attributes:
        large: Gemma-3-270M, the frozen model to steer.
        large_tokenizer: its tokenizer (left padding).
        weak: SmolLM2-135M-Instruct with the positive adapter (``peft.PeftModel``): adapter on is the
            tuned side, adapter off the untuned side.
        weak_tokenizer: SmolLM2's tokenizer (left padding).
        adapter_dir: the cached adapter folder.
        manifest: what the adapter's training recorded (recipe, data, times, check).
    """

    large: torch.nn.Module
    large_tokenizer: Any
    weak: Any
    weak_tokenizer: Any
    adapter_dir: Path
    manifest: dict[str, Any]

    def pair(self):
        """The weak pair: tuned = adapter on, untuned = adapter off; raw review text, as trained."""
        from ..pairs import WeakPair

        return WeakPair.from_peft(self.weak, self.weak_tokenizer, chat_template=False)


def load_real_models(
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    recipe: AdapterRecipe = RECIPE,
) -> RealDemoModels:
    """Load Gemma-3-270M and SmolLM2-135M-Instruct with its positive adapter, preparing what is missing.

    Converts each model from its installed GGUF package on first use (about a minute each) and trains
    the adapter when no cached one matches ``recipe`` (a few minutes), or always with ``force``.
    """
    from peft import PeftModel

    folder = adapter_folder(cache_dir)
    manifest = None if force else cached_manifest(folder, recipe)
    if manifest is None:
        train_positive_adapter(cache_dir, recipe, progress)
        manifest = cached_manifest(folder, recipe)
        if manifest is None:  # pragma: no cover - only if the cache folder is being damaged meanwhile
            raise RuntimeError(f"the adapter at {folder} could not be read back after training.")
    else:
        say(progress, f"using the cached positive adapter at {folder}")
    base, weak_tokenizer = load_real_model(WEAK_MODEL, cache_dir, progress)
    with peft_deprecation_ignored():
        weak = PeftModel.from_pretrained(base, folder, is_trainable=False).eval()
    large, large_tokenizer = load_real_model(LARGE_MODEL, cache_dir, progress)
    return RealDemoModels(large, large_tokenizer, weak, weak_tokenizer, folder, manifest)


# --------------------------------------------------------------------------- comparison


def real_methods(
    models: RealDemoModels, budgets: Sequence[int] = (4, 16), chunk_length: int = 5
) -> list[Method]:
    """Large alone, tuned weak alone, then best-of-N and CBS (W = K = sqrt(N)) for every budget.

    Token guidance is left out: it needs the large model and the pair to share a vocabulary.
    """
    from ..search import BestOfN, ChunkBeamSearch

    pair = models.pair()
    large, tok = models.large, models.large_tokenizer
    methods = [
        Method("large model alone", "strong", 1, large, tok),
        Method("tuned weak alone", "tuned", 0, models.weak, models.weak_tokenizer),
    ]
    for budget in budgets:
        width = max(int(round(budget**0.5)), 1)
        successors = budget // width
        methods.append(
            Method(f"best-of-{budget}", "bon", budget, large, tok, BestOfN(pair, n=budget, tokenizer=tok))
        )
        methods.append(
            Method(
                f"CBS W={width} K={successors} L={chunk_length}",
                "cbs",
                width * successors,
                large,
                tok,
                ChunkBeamSearch(pair, width, successors, chunk_length, tokenizer=tok),
            )
        )
    return methods


def run_real_comparison(
    models: RealDemoModels,
    n_prompts: int = 8,
    seeds: Sequence[int] = (0,),
    max_new_tokens: int = 32,
    temperature: float = COMPARISON_TEMPERATURE,
    top_k: int = 50,
    budgets: Sequence[int] = (4, 16),
    chunk_length: int = 5,
    batch_size: int = 8,
    progress: bool = True,
) -> list[MethodResult]:
    """Every method on the first ``n_prompts`` evaluation openings, once per seed.

    Gold reward: VADER of the response. Fluency: the large model's mean token log-prob of the
    response. Rows carry the mean over seeds and the lowest and highest per-seed mean.
    """
    if not 1 <= n_prompts <= len(EVAL_OPENINGS):
        raise ValueError(f"n_prompts must be between 1 and {len(EVAL_OPENINGS)}; got {n_prompts}.")
    openings = list(EVAL_OPENINGS[:n_prompts])

    def score(openings: Sequence[str], responses: Sequence[str]) -> tuple[list[float], list[float]]:
        fluency = large_model_fluency(models.large, models.large_tokenizer, openings, responses)
        return [vader_reward(r) for r in responses], fluency

    sampling = dict(do_sample=True, temperature=temperature, top_k=top_k, max_new_tokens=max_new_tokens)
    return compare_methods(
        real_methods(models, budgets, chunk_length),
        openings,
        list(seeds),
        score,
        models.large,
        sampling,
        batch_size,
        progress,
        large_model=REAL_MODELS[LARGE_MODEL].title,
        weak_model=f"{REAL_MODELS[WEAK_MODEL].title} + positive LoRA",
    )
