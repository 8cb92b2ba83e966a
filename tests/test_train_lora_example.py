"""examples/train_weak_lora.py end to end: tune a LoRA weak model, load it as a pair, search with it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

import w2s_generate as w2s

# peft's notes when it loads a GPT-2 adapter on Conv1D projections plus a tied, Linear lm_head.
pytestmark = [
    pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to:UserWarning"),
    pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning"),
]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_weak_lora.py"
DATA = [
    {"prompt": "Review:", "response": " the film was wonderful and the acting was great"},
    {"prompt": "Review:", "response": " i loved every minute of this movie, truly a delight"},
    {"prompt": "Summary:", "response": " the music is lovely; the camera work is superb!"},
    {"prompt": "Review:", "response": " an honest, moving drama."},
]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_weak_lora", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lora-base") / "weak"
    tokenizer = make_tokenizer()
    make_model("gpt2", len(tokenizer), 5).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_train_load_and_search(example, base_dir, tmp_path, capsys):
    data = tmp_path / "preferred.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DATA))
    out = tmp_path / "weak-lora"
    argv = ["--base", str(base_dir), "--data", str(data), "--out", str(out), "--epochs", "15"]
    assert example.main(argv + ["--lr", "1e-2", "--batch-size", "2", "--rank", "4", "--no-progress"]) == 0
    assert f"WeakPair.from_pretrained('{out}')" in capsys.readouterr().out

    assert (out / "adapter_model.safetensors").exists()
    assert not list(out.glob("*.bin"))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_dir.resolve())
    assert "lm_head" in config["target_modules"]  # the output layer is tuned by default

    pair = w2s.WeakPair.from_pretrained(out)
    scores = pair.score([d["prompt"] for d in DATA], [d["response"] for d in DATA])
    assert (scores > 0).all(), scores  # the tuned side prefers the training responses

    tokenizer = pair.tokenizer
    strong = make_model("gpt2", len(tokenizer), 6, width=48)
    inputs = tokenizer(["Review:"], return_tensors="pt")
    torch.manual_seed(0)
    result = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, beam_width=2, successors_per_beam=2, chunk_length=2),
        do_sample=True,
        max_new_tokens=4,
        return_dict_in_generate=True,
    )
    assert result.sequences.shape[1] <= inputs["input_ids"].shape[1] + 4
    assert result.log_ratios.shape == (1,)


def test_plain_text_data_and_chosen_target_modules(example, base_dir, tmp_path):
    data = tmp_path / "preferred.txt"
    data.write_text("the film was wonderful\n\nwhat a delight\n")
    out = tmp_path / "weak-lora"
    argv = ["--base", str(base_dir), "--data", str(data), "--out", str(out), "--epochs", "1"]
    assert example.main(argv + ["--target-modules", "c_attn", "--no-progress"]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["target_modules"] == ["c_attn"]
    assert (out / "tokenizer.json").exists()


def test_bad_data_line_is_named(example, base_dir, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(DATA[0]) + "\n" + json.dumps({"prompt": "x"}) + "\n")
    assert example.main(["--base", str(base_dir), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "line 2" in capsys.readouterr().err
