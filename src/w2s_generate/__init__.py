"""Weak-to-strong search for Hugging Face transformers.

Steer a frozen large language model at decoding time with a small tuned/untuned model pair
(Zhou et al., 2024, arXiv 2405.19262): token-level guidance, chunk-level beam search and best-of-N,
all usable through ``model.generate``.
"""

from . import scoring
from .combined import GuidanceEnsemble, PromptPair
from .explain import explain, explanation_pair
from .generate import TokenGuidance, W2SGenerationMixin, disable, enable
from .pairs import WeakPair
from .processor import WeakToStrongLogitsProcessor
from .samplers import Chunk, ChunkSampler, CompletionsSampler, RemoteSamplerError
from .scoring import GuidanceState, Side
from .search import BestOfN, ChunkBeamSearch, RoundTrace
from .strategy import SearchOutput, Strategy, TextSearchOutput

__version__ = "0.1.0"
__all__ = [
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
    "WeakPair",
    "WeakToStrongLogitsProcessor",
    "disable",
    "enable",
    "explain",
    "explanation_pair",
    "scoring",
]
