"""Weak-to-strong search for Hugging Face transformers.

Steer a frozen large language model at decoding time with a small tuned/untuned model pair
(Zhou et al., 2024, arXiv 2405.19262): token-level guidance, chunk-level beam search and best-of-N,
all usable through ``model.generate``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names below load on first use, so `w2s-generate --help` starts without torch
    from . import scoring
    from .align import align_adapter, preference_pairs
    from .boundaries import ChunkBoundary
    from .candidates import CandidateSource, LocalModelSource
    from .combined import GuidanceEnsemble, PromptPair
    from .debates import Debate, debate, debate_pair
    from .drafted_guidance import DraftedOutput
    from .drafted_source import DraftedModelSource
    from .drafting import residual_distribution, speculative_choice
    from .explanations import explain, explanation_pair
    from .generate import TokenGuidance, W2SGenerationMixin, disable, enable
    from .gguf_models import RealModel, convert_gguf, real_model_folder, real_tokenizer
    from .loading import load_causal_lm, load_tokenizer
    from .pairs import WeakPair
    from .policies import (
        AdaptiveBudget,
        BudgetPolicy,
        Candidate,
        ConstantBudget,
        DiverseSelection,
        ScheduledBudget,
        SearchCost,
        SelectionPolicy,
        StochasticSelection,
        TopDistinct,
    )
    from .processor import WeakToStrongLogitsProcessor
    from .samplers import ChunkSampler, CompletionsSampler
    from .scorers import IdScorer, Scorer, TextScorer
    from .scoring import GuidanceState, Side
    from .search import BestOfN, ChunkBeamSearch
    from .search_loop import RoundTrace
    from .server_answers import Chunk, RemoteSamplerError
    from .strategy import SearchOutput, Strategy, TextSearchOutput
    from .text_source import TextSamplerSource

#: public name -> the module that defines it
_HOMES = {
    "align_adapter": "align",
    "preference_pairs": "align",
    "CandidateSource": "candidates",
    "DraftedModelSource": "drafted_source",
    "IdScorer": "scorers",
    "Scorer": "scorers",
    "LocalModelSource": "candidates",
    "TextSamplerSource": "text_source",
    "TextScorer": "scorers",
    "DraftedOutput": "drafted_guidance",
    "residual_distribution": "drafting",
    "speculative_choice": "drafting",
    "GuidanceEnsemble": "combined",
    "PromptPair": "combined",
    "Debate": "debates",
    "debate": "debates",
    "debate_pair": "debates",
    "explain": "explanations",
    "explanation_pair": "explanations",
    "TokenGuidance": "generate",
    "W2SGenerationMixin": "generate",
    "disable": "generate",
    "enable": "generate",
    "RealModel": "gguf_models",
    "convert_gguf": "gguf_models",
    "real_model_folder": "gguf_models",
    "real_tokenizer": "gguf_models",
    "load_causal_lm": "loading",
    "load_tokenizer": "loading",
    "WeakPair": "pairs",
    "WeakToStrongLogitsProcessor": "processor",
    "AdaptiveBudget": "policies",
    "BudgetPolicy": "policies",
    "Candidate": "policies",
    "ChunkBoundary": "boundaries",
    "ConstantBudget": "policies",
    "DiverseSelection": "policies",
    "ScheduledBudget": "policies",
    "SearchCost": "policies",
    "SelectionPolicy": "policies",
    "StochasticSelection": "policies",
    "TopDistinct": "policies",
    "Chunk": "server_answers",
    "ChunkSampler": "samplers",
    "CompletionsSampler": "samplers",
    "RemoteSamplerError": "server_answers",
    "GuidanceState": "scoring",
    "Side": "scoring",
    "BestOfN": "search",
    "ChunkBeamSearch": "search",
    "RoundTrace": "search_loop",
    "SearchOutput": "strategy",
    "Strategy": "strategy",
    "TextSearchOutput": "strategy",
}


def __getattr__(name: str):
    """Load a public name's module on first use (PEP 562)."""
    if name == "scoring":
        value = importlib.import_module(".scoring", __name__)
    elif name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"
__all__ = [
    "RealModel",
    "convert_gguf",
    "real_model_folder",
    "real_tokenizer",
    "AdaptiveBudget",
    "BudgetPolicy",
    "Candidate",
    "ChunkBoundary",
    "ConstantBudget",
    "DiverseSelection",
    "ScheduledBudget",
    "SearchCost",
    "SelectionPolicy",
    "StochasticSelection",
    "TopDistinct",
    "BestOfN",
    "Chunk",
    "ChunkSampler",
    "CompletionsSampler",
    "RemoteSamplerError",
    "TextSearchOutput",
    "ChunkBeamSearch",
    "GuidanceEnsemble",
    "GuidanceState",
    "PromptPair",
    "RoundTrace",
    "SearchOutput",
    "Side",
    "Strategy",
    "TokenGuidance",
    "W2SGenerationMixin",
    "load_causal_lm",
    "load_tokenizer",
    "WeakPair",
    "WeakToStrongLogitsProcessor",
    "Debate",
    "debate",
    "debate_pair",
    "align_adapter",
    "disable",
    "enable",
    "explain",
    "explanation_pair",
    "preference_pairs",
    "CandidateSource",
    "DraftedModelSource",
    "IdScorer",
    "Scorer",
    "LocalModelSource",
    "TextSamplerSource",
    "TextScorer",
    "DraftedOutput",
    "residual_distribution",
    "speculative_choice",
    "scoring",
]
