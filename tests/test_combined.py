"""Ensembles and prompt-conditioned pairs against pairs built by hand."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model
from peft import LoraConfig, get_peft_model
from reference import full_logprob

import w2s_generate as w2s

PROMPTS = ["the film was", "a quiet story"]
RESPONSES = [" wonderful and great", " about a family"]


@pytest.fixture
def pairs(family, tokenizer):
    v = len(tokenizer)
    a = w2s.WeakPair(make_model(family, v, 1), make_model(family, v, 2), tokenizer)
    b = w2s.WeakPair(make_model(family, v, 3), make_model(family, v, 4), tokenizer)
    return a, b


def test_ensemble_of_one_with_weight_one_equals_the_pair(pairs):
    a, _ = pairs
    torch.testing.assert_close(
        w2s.GuidanceEnsemble([(a, 1.0)]).score(PROMPTS, RESPONSES), a.score(PROMPTS, RESPONSES)
    )


def test_weights_scale_linearly(pairs):
    a, b = pairs
    want = 2.0 * a.score(PROMPTS, RESPONSES) - 0.5 * b.score(PROMPTS, RESPONSES)
    got = w2s.GuidanceEnsemble([(a, 2.0), (b, -0.5)]).score(PROMPTS, RESPONSES)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_mixed_adapter_ensemble_equals_separate_pairs_in_one_forward(family, tokenizer):
    v = len(tokenizer)
    base = make_model(family, v, 7)
    targets = ["c_attn"] if family == "gpt2" else ["q_proj", "v_proj"]
    model = get_peft_model(
        base, LoraConfig(r=4, target_modules=targets, init_lora_weights=False), adapter_name="tone"
    )
    model.add_adapter("topic", LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    tone = w2s.WeakPair.from_peft(model, tokenizer, "tone")
    topic = w2s.WeakPair.from_peft(model, tokenizer, "topic")
    ensemble = w2s.GuidanceEnsemble([(tone, 1.0), (topic, 0.5)], names=["tone", "topic"])
    assert len(ensemble.sides) == 3, "the shared base side is merged"
    calls = []
    hook = model.get_base_model().register_forward_hook(lambda *a: calls.append(1))
    try:
        got = ensemble.score(PROMPTS, RESPONSES)
    finally:
        hook.remove()
    assert len(calls) == 2, "one prefill and one scoring forward for all three sides"
    want = tone.score(PROMPTS, RESPONSES) + 0.5 * topic.score(PROMPTS, RESPONSES)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_prompt_pair_equals_hand_built_pair(family, tokenizer):
    model = make_model(family, len(tokenizer), 5)
    condition = "Review: 5 stars."
    pair = w2s.PromptPair(model, tokenizer, condition)
    want = []
    for prompt, response in zip(PROMPTS, RESPONSES):
        r = tokenizer(response, add_special_tokens=False)["input_ids"]
        conditioned = tokenizer(condition + "\n\n" + prompt)["input_ids"]
        plain = tokenizer(prompt)["input_ids"]
        want.append(full_logprob(model, conditioned, r) - full_logprob(model, plain, r))
    torch.testing.assert_close(pair.score(PROMPTS, RESPONSES), torch.tensor(want), atol=1e-4, rtol=1e-4)


def test_component_traces_in_search(family, tokenizer, pairs):
    a, b = pairs
    ensemble = w2s.GuidanceEnsemble([(a, 1.0), (b, 1.0)], names=["a", "b"])
    strong = make_model(family, len(tokenizer), 9, width=48)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(ensemble, 2, 2, 3),
        do_sample=True,
        max_new_tokens=6,
        return_dict_in_generate=True,
        return_trace=True,
    )
    last = out.trace[-1]
    assert set(last.component_scores) == {"a", "b"}
    torch.testing.assert_close(
        last.component_scores["a"] + last.component_scores["b"], last.scores, atol=1e-4, rtol=1e-4
    )


def test_bad_ensembles(pairs, tokenizer):
    a, _ = pairs
    with pytest.raises(ValueError, match="members is empty"):
        w2s.GuidanceEnsemble([])
    with pytest.raises(TypeError, match=r"\(WeakPair, weight\) tuple"):
        w2s.GuidanceEnsemble([a])
    with pytest.raises(ValueError, match="distinct names"):
        w2s.GuidanceEnsemble([(a, 1.0), (a, 2.0)], names=["x", "x"])
    with pytest.raises(ValueError, match="condition must be a non-empty text or a function"):
        w2s.PromptPair(a.sides[0].model, tokenizer, "  ")


def test_explanation_pair_conditions_each_prompt_on_its_explanation(family, tokenizer):
    model = make_model(family, len(tokenizer), 5)
    strong = make_model(family, len(tokenizer), 9, width=48)
    notes = w2s.explain(strong, tokenizer, PROMPTS, instruction="Explain: {prompt} ->", max_new_tokens=4)
    assert len(notes) == 2 and all(isinstance(n, str) for n in notes)
    notes = ["Review: 5 stars.", "Summary: a moving drama."]  # readable explanations for the oracle
    pair = w2s.explanation_pair(model, tokenizer, PROMPTS, notes)
    for prompt, note, response in zip(PROMPTS, notes, RESPONSES):
        torch.testing.assert_close(
            pair.score([prompt], [response]),
            w2s.PromptPair(model, tokenizer, note).score([prompt], [response]),
            atol=1e-5,
            rtol=1e-5,
        )
    with pytest.raises(KeyError, match="No explanation for the prompt"):
        pair.score(["another prompt"], [" x"])
    with pytest.raises(ValueError, match="must contain"):
        w2s.explain(strong, tokenizer, PROMPTS, instruction="no slot")
