"""The offline demo task: language, acceptor, tokenizer, gold metrics, training cache."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from w2s_generate.demo import (
    SENTIMENTS,
    VOCABULARY,
    build_tokenizer,
    fluency,
    gold_reward,
    is_grammatical_prefix,
    is_grammatical_sentence,
    load_demo_models,
    prompts,
    sample_corpus,
    sample_review,
    split_sentences,
    train_demo_models,
)
from w2s_generate.demo import train as train_module
from w2s_generate.demo.cache import publish, staging_dir
from w2s_generate.demo.language import INTENSIFIERS, NEGATIVE_WORDS, POSITIVE_WORDS

SCALE = 0.03  # ~20 strong steps: enough to exercise every code path in a few seconds
# One thread: these tiny matmuls gain little from two, and a single thread degrades gracefully when
# other jobs share the cores (an oversubscribed 2-thread run was measured ~4x slower per step).
THREADS = 1


def _sentences(n_reviews: int, seed: int) -> list[str]:
    return [s for review in sample_corpus(n_reviews, seed) for s in split_sentences(review)[0]]


# ------------------------------------------------------------------------------------------------
# Language and acceptor
# ------------------------------------------------------------------------------------------------


def test_sampled_reviews_are_grammatical_and_shaped() -> None:
    reviews = sample_corpus(400, seed=0)
    with_rating = 0
    for review in reviews:
        assert review == review.lower() and "  " not in review and review.endswith(" .")
        sentences, trailing = split_sentences(review)
        assert trailing == ""
        assert all(is_grammatical_sentence(s) for s in sentences), review
        content = [s for s in sentences if not s.startswith("rating ")]
        assert 2 <= len(content) <= 4
        with_rating += len(content) != len(sentences)
        assert set(review.split()) <= set(VOCABULARY)
    assert 0.2 < with_rating / len(reviews) < 0.4  # ~30% open with a rating line


def test_sample_corpus_is_deterministic_and_respects_mix() -> None:
    assert sample_corpus(20, seed=3) == sample_corpus(20, seed=3)
    assert sample_corpus(20, seed=3) != sample_corpus(20, seed=4)
    rated = sample_corpus(50, seed=1, mix={"negative": 1.0}, rating_prob=1.0)
    assert all(r.startswith("rating : negative . ") for r in rated)
    with pytest.raises(ValueError):
        sample_corpus(1, seed=0, mix={"angry": 1.0})
    with pytest.raises(ValueError):
        sample_review(random.Random(0), "angry")


def test_acceptor_rejects_adjacent_swaps() -> None:
    rng = random.Random(0)
    checked = 0
    for sentence in _sentences(150, seed=1):
        words = sentence.split()
        i = rng.randrange(len(words) - 1)
        if words[i] == words[i + 1]:
            continue
        words[i], words[i + 1] = words[i + 1], words[i]
        assert not is_grammatical_sentence(words), " ".join(words)
        checked += 1
    assert checked > 300


def test_acceptor_rejects_missing_words_except_optional_intensifiers() -> None:
    checked = 0
    for sentence in _sentences(60, seed=2):
        words = sentence.split()
        for i, word in enumerate(words):
            shorter = words[:i] + words[i + 1 :]
            # An intensifier is optional, so dropping it must keep the sentence grammatical.
            assert is_grammatical_sentence(shorter) == (word in INTENSIFIERS), " ".join(shorter)
            checked += 1
    assert checked > 1000


@pytest.mark.parametrize(
    "sentence",
    [
        "the film was great",  # no full stop
        "the film was .",
        "film the was great .",
        "the film great .",
        "i the film .",
        "i loved the film was great .",
        "overall the film was great .",
        "rating : great .",
        "the film was great . the plot was dull .",  # two sentences are not one
        "the film was great and .",
        "the film was very very great .",
        "",
    ],
)
def test_acceptor_rejects_handwritten_errors(sentence: str) -> None:
    assert not is_grammatical_sentence(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        # Long, unlikely combinations: accepted by structure, not because they were sampled.
        "i believe this battery seemed so dull and extremely quiet but i feel that price is plain .",
        "overall it is rather unusual and truly wonderful .",
        "rating : mixed .",
        "i regretted that camera .",
    ],
)
def test_acceptor_accepts_handwritten_sentences(sentence: str) -> None:
    assert is_grammatical_sentence(sentence)
    assert is_grammatical_sentence(sentence.split())


def test_prompts_are_sentiment_free_proper_prefixes() -> None:
    openings = prompts(200, seed=0)
    assert openings == prompts(200, seed=0)
    assert len(set(openings)) > 50
    for opening in openings:
        assert is_grammatical_prefix(opening) and not is_grammatical_sentence(opening)
        assert not set(opening.split()) & (POSITIVE_WORDS | NEGATIVE_WORDS)
    assert not is_grammatical_prefix("the the")
    assert not is_grammatical_prefix("the film was .")


# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------


def test_tokenizer_round_trips_and_uses_special_ids() -> None:
    tok = build_tokenizer(VOCABULARY)
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert len(tok) == len(VOCABULARY) + 4
    for review in sample_corpus(50, seed=5):
        ids = tok(review)["input_ids"]
        assert ids[0] == tok.bos_token_id and tok.bos_token_id not in ids[1:]
        assert len(ids) == len(review.split()) + 1  # one token per word
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == review
        assert tok(review, add_special_tokens=False)["input_ids"] == ids[1:]
    assert tok.decode([tok.bos_token_id, 4, tok.eos_token_id]) == f"<bos> {VOCABULARY[0]} <eos>"
    assert tok("the zebra .")["input_ids"][2] == tok.unk_token_id


def test_tokenizer_pads_on_the_left() -> None:
    tok = build_tokenizer()
    batch = tok(["the film", "the film was great ."], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (2, 6)
    assert ids[0, :3].tolist() == [tok.pad_token_id] * 3 and mask[0].tolist() == [0, 0, 0, 1, 1, 1]
    assert ids[0, 3] == tok.bos_token_id and ids[1, 0] == tok.bos_token_id


def test_tokenizer_rejects_special_words() -> None:
    with pytest.raises(ValueError):
        build_tokenizer(["good", "<eos>"])


# ------------------------------------------------------------------------------------------------
# Gold metrics
# ------------------------------------------------------------------------------------------------


def test_gold_reward_orders_sentiments() -> None:
    rng = random.Random(7)
    mean = {
        s: sum(gold_reward(sample_review(rng, s, rating_prob=0.3)) for _ in range(300)) / 300
        for s in SENTIMENTS
    }
    assert mean["positive"] > 0.7 > mean["neutral"] > -0.7 > mean["negative"]
    assert abs(mean["neutral"]) < 0.2 and abs(mean["mixed"]) < 0.2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the film was great .", 1.0),
        ("the film was great and lovely . the plot was dull .", 0.5),
        ("rating : positive . the film was dull .", -1.0),  # rating lines are not opinions
        ("i hated the film . i saw the film .", -0.5),
        ("the film was great", 1.0),  # an unfinished sentence still counts
        ("", 0.0),
    ],
)
def test_gold_reward_values(text: str, expected: float) -> None:
    assert gold_reward(text) == pytest.approx(expected)


def test_fluency() -> None:
    assert fluency("") == 0.0
    assert fluency("the film was great . i loved the plot .") == 1.0
    assert fluency("the film was great . film the was great .") == 0.5
    assert fluency("the film was great . the plot was") == 1.0  # cut off by the budget, not wrong
    assert fluency("the film was great . the plot was", allow_truncated=False) == 0.5
    assert fluency("the film was great . the the") == 0.5  # no completion can fix this fragment
    assert fluency("the film was") == 0.0  # nothing complete to judge
    reviews = sample_corpus(100, seed=9)
    assert all(fluency(r) == 1.0 for r in reviews)
    assert fluency(" ".join(reversed(reviews[0].split()))) < 0.5


# ------------------------------------------------------------------------------------------------
# Cache helpers
# ------------------------------------------------------------------------------------------------


def test_staging_dir_is_removed_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "demo-v1"
    with pytest.raises(RuntimeError), staging_dir(tmp_path) as staged:
        (staged / "half-written").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [] and not final.exists()


def test_publish_replaces_an_old_cache(tmp_path: Path) -> None:
    final = tmp_path / "demo-v1"
    final.mkdir()
    (final / "old").write_text("old")
    with staging_dir(tmp_path) as staged:
        (staged / "new").write_text("new")
        publish(staged, final)
    assert [p.name for p in tmp_path.iterdir()] == ["demo-v1"]
    assert [p.name for p in final.iterdir()] == ["new"]


# ------------------------------------------------------------------------------------------------
# Training, saving and loading
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> train_module.TrainedDemo:
    return train_demo_models(
        tmp_path_factory.mktemp("cache"), progress=False, scale=SCALE, num_threads=THREADS
    )


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _probe_ids(tokenizer) -> torch.Tensor:
    return tokenizer(sample_corpus(4, seed=11), padding=True, return_tensors="pt")["input_ids"]


def test_training_writes_safetensors_only(trained: train_module.TrainedDemo) -> None:
    root = trained.cache_dir
    assert root.name == "demo-v1"
    assert [p.name for p in root.parent.iterdir()] == ["demo-v1"]  # no staging leftovers
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for required in (
        "strong/model.safetensors",
        "weak/model.safetensors",
        "weak-positive-lora/adapter_model.safetensors",
        "tokenizer/tokenizer.json",
        "manifest.json",
    ):
        assert required in files
    weights = {f for f in files if not f.endswith((".json", ".md"))}
    assert weights and all(f.endswith(".safetensors") for f in weights), weights
    # The adapter holds only low-rank matrices, not a copy of the base lm_head.
    adapter = load_file(root / "weak-positive-lora/adapter_model.safetensors")
    assert adapter and all("lora_" in key for key in adapter)
    assert any("lm_head" in key for key in adapter)


def test_manifest(trained: train_module.TrainedDemo) -> None:
    manifest = json.loads((trained.cache_dir / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(trained.manifest))
    assert manifest["format"] == "demo-v1" and manifest["scale"] == SCALE
    counts = manifest["param_counts"]
    assert counts["strong"] == sum(p.numel() for p in trained.strong.parameters())
    assert counts["weak"] == sum(p.numel() for p in trained.weak.parameters())
    assert 8 <= counts["strong"] / counts["weak"] <= 20  # "roughly 10x"
    assert 0 < counts["lora"] < counts["weak"]
    for phase in ("strong", "weak", "lora"):
        assert 0 < manifest["final_losses"][phase]["train"] < 10
    assert set(manifest["versions"]) >= {"torch", "transformers", "peft", "tokenizers"}


def test_lora_changed_the_weak_model(trained: train_module.TrainedDemo) -> None:
    ids = _probe_ids(trained.tokenizer)
    assert not torch.allclose(_logits(trained.tuned, ids), _logits(trained.weak, ids))


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_load_returns_the_saved_models(
    trained: train_module.TrainedDemo, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a valid cache must be reused, not retrained")

    monkeypatch.setattr(train_module, "train_demo_models", no_training)
    models = load_demo_models(trained.cache_dir.parent, progress=False)
    assert models.cache_dir == trained.cache_dir
    assert not models.strong.training and not models.weak.training
    ids = _probe_ids(models.tokenizer)
    assert torch.equal(ids, _probe_ids(trained.tokenizer))
    assert torch.equal(_logits(models.strong, ids), _logits(trained.strong, ids))
    assert torch.equal(_logits(models.weak, ids), _logits(trained.weak, ids))
    # The adapter loads with plain peft onto the saved weak base, and so does the helper.
    tuned = PeftModel.from_pretrained(
        train_module._load_llama(trained.cache_dir / "weak"), models.adapter_dir
    ).eval()
    assert torch.equal(_logits(tuned, ids), _logits(trained.tuned, ids))
    assert torch.equal(_logits(models.tuned_weak(), ids), _logits(trained.tuned, ids))
    assert torch.equal(_logits(models.weak, ids), _logits(trained.weak, ids))  # base left untouched
    text = "the film was great ."
    assert models.tokenizer.decode(models.tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    assert models.tokenizer.padding_side == "left"


def test_stale_or_forced_cache_is_retrained(
    trained: train_module.TrainedDemo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[Path] = []

    def quick_train(cache_dir: Path, progress: bool = True) -> None:
        # Stands in for a full-scale training: publishes a copy of the quick cache.
        calls.append(Path(cache_dir))
        shutil.rmtree(Path(cache_dir) / "demo-v1", ignore_errors=True)
        shutil.copytree(trained.cache_dir, Path(cache_dir) / "demo-v1")

    monkeypatch.setattr(train_module, "train_demo_models", quick_train)
    load_demo_models(tmp_path, progress=False)  # empty cache: trains
    assert calls == [tmp_path]
    load_demo_models(tmp_path, progress=False)  # valid cache: reused
    assert len(calls) == 1
    load_demo_models(tmp_path, force=True, progress=False)
    assert len(calls) == 2
    manifest_path = tmp_path / "demo-v1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fingerprint"] = "something-else"  # as if the recipe or the language changed
    manifest_path.write_text(json.dumps(manifest))
    load_demo_models(tmp_path, progress=False)
    assert len(calls) == 3
    (tmp_path / "demo-v1" / "weak" / "model.safetensors").unlink()  # a damaged cache
    load_demo_models(tmp_path, progress=False)
    assert len(calls) == 4


def test_training_is_deterministic(trained: train_module.TrainedDemo, tmp_path: Path) -> None:
    a = trained
    b = train_demo_models(tmp_path, progress=False, scale=SCALE, num_threads=THREADS)
    for sub in ("strong/model.safetensors", "weak/model.safetensors"):
        ta, tb = load_file(a.cache_dir / sub), load_file(b.cache_dir / sub)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    la = load_file(a.cache_dir / "weak-positive-lora/adapter_model.safetensors")
    lb = load_file(b.cache_dir / "weak-positive-lora/adapter_model.safetensors")
    assert all(torch.equal(la[k], lb[k]) for k in la)


def test_thread_override_is_restored() -> None:
    before = torch.get_num_threads()
    with train_module._torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), train_module._torch_threads(1):
        raise RuntimeError
    assert torch.get_num_threads() == before
