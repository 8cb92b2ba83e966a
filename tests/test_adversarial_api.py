"""Adversarial tests of the Python API: bad arguments, bad inputs and ambiguous vocabularies.

Each case asserts one outcome: a clear error naming the value and the fix, or a correct result.
Classes: strategy and processor arguments; pair, ensemble and explanation arguments; inputs to a
call (empty, right-padded, too long, out of range, a lone string where a list belongs); vocabulary
decisions made from token -> id maps; loading; encoder-decoder models.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_model, make_model_for, make_tokenizer
from transformers import BartConfig, BartForConditionalGeneration, GPT2Config, GPT2Model

import w2s_generate as w2s
from w2s_generate.processor import check_shared_vocabulary


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def same_size_tok(tok):
    """Another tokenizer of exactly the same size whose ids mean other tokens."""
    other = make_tokenizer(len(tok), seed_text="zebra quartz xylophone jukebox " * 20)
    assert len(other) == len(tok) and other.get_vocab() != tok.get_vocab()
    return other


def tiny(tokenizer, seed, family="gpt2", **kwargs):
    return make_model_for(tokenizer, family, seed, width=16, layers=1, **kwargs)


@pytest.fixture(scope="module")
def pair(tok):
    return w2s.WeakPair(tiny(tok, 1), tiny(tok, 2), tok)


@pytest.fixture(scope="module")
def strong(tok):
    return w2s.enable(tiny(tok, 0))


class Canned:
    """A sampler returning n fixed chunks per prefix."""

    def sample(self, prefixes, n, max_tokens):
        return [[w2s.Chunk(" fine", False)] * n for _ in prefixes]


def inputs(tok, texts, side="left"):
    tok.padding_side = side
    try:
        return tok(texts, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = "left"


# --------------------------------------------------------------------------- class 1: strategy and processor arguments

STRATEGY_ARGS = {
    "beam-width-true": (
        lambda p: w2s.ChunkBeamSearch(p, beam_width=True),
        "beam_width must be an integer >= 1; got True",
    ),
    "beam-width-false": (lambda p: w2s.ChunkBeamSearch(p, beam_width=False), "got False"),
    "beam-width-zero": (
        lambda p: w2s.ChunkBeamSearch(p, beam_width=0),
        "beam_width must be an integer >= 1; got 0",
    ),
    "beam-width-float": (lambda p: w2s.ChunkBeamSearch(p, beam_width=2.0), "got 2.0"),
    "beam-width-text": (lambda p: w2s.ChunkBeamSearch(p, beam_width="2"), "got '2'"),
    "successors-true": (
        lambda p: w2s.ChunkBeamSearch(p, successors_per_beam=True),
        "successors_per_beam must be",
    ),
    "chunk-length-true": (
        lambda p: w2s.ChunkBeamSearch(p, chunk_length=True),
        "chunk_length must be an integer >= 1 or None",
    ),
    "chunk-length-zero": (lambda p: w2s.ChunkBeamSearch(p, chunk_length=0), "chunk_length must be"),
    "best-of-n-true": (lambda p: w2s.BestOfN(p, n=True), "n must be an integer >= 1; got True"),
    "best-of-n-zero": (lambda p: w2s.BestOfN(p, n=0), "n must be an integer >= 1; got 0"),
    "tokenizer-a-path": (
        lambda p: w2s.ChunkBeamSearch(p, tokenizer="gpt2"),
        "tokenizer must be the large model's",
    ),
    "pair-not-a-pair": (lambda p: w2s.ChunkBeamSearch("pair"), "pair must be a w2s_generate.WeakPair"),
    "beta-nan": (
        lambda p: w2s.WeakToStrongLogitsProcessor(p, beta=math.nan),
        "beta must be a finite number; got nan",
    ),
    "beta-inf": (lambda p: w2s.WeakToStrongLogitsProcessor(p, beta=math.inf), "got inf"),
    "beta-true": (lambda p: w2s.WeakToStrongLogitsProcessor(p, beta=True), "got True"),
    "beta-text": (lambda p: w2s.WeakToStrongLogitsProcessor(p, beta="1"), "got '1'"),
    "token-guidance-beta-nan": (
        lambda p: w2s.TokenGuidance(p, beta=math.nan),
        "beta must be a finite number",
    ),
    "pad-token-id-negative": (
        lambda p: w2s.WeakToStrongLogitsProcessor(p, pad_token_id=-1),
        "pad_token_id must be a token id",
    ),
    "pad-token-id-too-large": (
        lambda p: w2s.WeakToStrongLogitsProcessor(p, pad_token_id=10**6),
        "(0 to 319)",
    ),
    "pad-token-id-true": (lambda p: w2s.WeakToStrongLogitsProcessor(p, pad_token_id=True), "got True"),
}


@pytest.mark.parametrize("case", list(STRATEGY_ARGS), ids=list(STRATEGY_ARGS))
def test_bad_strategy_and_processor_arguments(pair, case):
    build, message = STRATEGY_ARGS[case]
    with pytest.raises((ValueError, TypeError)) as error:
        build(pair)
    assert message in str(error.value)


def test_numpy_integers_are_integers(pair, strong, tok):
    cbs = w2s.ChunkBeamSearch(pair, np.int64(2), np.int32(2), np.int64(3))
    assert (cbs.beam_width, cbs.successors_per_beam, cbs.chunk_length) == (2, 2, 3)
    assert type(cbs.beam_width) is int
    out = strong.generate(**inputs(tok, ["the film was"]), strategy=cbs, do_sample=True, max_new_tokens=6)
    assert out.shape[0] == 1


# --------------------------------------------------------------------------- class 2: pairs, ensembles, explanations


def test_tokenizer_given_as_a_path_is_refused(tok):
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer; got a str"):
        w2s.WeakPair(tiny(tok, 1), tiny(tok, 2), "path/to/tokenizer")


def test_another_models_smaller_tokenizer_is_refused(tok):
    rows = len(tok) + 300  # far more rows than any padding explains
    with pytest.raises(
        ValueError, match=r"320 tokens but the weak models 620 output rows.*another model's tokenizer"
    ):
        w2s.WeakPair(
            make_model("gpt2", rows, 1, width=16, layers=1),
            make_model("gpt2", rows, 2, width=16, layers=1),
            tok,
        )


@pytest.mark.parametrize("extra", [0, 1, 64, 128], ids=["exact", "one-row", "padded-64", "padded-128"])
def test_padded_tables_are_accepted_with_the_models_tokenizer(tok, extra):
    a, b = (make_model("gpt2", len(tok), s, width=16, layers=1, extra_rows=extra) for s in (1, 2))
    pair = w2s.WeakPair(a, b, tok)
    assert pair.vocab_rows == len(tok) + extra
    assert torch.isfinite(pair.score(["the film was"], [" great"])).all()


ENSEMBLE_WEIGHTS = {
    "nan": ([math.nan], "weight 0 is nan: each weight must be a finite number"),
    "inf": ([1.0, math.inf], "weight 1 is inf"),
    "minus-inf": ([-math.inf], "weight 0 is -inf"),
    "bool": ([True], "weight 0 is True"),
    "text": (["1.0"], "weight 0 is '1.0'"),
    "all-zero": ([0.0, 0], "All weights are 0"),
}


@pytest.mark.parametrize("case", list(ENSEMBLE_WEIGHTS), ids=list(ENSEMBLE_WEIGHTS))
def test_bad_ensemble_weights_are_refused(pair, case):
    weights, message = ENSEMBLE_WEIGHTS[case]
    with pytest.raises(ValueError) as error:
        w2s.GuidanceEnsemble([(pair, w) for w in weights])
    assert message in str(error.value)


def test_bad_weights_are_refused_before_any_adapter_loads(tmp_path):
    with pytest.raises(ValueError, match="weight 1 is nan"):
        w2s.GuidanceEnsemble.from_adapters([tmp_path / "a", tmp_path / "b"], [1.0, math.nan])
    with pytest.raises(TypeError, match="adapters must be a list"):
        w2s.GuidanceEnsemble.from_adapters(str(tmp_path / "a"))


def test_negative_weights_are_a_correct_result(pair):
    minus = w2s.GuidanceEnsemble([(pair, -0.5)])
    torch.testing.assert_close(
        minus.score(["the film was"], [" great"]), -0.5 * pair.score(["the film was"], [" great"])
    )


def test_a_condition_function_returning_nothing_is_refused(tok):
    judge = w2s.PromptPair(tiny(tok, 3), tok, condition=lambda prompt: "")
    with pytest.raises(ValueError, match="condition for the prompt 'the film was' is ''"):
        judge.score(["the film was"], [" great"])


EXPLANATIONS = {
    "empty-explanation": ((["a", "b"], ["fine", ""]), "explanations[1] is ''"),
    "none-explanation": ((["a"], [None]), "explanations[0] is None"),
    "duplicate-prompt": ((["a", "a"], ["one", "two"]), "appears twice with different explanations"),
    "prompts-a-string": (("ab", ["x", "y"]), "prompts must be a list"),
    "count-mismatch": ((["a", "b"], ["x"]), "2 prompts but 1 explanations"),
}


@pytest.mark.parametrize("case", list(EXPLANATIONS), ids=list(EXPLANATIONS))
def test_bad_explanations_are_refused(tok, case):
    (prompts, explanations), message = EXPLANATIONS[case]
    with pytest.raises(ValueError) as error:
        w2s.explanation_pair(tiny(tok, 3), tok, prompts, explanations)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompts": "a prompt"}, "prompts must be a non-empty list"),
        ({"prompts": []}, "prompts must be a non-empty list"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1; got 0"),
        ({"instruction": "no placeholder"}, "must contain '{prompt}'"),
        ({"instruction": 'Explain {prompt} as {"json": 1}'}, "write literal braces as {{ and }}"),
    ],
    ids=["prompts-a-string", "no-prompts", "zero-new-tokens", "no-placeholder", "stray-braces"],
)
def test_bad_explain_arguments_are_refused_before_generating(strong, tok, kwargs, message):
    args = {"prompts": ["a"], **kwargs}
    with pytest.raises(ValueError) as error:
        w2s.explain(strong, tok, args.pop("prompts"), **args)
    assert message in str(error.value)


def test_explain_pads_on_the_left_whatever_the_tokenizer_says(strong, tok):
    prompts = ["the film was wonderful and the acting was great", "a"]
    expected = [w2s.explain(strong, tok, [p], max_new_tokens=5)[0] for p in prompts]
    tok.padding_side = "right"
    try:
        assert w2s.explain(strong, tok, prompts, max_new_tokens=5) == expected
        assert tok.padding_side == "right"  # restored
    finally:
        tok.padding_side = "left"


# --------------------------------------------------------------------------- class 3: inputs to a call

CALL_INPUTS = {
    # (a batch of several empty prompts fails inside transformers' generate before any strategy runs)
    "empty-input-ids": (
        lambda tok: {"input_ids": torch.zeros(1, 0, dtype=torch.long)},
        "input_ids holds no tokens",
    ),
    "all-zero-mask-row": (
        lambda tok: {
            "input_ids": torch.tensor([[5, 6], [7, 8]]),
            "attention_mask": torch.tensor([[1, 1], [0, 0]]),
        },
        "row 1 of the attention mask is all zeros: an empty prompt",
    ),
    "right-padded": (
        lambda tok: dict(inputs(tok, ["the film was wonderful", "a"], side="right")),
        "row 1 of the attention mask has padding after its tokens (right padding)",
    ),
    "hole-in-mask": (
        lambda tok: {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.tensor([[1, 0, 1]])},
        "row 0 of the attention mask has padding after its tokens",
    ),
    "prompt-longer-than-context": (
        lambda tok: {"input_ids": torch.full((1, 300), 40)},
        "The longest prompt (300 tokens) plus max_new_tokens=4 needs 304 positions, more than the large "
        "model's context of 256: shorten the prompt or ask for at most 0 new tokens",
    ),
    "prompt-plus-new-tokens-too-long": (
        lambda tok: {"input_ids": torch.full((1, 254), 40)},
        "ask for at most 2 new tokens",
    ),
}


@pytest.mark.parametrize("method", ["cbs", "bon"])
@pytest.mark.parametrize("case", list(CALL_INPUTS), ids=list(CALL_INPUTS))
def test_bad_prompts_to_a_search_are_refused_before_any_forward(pair, strong, tok, case, method):
    build, message = CALL_INPUTS[case]
    strategy = w2s.ChunkBeamSearch(pair, 2, 2, 2) if method == "cbs" else w2s.BestOfN(pair, 2)
    with pytest.raises(ValueError) as error:
        strong.generate(**build(tok), custom_generate=strategy, do_sample=True, max_new_tokens=4)
    assert message in str(error.value)


def test_a_left_padded_batch_scores_each_row_as_its_own_prompt(pair, strong, tok):
    """The correct result for padding on the left: each row's log-ratio is the pair's score of its own
    prompt and response, the padding unseen."""
    prompts = ["a", "the film was wonderful"]
    batch = inputs(tok, prompts)
    torch.manual_seed(0)
    out = strong.generate(
        **batch,
        strategy=w2s.ChunkBeamSearch(pair, 2, 2, 3),
        do_sample=True,
        max_new_tokens=6,
        return_dict_in_generate=True,
    )
    width = batch["input_ids"].shape[1]
    responses = [[t for t in row if t != tok.pad_token_id] for row in out.sequences[:, width:].tolist()]
    torch.testing.assert_close(out.log_ratios, pair.score(prompts, responses), atol=1e-4, rtol=1e-4)


RUN_INPUTS = {
    "prompts-a-string": ({"prompts": "the film"}, "prompts must be a non-empty list of strings"),
    "no-prompts": ({"prompts": []}, "prompts must be a non-empty list of strings"),
    "empty-prompt": ({"prompts": ["ok", ""]}, "prompts[1] is empty"),
    "prompt-not-text": ({"prompts": [[1, 2]]}, "prompts must be a non-empty list of strings"),
    "max-new-tokens-true": ({"max_new_tokens": True}, "max_new_tokens must be an integer >= 1; got True"),
    "max-new-tokens-zero": ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1; got 0"),
    "num-return-float": ({"num_return_sequences": 1.5}, "num_return_sequences=1.5 must be an integer"),
    "num-return-above-width": ({"num_return_sequences": 3}, "between 1 and beam_width=2"),
    "weak-prompts-a-string": ({"weak_prompts": "the film"}, "weak_prompts must be a list"),
    "weak-prompts-count": ({"weak_prompts": ["a", "b"]}, "weak_prompts has 2 entries for 1 prompts"),
    "sampler-without-sample": (
        {"sampler": object()},
        "sampler must have a sample(prefixes, n, max_tokens) method",
    ),
}


@pytest.mark.parametrize("case", list(RUN_INPUTS), ids=list(RUN_INPUTS))
def test_bad_arguments_to_run_are_refused(pair, case):
    overrides, message = RUN_INPUTS[case]
    args = {"prompts": ["the film was"], "sampler": Canned(), "max_new_tokens": 4, **overrides}
    with pytest.raises((ValueError, TypeError)) as error:
        w2s.ChunkBeamSearch(pair, 2, 2, 2).run(args.pop("prompts"), sampler=args.pop("sampler"), **args)
    assert message in str(error.value)


class Miscounting:
    def sample(self, prefixes, n, max_tokens):
        return [[w2s.Chunk(" x", False)] * (n - 1) for _ in prefixes]


class NotChunks:
    def sample(self, prefixes, n, max_tokens):
        return [[" x"] * n for _ in prefixes]


@pytest.mark.parametrize(
    "sampler, error_type, message",
    [
        (Miscounting(), ValueError, "a ChunkSampler returns exactly n Chunks per prefix"),
        (NotChunks(), TypeError, "returned a str; it must return w2s_generate.Chunk objects"),
    ],
    ids=["sampler-miscounts", "sampler-returns-strings"],
)
def test_a_misbehaving_sampler_is_named(pair, sampler, error_type, message):
    with pytest.raises(error_type, match=message):
        w2s.ChunkBeamSearch(pair, 2, 2, 2).run(["the film was"], sampler=sampler, max_new_tokens=4)


PAIR_INPUTS = {
    "prompts-a-string": (
        lambda p: p.score("ab", ["x", "y"]),
        TypeError,
        "prompts must be a list (one entry per row); got a str",
    ),
    "responses-a-string": (lambda p: p.score(["a"], "x"), TypeError, "responses must be a list"),
    "start-with-a-string": (lambda p: p.start("the film"), TypeError, "prompts must be a list"),
    "prompt-id-too-large": (lambda p: p.score([[1, 999]], [" x"]), ValueError, "A prompt holds token id 999"),
    "prompt-id-negative": (lambda p: p.start([[-1, 5]]), ValueError, "A prompt holds token id -1"),
    "empty-prompt": (lambda p: p.score([""], [" x"]), ValueError, "encodes to zero tokens on the weak side"),
}


@pytest.mark.parametrize("case", list(PAIR_INPUTS), ids=list(PAIR_INPUTS))
def test_bad_inputs_to_a_pair_are_refused(pair, case):
    call, error_type, message = PAIR_INPUTS[case]
    with pytest.raises(error_type) as error:
        call(pair)
    assert message in str(error.value)


def test_an_empty_response_scores_zero(pair):
    assert pair.score(["the film was"], [""]).tolist() == [0.0]


# --------------------------------------------------------------------------- class 4: vocabulary decided by token -> id maps


def test_same_size_other_tokenizer_is_not_a_shared_vocabulary(pair, same_size_tok):
    with pytest.raises(
        ValueError,
        match=r"differ \('.*' is \d+ for the large model but (\d+ for the pair|not in the pair's)\)",
    ):
        check_shared_vocabulary(pair, same_size_tok)
    with pytest.raises(ValueError, match="token-level guidance needs a shared vocabulary"):
        w2s.WeakToStrongLogitsProcessor(pair, strong_tokenizer=same_size_tok)


def test_a_copy_of_the_same_tokenizer_is_shared(pair, tok):
    check_shared_vocabulary(pair, make_tokenizer())  # another object, the same map: fine


def test_same_size_other_tokenizer_is_bridged_by_the_search(pair, same_size_tok):
    """CBS given the large model's tokenizer bridges through text: its scores are the pair's on the text."""
    strong = w2s.enable(tiny(same_size_tok, 5))
    batch = inputs(same_size_tok, ["the film was"])
    cbs = w2s.ChunkBeamSearch(pair, 2, 2, 3, tokenizer=same_size_tok)
    torch.manual_seed(1)
    out = strong.generate(
        **batch, strategy=cbs, do_sample=True, max_new_tokens=6, return_dict_in_generate=True
    )
    width = batch["input_ids"].shape[1]
    text = same_size_tok.decode(out.sequences[0, width:], skip_special_tokens=True)
    expected = pair.score(["the film was"], [text])
    torch.testing.assert_close(out.log_ratios, expected, atol=1e-4, rtol=1e-4)
    # Reading the ids as if shared would have given another number: the bridge is what makes it right.
    ids = [t for t in out.sequences[0, width:].tolist() if t != same_size_tok.pad_token_id]
    assert not torch.allclose(pair.score(["the film was"], [ids]), expected, atol=1e-3)


def test_same_size_through_generate_tokenizer_argument_is_bridged(pair, same_size_tok):
    strong = w2s.enable(tiny(same_size_tok, 5))
    batch = inputs(same_size_tok, ["the film was"])
    torch.manual_seed(1)
    out = strong.generate(
        **batch,
        strategy=w2s.ChunkBeamSearch(pair, 2, 2, 3),
        tokenizer=same_size_tok,
        do_sample=True,
        max_new_tokens=6,
        return_dict_in_generate=True,
    )
    text = same_size_tok.decode(out.sequences[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    torch.testing.assert_close(out.log_ratios, pair.score(["the film was"], [text]), atol=1e-4, rtol=1e-4)


def test_without_any_tokenizer_equal_sizes_are_taken_as_shared(pair, tok):
    """The documented decision: with no tokenizer to compare, equal (or padded) sizes mean a shared
    vocabulary and the pair scores the large model's ids directly."""
    strong = w2s.enable(tiny(tok, 5))
    batch = inputs(tok, ["the film was"])
    out = strong.generate(
        **batch,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3),
        do_sample=True,
        max_new_tokens=6,
        return_dict_in_generate=True,
    )
    ids = [t for t in out.sequences[0, batch["input_ids"].shape[1] :].tolist() if t != tok.pad_token_id]
    torch.testing.assert_close(out.log_ratios, pair.score(["the film was"], [ids]), atol=1e-4, rtol=1e-4)


def test_without_a_tokenizer_different_sizes_are_refused(pair, tok):
    strong = tiny(make_tokenizer(280, seed_text="zebra quartz"), 5)
    with pytest.raises(ValueError, match="pass the large model's tokenizer"):
        strong.generate(
            **inputs(tok, ["the film"]),
            custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 2),
            do_sample=True,
            max_new_tokens=4,
        )


# --------------------------------------------------------------------------- class 5: loading


@pytest.fixture(scope="module")
def pickled(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("pickled")
    for name, seed in (("tuned", 1), ("untuned", 2)):
        model = tiny(tok, seed)
        model.config.save_pretrained(root / name)
        torch.save(model.state_dict(), root / name / "pytorch_model.bin")
        tok.save_pretrained(root / name)
    return root


def test_a_pickle_only_checkpoint_names_allow_pickle(pickled):
    with pytest.raises(
        OSError, match=r"tuned=.*has only pickle weights \(pytorch_model.bin\).*allow_pickle=True"
    ):
        w2s.WeakPair.from_pretrained(pickled / "tuned", pickled / "untuned")


def test_a_pickle_only_checkpoint_loads_with_allow_pickle(pickled):
    pair = w2s.WeakPair.from_pretrained(pickled / "tuned", pickled / "untuned", allow_pickle=True)
    assert torch.isfinite(pair.score(["the film was"], [" great"])).all()


def test_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such folder"):
        w2s.WeakPair.from_pretrained(tmp_path / "nope", tmp_path / "nope2")


# --------------------------------------------------------------------------- class 6: encoder-decoder models


@pytest.fixture(scope="module")
def bart(tok):
    config = BartConfig(
        vocab_size=len(tok),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    return BartForConditionalGeneration(config).eval()


def test_an_encoder_decoder_weak_model_is_refused(bart, tok):
    with pytest.raises(ValueError, match="encoder-decoder model \\(bart\\); weak pairs need decoder-only"):
        w2s.WeakPair(bart, tiny(tok, 2), tok)


@pytest.mark.parametrize("method", ["cbs", "bon"])
def test_a_search_on_an_encoder_decoder_model_is_refused(bart, pair, tok, method):
    strategy = w2s.ChunkBeamSearch(pair, 2, 2, 2) if method == "cbs" else w2s.BestOfN(pair, 2)
    with pytest.raises(ValueError, match="drives decoder-only models; bart is encoder-decoder"):
        bart.generate(**inputs(tok, ["the film"]), custom_generate=strategy, do_sample=True, max_new_tokens=4)


def test_token_guidance_on_an_encoder_decoder_model_is_refused(bart, pair, tok):
    with pytest.raises(ValueError, match="encoder-decoder"):
        bart.generate(
            **inputs(tok, ["the film"]),
            custom_generate=w2s.TokenGuidance(pair),
            do_sample=True,
            max_new_tokens=4,
        )


# --------------------------------------------------------------------------- class 7: token ids, indices and values
# --------------------------------------------------------------------------- class 8: objects of the wrong kind
# --------------------------------------------------------------------------- class 9: generate options a strategy does not apply


class Returns:
    """A selection policy returning a fixed value."""

    def __init__(self, value):
        self.value = value

    def choose(self, candidates, width):
        return self.value


def cbs(pair):
    return w2s.ChunkBeamSearch(pair, 2, 2, 2)


def bon(pair):
    return w2s.BestOfN(pair, 2)


def guidance(pair):
    return w2s.TokenGuidance(pair)


def drafted(pair):
    return w2s.TokenGuidance(pair, draft_tokens=2)


def prefilled_cache(tok):
    from transformers import DynamicCache

    model = tiny(tok, 0)
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([[5, 6]]), cache=cache, use_cache=True)
    return cache


# (strategy, generate arguments over the default prompt, message)
GENERATE_CALLS = {
    # class 7
    "input-id-past-the-table-cbs": (
        cbs,
        {"input_ids": torch.tensor([[5, 400]])},
        "input_ids holds token id 400, outside the large model's 320 rows",
    ),
    "input-id-negative-bon": (
        bon,
        {"input_ids": torch.tensor([[-3, 5]])},
        "input_ids holds token id -3, outside the large model's 320 rows",
    ),
    "input-id-past-the-table-guidance": (
        guidance,
        {"input_ids": torch.tensor([[5, 400]])},
        "input_ids holds token id 400",
    ),
    "input-id-negative-drafted-guidance": (
        drafted,
        {"input_ids": torch.tensor([[5, -1]])},
        "input_ids holds token id -1",
    ),
    "input-ids-floats": (
        cbs,
        {"input_ids": torch.tensor([[5.0, 6.0]])},
        "input_ids must hold integer token ids; got torch.float32",
    ),
    "input-ids-3-d": (
        cbs,
        {"input_ids": torch.ones(1, 2, 3, dtype=torch.long)},
        "input_ids must be [batch, length]; got 3 dimensions",
    ),
    "mask-of-another-shape-cbs": (
        cbs,
        {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.tensor([[1, 1]])},
        "has shape (1, 2) but input_ids (1, 3): one mask entry per token",
    ),
    "mask-of-another-shape-guidance": (
        guidance,
        {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.tensor([[1, 1]])},
        "has shape (1, 2) but input_ids (1, 3): one mask entry per token",
    ),
    "mask-value-two": (
        cbs,
        {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.tensor([[1, 2, 1]])},
        "attention_mask holds 2: only 0 (padding) and 1 (a token)",
    ),
    "stop-token-id-past-the-table": (
        lambda p: w2s.ChunkBeamSearch(p, 2, 2, w2s.ChunkBoundary(4, stop_token_ids=[5, 400])),
        {},
        "stop_token_ids holds 400, outside the large model's 320 rows",
    ),
    "num-return-sequences-zero": (
        cbs,
        {"num_return_sequences": 0},
        "num_return_sequences=0 must be at least 1",
    ),
    "selection-returns-bools": (
        lambda p: w2s.ChunkBeamSearch(p, 2, 2, 2, selection=Returns([True])),
        {},
        "returned [True] for",
    ),
    # class 8
    "inputs-embeds": (
        cbs,
        {"inputs_embeds": torch.zeros(1, 3, 16)},
        "inputs_embeds: ChunkBeamSearch needs input_ids",
    ),
    "weak-prompts-a-string": (
        cbs,
        {"weak_prompts": "the film"},
        "weak_prompts must be a list (one per prompt); got a str",
    ),
    "weak-prompts-a-dict": (
        cbs,
        {"weak_prompts": {"the film": 1}},
        "weak_prompts must be a list (one per prompt); got a dict",
    ),
    "weak-prompts-entry-none": (cbs, {"weak_prompts": [None]}, "weak_prompts[0] is None"),
    "selection-returns-none": (
        lambda p: w2s.ChunkBeamSearch(p, 2, 2, 2, selection=Returns(None)),
        {},
        "returned None for",
    ),
    # class 9
    "output-scores-cbs": (
        cbs,
        {"output_scores": True, "return_dict_in_generate": True},
        "output_scores=True",
    ),
    "output-logits-bon": (
        bon,
        {"output_logits": True, "return_dict_in_generate": True},
        "output_logits=True",
    ),
    "output-attentions-cbs": (
        cbs,
        {"output_attentions": True, "return_dict_in_generate": True},
        "output_attentions=True",
    ),
    "output-hidden-states-bon": (
        bon,
        {"output_hidden_states": True, "return_dict_in_generate": True},
        "output_hidden_states=True",
    ),
    "output-scores-drafted-guidance": (
        drafted,
        {"output_scores": True, "return_dict_in_generate": True},
        "output_scores=True",
    ),
    "output-logits-drafted-guidance": (
        drafted,
        {"output_logits": True, "return_dict_in_generate": True},
        "output_logits=True",
    ),
    "prompt-lookup-cbs": (cbs, {"prompt_lookup_num_tokens": 3}, "prompt_lookup_num_tokens=3"),
    "dola-layers-cbs": (cbs, {"dola_layers": "high"}, "dola_layers='high'"),
    "prefilled-cache-cbs": (cbs, {"past_key_values": "prefilled"}, "a KV cache that already holds 2 tokens"),
    "token-type-ids-cbs": (cbs, {"token_type_ids": "zeros"}, "token_type_ids"),
    "trace-without-dict-cbs": (
        cbs,
        {"return_trace": True},
        "return_trace=True needs return_dict_in_generate=True",
    ),
}


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("case", list(GENERATE_CALLS), ids=list(GENERATE_CALLS))
def test_bad_generate_calls_are_refused_by_name(pair, strong, tok, case):
    build, overrides, message = GENERATE_CALLS[case]
    args = {**inputs(tok, ["the film was"]), "do_sample": True, "max_new_tokens": 4, **overrides}
    if "input_ids" in overrides or "inputs_embeds" in overrides:
        args.pop("attention_mask") if "attention_mask" not in overrides else None
    if "inputs_embeds" in overrides:
        args.pop("input_ids")
    if args.get("past_key_values") == "prefilled":
        args["past_key_values"] = prefilled_cache(tok)
    if args.get("token_type_ids") == "zeros":
        args["token_type_ids"] = torch.zeros_like(args["input_ids"])
    with pytest.raises((ValueError, TypeError)) as error:
        strong.generate(**args, custom_generate=build(pair))
    assert message in str(error.value)


# Through strategy= (after enable): what transformers would drop or fail on deep inside is refused first.
STRATEGY_CALLS = {
    "strategy-a-class": (
        lambda p: w2s.ChunkBeamSearch,
        {},
        "strategy is the class ChunkBeamSearch: pass an instance",
    ),
    "assistant-model-cbs": (cbs, {"assistant_model": "tiny"}, "assistant_model"),
    "assistant-model-guidance": (guidance, {"assistant_model": "tiny"}, "assistant_model"),
    "input-ids-a-list": (
        cbs,
        {"input_ids": [[5, 6]]},
        "input_ids must be a torch tensor of token ids; got a list",
    ),
    "input-ids-numpy": (
        cbs,
        {"input_ids": np.array([[5, 6]])},
        "input_ids must be a torch tensor of token ids; got a ndarray",
    ),
    "input-ids-1-d": (
        guidance,
        {"input_ids": torch.tensor([5, 6])},
        "input_ids is 1-D: add the batch dimension",
    ),
}


@pytest.mark.parametrize("case", list(STRATEGY_CALLS), ids=list(STRATEGY_CALLS))
def test_bad_calls_through_strategy_are_refused_by_name(pair, strong, tok, case):
    build, overrides, message = STRATEGY_CALLS[case]
    args = {**inputs(tok, ["the film was"]), "do_sample": True, "max_new_tokens": 4, **overrides}
    if "input_ids" in overrides:
        args.pop("attention_mask")
    if args.get("assistant_model") == "tiny":
        args["assistant_model"] = tiny(tok, 9)
    with pytest.raises((ValueError, TypeError)) as error:
        strong.generate(**args, strategy=build(pair))
    assert message in str(error.value)


CONSTRUCTORS = {
    "selection-a-class": (
        lambda p, t: w2s.ChunkBeamSearch(p, 2, 2, 2, selection=w2s.TopDistinct),
        "selection is the class TopDistinct: pass an instance, TopDistinct()",
    ),
    "budget-a-class": (
        lambda p, t: w2s.ChunkBeamSearch(p, 2, w2s.ConstantBudget),
        "successors_per_beam is the class ConstantBudget: pass an instance, ConstantBudget(",
    ),
    "boundary-a-class": (
        lambda p, t: w2s.ChunkBeamSearch(p, 2, 2, w2s.ChunkBoundary),
        "chunk_length is the class ChunkBoundary: pass an instance, ChunkBoundary(",
    ),
    "guidance-a-tuple-of-models": (
        lambda p, t: w2s.TokenGuidance((tiny(t, 1), tiny(t, 2))),
        "got a tuple: build one with w2s.WeakPair(tuned, untuned, tokenizer)",
    ),
    "search-a-tuple-of-models": (
        lambda p, t: w2s.ChunkBeamSearch((tiny(t, 1), tiny(t, 2))),
        "got a tuple: build one with w2s.WeakPair(tuned, untuned, tokenizer)",
    ),
    "stop-token-ids-an-int": (
        lambda p, t: w2s.ChunkBoundary(4, stop_token_ids=5),
        "stop_token_ids must be a list of token ids; got an int: wrap it, [5]",
    ),
    "stop-token-ids-texts": (
        lambda p, t: w2s.ChunkBoundary(4, stop_token_ids=["\n"]),
        "texts go in stop_strings=",
    ),
    "schedule-a-set": (
        lambda p, t: w2s.ScheduledBudget({8, 4}),
        "schedule must be a list (its order is the rounds'); got a set",
    ),
    "enable-a-tokenizer": (
        lambda p, t: w2s.enable(t),
        "enable takes a transformers model (with generate()); got a",
    ),
    "enable-a-string": (
        lambda p, t: w2s.enable("gpt2"),
        "enable takes a transformers model (with generate()); got a str",
    ),
    "pair-without-an-lm-head": (
        lambda p, t: w2s.WeakPair(
            *(GPT2Model(GPT2Config(vocab_size=320, n_embd=16, n_layer=1, n_head=2)) for _ in "ab"), t
        ),
        "tuned has no output embeddings (GPT2Model): a weak side scores tokens with its language-model head; load "
        "it with AutoModelForCausalLM",
    ),
}


@pytest.mark.parametrize("case", list(CONSTRUCTORS), ids=list(CONSTRUCTORS))
def test_objects_of_the_wrong_kind_are_refused_by_name(pair, tok, case):
    build, message = CONSTRUCTORS[case]
    with pytest.raises((ValueError, TypeError)) as error:
        build(pair, tok)
    assert message in str(error.value)


def test_stop_token_ids_as_a_tensor_are_token_ids():
    assert w2s.ChunkBoundary(4, stop_token_ids=torch.tensor([5, 6])).stop_token_ids == [5, 6]


def test_numpy_draft_tokens_are_integers(pair):
    strategy = w2s.TokenGuidance(pair, draft_tokens=np.int64(2))
    assert strategy.draft_tokens == 2 and type(strategy.draft_tokens) is int


@pytest.mark.parametrize(
    "prompt", [[np.int64(5), np.int64(6)], np.array([5, 6])], ids=["numpy-integers", "numpy-array"]
)
def test_numpy_prompt_ids_score_as_a_list(pair, prompt):
    torch.testing.assert_close(pair.score([prompt], [" great"]), pair.score([[5, 6]], [" great"]))


# (call on the pair, message)
PAIR_VALUES = {
    "response-id-past-the-table": (
        lambda p: p.score(["a"], [[5, 999]]),
        "A response holds token id 999, outside the weak models' 320 rows",
    ),
    "response-id-negative": (lambda p: p.score(["a"], [[-1]]), "A response holds token id -1"),
    "response-ids-floats": (lambda p: p.score(["a"], [[5.0, 6.7]]), "token ids must be integers; got 5.0"),
    "response-ids-bools": (lambda p: p.score(["a"], [[True]]), "token ids must be integers; got True"),
    "response-list-of-texts": (
        lambda p: p.score(["a"], [["great", "film"]]),
        "responses[0] is a list of str: join",
    ),
    "response-none": (lambda p: p.score(["a"], [None]), "responses[0] is None"),
    "response-a-dict": (
        lambda p: p.score(["a"], [{"role": "assistant", "content": " x"}]),
        "responses[0] is a dict",
    ),
    "response-2-d-tensor": (
        lambda p: p.score(["a"], [torch.tensor([[5, 6]])]),
        "responses[0] is a 2-D tensor",
    ),
    "prompt-empty-id-list": (lambda p: p.score([[]], [" x"]), "prompts[0] is an empty list"),
    "prompt-float-ids": (lambda p: p.score([[5, 6.0]], [" x"]), "token ids must be integers; got 6.0"),
    "prompt-bool-ids": (lambda p: p.score([[True, 5]], [" x"]), "token ids must be integers; got True"),
    "prompt-2-d-tensor": (lambda p: p.score([torch.tensor([[5, 6]])], [" x"]), "prompts[0] is a 2-D tensor"),
    "prompts-3-d-tensor": (
        lambda p: p.score(torch.ones(1, 2, 3, dtype=torch.long), [" x"]),
        "prompts[0] is a 2-D tensor",
    ),
    "prompt-a-lone-message": (
        lambda p: p.score([{"role": "user", "content": "hi"}], [" x"]),
        "prompts[0] is one message (a dict): a chat prompt is a list of messages, wrap it",
    ),
    "prompt-list-of-texts": (
        lambda p: p.score([["the", "film"]], [" x"]),
        "prompts[0] is a list of str: join",
    ),
}


@pytest.mark.parametrize("case", list(PAIR_VALUES), ids=list(PAIR_VALUES))
def test_bad_values_given_to_a_pair_are_refused_before_any_forward(pair, case):
    call, message = PAIR_VALUES[case]
    with pytest.raises((ValueError, TypeError)) as error:
        call(pair)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "chunk, message",
    [
        (w2s.Chunk(None, False), "returned a Chunk whose text is None"),
        (w2s.Chunk(" x", "no"), "returned a Chunk whose finished is 'no'"),
    ],
    ids=["chunk-text-none", "chunk-finished-text"],
)
def test_a_sampler_returning_malformed_chunks_is_named(pair, chunk, message):
    class Fixed:
        def sample(self, prefixes, n, max_tokens):
            return [[chunk] * n for _ in prefixes]

    with pytest.raises(TypeError) as error:
        w2s.ChunkBeamSearch(pair, 2, 2, 2).run(["the film was"], sampler=Fixed(), max_new_tokens=4)
    assert message in str(error.value)
