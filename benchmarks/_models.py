"""Models, tokenizer and prompts shared by the timing benchmarks (built in code: nothing is downloaded)."""

from __future__ import annotations

import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

VOCAB_SIZE = 4096
MAX_POSITIONS = 1024
PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"

# Strong ~10x one weak model (the printed counts are the exact figures).
SIZES = {
    "gpt2": {
        "strong": {"n_embd": 512, "n_layer": 8, "n_head": 8},
        "weak": {"n_embd": 192, "n_layer": 4, "n_head": 4},
    },
    "llama": {
        "strong": {"hidden": 512, "layers": 8, "heads": 8, "kv_heads": 4, "mlp": 1408},
        "weak": {"hidden": 160, "layers": 4, "heads": 4, "kv_heads": 2, "mlp": 432},
    },
    # GPU scale (strong ~0.4-0.5B, weak ~40M): the small sizes only measure kernel-launch overhead there.
    "gpt2-large": {
        "strong": {"n_embd": 1280, "n_layer": 24, "n_head": 20},
        "weak": {"n_embd": 512, "n_layer": 12, "n_head": 8},
    },
    "llama-large": {
        "strong": {"hidden": 1280, "layers": 24, "heads": 20, "kv_heads": 4, "mlp": 3456},
        "weak": {"hidden": 512, "layers": 12, "heads": 8, "kv_heads": 2, "mlp": 1376},
    },
}

PROMPTS = [
    "Review: the film was",
    "Write a short, friendly reply to a customer who asked about delivery times:",
    "Summary:",
    "The quiet story follows a family in a small town who",
]

ENGLISH = [
    "the film was wonderful and the acting was great",
    "the plot was dull and the ending was awful",
    "a quiet story about a family in a small town",
    "i loved every minute of this movie, truly a delight",
    "terrible pacing, weak characters and a boring script",
    "Write a short, friendly reply to a customer who asked about delivery times.",
    "Review: 5 stars. Summary: an honest, moving drama.",
]


# ---------------------------------------------------------------------- tokenizer
def synthetic_corpus(seed: int = 0, n_words: int = 60_000) -> list[str]:
    """Zipf-distributed pseudo-words plus a few English lines: enough text for ~4k BPE merges."""
    rng = random.Random(seed)
    onsets = [*"bcdfghjklmnprstvwz", "br", "cr", "dr", "fl", "gr", "pl", "st", "tr", "ch", "sh", "th"]
    nuclei = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng"]
    lexicon: set[str] = set()
    while len(lexicon) < 3000:
        syllables = rng.choice([1, 1, 2, 2, 3])
        lexicon.add(
            "".join(rng.choice(onsets) + rng.choice(nuclei) + rng.choice(codas) for _ in range(syllables))
        )
    words = sorted(lexicon)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(words))]
    stream = rng.choices(words, weights, k=n_words)
    lines = [" ".join(stream[i : i + 12]) for i in range(0, len(stream), 12)]
    return lines + ENGLISH * 50


def make_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in code, wrapped for transformers, left padding."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(synthetic_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS)
    fast.padding_side = "left"
    return fast


# ---------------------------------------------------------------------- models
def make_model(family: str, role: str, vocab: int, ids: dict[str, int], seed: int) -> PreTrainedModel:
    """A randomly initialised causal LM of the family and role ("strong" or "weak"), in eval mode."""
    torch.manual_seed(seed)
    size = SIZES[family][role]
    if family.startswith("gpt2"):
        config = GPT2Config(
            vocab_size=vocab,
            n_positions=MAX_POSITIONS,
            n_embd=size["n_embd"],
            n_layer=size["n_layer"],
            n_head=size["n_head"],
            **ids,
        )
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=size["hidden"],
            intermediate_size=size["mlp"],
            num_hidden_layers=size["layers"],
            num_attention_heads=size["heads"],
            num_key_value_heads=size["kv_heads"],
            max_position_embeddings=MAX_POSITIONS,
            **ids,
        )
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = ids["pad_token_id"]
    model.generation_config.eos_token_id = ids["eos_token_id"]
    return model.eval()


def n_params(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def kv_bytes_per_token(model: PreTrainedModel) -> int:
    """Bytes of KV cache one row holds per token (keys and values of every layer)."""
    config = model.config
    layers = config.num_hidden_layers
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = config.hidden_size // config.num_attention_heads
    return 2 * layers * heads * head_dim * next(model.parameters()).element_size()


def describe(family: str, role: str) -> str:
    size = SIZES[family][role]
    if family.startswith("gpt2"):
        return f"(GPT-2, {size['n_layer']} layers, n_embd {size['n_embd']}, {size['n_head']} heads)"
    return (
        f"(Llama, {size['layers']} layers, hidden {size['hidden']}, {size['heads']} heads / "
        f"{size['kv_heads']} kv, mlp {size['mlp']})"
    )


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that host timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
