"""Weak pairs: LoRA pairs, loading from disk, peft pitfalls and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import LoraLayer
from transformers import AutoModelForCausalLM

import w2s_generate as w2s

PROMPTS = ["the film was", "a quiet story about a family in"]
RESPONSES = [" wonderful and great", " a small town!"]


def lora(family, tokenizer, seed=7, **config):
    base = make_model(family, len(tokenizer), seed)
    targets = ["c_attn", "c_proj"] if family == "gpt2" else ["q_proj", "v_proj", "o_proj"]
    return get_peft_model(base, LoraConfig(r=4, target_modules=targets, init_lora_weights=False, **config))


def test_lora_pair_equals_merged_two_checkpoint_pair(family, tokenizer):
    peft_model = lora(family, tokenizer)
    pair = w2s.WeakPair.from_peft(peft_model, tokenizer)
    got = pair.score(PROMPTS, RESPONSES)
    base_copy = make_model(family, len(tokenizer), 7)
    merged = lora(family, tokenizer).merge_and_unload()  # same seeds: same base and adapter weights
    want = w2s.WeakPair(merged, base_copy, tokenizer).score(PROMPTS, RESPONSES)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, torch.zeros_like(got))


def test_lora_pair_runs_one_forward_per_step(family, tokenizer):
    peft_model = lora(family, tokenizer)
    pair = w2s.WeakPair.from_peft(peft_model, tokenizer)
    calls = []
    hook = peft_model.get_base_model().register_forward_hook(
        lambda m, a, k, o: calls.append(k["input_ids"].shape), with_kwargs=True
    )
    try:
        pair.score(PROMPTS, RESPONSES)
    finally:
        hook.remove()
    assert len(calls) == 2 and calls[0][0] == 4, "tuned and untuned rows stacked in one batch"


def test_mixed_adapter_routing_found_once_equals_peft_routing_itself(family, tokenizer):
    """The LoRA layers that route each row's adapter are found once per state (peft would walk the
    model at every forward); stepping with them gives exactly what peft's own routing gives."""
    peft_model = lora(family, tokenizer)
    pair = w2s.WeakPair.from_peft(peft_model, tokenizer)
    routed, by_peft = pair.start(PROMPTS), pair.start(PROMPTS)
    (group,) = routed.groups
    assert group.adapter_routing and all(isinstance(m, LoraLayer) for m in group.adapter_routing)
    by_peft.groups[0].adapter_routing = None  # peft's adapter_names path
    for token in (17, 23, 31):
        for state in (routed, by_peft):
            state.step(torch.full((len(PROMPTS),), token))
    assert torch.equal(routed.next_token_logprobs(), by_peft.next_token_logprobs())
    assert torch.equal(routed.scores, by_peft.scores)
    assert not any(m._forward_pre_hooks for m in peft_model.modules()), "no routing hook left behind"


def test_failed_mixed_forward_leaves_no_hooks(family, tokenizer):
    peft_model = lora(family, tokenizer)
    pair = w2s.WeakPair.from_peft(peft_model, tokenizer)
    reference = pair.score(PROMPTS, RESPONSES)
    with pytest.raises(IndexError):
        # An id past the vocabulary, fed to the state directly (score() refuses it before any forward),
        # fails inside the forward.
        pair.start(["the film"]).extend(torch.tensor([[10**6]]))
    # A plain forward afterwards must see no stale adapter_names hooks.
    ids = tokenizer(PROMPTS[:1], return_tensors="pt")["input_ids"]
    peft_model(input_ids=ids)
    torch.testing.assert_close(pair.score(PROMPTS, RESPONSES), reference)


def test_dora_and_merged_adapters_are_refused(family, tokenizer):
    with pytest.raises(ValueError, match="uses DoRA"):
        w2s.WeakPair.from_peft(lora(family, tokenizer, use_dora=True), tokenizer)
    merged = lora(family, tokenizer)
    merged.merge_adapter()
    with pytest.raises(ValueError, match="unmerge_adapter"):
        w2s.WeakPair.from_peft(merged, tokenizer)
    with pytest.raises(ValueError, match="adapter_name='nope' is not loaded"):
        w2s.WeakPair.from_peft(lora(family, tokenizer), tokenizer, adapter_name="nope")
    with pytest.raises(TypeError, match="needs a peft.PeftModel"):
        w2s.WeakPair.from_peft(make_model(family, len(tokenizer), 1), tokenizer)


def test_from_pretrained_two_checkpoints_and_adapter(tmp_path, family, tokenizer):
    tuned, untuned = make_model(family, len(tokenizer), 1), make_model(family, len(tokenizer), 2)
    for name, model in (("tuned", tuned), ("untuned", untuned)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    loaded = w2s.WeakPair.from_pretrained(tmp_path / "tuned", tmp_path / "untuned")
    torch.testing.assert_close(
        loaded.score(PROMPTS, RESPONSES), w2s.WeakPair(tuned, untuned, tokenizer).score(PROMPTS, RESPONSES)
    )
    base = make_model(family, len(tokenizer), 7)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    peft_model = lora(family, tokenizer)
    peft_model.save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "base")
    config_path.write_text(json.dumps(config))
    from_dir = w2s.WeakPair.from_pretrained(tmp_path / "adapter")
    torch.testing.assert_close(
        from_dir.score(PROMPTS, RESPONSES),
        w2s.WeakPair.from_peft(peft_model, tokenizer).score(PROMPTS, RESPONSES),
        atol=1e-5,
        rtol=1e-5,
    )
    assert len({id(s.model) for s in from_dir.sides}) == 1, "one base in memory"
    with pytest.raises(ValueError, match="is a LoRA adapter.*leave untuned=None"):
        w2s.WeakPair.from_pretrained(tmp_path / "adapter", tmp_path / "untuned")
    with pytest.raises(ValueError, match="untuned is missing"):
        w2s.WeakPair.from_pretrained(tmp_path / "tuned")


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tokenizer):
    model = make_model("gpt2", len(tokenizer), 1)
    for name in ("tuned", "untuned"):
        model.config.save_pretrained(tmp_path / name)
        torch.save(model.state_dict(), tmp_path / name / "pytorch_model.bin")
        tokenizer.save_pretrained(tmp_path / name)
    with pytest.raises(OSError, match="safetensors|model.safetensors"):
        w2s.WeakPair.from_pretrained(tmp_path / "tuned", tmp_path / "untuned")
    pair = w2s.WeakPair.from_pretrained(tmp_path / "tuned", tmp_path / "untuned", allow_pickle=True)
    assert torch.equal(pair.score(PROMPTS, RESPONSES), torch.zeros(2))
    adapter = lora("gpt2", tokenizer)
    adapter.save_pretrained(tmp_path / "adapter")
    safe = tmp_path / "adapter" / "adapter_model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(safe), tmp_path / "adapter" / "adapter_model.bin")
    safe.unlink()
    with pytest.raises(ValueError, match="only safetensors load by default"):
        w2s.WeakPair.from_pretrained(tmp_path / "adapter")


def test_bad_pairs(family, tokenizer):
    v = len(tokenizer)
    with pytest.raises(ValueError, match=r"different vocabularies \(320 vs 400 rows\)"):
        w2s.WeakPair(make_model(family, v, 1), make_model(family, 400, 2), tokenizer)
    with pytest.raises(ValueError, match="320 tokens but the weak models only 300 output rows"):
        w2s.WeakPair(make_model(family, 300, 1), make_model(family, 300, 2), tokenizer)
    with pytest.raises(TypeError, match="must be a transformers causal LM"):
        w2s.WeakPair(torch.nn.Linear(2, 2), make_model(family, v, 2), tokenizer)
    pair = w2s.WeakPair(make_model(family, v, 1), make_model(family, v, 2), tokenizer)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        pair.score(PROMPTS, RESPONSES[:1])
    with pytest.raises(ValueError, match="no chat template"):
        pair.score([[{"role": "user", "content": "hi"}]], [" there"])
    with pytest.raises(TypeError, match="A prompt must be text"):
        pair.score([3.5], [" there"])


def test_chat_prompts_use_the_weak_template(family, tokenizer):
    tok = tokenizer.__class__(
        tokenizer_object=tokenizer.backend_tokenizer, pad_token="<|pad|>", eos_token="<|eos|>"
    )
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    tuned, untuned = make_model(family, len(tok), 1), make_model(family, len(tok), 2)
    pair = w2s.WeakPair(tuned, untuned, tok)
    raw = w2s.WeakPair(tuned, untuned, tok, chat_template=False)
    assert pair.chat_template and not raw.chat_template
    messages = [{"role": "user", "content": "the film was"}]
    torch.testing.assert_close(
        pair.score([messages], [" good"]), raw.score(["user: the film was\nassistant:"], [" good"])
    )
    # Under the chat rule a text prompt is one user message.
    torch.testing.assert_close(pair.score(["the film was"], [" good"]), pair.score([messages], [" good"]))
    conditioned = pair.encode_prompt(messages, condition="be kind")
    assert (
        conditioned
        == tok("system: be kind\nuser: the film was\nassistant:", add_special_tokens=False)["input_ids"]
    )


def test_models_on_different_devices_are_refused(tokenizer):
    meta = AutoModelForCausalLM.from_config(make_model("gpt2", len(tokenizer), 1).config)
    meta = meta.to("meta")
    with pytest.raises(ValueError, match="different devices"):
        w2s.WeakPair(make_model("gpt2", len(tokenizer), 1), meta, tokenizer)


def test_wrong_tokenizer_and_missing_folder(tmp_path, family, tokenizer):
    from conftest import make_tokenizer

    tiny_tok = make_tokenizer(259)
    with pytest.raises(ValueError, match="259 tokens for weak models with 1024 output rows"):
        w2s.WeakPair(make_model(family, 1024, 1), make_model(family, 1024, 2), tiny_tok)
    with pytest.raises(FileNotFoundError, match="No such folder"):
        w2s.WeakPair.from_pretrained(tmp_path / "nope", tmp_path / "nope2")


def test_pairs_sharing_one_peft_model_can_score_from_two_threads(family, tokenizer):
    """peft routes adapter_names through hooks on shared modules: mixed-adapter forwards of one
    model are serialized, so two pairs on it never mix their adapters."""
    import threading

    peft_model = lora(family, tokenizer)
    torch.manual_seed(99)
    peft_model.add_adapter(
        "other", LoraConfig(r=4, target_modules=["q_proj", "v_proj", "c_attn"], init_lora_weights=False)
    )
    pairs = [w2s.WeakPair.from_peft(peft_model, tokenizer, name) for name in ("default", "other")]
    prompts, responses = PROMPTS * 4, RESPONSES * 4
    want = [pair.score(prompts, responses) for pair in pairs]
    assert not torch.allclose(want[0], want[1])
    wrong: list[str] = []

    def score_many(index: int) -> None:
        for _ in range(25):
            got = pairs[index].score(prompts, responses)
            if not torch.allclose(got, want[index], atol=1e-5, rtol=1e-5):
                wrong.append(f"pair {index}: {got.tolist()} != {want[index].tolist()}")

    threads = [threading.Thread(target=score_many, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong, wrong[:2]
