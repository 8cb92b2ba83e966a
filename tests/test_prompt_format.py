"""One rule for how a text prompt reaches the pair: training, the CLI, `pair.score` and the searches agree."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

import w2s_generate as w2s
from w2s_generate.prompt_format import (
    encode_prompt,
    read_prompt_format,
    resolve_chat_template,
    write_prompt_format,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _training_script():
    spec = importlib.util.spec_from_file_location("train_weak_lora", EXAMPLES / "train_weak_lora.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_weak_lora", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    pytest.importorskip("gguf", reason="the real tokenizers need the 'real' extra: make install")
    tok = w2s.real_tokenizer("smollm2-135m-instruct")
    assert tok.chat_template  # the case this file is about: a tokenizer with a chat template
    return tok


@pytest.fixture(scope="module")
def smollm2_shaped_lora(smollm2_tokenizer):
    from peft import LoraConfig, get_peft_model

    base = make_model("llama", len(smollm2_tokenizer), seed=3, width=16, layers=1)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(base, config).eval()


def test_training_cli_and_pair_encode_a_text_prompt_alike(smollm2_tokenizer, smollm2_shaped_lora):
    """The training script, the CLI's weak prompt and the pair read one text prompt as the same ids."""
    from w2s_generate.cli import PromptRecord, weak_prompt

    prompt = "The film opens on a quiet street"
    pair = w2s.WeakPair.from_peft(smollm2_shaped_lora, smollm2_tokenizer)
    assert pair.chat_template is True and "chat_template=True" in repr(pair)
    script = _training_script()
    trained_on = script.encode_examples([(prompt, " and it was lovely")], smollm2_tokenizer, 512, True)[0][0]
    args = argparse.Namespace(no_chat_template=False)
    via_cli = pair.encode_prompt(weak_prompt(PromptRecord(line=1, id="0", prompt=prompt), pair, args))
    assert via_cli == pair.encode_prompt(prompt) == trained_on[: len(via_cli)]
    assert smollm2_tokenizer.decode(via_cli).startswith("<|im_start|>system")
    # The scored log-ratio reads the same ids as a pair fed those ids directly.
    torch.testing.assert_close(pair.score([prompt], [" lovely"]), pair.score([via_cli], [" lovely"]))


def test_raw_rule_is_one_decision_for_training_and_pair(smollm2_tokenizer, smollm2_shaped_lora):
    prompt = "The film opens on a quiet street"
    pair = w2s.WeakPair.from_peft(smollm2_shaped_lora, smollm2_tokenizer, chat_template=False)
    assert "chat_template=False" in repr(pair)
    script = _training_script()
    trained_on = script.encode_examples([(prompt, " and it was lovely")], smollm2_tokenizer, 512, False)[0][0]
    raw = smollm2_tokenizer(prompt)["input_ids"]
    assert pair.encode_prompt(prompt) == raw == trained_on[: len(raw)]
    # Chat messages still go through the template: they say they are chat.
    messages = [{"role": "user", "content": prompt}]
    assert pair.encode_prompt(messages) == encode_prompt(smollm2_tokenizer, messages, chat_template=True)


def test_an_adapter_records_its_prompt_format_and_the_pair_follows(tmp_path, smollm2_tokenizer):
    from peft import LoraConfig, get_peft_model

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    base = make_model("llama", len(smollm2_tokenizer), seed=4, width=16, layers=1)
    base.save_pretrained(base_dir)
    smollm2_tokenizer.save_pretrained(base_dir)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    lora.peft_config["default"].base_model_name_or_path = str(base_dir)
    lora.save_pretrained(adapter_dir)
    smollm2_tokenizer.save_pretrained(adapter_dir)
    assert w2s.WeakPair.from_pretrained(adapter_dir).chat_template is True  # nothing recorded: the template
    write_prompt_format(adapter_dir, False)
    assert read_prompt_format(adapter_dir) is False
    pair = w2s.WeakPair.from_pretrained(adapter_dir)
    assert pair.chat_template is False
    assert pair.encode_prompt("A quiet street") == smollm2_tokenizer("A quiet street")["input_ids"]
    assert w2s.WeakPair.from_pretrained(adapter_dir, chat_template=True).chat_template is True  # overridable


def test_the_rule_is_checked():
    tok = make_tokenizer()
    assert resolve_chat_template(tok, None) is False
    with pytest.raises(ValueError, match="chat_template=True but the tokenizer has no chat template"):
        resolve_chat_template(tok, True)
    with pytest.raises(TypeError, match="chat_template must be True, False or None"):
        resolve_chat_template(tok, "yes")
    with pytest.raises(ValueError, match="list of chat messages but the tokenizer has no chat template"):
        encode_prompt(tok, [{"role": "user", "content": "hi"}], chat_template=False)


def test_ensemble_members_must_read_prompts_alike(smollm2_tokenizer, smollm2_shaped_lora):
    chat = w2s.WeakPair.from_peft(smollm2_shaped_lora, smollm2_tokenizer)
    raw = w2s.WeakPair.from_peft(smollm2_shaped_lora, smollm2_tokenizer, chat_template=False)
    with pytest.raises(ValueError, match="read prompts differently"):
        w2s.GuidanceEnsemble([(chat, 1.0), (raw, 1.0)])
    assert w2s.GuidanceEnsemble([(raw, 1.0), (raw, 0.5)]).chat_template is False
