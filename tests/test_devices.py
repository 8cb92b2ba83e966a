"""The large model on a GPU, the weak pair on the same GPU, on the CPU, or in another dtype.

These run only where CUDA is available (they are skipped elsewhere, CI included); the same oracles as
the CPU tests: fresh scoring of what the search returns, the W=K=1 identity with plain sampling, and
agreement of the pair's placements.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_model, make_tokenizer
from peft import LoraConfig, get_peft_model
from reference import responses_of

import w2s_generate as w2s

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROMPTS = ["the film was", "a quiet story about"]


@pytest.fixture
def strong(family, tokenizer):
    return make_model(family, len(tokenizer), 10, width=48, layers=3).cuda()


def cpu_pair(family, tokenizer) -> w2s.WeakPair:
    return w2s.WeakPair(
        make_model(family, len(tokenizer), 11), make_model(family, len(tokenizer), 12), tokenizer
    )


def gpu_pair(family, tokenizer) -> w2s.WeakPair:
    """The same weights as ``cpu_pair`` (same seeds), on the GPU."""
    return w2s.WeakPair(
        make_model(family, len(tokenizer), 11).cuda(),
        make_model(family, len(tokenizer), 12).cuda(),
        tokenizer,
    )


@pytest.mark.parametrize("place", ["cuda", "cpu"])
def test_search_scores_are_fresh_wherever_the_pair_sits(strong, family, tokenizer, place):
    pair = gpu_pair(family, tokenizer) if place == "cuda" else cpu_pair(family, tokenizer)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True).to("cuda")
    torch.manual_seed(0)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 3, 3, 4),
        do_sample=True,
        max_new_tokens=12,
        num_return_sequences=2,
        return_dict_in_generate=True,
    )
    assert out.sequences.device.type == "cuda"
    responses = responses_of(out.sequences, inputs["input_ids"].shape[1], tokenizer.pad_token_id)
    prompts = [p for p in PROMPTS for _ in range(2)]
    torch.testing.assert_close(
        out.log_ratios.cpu(), pair.score(prompts, responses).cpu(), atol=1e-4, rtol=1e-4
    )


def test_width_one_reproduces_plain_sampling_on_gpu(strong, family, tokenizer):
    pair = gpu_pair(family, tokenizer)
    inputs = tokenizer(["the film was"], return_tensors="pt").to("cuda")
    for seed in range(3):
        torch.manual_seed(seed)
        plain = strong.generate(**inputs, do_sample=True, top_k=50, max_new_tokens=15)
        torch.manual_seed(seed)
        searched = strong.generate(
            **inputs,
            custom_generate=w2s.ChunkBeamSearch(pair, 1, 1, 4),
            do_sample=True,
            top_k=50,
            max_new_tokens=15,
        )
        assert torch.equal(plain, searched)


def test_token_guidance_with_pair_on_cpu_equals_pair_on_gpu(strong, family, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True).to("cuda")
    outs, scores = [], []
    for pair in (gpu_pair(family, tokenizer), cpu_pair(family, tokenizer)):
        out = strong.generate(
            **inputs,
            logits_processor=[w2s.WeakToStrongLogitsProcessor(pair, beta=2.0)],
            do_sample=False,
            max_new_tokens=10,
            output_scores=True,
            return_dict_in_generate=True,
        )
        outs.append(out.sequences)
        scores.append(torch.stack(out.scores))
    assert torch.equal(outs[0], outs[1])
    finite = torch.isfinite(scores[0])
    torch.testing.assert_close(scores[0][finite], scores[1][finite], atol=1e-4, rtol=1e-4)


def test_bfloat16_large_model_with_float32_pair(family, tokenizer):
    strong = make_model(family, len(tokenizer), 10, width=48, layers=3).to("cuda", torch.bfloat16)
    pair = gpu_pair(family, tokenizer)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True).to("cuda")
    for strategy in (w2s.ChunkBeamSearch(pair, 2, 2, 3), w2s.TokenGuidance(pair, beta=1.0)):
        torch.manual_seed(0)
        out = strong.generate(**inputs, custom_generate=strategy, do_sample=True, max_new_tokens=6)
        assert out.shape == (2, inputs["input_ids"].shape[1] + 6) and out.device.type == "cuda"


def test_lora_pair_on_gpu_equals_merged_two_checkpoint_pair(family, tokenizer):
    base = make_model(family, len(tokenizer), 11)
    targets = ["c_attn"] if family == "gpt2" else ["q_proj", "v_proj"]
    torch.manual_seed(5)
    peft_model = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, target_modules=targets, init_lora_weights=False)
    )
    merged = copy.deepcopy(peft_model).merge_and_unload().cuda()
    lora = w2s.WeakPair.from_peft(peft_model.cuda(), tokenizer)
    two = w2s.WeakPair(merged, base.cuda(), tokenizer)
    responses = [tokenizer.encode(" and the acting was great"), tokenizer.encode(" dull")]
    torch.testing.assert_close(
        lora.score(PROMPTS, responses), two.score(PROMPTS, responses), atol=1e-4, rtol=1e-4
    )


def test_cross_tokenizer_search_on_gpu(strong, tokenizer):
    other = make_tokenizer(280, seed_text="zebra quartz", bos=True)
    v = len(other)
    pair = w2s.WeakPair(make_model("llama", v, 21).cuda(), make_model("llama", v, 22).cuda(), other)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True).to("cuda")
    torch.manual_seed(0)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3, tokenizer=tokenizer),
        do_sample=True,
        max_new_tokens=9,
        return_dict_in_generate=True,
    )
    texts = tokenizer.batch_decode(out.sequences[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    torch.testing.assert_close(out.log_ratios.cpu(), pair.score(PROMPTS, texts).cpu(), atol=1e-4, rtol=1e-4)
