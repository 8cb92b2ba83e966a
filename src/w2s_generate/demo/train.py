"""Train, cache and load the demo's strong model, weak model and positive LoRA adapter.

The recipe mirrors the paper's controlled-sentiment setup in miniature:

* ``strong``: a 4-layer Llama trained on an even mix of positive, negative, neutral and mixed
  reviews, so it writes fluent reviews that are sentiment-neutral on average;
* ``weak``: a Llama about a tenth of that size trained on the same mix (the *untuned* model);
* ``weak-positive-lora``: a LoRA adapter on ``weak`` fine-tuned on positive reviews only, so that
  weak + adapter is the *tuned* model and ``log p_tuned - log p_untuned`` rewards positivity.

Everything trains in about 75 seconds on two idle CPU cores and is cached as safetensors.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .._compat import hub_progress_bars_off, peft_deprecation_ignored
from .cache import (
    ADAPTER_DIR,
    CACHE_FORMAT,
    MANIFEST,
    STRONG_DIR,
    TOKENIZER_DIR,
    WEAK_DIR,
    demo_dir,
    publish,
    read_manifest,
    staging_dir,
)
from .language import SENTIMENTS, VOCABULARY, language_fingerprint, sample_review
from .tokenizer import build_tokenizer

__all__ = [
    "LORA_TARGET_MODULES",
    "RECIPE",
    "DemoModels",
    "TrainedDemo",
    "load_demo_models",
    "train_demo_models",
]

# Architectures. The strong model has ~13x the weak one's parameters (1.08M vs 84k), the paper's
# "large frozen model steered by a small pair" in miniature. Untied embeddings keep lm_head a
# separate Linear so the LoRA below can target it.
STRONG_ARCH: dict[str, int] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
}
WEAK_ARCH: dict[str, int] = {
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 192,
}
# Reviews are at most ~60 tokens; the headroom is for prompts plus long guided continuations.
MAX_POSITIONS = 256

# lm_head is in the list on purpose: with attention/MLP projections only, a 1-2 layer, 48-wide
# model barely picks up a *lexical* preference in a few hundred steps, while a low-rank update of
# the output layer learns "prefer positive words" almost at once.
LORA_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "lm_head",
)
LORA_RANK, LORA_ALPHA = 8, 16

# Training phases. `steps` is at scale=1.0; `rating_prob` is the share of training reviews that
# open with "rating : <sentiment> ." (see language.sample_review).
RECIPE: dict[str, dict[str, Any]] = {
    "strong": {"steps": 700, "batch_size": 32, "lr": 2e-3, "seed": 1, "rating_prob": 0.3},
    "weak": {"steps": 700, "batch_size": 32, "lr": 3e-3, "seed": 2, "rating_prob": 0.3},
    "lora": {"steps": 200, "batch_size": 32, "lr": 3e-3, "seed": 3, "rating_prob": 0.3},
}
_EVAL_REVIEWS = 128  # held-out reviews for the validation losses recorded in the manifest
_EVAL_SEED = 12345


@dataclass
class DemoModels:
    """The cached demo models, loaded from safetensors and put in eval mode.

    Attributes:
        strong: The large frozen model to steer.
        weak: The untuned small model (the base of the LoRA adapter).
        adapter_dir: Folder of the positive LoRA adapter for ``weak`` (tuned = weak + adapter).
        tokenizer: The word-level tokenizer all three share.
        cache_dir: The versioned folder (``.../demo-v1``) the models were loaded from.
    """

    strong: LlamaForCausalLM
    weak: LlamaForCausalLM
    adapter_dir: Path
    tokenizer: PreTrainedTokenizerFast
    cache_dir: Path

    def tuned_weak(self) -> PeftModel:
        """A fresh weak base with the positive adapter applied, in eval mode.

        Loads its own copy of the base so ``self.weak`` stays a plain untuned model (peft injects
        the LoRA layers into the module it is given).
        """
        base = _load_llama(self.cache_dir / WEAK_DIR)
        with peft_deprecation_ignored():
            model = PeftModel.from_pretrained(base, self.adapter_dir, is_trainable=False)
        return model.eval()


@dataclass
class TrainedDemo:
    """What ``train_demo_models`` produced, still in memory, plus where it was published.

    Attributes:
        strong: The trained strong model (eval mode).
        weak: The trained untuned weak model (eval mode).
        tuned: ``weak``'s deep copy with the trained LoRA adapter (eval mode).
        tokenizer: The shared tokenizer.
        cache_dir: The published ``demo-v1`` folder.
        manifest: The manifest written next to the models.
    """

    strong: LlamaForCausalLM
    weak: LlamaForCausalLM
    tuned: PeftModel
    tokenizer: PreTrainedTokenizerFast
    cache_dir: Path
    manifest: dict[str, Any]


def recipe_fingerprint() -> str:
    """Hash of everything that determines the trained weights except ``scale``.

    A cache made by another recipe (language, sizes, steps, learning rates, seeds) is retrained
    rather than reused. ``scale`` is left out so that a quick test cache can be loaded back.
    """
    payload = json.dumps(
        {
            "language": language_fingerprint(),
            "strong": STRONG_ARCH,
            "weak": WEAK_ARCH,
            "lora": [LORA_TARGET_MODULES, LORA_RANK, LORA_ALPHA],
            "recipe": RECIPE,
            "max_positions": MAX_POSITIONS,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _expected_manifest() -> dict[str, str]:
    return {"format": CACHE_FORMAT, "fingerprint": recipe_fingerprint()}


def _llama_config(arch: dict[str, int], tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **arch,
    )


def _new_llama(arch: dict[str, int], tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)  # the initial weights are the only torch randomness in training
    model = LlamaForCausalLM(_llama_config(arch, tokenizer))
    # Generation defaults, so model.generate works on the saved model without extra arguments.
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def _count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _encode(
    texts: list[str], tokenizer: PreTrainedTokenizerFast
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``<bos> review <eos>`` rows, right-padded; labels ignore the padding.

    Right padding keeps positions 0..n-1 for every review without passing position ids; the
    <eos> is appended by hand because the tokenizer's template only prepends <bos>.
    """
    rows = [ids + [tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return input_ids, attention_mask, labels


def _review_sampler(sentiments: tuple[str, ...], seed: int, rating_prob: float) -> Callable[[int], list[str]]:
    """Fresh reviews per batch from a seeded stream: unlimited data, so no overfitting to track."""
    rng = random.Random(seed)

    def sample(n: int) -> list[str]:
        return [sample_review(rng, rng.choice(sentiments), rating_prob=rating_prob) for _ in range(n)]

    return sample


def _lr_lambda(steps: int) -> Callable[[int], float]:
    """Linear warm-up over 5% of the steps, then cosine decay to 10% of the peak."""
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _train(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    sample: Callable[[int], list[str]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    desc: str,
    progress: bool,
) -> float:
    """Plain AdamW language-model training; returns the mean loss of the last 10% of steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps))
    model.train()
    tail: list[float] = []
    tail_len = max(1, steps // 10)
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        input_ids, attention_mask, labels = _encode(sample(batch_size), tokenizer)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tail = (tail + [loss.item()])[-tail_len:]
        bar.set_postfix(loss=f"{tail[-1]:.3f}", refresh=False)
    model.eval()
    return sum(tail) / len(tail)


@torch.no_grad()
def _eval_loss(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> float:
    """Mean per-token cross-entropy (nats) on held-out reviews."""
    total = tokens = 0.0
    for start in range(0, len(texts), 64):
        input_ids, attention_mask, labels = _encode(texts[start : start + 64], tokenizer)
        n = float((labels[:, 1:] != -100).sum())
        total += model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.item() * n
        tokens += n
    return total / tokens


def _steps(phase: str, scale: float) -> int:
    return max(1, round(RECIPE[phase]["steps"] * scale))


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily use ``num_threads`` intra-op threads (None: leave torch's setting alone)."""
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_demo_models(
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    scale: float = 1.0,
    num_threads: int | None = None,
) -> TrainedDemo:
    """Train the strong model, the weak model and the positive LoRA, and publish them to the cache.

    Everything is written to a hidden staging folder next to ``<cache root>/demo-v1`` and renamed
    into place at the end, so an interrupted run leaves no half-written cache behind; an existing
    ``demo-v1`` is replaced. Training is deterministic for a given torch build and thread count.

    Args:
        cache_dir: Cache root (the models go to ``<cache_dir>/demo-v1``); None means
            ``$W2S_GENERATE_CACHE`` or ``~/.cache/w2s_generate``.
        progress: Show tqdm progress bars.
        scale: Multiplies every phase's number of steps; ``scale < 1`` gives quick, weaker models
            (the tests use it), ``1.0`` the documented recipe (about 75 s on two idle CPU cores).
        num_threads: torch intra-op threads during training, restored afterwards; None keeps the
            current setting. On a machine whose cores are busy with other work, ``1`` can be
            several times faster than an oversubscribed multi-threaded run.

    Returns:
        The trained models (still in memory) and the published folder and manifest.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    with _torch_threads(num_threads):
        return _train_and_publish(demo_dir(cache_dir), progress, scale)


def _train_and_publish(final: Path, progress: bool, scale: float) -> TrainedDemo:
    """The body of ``train_demo_models`` (arguments already validated)."""
    tokenizer = build_tokenizer(VOCABULARY)
    eval_texts = _review_sampler(SENTIMENTS, _EVAL_SEED, 0.3)(_EVAL_REVIEWS)
    eval_positive = _review_sampler(("positive",), _EVAL_SEED, 0.3)(_EVAL_REVIEWS)
    losses: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}

    trained: dict[str, LlamaForCausalLM] = {}
    for name, arch in (("strong", STRONG_ARCH), ("weak", WEAK_ARCH)):
        started = time.perf_counter()
        phase = RECIPE[name]
        model = _new_llama(arch, tokenizer, seed=phase["seed"])
        train_loss = _train(
            model,
            tokenizer,
            _review_sampler(SENTIMENTS, phase["seed"], phase["rating_prob"]),
            steps=_steps(name, scale),
            batch_size=phase["batch_size"],
            lr=phase["lr"],
            desc=f"demo: {name} model",
            progress=progress,
        )
        seconds[name] = round(time.perf_counter() - started, 1)
        losses[name] = {"train": train_loss, "eval_mix": _eval_loss(model, tokenizer, eval_texts)}
        trained[name] = model

    # The adapter trains on a deep copy so that `weak` stays the untuned base in memory too.
    started = time.perf_counter()
    phase = RECIPE["lora"]
    torch.manual_seed(phase["seed"])
    lora_config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGET_MODULES),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with peft_deprecation_ignored():
        tuned = get_peft_model(copy.deepcopy(trained["weak"]), lora_config)
    lora_train = _train(
        tuned,
        tokenizer,
        _review_sampler(("positive",), phase["seed"], phase["rating_prob"]),
        steps=_steps("lora", scale),
        batch_size=phase["batch_size"],
        lr=phase["lr"],
        desc="demo: positive LoRA",
        progress=progress,
    )
    seconds["lora"] = round(time.perf_counter() - started, 1)
    losses["lora"] = {
        "train": lora_train,
        "eval_positive": _eval_loss(tuned, tokenizer, eval_positive),
        "eval_positive_base": _eval_loss(trained["weak"], tokenizer, eval_positive),
    }

    manifest: dict[str, Any] = {
        **_expected_manifest(),
        "scale": scale,
        "steps": {phase: _steps(phase, scale) for phase in RECIPE},
        "recipe": RECIPE,
        "architectures": {"strong": STRONG_ARCH, "weak": WEAK_ARCH},
        "lora": {"r": LORA_RANK, "alpha": LORA_ALPHA, "target_modules": list(LORA_TARGET_MODULES)},
        "param_counts": {
            "strong": _count(trained["strong"]),
            "weak": _count(trained["weak"]),
            "lora": _count(tuned, trainable_only=True),
        },
        "final_losses": losses,
        "train_seconds": seconds,
        "torch_threads": torch.get_num_threads(),
        "versions": _versions(),
    }

    with staging_dir(final.parent) as staged, hub_progress_bars_off():
        trained["strong"].save_pretrained(staged / STRONG_DIR, safe_serialization=True)
        trained["weak"].save_pretrained(staged / WEAK_DIR, safe_serialization=True)
        # The adapter config would otherwise record the staging path as its base model; the
        # relative name documents the pairing without pointing at a folder that no longer exists.
        tuned.peft_config["default"].base_model_name_or_path = f"../{WEAK_DIR}"
        # save_embedding_layers=False: peft would otherwise also store the full lm_head weights
        # because it is a LoRA target; the adapter needs only the low-rank matrices.
        tuned.save_pretrained(staged / ADAPTER_DIR, safe_serialization=True, save_embedding_layers=False)
        # The tokenizer goes next to each model too, so that each folder loads on its own (as the
        # command line and from_pretrained load them), besides its own folder for the demo's loader.
        for folder in (TOKENIZER_DIR, STRONG_DIR, WEAK_DIR, ADAPTER_DIR):
            tokenizer.save_pretrained(staged / folder)
        # The manifest goes last: its presence marks a complete folder even before publishing.
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        publish(staged, final)

    tuned.eval()
    return TrainedDemo(
        strong=trained["strong"],
        weak=trained["weak"],
        tuned=tuned,
        tokenizer=tokenizer,
        cache_dir=final,
        manifest=manifest,
    )


def _versions() -> dict[str, str]:
    import peft
    import tokenizers
    import transformers

    from .. import __version__

    return {
        "w2s_generate": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "tokenizers": tokenizers.__version__,
    }


def _load_llama(folder: Path) -> LlamaForCausalLM:
    # use_safetensors=True: never fall back to a pickle checkpoint, even one planted in the cache.
    with hub_progress_bars_off():
        model = LlamaForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    return model.eval()


def load_demo_models(
    cache_dir: str | os.PathLike[str] | None = None, force: bool = False, progress: bool = True
) -> DemoModels:
    """Load the demo models from the cache, training them first if needed.

    Args:
        cache_dir: Cache root (models live in ``<cache_dir>/demo-v1``); None means
            ``$W2S_GENERATE_CACHE`` or ``~/.cache/w2s_generate``.
        force: Retrain even if a valid cache exists.
        progress: Show tqdm progress bars while training.

    Returns:
        The models in eval mode. A cache is reused when its manifest has this version's format
        and recipe fingerprint and all files are present; otherwise it is rebuilt (~2 minutes).
    """
    folder = demo_dir(cache_dir)
    if force or read_manifest(folder, _expected_manifest()) is None:
        train_demo_models(cache_dir, progress=progress)
    return DemoModels(
        strong=_load_llama(folder / STRONG_DIR),
        weak=_load_llama(folder / WEAK_DIR),
        adapter_dir=folder / ADAPTER_DIR,
        tokenizer=PreTrainedTokenizerFast.from_pretrained(folder / TOKENIZER_DIR),
        cache_dir=folder,
    )
