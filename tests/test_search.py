"""Chunk-level beam search and best-of-N: oracles, properties and bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import next_logprobs, responses_of
from transformers import LogitsProcessor, LogitsProcessorList, T5Config, T5ForConditionalGeneration
from transformers.generation.streamers import BaseStreamer

import w2s_generate as w2s

PROMPTS = ["the film was", "a quiet story about a family"]


@pytest.fixture(scope="module")
def other_tokenizer():
    return make_tokenizer(280, seed_text="zebra quartz", bos=True)


@pytest.fixture
def cross_pair(other_tokenizer):
    v = len(other_tokenizer)
    return w2s.WeakPair(make_model("llama", v, 21), make_model("llama", v, 22), other_tokenizer)


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_width_one_reproduces_plain_sampling(strong, pair, tokenizer, chunk):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    for seed in range(3):
        torch.manual_seed(seed)
        plain = strong.generate(**inputs, do_sample=True, top_k=50, temperature=0.9, max_new_tokens=15)
        torch.manual_seed(seed)
        cbs = w2s.ChunkBeamSearch(pair, beam_width=1, successors_per_beam=1, chunk_length=chunk)
        searched = strong.generate(
            **inputs, custom_generate=cbs, do_sample=True, top_k=50, temperature=0.9, max_new_tokens=15
        )
        assert torch.equal(plain, searched)


def test_width_one_reproduces_sampling_that_stops_at_eos(strong, pair, tokenizer):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    eos = list(range(100, 180))  # many stop ids: sequences end early, at different steps
    for seed in range(4):
        torch.manual_seed(seed)
        plain = strong.generate(**inputs, do_sample=True, max_new_tokens=20, eos_token_id=eos)
        torch.manual_seed(seed)
        searched = strong.generate(
            **inputs,
            custom_generate=w2s.ChunkBeamSearch(pair, 1, 1, 3),
            do_sample=True,
            max_new_tokens=20,
            eos_token_id=eos,
        )
        assert torch.equal(plain, searched)


@pytest.mark.parametrize(
    "boundary",
    [
        w2s.ChunkBoundary(6, stop_token_ids=list(range(40, 200, 3))),
        w2s.ChunkBoundary(None, stop_token_ids=list(range(40, 200, 5))),
        w2s.ChunkBoundary(5, stop_strings=["e", "a"]),
    ],
    ids=["stop-tokens", "stop-tokens-whole", "stop-strings"],
)
def test_width_one_reproduces_plain_sampling_of_a_batch_under_stop_boundaries(
    strong, pair, tokenizer, boundary
):
    """Chunks that end at stop tokens or strings, on a batch whose rows also end at EOS at different
    times: every row still takes the random draws plain sampling gives it."""
    inputs = tokenizer(PROMPTS + ["what a waste"], return_tensors="pt", padding=True)
    eos = list(range(250, 290))
    settings = dict(do_sample=True, max_new_tokens=18, eos_token_id=eos, top_k=80, no_repeat_ngram_size=2)
    for seed in range(3):
        torch.manual_seed(seed)
        plain = strong.generate(**inputs, **settings)
        torch.manual_seed(seed)
        cbs = w2s.ChunkBeamSearch(pair, 1, 1, boundary, tokenizer=tokenizer)
        searched = strong.generate(**inputs, custom_generate=cbs, **settings)
        assert torch.equal(plain, searched), seed


def test_returned_scores_equal_fresh_scoring_and_best_of_pool(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    torch.manual_seed(0)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 3, 3, 4),
        do_sample=True,
        max_new_tokens=12,
        num_return_sequences=3,
        return_dict_in_generate=True,
        return_trace=True,
        eos_token_id=list(range(100, 130)),
    )
    assert isinstance(out, w2s.SearchOutput) and out.sequences.shape[0] == 6
    responses = responses_of(out.sequences, width, tokenizer.pad_token_id)
    prompts = [p for p in PROMPTS for _ in range(3)]
    torch.testing.assert_close(out.log_ratios, pair.score(prompts, responses), atol=1e-4, rtol=1e-4)
    assert torch.equal(out.sequences_scores, out.log_ratios)  # transformers' name for them
    # Sorted best first per prompt, and the best beats every candidate kept in the last round.
    scores = out.log_ratios.view(2, 3)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    last = out.trace[-1]
    for b in range(2):
        kept = last.scores[(last.prompt_index == b) & last.kept]
        assert kept.numel() == 0 or float(kept.max()) <= float(scores[b, 0]) + 1e-5
    assert len(out.trace) == 3  # 12 tokens in chunks of 4
    assert all(len(set(map(tuple, responses[b * 3 : b * 3 + 3]))) == 3 for b in range(2)), (
        "distinct hypotheses"
    )


def test_search_prefers_higher_scores_than_plain_sampling(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    torch.manual_seed(0)
    plain = strong.generate(**inputs, do_sample=True, max_new_tokens=12, num_return_sequences=8)
    base = (
        pair.score([p for p in PROMPTS for _ in range(8)], responses_of(plain, width, -1)).view(2, 8).mean(1)
    )
    torch.manual_seed(0)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 4, 3),
        do_sample=True,
        max_new_tokens=12,
        return_dict_in_generate=True,
    )
    assert (out.log_ratios > base).all()


class CachedLogitsCheck(LogitsProcessor):
    """First in the list: the raw logits of unfinished rows must equal an uncached forward."""

    def __init__(self, model, pad, eos):
        self.model, self.pad, self.eos, self.checked = model, pad, set(eos), 0

    def __call__(self, input_ids, scores):
        for row, got in zip(input_ids.tolist(), scores):
            if self.eos & set(row[-20:]):
                continue  # a finished row is padded from here on
            i = 0
            while row[i] == self.pad:
                i += 1
            want = next_logprobs(self.model, row[i:])
            torch.testing.assert_close(torch.log_softmax(got.float(), -1), want, atol=1e-4, rtol=1e-4)
            self.checked += 1
        return scores


def test_cached_large_model_logits_equal_full_recompute(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    eos = list(range(200, 215))
    check = CachedLogitsCheck(strong, tokenizer.pad_token_id, eos)
    torch.manual_seed(1)
    strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 3, 3),
        do_sample=True,
        max_new_tokens=9,
        logits_processor=LogitsProcessorList([check]),
        eos_token_id=eos,
    )
    assert check.checked > 20


def test_batch_equals_single_prompts_when_sampling_is_deterministic(strong, pair, tokenizer):
    cbs = w2s.ChunkBeamSearch(pair, 2, 2, 3)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    batch = strong.generate(
        **inputs, custom_generate=cbs, do_sample=True, top_k=1, max_new_tokens=9, return_dict_in_generate=True
    )
    width = inputs["input_ids"].shape[1]
    for b, prompt in enumerate(PROMPTS):
        one = tokenizer([prompt], return_tensors="pt")
        single = strong.generate(
            **one,
            custom_generate=cbs,
            do_sample=True,
            top_k=1,
            max_new_tokens=9,
            return_dict_in_generate=True,
        )
        assert (
            responses_of(batch.sequences, width, -1)[b]
            == responses_of(single.sequences, one["input_ids"].shape[1], -1)[0]
        )
        torch.testing.assert_close(batch.log_ratios[b], single.log_ratios[0], atol=1e-4, rtol=1e-4)


def test_finished_rows_cost_no_more_forwards(strong, pair, tokenizer):
    calls = []
    hook = strong.register_forward_hook(
        lambda m, a, k, out: calls.append(k["input_ids"].shape), with_kwargs=True
    )
    try:
        inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
        everything = list(range(len(tokenizer)))
        strong.generate(
            **inputs,
            custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 4),
            do_sample=True,
            max_new_tokens=12,
            eos_token_id=everything,
        )
        assert len(calls) == 1, (
            f"only the prefill should run when every first token ends the response: {calls}"
        )
        calls.clear()
        strong.generate(
            **inputs, custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 4), do_sample=True, max_new_tokens=12
        )
        # Large-model work, after one prefill of the B prompts: one forward per new token but the last
        # (12 tokens, 3 rounds of 4), over the B*W*K rows within a round and over the B*W survivors
        # when a round's last token is fed.
        assert calls[0] == inputs["input_ids"].shape, "the prompt is prefilled once per prompt"
        within, survivors = [torch.Size([2 * 2 * 2, 1])] * 3, [torch.Size([2 * 2, 1])]
        assert calls[1:] == (within + survivors) * 2 + within
    finally:
        hook.remove()


def test_identical_candidates_take_one_slot(strong, pair, tokenizer):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 3, 3, 2),
        do_sample=True,
        top_k=1,
        max_new_tokens=6,
        num_return_sequences=3,
        return_dict_in_generate=True,
        return_trace=True,
    )
    for round_trace in out.trace:
        assert int(round_trace.kept.sum()) == 1
    assert out.sequences[0].tolist() == out.sequences[1].tolist()  # the best, repeated


def test_cross_tokenizer_scores_equal_text_scoring(strong, tokenizer, cross_pair):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    w2s.enable(strong)
    try:
        torch.manual_seed(2)
        out = strong.generate(
            **inputs,
            strategy=w2s.ChunkBeamSearch(cross_pair, 2, 2, 3),
            tokenizer=tokenizer,
            do_sample=True,
            max_new_tokens=10,
            return_dict_in_generate=True,
        )
    finally:
        w2s.disable(strong)
    width = inputs["input_ids"].shape[1]
    texts = [
        tokenizer.decode(r, skip_special_tokens=True)
        for r in responses_of(out.sequences, width, tokenizer.pad_token_id)
    ]
    torch.testing.assert_close(out.log_ratios, cross_pair.score(PROMPTS, texts), atol=1e-4, rtol=1e-4)


def test_weak_prompts_are_used_for_the_pair(strong, pair, tokenizer):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    weak_prompt = "Review: 5 stars. the film was"
    torch.manual_seed(0)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3),
        do_sample=True,
        max_new_tokens=6,
        return_dict_in_generate=True,
        weak_prompts=[weak_prompt],
    )
    response = responses_of(out.sequences, inputs["input_ids"].shape[1], -1)[0]
    torch.testing.assert_close(out.log_ratios, pair.score([weak_prompt], [response]), atol=1e-4, rtol=1e-4)


def test_spellings_agree(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    results = []
    for spelling in ("custom_generate", "strategy", "mixin"):
        model = strong
        if spelling == "mixin":
            mixed = type("MixedLM", (w2s.W2SGenerationMixin, type(strong)), {})
            model = mixed(strong.config).eval()
            model.load_state_dict(strong.state_dict())
        elif spelling == "strategy":
            w2s.enable(model)
        for strategy in (
            w2s.ChunkBeamSearch(pair, 2, 2, 3),
            w2s.BestOfN(pair, n=3),
            w2s.TokenGuidance(pair, 1.5),
        ):
            torch.manual_seed(5)
            kwargs = (
                {"custom_generate": strategy} if spelling == "custom_generate" else {"strategy": strategy}
            )
            results.append(
                (
                    spelling,
                    type(strategy).__name__,
                    model.generate(**inputs, do_sample=True, max_new_tokens=7, **kwargs),
                )
            )
        w2s.disable(strong)
    by_name = {}
    for _spelling, name, out in results:
        by_name.setdefault(name, []).append(out)
    for outs in by_name.values():
        assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_token_guidance_strategy_equals_processor(strong, pair, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    torch.manual_seed(3)
    a = strong.generate(
        **inputs,
        do_sample=True,
        max_new_tokens=8,
        logits_processor=[w2s.WeakToStrongLogitsProcessor(pair, 2.0)],
    )
    torch.manual_seed(3)
    b = strong.generate(
        **inputs, do_sample=True, max_new_tokens=8, custom_generate=w2s.TokenGuidance(pair, 2.0)
    )
    assert torch.equal(a, b)
    c = strong.generate(**inputs, num_beams=3, max_new_tokens=6, custom_generate=w2s.TokenGuidance(pair, 2.0))
    d = strong.generate(
        **inputs, num_beams=3, max_new_tokens=6, logits_processor=[w2s.WeakToStrongLogitsProcessor(pair, 2.0)]
    )
    assert torch.equal(c, d)


class Collect(BaseStreamer):
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("width", [1, 3])
def test_streamer_receives_committed_text(strong, pair, tokenizer, width):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    streamer = Collect()
    w2s.enable(strong)
    try:
        out = strong.generate(
            **inputs,
            strategy=w2s.ChunkBeamSearch(pair, width, 2, 3),
            streamer=streamer,
            do_sample=True,
            max_new_tokens=9,
        )
    finally:
        w2s.disable(strong)
    assert streamer.ended and streamer.chunks[0] == inputs["input_ids"][0].tolist()
    streamed = [t for chunk in streamer.chunks[1:] for t in chunk]
    assert streamed == out[0, inputs["input_ids"].shape[1] :].tolist()
    if width == 1:
        assert len(streamer.chunks) >= 4, "with W=1 every chosen chunk is streamed at once"


def test_stop_strings_work_with_strategies(strong, pair, tokenizer):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    w2s.enable(strong)
    try:
        torch.manual_seed(0)
        free = strong.generate(
            **inputs, strategy=w2s.ChunkBeamSearch(pair, 1, 1, 4), do_sample=True, max_new_tokens=30
        )
        generated = free[0, inputs["input_ids"].shape[1] :].tolist()
        text = tokenizer.decode(generated, skip_special_tokens=True)
        pieces = [tokenizer.decode([t]) for t in generated[4:]]
        stop = next(p for p in pieces if p.isascii() and p.strip() and p.isprintable())
        torch.manual_seed(0)
        cut = strong.generate(
            **inputs,
            strategy=w2s.ChunkBeamSearch(pair, 1, 1, 4),
            do_sample=True,
            max_new_tokens=30,
            stop_strings=[stop],
            tokenizer=tokenizer,
        )
    finally:
        w2s.disable(strong)
    cut_text = tokenizer.decode(cut[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert stop in cut_text and len(cut_text) < len(text)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beam_width=0), "beam_width must be an integer >= 1; got 0"),
        (dict(successors_per_beam=-1), "successors_per_beam must be an integer >= 1; got -1"),
        (dict(chunk_length=0), "chunk_length must be an integer >= 1 or None"),
    ],
)
def test_bad_search_settings(pair, kwargs, message):
    with pytest.raises(ValueError, match=message):
        w2s.ChunkBeamSearch(pair, **kwargs)


def test_bad_generate_calls(strong, pair, tokenizer, cross_pair):
    inputs = tokenizer(["the film was"], return_tensors="pt")
    cbs = w2s.ChunkBeamSearch(pair, 2, 2, 2)
    with pytest.raises(ValueError, match="num_return_sequences=3 exceeds beam_width=2"):
        strong.generate(
            **inputs, custom_generate=cbs, do_sample=True, num_return_sequences=3, max_new_tokens=4
        )
    with pytest.raises(ValueError, match="pass do_sample=True"):
        strong.generate(**inputs, custom_generate=cbs, max_new_tokens=4)
    with pytest.raises(ValueError, match="num_beams=2.*set beam_width"):
        strong.generate(**inputs, custom_generate=cbs, do_sample=True, num_beams=2, max_new_tokens=4)
    with pytest.raises(ValueError, match="do not share a vocabulary, so pass the large model's tokenizer"):
        strong.generate(
            **inputs, custom_generate=w2s.ChunkBeamSearch(cross_pair), do_sample=True, max_new_tokens=4
        )
    with pytest.raises(ValueError, match="weak_prompts has 2 entries for 1 prompts"):
        strong.generate(
            **inputs, custom_generate=cbs, do_sample=True, max_new_tokens=4, weak_prompts=["a", "b"]
        )


def test_encoder_decoder_is_refused(pair, tokenizer):
    t5 = T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=16,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            d_kv=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=2,
        )
    ).eval()
    inputs = tokenizer(["the film was"], return_tensors="pt")
    with pytest.raises(ValueError, match="decoder-only.*encoder-decoder"):
        t5.generate(**inputs, custom_generate=w2s.ChunkBeamSearch(pair), do_sample=True, max_new_tokens=4)


def test_prompt_longer_than_weak_context_is_a_clear_error(strong, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=8, n_embd=16, n_layer=1, n_head=2)
    short = w2s.WeakPair(GPT2LMHeadModel(config), GPT2LMHeadModel(config), tokenizer)
    inputs = tokenizer(["a quiet story about a family in a small town"], return_tensors="pt")
    with pytest.raises(ValueError, match="more than the weak model's context of 8 positions"):
        strong.generate(
            **inputs, custom_generate=w2s.ChunkBeamSearch(short, 1, 2, 2), do_sample=True, max_new_tokens=4
        )


def test_pair_on_other_dtype_is_handled(strong, family, tokenizer):
    pair = w2s.WeakPair(
        make_model(family, len(tokenizer), 11).to(torch.bfloat16),
        make_model(family, len(tokenizer), 12).to(torch.bfloat16),
        tokenizer,
    )
    inputs = tokenizer(["the film was"], return_tensors="pt")
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3),
        do_sample=True,
        max_new_tokens=6,
        return_dict_in_generate=True,
    )
    response = responses_of(out.sequences, inputs["input_ids"].shape[1], -1)
    torch.testing.assert_close(out.log_ratios, pair.score(["the film was"], response), atol=1e-3, rtol=1e-3)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    family=st.sampled_from(["gpt2", "llama"]),
    cross=st.booleans(),
    W=st.integers(1, 3),
    K=st.integers(1, 3),
    L=st.integers(1, 5),
    batch=st.integers(1, 3),
    n_eos=st.integers(0, 60),
    seed=st.integers(0, 100),
)
def test_property_scores_are_fresh_and_shapes_hold(
    tokenizer, other_tokenizer, family, cross, W, K, L, batch, n_eos, seed
):
    strong = make_model(family, len(tokenizer), seed, width=32)
    wtok = other_tokenizer if cross else tokenizer
    pair = w2s.WeakPair(
        make_model(family, len(wtok), seed + 1), make_model(family, len(wtok), seed + 2), wtok
    )
    prompts = ["the film was", "terrible pacing, weak", "a"][:batch]
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    eos = list(range(3, 3 + n_eos)) or [2]
    n_return = min(W, 2)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, W, K, L, tokenizer=tokenizer if cross else None),
        do_sample=True,
        max_new_tokens=8,
        eos_token_id=eos,
        # A sampled padding id would be taken for the right padding of the returned sequences.
        suppress_tokens=[tokenizer.pad_token_id],
        num_return_sequences=n_return,
        return_dict_in_generate=True,
    )
    width = inputs["input_ids"].shape[1]
    assert out.sequences.shape[0] == batch * n_return
    assert torch.equal(out.sequences[:, :width], inputs["input_ids"].repeat_interleave(n_return, 0))
    responses = responses_of(out.sequences, width, tokenizer.pad_token_id)
    assert all(len(r) <= 8 for r in responses)
    rep_prompts = [p for p in prompts for _ in range(n_return)]
    if cross:
        want = pair.score(rep_prompts, [tokenizer.decode(r, skip_special_tokens=True) for r in responses])
    else:
        want = pair.score(rep_prompts, responses)
    torch.testing.assert_close(out.log_ratios, want, atol=2e-4, rtol=2e-4)


class _FixedCount:
    """A sampler that returns ``count`` chunks per prefix whatever it is asked for (None: as asked)."""

    def __init__(self, count: int | None) -> None:
        self.count = count

    def sample(self, prefixes, n, max_tokens):
        return [[w2s.Chunk(" and", False)] * (self.count or n) for _ in prefixes]


def test_a_sampler_returning_another_count_is_refused(pair):
    cbs = w2s.ChunkBeamSearch(pair, 2, 2, 3)
    with pytest.raises(
        ValueError, match=r"_FixedCount.sample was asked for 4 continuations .* returned \[2\]"
    ):
        cbs.run(["the film was"], sampler=_FixedCount(2), max_new_tokens=6)
    out = cbs.run(["the film was"], sampler=_FixedCount(None), max_new_tokens=6)
    assert out.texts == [" and and"]


def padded_large_model(family, tokenizer, favour_padding: float = 8.0):
    """320 real rows + 3 padding rows whose logits are made large: sampling would pick them often."""
    strong = make_model(family, len(tokenizer), 10, width=48, layers=3, extra_rows=3)
    head = strong.get_output_embeddings().weight
    with torch.no_grad():
        head[len(tokenizer) :] = favour_padding * head[: len(tokenizer)].mean(0, keepdim=True).sign()
    return strong


@pytest.mark.parametrize("draft_tokens", [None, 2], ids=["sampled", "drafted"])
def test_padding_rows_of_the_large_table_are_never_sampled(family, tokenizer, pair, draft_tokens):
    """A large model whose output table has rows past the pair's (padding) gets no candidate token the
    pair cannot read: those rows are masked, and the scores are the pair's own."""
    strong = padded_large_model(family, tokenizer)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    plain = strong.generate(**inputs, do_sample=True, max_new_tokens=12, eos_token_id=[])
    assert (plain >= len(tokenizer)).any(), "plain sampling does pick the padding rows"
    torch.manual_seed(0)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 4, draft_tokens=draft_tokens),
        do_sample=True,
        max_new_tokens=12,
        eos_token_id=[],
        return_dict_in_generate=True,
    )
    assert int(out.sequences.max()) < len(tokenizer)
    width = inputs["input_ids"].shape[1]
    fresh = pair.score(PROMPTS, out.sequences[:, width:].tolist())
    torch.testing.assert_close(out.log_ratios, fresh, atol=1e-3, rtol=1e-4)
