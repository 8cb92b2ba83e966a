"""The real demo's positive-sentiment LoRA adapter on SmolLM2-135M-Instruct, trained once on a CPU and cached.

The adapter learns from the model's own continuations of neutral review openings, sorted by VADER
(positive ones preferred to neutral or negative ones of the same opening); it is published atomically
with a manifest under ``<cache root>/real-v1``, and retrained only when the recipe changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._compat import peft_deprecation_ignored
from ..gguf_models import REAL_CACHE_FORMAT, REAL_MODELS, real_model_folder
from .cache import cache_root, publish, staging_dir
from .compare import generate_responses
from .openings import CHECK_OPENINGS, TRAIN_OPENINGS
from .real_reward import encode_examples, response_logprobs, vader_reward

__all__ = [
    "ADAPTER_DIR",
    "COMPARISON_TEMPERATURE",
    "LARGE_MODEL",
    "RECIPE",
    "WEAK_MODEL",
    "AdapterRecipe",
    "adapter_folder",
    "cached_manifest",
    "left_padded",
    "load_real_model",
    "say",
    "train_positive_adapter",
]

LARGE_MODEL = "gemma-3-270m"
WEAK_MODEL = "smollm2-135m-instruct"
#: The adapter's folder under ``<cache root>/real-v1``.
ADAPTER_DIR = "smollm2-135m-instruct-positive-lora"
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "manifest.json")


@dataclass(frozen=True)
class AdapterRecipe:
    """How the positive adapter is trained (all of it goes into the cache fingerprint).

    Attributes:
        samples_per_opening: untuned samples drawn per training opening.
        max_new_tokens: tokens per sample.
        temperature: sampling temperature (top-k 50). 1.0: the kept samples are then the untuned
            model's own distribution filtered by VADER, so the adapter learns the preference and not
            a sharper distribution (which would make the log-ratio reward typical text instead).
        keep_at_least: a sample is kept for training when its VADER score is at least this.
        rank: LoRA rank (all linear layers).
        alpha: LoRA alpha.
        dropout: LoRA dropout.
        objective: ``"preference"``: a DPO loss on (kept, rejected) samples of one opening, with the
            adapter-off model as the reference, which trains the pair's log-ratio itself to rank a
            positive continuation above a neutral or negative one; ``"sft"``: likelihood of the kept
            samples alone (learns the review style as much as the sentiment: the log-ratio then
            barely tracks VADER).
        beta: the DPO temperature (the log-ratio scale the preference is learned at).
        reject_at_most: a sample with VADER at most this is a rejected sample (``"preference"``).
        epochs: passes over the training data.
        lr: peak learning rate (linear decay to 0).
        batch_size: samples per optimizer step.
        seed: sampling and training seed.
    """

    samples_per_opening: int = 16
    max_new_tokens: int = 40
    temperature: float = 1.0
    keep_at_least: float = 0.5
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    objective: str = "preference"
    beta: float = 0.5
    reject_at_most: float = 0.0
    epochs: int = 1
    lr: float = 5e-4
    batch_size: int = 8
    seed: int = 0

    def fingerprint(self) -> str:
        """A hash of the recipe, the training openings and the base model: another one retrains."""
        payload = json.dumps(
            {"recipe": asdict(self), "openings": TRAIN_OPENINGS, "check": CHECK_OPENINGS, "base": WEAK_MODEL},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


RECIPE = AdapterRecipe()
#: The sampling temperature of the comparison (the paper's), also used by the held-out check.
COMPARISON_TEMPERATURE = 0.7


def adapter_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the positive adapter is cached: ``<cache root>/real-v1/smollm2-135m-instruct-positive-lora``."""
    return cache_root(cache_dir) / REAL_CACHE_FORMAT / ADAPTER_DIR


def cached_manifest(folder: Path, recipe: AdapterRecipe) -> dict[str, Any] | None:
    if not all((folder / name).is_file() for name in _ADAPTER_FILES):
        return None
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("fingerprint") != recipe.fingerprint():
        return None
    return manifest


def left_padded(tokenizer):
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_real_model(name: str, cache_dir, progress: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .._compat import hub_progress_bars_off

    folder = real_model_folder(name, cache_dir, progress=progress)
    with hub_progress_bars_off():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), left_padded(tokenizer)


def say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def _sample(model, tokenizer, openings, recipe: AdapterRecipe, seed: int, progress: bool, desc: str):
    """``(opening, response)`` pairs: ``samples_per_opening`` samples of each opening."""
    from tqdm import tqdm

    prompts = [o for o in openings for _ in range(recipe.samples_per_opening)]
    responses: list[str] = []
    step = 32
    for start in tqdm(range(0, len(prompts), step), desc=desc, disable=not progress, leave=False):
        responses += generate_responses(
            model,
            tokenizer,
            prompts[start : start + step],
            None,
            seed + start,
            batch_size=step,
            do_sample=True,
            temperature=recipe.temperature,
            top_k=50,
            max_new_tokens=recipe.max_new_tokens,
        )
    return list(zip(prompts, responses))


def _fit(model, data: list, batch_loss, recipe: AdapterRecipe, progress: bool) -> list[float]:
    """Train ``model``'s trainable (LoRA) weights on ``data`` with ``batch_loss(batch)``; the mean loss per epoch.

    AdamW with a linearly decaying rate, gradients clipped at 1, the data shuffled each epoch by
    ``recipe.seed``.
    """
    from tqdm import tqdm

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=0.0)
    steps = recipe.epochs * math.ceil(len(data) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / steps))
    order = random.Random(recipe.seed)
    model.train()
    losses = []
    with tqdm(total=steps, desc="training the positive adapter", disable=not progress, leave=False) as bar:
        for _ in range(recipe.epochs):
            order.shuffle(data)
            total = 0.0
            for start in range(0, len(data), recipe.batch_size):
                batch = data[start : start + recipe.batch_size]
                loss = batch_loss(batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                value = loss.detach().item()
                total += value * len(batch)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}")
            losses.append(total / len(data))
    model.eval()
    return losses


def _train(
    model, tokenizer, data: list[tuple[str, str]], recipe: AdapterRecipe, progress: bool
) -> list[float]:
    """Fit the LoRA adapter of ``model`` on ``data`` (loss on response tokens only); the mean loss per epoch."""
    pad = tokenizer.pad_token_id

    def mean_token_loss(batch):
        return -response_logprobs(model, batch, pad).sum() / sum(len(ids) - n for ids, n in batch)

    return _fit(model, encode_examples(tokenizer, data), mean_token_loss, recipe, progress)


def _preference_pairs(samples: list[tuple[str, str]], recipe: AdapterRecipe) -> list[tuple[str, str, str]]:
    """``(opening, kept, rejected)``: each kept sample with a rejected sample of the same opening, in turn."""
    by_opening: dict[str, tuple[list[str], list[str]]] = {}
    for opening, response in samples:
        score = vader_reward(response)
        kept, rejected = by_opening.setdefault(opening, ([], []))
        if score >= recipe.keep_at_least:
            kept.append(response)
        elif score <= recipe.reject_at_most:
            rejected.append(response)
    pairs = []
    for opening, (kept, rejected) in by_opening.items():
        for i, response in enumerate(kept):
            if rejected:
                pairs.append((opening, response, rejected[i % len(rejected)]))
    return pairs


def _train_preference(
    model, tokenizer, pairs: list[tuple[str, str, str]], recipe: AdapterRecipe, progress: bool
) -> list[float]:
    """DPO on ``pairs`` with the adapter-off model as the reference; the mean loss per epoch."""
    chosen = encode_examples(tokenizer, [(o, c) for o, c, _ in pairs])
    rejected = encode_examples(tokenizer, [(o, r) for o, _, r in pairs])
    pad = tokenizer.pad_token_id
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        reference = [
            float(a - b)
            for start in range(0, len(pairs), recipe.batch_size)
            for a, b in zip(
                response_logprobs(model, chosen[start : start + recipe.batch_size], pad),
                response_logprobs(model, rejected[start : start + recipe.batch_size], pad),
            )
        ]
    data = list(zip(chosen, rejected, reference))

    def dpo_loss(batch):
        logps = response_logprobs(model, [c for c, _, _ in batch] + [r for _, r, _ in batch], pad)
        margin = logps[: len(batch)] - logps[len(batch) :] - torch.tensor([ref for _, _, ref in batch])
        return -torch.nn.functional.logsigmoid(recipe.beta * margin).mean()

    return _fit(model, data, dpo_loss, recipe, progress)


def _check(model, tokenizer, recipe: AdapterRecipe, progress: bool) -> dict[str, Any]:
    """Tuned vs untuned VADER and the pair's log-ratios, on openings held out of training."""
    from ..pairs import WeakPair

    held_out = TRAIN_OPENINGS[-CHECK_OPENINGS:]
    seed = recipe.seed + 1000
    recipe = dataclasses.replace(recipe, temperature=COMPARISON_TEMPERATURE)  # as the comparison samples
    with model.disable_adapter():
        untuned = _sample(model, tokenizer, held_out, recipe, seed, progress, "check: untuned samples")
    tuned = _sample(model, tokenizer, held_out, recipe, seed, progress, "check: tuned samples")
    pair = WeakPair.from_peft(model, tokenizer, chat_template=False)
    ratios = pair.score([o for o, _ in untuned], [r for _, r in untuned]).tolist()

    def mean_vader(samples):
        return sum(vader_reward(r) for _, r in samples) / len(samples)

    return {
        "held_out_openings": len(held_out),
        "samples_per_model": len(untuned),
        "untuned_vader": round(mean_vader(untuned), 4),
        "tuned_vader": round(mean_vader(tuned), 4),
        "log_ratio_on_untuned_samples": {
            "mean": round(sum(ratios) / len(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
            "corr_with_vader": round(_correlation(ratios, [vader_reward(r) for _, r in untuned]), 3),
        },
    }


def _correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def train_positive_adapter(
    cache_dir: str | os.PathLike[str] | None = None,
    recipe: AdapterRecipe = RECIPE,
    progress: bool = True,
) -> Path:
    """Train SmolLM2's positive LoRA adapter on its own samples, sorted by VADER, and cache it.

    1. SmolLM2 (untuned, raw text) continues each training opening ``samples_per_opening`` times;
    2. samples with VADER >= ``keep_at_least`` are kept, those <= ``reject_at_most`` rejected;
    3. a LoRA adapter (all linear layers) is fitted: by default with a DPO loss on (kept, rejected)
       samples of one opening against the adapter-off model, else (``objective="sft"``) by the
       likelihood of the kept samples' response tokens;
    4. tuned vs untuned VADER and the pair's log-ratios are measured on held-out openings;
    5. the adapter and a manifest are published atomically to `adapter_folder`.

    Returns:
        The adapter folder.
    """
    from peft import LoraConfig, get_peft_model

    from ..prompt_format import write_prompt_format

    if recipe.objective not in ("preference", "sft"):
        raise ValueError(f"objective must be 'preference' or 'sft'; got {recipe.objective!r}.")
    started = time.perf_counter()
    base, tokenizer = load_real_model(WEAK_MODEL, cache_dir, progress)
    openings = TRAIN_OPENINGS[:-CHECK_OPENINGS]
    say(
        progress, f"sampling {len(openings) * recipe.samples_per_opening} training continuations from SmolLM2"
    )
    samples = _sample(base, tokenizer, openings, recipe, recipe.seed, progress, "sampling training data")
    kept = [(o, r) for o, r in samples if vader_reward(r) >= recipe.keep_at_least]
    pairs = _preference_pairs(samples, recipe) if recipe.objective == "preference" else []
    sampled_seconds = time.perf_counter() - started
    say(progress, f"kept {len(kept)} of {len(samples)} samples with VADER >= {recipe.keep_at_least}")
    if len(kept) < recipe.batch_size:
        raise RuntimeError(f"only {len(kept)} positive samples: too few to train the adapter.")
    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(recipe.seed)
    with peft_deprecation_ignored():
        model = get_peft_model(base, config)
    train_started = time.perf_counter()
    if recipe.objective == "preference":
        say(
            progress,
            f"{len(pairs)} preference pairs (kept vs VADER <= {recipe.reject_at_most}, same opening)",
        )
        losses = _train_preference(model, tokenizer, pairs, recipe, progress)
    else:
        losses = _train(model, tokenizer, kept, recipe, progress)
    train_seconds = time.perf_counter() - train_started
    say(
        progress,
        f"adapter trained in {train_seconds:.0f}s (epoch losses {', '.join(f'{x:.3f}' for x in losses)})",
    )
    check = _check(model, tokenizer, recipe, progress)
    say(
        progress,
        f"held-out check: VADER tuned {check['tuned_vader']:+.3f} vs untuned {check['untuned_vader']:+.3f}; "
        f"pair log-ratios on untuned samples {check['log_ratio_on_untuned_samples']}",
    )
    manifest = {
        "format": REAL_CACHE_FORMAT,
        "fingerprint": recipe.fingerprint(),
        "base": REAL_MODELS[WEAK_MODEL].title,
        "recipe": asdict(recipe),
        "chat_template": False,
        "training_openings": len(openings),
        "samples": len(samples),
        "kept": len(kept),
        "preference_pairs": len(pairs),
        "epoch_losses": [round(x, 4) for x in losses],
        "sampling_seconds": round(sampled_seconds, 1),
        "training_seconds": round(train_seconds, 1),
        "check": check,
    }
    final = adapter_folder(cache_dir)
    with staging_dir(final.parent) as staged:
        model.save_pretrained(staged, safe_serialization=True)
        write_prompt_format(staged, chat_template=False)
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        publish(staged, final)
    return final
