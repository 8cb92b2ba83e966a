"""Weak-to-strong search for Hugging Face transformers."""

from . import scoring
from .pairs import WeakPair
from .processor import WeakToStrongLogitsProcessor
from .scoring import GuidanceState, Side

__version__ = "0.1.0"
__all__ = ["GuidanceState", "Side", "WeakPair", "WeakToStrongLogitsProcessor", "scoring"]
