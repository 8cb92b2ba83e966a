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
        dict(method="cbs", beam_width=2, successors=3, chunk_length=3),
        lambda p: w2s.ChunkBeamSearch(p, 2, 3, 3),
    ),
    "cbs-policies": (
        dict(
            method="cbs",
            beam_width=2,
            successors=w2s.ScheduledBudget([3, 1]),
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
    "cbs-flags": (
        dict(method="cbs", beam_width=2, successors_schedule=[3, 1], selection="diverse", max_per_parent=1),
        lambda p: w2s.ChunkBeamSearch(
            p, 2, w2s.ScheduledBudget([3, 1]), 5, selection=w2s.DiverseSelection(1)
        ),
    ),
    "cbs-drafted": (
        dict(method="cbs", beam_width=2, successors=2, chunk_length=4, draft_tokens=3),
        lambda p: w2s.ChunkBeamSearch(p, 2, 2, 4, draft_tokens=3),
    ),
    "bon": (dict(method="bon", n=3), lambda p: w2s.BestOfN(p, n=3)),
    "token": (dict(method="token", beta=2.0), lambda p: w2s.TokenGuidance(p, beta=2.0)),
    "token-drafted": (
        dict(method="token", beta=2.0, draft_tokens=2),
        lambda p: w2s.TokenGuidance(p, beta=2.0, draft_tokens=2),
    ),
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
    if not case.startswith("token"):
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
    with pytest.raises(ValueError, match=r"method='beam' is not one of"):
        model.generate(
            **inputs,
            custom_generate=str(REPO),
            trust_remote_code=True,
            weak_pair=pair,
            method="beam",
            max_new_tokens=2,
        )
    # The options are checked as the command line checks them: one of another method is named.
    with pytest.raises(ValueError, match=r"'beta' applies to method='token' only, not method='cbs'"):
        model.generate(
            **inputs,
            custom_generate=str(REPO),
            trust_remote_code=True,
            weak_pair=pair,
            beta=2.0,
            max_new_tokens=2,
        )


def test_a_method_added_to_the_table_reaches_the_command_line_and_the_hub_folder(setup, monkeypatch):
    from w2s_generate import cli, methods

    model, pair, tok, inputs = setup

    def best_of_few(pair, tokenizer, seed, *, few):
        return w2s.BestOfN(pair, n=few, tokenizer=tokenizer)

    fake = methods.MethodSpec(
        "few", "best of a few", (methods.MethodOption("few", 2, "samples", "positive_int", "F"),), best_of_few
    )
    monkeypatch.setitem(methods.METHODS, "few", fake)

    # The command line: a --method choice, its flag parsed by the named type, refused for other methods.
    parser = cli.build_parser()
    argv = ["generate", "--model", "M", "--adapter", "A", "--prompt", "x", "--out", "o"]
    args = parser.parse_args([*argv, "--method", "few", "--few", "3"])
    cli.check_generate_args(args._parser, args)
    strategy = cli.make_strategy(args, pair, None)
    assert isinstance(strategy, w2s.BestOfN) and strategy.n == 3
    args = parser.parse_args([*argv, "--method", "bon", "--few", "3"])
    with pytest.raises(SystemExit):
        cli.check_generate_args(args._parser, args)
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--method", "few", "--few", "0"])

    # The hub folder: method= and the option by the same name, the same output as the package strategy.
    torch.manual_seed(4)
    from_hub = model.generate(
        **inputs,
        custom_generate=str(REPO),
        trust_remote_code=True,
        weak_pair=pair,
        method="few",
        few=3,
        do_sample=True,
        max_new_tokens=6,
        return_dict_in_generate=True,
    )
    torch.manual_seed(4)
    direct = model.generate(
        **inputs,
        custom_generate=w2s.BestOfN(pair, n=3),
        do_sample=True,
        max_new_tokens=6,
        return_dict_in_generate=True,
    )
    assert torch.equal(from_hub.sequences, direct.sequences)
    with pytest.raises(ValueError, match="'few' applies to method='few' only, not method='bon'"):
        model.generate(
            **inputs, custom_generate=str(REPO), trust_remote_code=True, weak_pair=pair, method="bon", few=3
        )


def test_the_docs_list_every_method_and_option_of_the_table():
    from w2s_generate.methods import METHODS, option_owners

    cli_page = (REPO.parent / "docs" / "cli.md").read_text()
    hub_card = (REPO / "README.md").read_text()
    assert f"`--method {{{','.join(METHODS)}}}`" in cli_page
    for name, owners in option_owners().items():
        flag = "--" + name.replace("_", "-")
        rows = [line for line in cli_page.splitlines() if line.startswith((f"| `{flag} ", f"| `{flag}`"))]
        assert len(rows) == 1, flag
        assert rows[0].split("|")[2].strip().startswith(", ".join(owners)), rows[0]
        assert f"`{name}`" in hub_card, name
    for name in METHODS:
        assert f'`method="{name}"`' in hub_card
