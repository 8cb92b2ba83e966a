"""The hub-style ``custom_generate`` folder (``hub/``), loaded from a local path as transformers loads
a repository: same output as the in-package strategies under the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

import w2s_generate as w2s

REPO = Path(__file__).resolve().parent.parent / "hub"
PROMPTS = ["the film was", "a quiet story about"]


@pytest.fixture(scope="module")
def setup():
    tok = make_tokenizer()
    v = len(tok)
    model = make_model("gpt2", v, 60, width=48)
    pair = w2s.WeakPair(make_model("gpt2", v, 61), make_model("gpt2", v, 62), tok)
    return model, pair, tok, tok(PROMPTS, return_tensors="pt", padding=True)


CASES = {
    "cbs": (
        dict(search="cbs", beam_width=2, successors_per_beam=3, chunk_length=3),
        lambda p: w2s.ChunkBeamSearch(p, 2, 3, 3),
    ),
    "cbs-policies": (
        dict(
            search="cbs",
            beam_width=2,
            successors_per_beam=w2s.ScheduledBudget([3, 1]),
            chunk_length=w2s.ChunkBoundary(3, stop_token_ids=[5, 7]),
            selection=w2s.DiverseSelection(1),
        ),
        lambda p: w2s.ChunkBeamSearch(
            p,
            2,
            w2s.ScheduledBudget([3, 1]),
            w2s.ChunkBoundary(3, stop_token_ids=[5, 7]),
            selection=w2s.DiverseSelection(1),
        ),
    ),
    "bon": (dict(search="bon", n=3), lambda p: w2s.BestOfN(p, n=3)),
    "token": (dict(search="token", beta=2.0), lambda p: w2s.TokenGuidance(p, beta=2.0)),
}


@pytest.mark.parametrize("case", CASES)
def test_hub_folder_equals_the_package_strategy(setup, case):
    model, pair, tok, inputs = setup
    hub_kwargs, make = CASES[case]
    torch.manual_seed(4)
    from_hub = model.generate(
        **inputs,
        custom_generate=str(REPO),
        trust_remote_code=True,
        weak_pair=pair,
        **hub_kwargs,
        do_sample=True,
        max_new_tokens=9,
        return_dict_in_generate=True,
    )
    torch.manual_seed(4)
    direct = model.generate(
        **inputs, custom_generate=make(pair), do_sample=True, max_new_tokens=9, return_dict_in_generate=True
    )
    assert torch.equal(from_hub.sequences, direct.sequences)
    if case != "token":
        assert torch.equal(from_hub.log_ratios, direct.log_ratios)


def test_hub_folder_passes_stop_strings_and_weak_prompts(setup):
    model, pair, tok, inputs = setup
    kwargs = dict(
        do_sample=True, max_new_tokens=12, stop_strings=["e"], tokenizer=tok, weak_prompts=["x", "y"]
    )
    torch.manual_seed(1)
    from_hub = model.generate(
        **inputs, custom_generate=str(REPO), trust_remote_code=True, weak_pair=pair, chunk_length=3, **kwargs
    )
    w2s.enable(model)
    try:
        torch.manual_seed(1)
        direct = model.generate(**inputs, strategy=w2s.ChunkBeamSearch(pair, 4, 4, 3), **kwargs)
    finally:
        w2s.disable(model)
    assert torch.equal(from_hub, direct)


def test_hub_folder_errors(setup):
    model, pair, tok, inputs = setup
    with pytest.raises(ValueError, match="trust_remote_code"):
        model.generate(**inputs, custom_generate=str(REPO), weak_pair=pair, do_sample=True, max_new_tokens=2)
    with pytest.raises(ValueError, match="Give the weak pair"):
        model.generate(
            **inputs, custom_generate=str(REPO), trust_remote_code=True, do_sample=True, max_new_tokens=2
        )
    with pytest.raises(ValueError, match=r"search='beam' is not one of"):
        model.generate(
            **inputs,
            custom_generate=str(REPO),
            trust_remote_code=True,
            weak_pair=pair,
            search="beam",
            max_new_tokens=2,
        )
