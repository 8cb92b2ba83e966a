"""Every example in the public docstrings runs, on tiny models built here.

The names the examples use (``model``, ``tokenizer``, ``pair``, ``inputs``, ...) are bound to tiny
real models; the examples that need the hub or a server keep ``# doctest: +SKIP`` and are listed in
``NEEDS_NETWORK``, so a new example cannot silently stop running.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch
from conftest import make_model, make_tokenizer
from peft import LoraConfig, get_peft_model
from transformers import GPT2LMHeadModel

import w2s_generate as w2s

# Docstrings whose every example needs a download or a running server.
NEEDS_NETWORK = {
    "w2s_generate.pairs.WeakPair.from_pretrained",
    "w2s_generate.samplers.CompletionsSampler",
    "w2s_generate.search.ChunkBeamSearch.run",
}
PROMPTS = ["the film was", "a quiet story about"]


def docstring_tests() -> list[doctest.DocTest]:
    modules = [w2s] + [
        importlib.import_module(f"w2s_generate.{info.name}")
        for info in pkgutil.walk_packages(w2s.__path__)
        if not info.name.startswith("demo")
    ]
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {t.name: t for m in modules for t in finder.find(m, m.__name__) if t.examples}
    return [found[name] for name in sorted(found)]


def adapter_folders(tmp_path, tokenizer) -> None:
    """``helpful-lora`` and ``harmless-lora`` in ``tmp_path``: two adapters on one saved base."""
    base_dir = tmp_path / "base"
    make_model("gpt2", len(tokenizer), 7).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    for seed, name in [(1, "helpful-lora"), (2, "harmless-lora")]:
        torch.manual_seed(seed)
        base = GPT2LMHeadModel.from_pretrained(base_dir)  # records base_dir as the adapter's base
        adapter = get_peft_model(base, LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False))
        adapter.save_pretrained(tmp_path / name)


def namespace(tmp_path) -> dict:
    """The names the examples refer to, each a tiny real object."""
    tok = make_tokenizer()
    v = len(tok)
    model = make_model("gpt2", v, 10, width=48, layers=3)
    pair = w2s.WeakPair(make_model("gpt2", v, 11), make_model("gpt2", v, 12), tok)
    return {
        "torch": torch,
        **{name: getattr(w2s, name) for name in w2s.__all__},
        "model": model,
        "tokenizer": tok,
        "tok": tok,
        "prompts": PROMPTS,
        "inputs": tok(PROMPTS, return_tensors="pt", padding=True),
        "pair": pair,
        "cbs": w2s.ChunkBeamSearch(pair, beam_width=2, successors_per_beam=2, chunk_length=4),
        "tuned_model": make_model("gpt2", v, 11),
        "untuned_model": make_model("gpt2", v, 12),
        "base": make_model("gpt2", v, 13),
        "small_model": make_model("gpt2", v, 14),
        "small": make_model("gpt2", v, 14),
        "small_tok": tok,
        "helpful": pair,
        "harmless": w2s.PromptPair(make_model("gpt2", v, 14), tok, condition="Be harmless."),
    }


TESTS = docstring_tests()


def test_every_public_name_has_an_example():
    names = {t.name for t in TESTS}
    assert names >= NEEDS_NETWORK, f"listed but gone: {sorted(NEEDS_NETWORK - names)}"
    public = [getattr(w2s, name) for name in w2s.__all__ if name != "scoring"]  # a module
    missing = [f"{o.__module__}.{o.__qualname__}" for o in public]
    missing = [name for name in missing if name not in names]
    assert not missing, f"public names without a docstring example: {missing}"


@pytest.mark.parametrize("test", TESTS, ids=[t.name.removeprefix("w2s_generate.") for t in TESTS])
def test_docstring_example(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    test.globs = {**namespace(tmp_path), "__name__": test.name}
    if "from_adapters" in test.name:
        adapter_folders(tmp_path, test.globs["tokenizer"])
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    torch.manual_seed(0)
    result = runner.run(test, out=report.append, clear_globs=False)
    assert result.failed == 0, "".join(report)
    skipped_all = all(ex.options.get(doctest.SKIP) for ex in test.examples)
    if test.name in NEEDS_NETWORK:
        assert skipped_all, f"{test.name} runs offline now: drop it from NEEDS_NETWORK"
    else:
        assert result.attempted > 0 and not any(ex.options.get(doctest.SKIP) for ex in test.examples), (
            f"{test.name}: an example is skipped; make it run on the tiny models here"
        )
