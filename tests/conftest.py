"""Tiny real models and tokenizers built in code: nothing is downloaded."""

from __future__ import annotations

import functools
import signal

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import w2s_generate as w2s

CORPUS = [
    "the film was wonderful and the acting was great",
    "the plot was dull and the ending was awful",
    "a quiet story about a family in a small town",
    "i loved every minute of this movie, truly a delight",
    "terrible pacing, weak characters and a boring script",
    "the music is lovely; the camera work is superb!",
    "what a waste of time. never again.",
    "Review: 5 stars. Summary: an honest, moving drama.",
] * 4


@functools.cache
def _byte_bpe(vocab_size: int, seed_text: str) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS + [seed_text], trainer)
    return tok


def make_tokenizer(vocab_size: int = 320, seed_text: str = "", bos: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (decode(encode(text)) == text), optionally prepending <|bos|>."""
    tok = Tokenizer.from_str(_byte_bpe(vocab_size, seed_text).to_str())
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", pair="<|bos|> $A $B", special_tokens=[("<|bos|>", 1)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>"
    )
    fast.padding_side = "left"
    return fast


def make_model(
    family: str,
    vocab: int,
    seed: int,
    width: int = 32,
    layers: int = 2,
    extra_rows: int = 0,
    attention: str | None = None,
):
    """A tiny random model; ``attention`` picks the attention implementation (default transformers')."""
    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab + extra_rows,
            n_positions=256,
            n_embd=width,
            n_layer=layers,
            n_head=2,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = GPT2LMHeadModel(config)
    elif family == "llama":
        config = LlamaConfig(
            vocab_size=vocab + extra_rows,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = LlamaForCausalLM(config)
    else:  # pragma: no cover
        raise ValueError(family)
    if attention is not None:
        model.set_attn_implementation(attention)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    return model.eval()


def make_model_for(tokenizer, family: str, seed: int, **kwargs):
    """A tiny random model over ``tokenizer``'s vocabulary, generating with its special ids."""
    model = make_model(family, len(tokenizer), seed, **kwargs)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


FAMILIES = ["gpt2", "llama"]


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


# A large model and a weak pair of one family (a file may define its own with other seeds).
@pytest.fixture
def strong(family, tokenizer):
    return make_model(family, len(tokenizer), 10, width=48, layers=3)


@pytest.fixture
def pair(family, tokenizer):
    return w2s.WeakPair(
        make_model(family, len(tokenizer), 11), make_model(family, len(tokenizer), 12), tokenizer
    )


def default_sigint() -> None:
    """In a child process: Ctrl-C's default disposition. A shell starts a background job with SIGINT
    ignored, and a program started so keeps ignoring it (as it should): a test that sends SIGINT to
    the CLI must not hand that on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
