"""The real-model demo's pieces, on tiny models built in code (the real models are too slow here)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import make_model_for, make_tokenizer
from peft import LoraConfig, get_peft_model

from w2s_generate.cli import build_parser, main
from w2s_generate.demo import openings as op
from w2s_generate.demo.compare import MethodResult, format_table, join_response, plot
from w2s_generate.demo.real import RECIPE, AdapterRecipe, RealDemoModels, run_real_comparison
from w2s_generate.demo.real_adapter import cached_manifest
from w2s_generate.demo.real_reward import large_model_fluency, vader_reward


def test_vader_reward_is_the_gold_sentiment():
    assert vader_reward(" a wonderful, moving film that I loved") > 0.5
    assert vader_reward(" a dull, awful and boring mess") < -0.5
    assert vader_reward("") == 0.0
    assert vader_reward("   ") == 0.0


def test_openings_are_neutral_enough_and_never_overlap():
    assert len(op.EVAL_OPENINGS) >= 48
    assert len(set(op.EVAL_OPENINGS)) == len(op.EVAL_OPENINGS)
    assert len(set(op.TRAIN_OPENINGS)) == len(op.TRAIN_OPENINGS)
    assert not set(op.EVAL_OPENINGS) & set(op.TRAIN_OPENINGS)
    assert 0 < op.CHECK_OPENINGS < len(op.TRAIN_OPENINGS)
    # The evaluation openings leave the verdict to the continuation.
    assert max(abs(vader_reward(o)) for o in op.EVAL_OPENINGS) < 0.2


def test_recipe_fingerprint_changes_with_the_recipe(tmp_path):
    assert AdapterRecipe().fingerprint() == RECIPE.fingerprint()
    assert AdapterRecipe(epochs=3).fingerprint() != RECIPE.fingerprint()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / name).write_text("{}")
    assert cached_manifest(tmp_path, RECIPE) is None  # no manifest
    (tmp_path / "manifest.json").write_text(json.dumps({"fingerprint": RECIPE.fingerprint()}))
    assert cached_manifest(tmp_path, RECIPE) == {"fingerprint": RECIPE.fingerprint()}
    assert cached_manifest(tmp_path, AdapterRecipe(lr=1e-3)) is None
    (tmp_path / "manifest.json").write_text("not json")
    assert cached_manifest(tmp_path, RECIPE) is None


def test_join_response_keeps_one_space():
    assert join_response("The film", " was long") == "The film was long"
    assert join_response("The film", "was long") == "The film was long"
    assert join_response("The film", "") == "The film"


def _tiny_real_models() -> RealDemoModels:
    """A 'large' model and a LoRA weak model over two different tokenizers, like Gemma and SmolLM2."""
    large_tok = make_tokenizer(400, bos=True)
    weak_tok = make_tokenizer(330, seed_text="a different vocabulary")
    large = make_model_for(large_tok, "llama", 1, width=48, layers=2)
    base = make_model_for(weak_tok, "llama", 2)
    config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    weak = get_peft_model(base, config).eval()
    manifest = {"check": {"tuned_vader": 0.4, "untuned_vader": 0.2}}
    return RealDemoModels(large, large_tok, weak, weak_tok, adapter_dir=None, manifest=manifest)


def test_large_model_fluency_is_a_mean_token_log_prob():
    models = _tiny_real_models()
    scores = large_model_fluency(
        models.large, models.large_tokenizer, ["the film", "a story"], [" was great", ""], batch_size=1
    )
    assert scores[0] < 0 and math.isnan(scores[1])
    # The same as scoring the row by hand.
    tok = models.large_tokenizer
    prompt = tok("the film")["input_ids"]
    full = tok("the film was great")["input_ids"]
    with torch.no_grad():
        logits = models.large(torch.tensor([full])).logits[0]
    logprobs = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
    expected = logprobs.gather(-1, torch.tensor(full[len(prompt) :])[:, None]).mean()
    assert scores[0] == pytest.approx(float(expected), abs=1e-5)


def test_real_comparison_runs_across_tokenizers_and_reports_the_spread(tmp_path):
    torch.set_num_threads(1)
    rows = run_real_comparison(
        _tiny_real_models(), n_prompts=2, seeds=(0, 1), max_new_tokens=6, budgets=(4,), progress=False
    )
    assert [r.family for r in rows] == ["strong", "tuned", "bon", "cbs"]
    assert [r.method for r in rows] == [
        "large model alone",
        "tuned weak alone",
        "best-of-4",
        "CBS W=2 K=2 L=5",
    ]
    by = {r.family: r for r in rows}
    assert by["tuned"].large_tokens == 0
    assert 1 <= by["strong"].large_tokens <= 6
    assert by["bon"].large_tokens > 2 * by["strong"].large_tokens
    for r in rows:
        assert r.seeds == 2 and r.prompts == 2
        assert r.gold_reward_min <= r.gold_reward <= r.gold_reward_max
        assert -1.0 <= r.gold_reward <= 1.0 and r.fluency < 0
        assert r.large_model == "Gemma-3-270M" and "SmolLM2" in r.weak_model
    table = format_table(rows)
    assert "min to max over 2 seeds" in table and "best-of-4" in table
    png = plot(rows, tmp_path / "plot.png", title="t", ylabel="y").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_table_without_seeds_spread():
    row = MethodResult("strong alone", "strong", 1, 0.25, 0.9, 30, 1.0, "x")
    table = format_table([row])
    assert "| strong alone | +0.250 | 0.900 | 30 | 1.0 |" in table
    assert "seeds" not in table


def _demo_args(*argv):
    return build_parser().parse_args(["demo", *argv])


def test_demo_flags_default_to_the_real_task():
    args = _demo_args()
    assert args.task == "real"
    assert args.prompts is None and args.max_new_tokens is None  # filled per task by run_demo
    args = _demo_args("--task", "synthetic", "--prompts", "48", "--seeds", "0", "1", "2", "--threads", "1")
    assert (args.task, args.prompts, args.seeds, args.threads) == ("synthetic", 48, [0, 1, 2], 1)
    with pytest.raises(SystemExit):
        _demo_args("--task", "other")
    with pytest.raises(SystemExit):
        _demo_args("--seeds", "-1")


def test_demo_help_names_both_tasks(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for words in (
        "--task {real,synthetic}",
        "Gemma-3-270M",
        "SmolLM2-135M",
        "VADER",
        "--seeds",
        "--prompts 48",
    ):
        assert words in text


def test_synthetic_task_takes_one_seed(capsys):
    code = main(["demo", "--task", "synthetic", "--seeds", "0", "1", "--no-progress"])
    assert code == 1
    assert "one seed at a time" in capsys.readouterr().err
    assert main(["demo", "--seed", "0", "--seeds", "1"]) == 1
    assert "not both" in capsys.readouterr().err


def test_preference_training_raises_the_log_ratio_of_kept_over_rejected():
    from w2s_generate.demo.real_adapter import _preference_pairs, _train_preference

    torch.set_num_threads(1)
    samples = [("the film", " was wonderful and I loved it"), ("the film", " was dull and awful")] * 2
    samples += [("a story", " that I loved, a delight"), ("a story", " with nothing in it")]
    pairs = _preference_pairs(samples, RECIPE)
    assert pairs == [
        ("the film", " was wonderful and I loved it", " was dull and awful"),
        ("the film", " was wonderful and I loved it", " was dull and awful"),
        ("a story", " that I loved, a delight", " with nothing in it"),
    ]
    models = _tiny_real_models()
    pair = models.pair()
    before = pair.score(["the film"] * 2, [" was wonderful and I loved it", " was dull and awful"])
    recipe = AdapterRecipe(epochs=8, lr=1e-2, batch_size=3)
    losses = _train_preference(models.weak, models.weak_tokenizer, pairs, recipe, progress=False)
    after = pair.score(["the film"] * 2, [" was wonderful and I loved it", " was dull and awful"])
    assert losses[-1] < losses[0]
    assert (after[0] - after[1]) > (before[0] - before[1])
