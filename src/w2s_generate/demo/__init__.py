"""An offline controlled-sentiment task for weak-to-strong search, trained in-repo.

A synthetic review language (``.language``), gold metrics (``.reward``), and a strong
model, weak model and positive LoRA adapter trained in about two minutes on a CPU
(``.train``). Typical use::

    from w2s_generate.demo import load_demo_models, prompts, gold_reward

    models = load_demo_models()  # trains once, then loads the safetensors cache
"""

from .check import SampleScores, format_check, quick_check, sample_texts
from .language import (
    SENTIMENTS,
    VOCABULARY,
    is_grammatical_prefix,
    is_grammatical_sentence,
    prompts,
    sample_corpus,
    sample_review,
    split_sentences,
)
from .reward import fluency, gold_reward
from .tokenizer import build_tokenizer
from .train import DemoModels, TrainedDemo, load_demo_models, train_demo_models

__all__ = [
    "SENTIMENTS",
    "VOCABULARY",
    "DemoModels",
    "SampleScores",
    "TrainedDemo",
    "build_tokenizer",
    "fluency",
    "format_check",
    "gold_reward",
    "is_grammatical_prefix",
    "is_grammatical_sentence",
    "load_demo_models",
    "prompts",
    "quick_check",
    "sample_corpus",
    "sample_review",
    "sample_texts",
    "split_sentences",
    "train_demo_models",
]
