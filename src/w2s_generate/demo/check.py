"""A quick sanity check of the demo models: sample from each and score with the gold metrics.

It verifies the two properties the demo rests on: the strong model alone is fluent but not
particularly positive, and the tuned weak model (weak + positive LoRA) is clearly positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from .language import prompts as demo_prompts
from .reward import fluency, gold_reward
from .train import DemoModels

__all__ = ["SampleScores", "format_check", "quick_check", "sample_texts"]


@torch.no_grad()
def sample_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: list[str],
    *,
    max_new_tokens: int = 40,
    temperature: float = 0.7,
    top_k: int = 50,
    seed: int = 0,
    batch_size: int = 64,
) -> list[str]:
    """Plain ancestral sampling (no guidance); returns ``prompt + " " + continuation`` per prompt.

    Args:
        model: A causal LM over the demo tokenizer (a peft model works too).
        tokenizer: The demo tokenizer (left padding, so batched prompts end at the same column).
        prompts: Openings to continue.
        max_new_tokens: Token budget per continuation; generation also stops at ``<eos>``.
        temperature: Softmax temperature.
        top_k: Keep only the ``top_k`` most likely tokens before sampling.
        seed: Seed for ``torch.manual_seed``, so the samples are reproducible.
        batch_size: Prompts per ``generate`` call.

    Returns:
        The full texts, special tokens removed.
    """
    torch.manual_seed(seed)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        width = enc["input_ids"].shape[1]
        for prompt, row in zip(chunk, out, strict=True):
            continuation = tokenizer.decode(row[width:], skip_special_tokens=True)
            texts.append(f"{prompt} {continuation}".strip())
    return texts


@dataclass(frozen=True)
class SampleScores:
    """Mean gold metrics over a set of samples, plus one example text."""

    fluency: float
    gold_reward: float
    example: str


def _score(texts: list[str]) -> SampleScores:
    return SampleScores(
        fluency=sum(map(fluency, texts)) / len(texts),
        gold_reward=sum(map(gold_reward, texts)) / len(texts),
        example=texts[0],
    )


def quick_check(models: DemoModels, n: int = 50, seed: int = 0, **sampling: float) -> dict[str, SampleScores]:
    """Sample ``n`` continuations of the demo prompts from each model and score them.

    Args:
        models: The loaded demo models.
        n: Samples per model (one per prompt from ``prompts(n, seed)``).
        seed: Seed for the prompts and the sampling.
        **sampling: Overrides for ``sample_texts`` (``temperature``, ``top_k``,
            ``max_new_tokens``); the defaults are 0.7, 50 and 40.

    Returns:
        Scores for ``"strong"``, ``"weak"`` (untuned) and ``"tuned"`` (weak + positive LoRA).
    """
    openings = demo_prompts(n, seed)
    tuned = models.tuned_weak()
    return {
        name: _score(sample_texts(model, models.tokenizer, openings, seed=seed, **sampling))  # type: ignore[arg-type]
        for name, model in (("strong", models.strong), ("weak", models.weak), ("tuned", tuned))
    }


def format_check(scores: dict[str, SampleScores]) -> str:
    """A small table of ``quick_check`` results."""
    lines = [f"{'model':<8} {'fluency':>8} {'gold reward':>12}  example"]
    for name, s in scores.items():
        lines.append(f"{name:<8} {s.fluency:>8.3f} {s.gold_reward:>12.3f}  {s.example}")
    return "\n".join(lines)
