"""Debate-conditioned pairs and the align loop (preference pairs from traces, DPO on the adapter)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model
from peft import LoraConfig, get_peft_model
from reference import responses_of

import w2s_generate as w2s
from w2s_generate.debates import DEFAULT_CON, DEFAULT_PRO

PROMPTS = ["the film was", "a quiet story about a family"]
CASES = w2s.Debate(
    pro=["the film was great and the acting was wonderful", "a story told with warmth and care"],
    con=["the film was dull and the plot was boring", "a story told badly with no heart"],
    large_tokens=[0, 0],
)


@pytest.fixture
def small(family, tokenizer):
    return make_model(family, len(tokenizer), 21)


def test_debate_pair_equals_a_two_condition_pair_built_by_hand(small, tokenizer):
    pair = w2s.debate_pair(small, tokenizer, PROMPTS, CASES)
    by_hand = w2s.PromptPair(
        small,
        tokenizer,
        condition=lambda p: dict(zip(PROMPTS, CASES.pro))[p],
        against=lambda p: dict(zip(PROMPTS, CASES.con))[p],
    )
    responses = [" was great fun", " and then it ended"]
    torch.testing.assert_close(pair.score(PROMPTS, responses), by_hand.score(PROMPTS, responses))
    # The contrast of the two arguments: (pro vs nothing) - (con vs nothing), the unconditioned side cancels.
    pro_only = w2s.explanation_pair(small, tokenizer, PROMPTS, CASES.pro)
    con_only = w2s.explanation_pair(small, tokenizer, PROMPTS, CASES.con)
    torch.testing.assert_close(
        pair.score(PROMPTS, responses),
        pro_only.score(PROMPTS, responses) - con_only.score(PROMPTS, responses),
        atol=1e-5,
        rtol=1e-5,
    )


def test_search_with_a_debate_pair_returns_its_scores(small, tokenizer, strong):
    pair = w2s.debate_pair(small, tokenizer, PROMPTS, CASES)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3),
        weak_prompts=PROMPTS,
        do_sample=True,
        max_new_tokens=9,
        return_dict_in_generate=True,
    )
    responses = responses_of(out.sequences, inputs["input_ids"].shape[1], tokenizer.pad_token_id)
    torch.testing.assert_close(out.log_ratios, pair.score(PROMPTS, responses), atol=1e-4, rtol=1e-4)


def test_debate_counts_the_tokens_it_spends(strong, tokenizer):
    eos = list(range(3, 300, 4))  # a quarter of the vocabulary stops: some sampled cases end early
    torch.manual_seed(0)
    cases = w2s.debate(strong, tokenizer, PROMPTS, max_new_tokens=12, eos_token_id=eos, do_sample=True)
    assert len(cases.pro) == len(cases.con) == len(cases.large_tokens) == 2
    # Reference: the two generations redone by hand, counted up to the first stop id (included).
    expected = [0, 0]
    torch.manual_seed(0)
    for instruction in (DEFAULT_PRO, DEFAULT_CON):
        texts = [instruction.format(prompt=p) for p in PROMPTS]
        tokenizer.padding_side = "left"
        enc = tokenizer(texts, return_tensors="pt", padding=True)
        out = strong.generate(
            **enc, do_sample=True, max_new_tokens=12, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
        )
        for i, row in enumerate(out[:, enc["input_ids"].shape[1] :].tolist()):
            stops = [j for j, t in enumerate(row) if t in eos]
            expected[i] += stops[0] + 1 if stops else len(row)
    assert cases.large_tokens == expected
    assert any(n < 24 for n in expected), "a case should end early"


def test_bad_debates_are_refused(small, tokenizer):
    same = w2s.Debate(pro=["same", "x"], con=["same", "y"], large_tokens=[0, 0])
    with pytest.raises(ValueError, match="prompt 0: the case for and the case against are the same text"):
        w2s.debate_pair(small, tokenizer, PROMPTS, same)
    with pytest.raises(ValueError, match="2 prompts but 1 cases.pro"):
        w2s.debate_pair(small, tokenizer, PROMPTS, w2s.Debate(["a"], ["b"], [0]))
    with pytest.raises(TypeError, match="must be a w2s_generate.Debate"):
        w2s.debate_pair(small, tokenizer, PROMPTS, (CASES.pro, CASES.con))
    with pytest.raises(ValueError, match="condition and against are the same text"):
        w2s.PromptPair(small, tokenizer, "same", against="same")


# ------------------------------------------------------------------------------------ align
def search_trace(strong, pair, tokenizer, prompts):
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    return strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 3, 3),
        weak_prompts=prompts,
        do_sample=True,
        max_new_tokens=9,
        return_dict_in_generate=True,
        return_trace=True,
    ).trace


@pytest.mark.parametrize("per_round", [1, 2])
def test_preference_pairs_match_the_trace(strong, pair, tokenizer, per_round):
    trace = search_trace(strong, pair, tokenizer, PROMPTS)
    records = w2s.preference_pairs(trace, PROMPTS, decode=tokenizer.decode, pairs_per_round=per_round)
    assert records
    for r in records:
        round_trace = trace[r["round"]]
        b = PROMPTS.index(r["prompt"])
        rows = [i for i, o in enumerate(round_trace.prompt_index.tolist()) if o == b]
        kept = {
            tokenizer.decode(round_trace.responses[i]): float(round_trace.scores[i])
            for i in rows
            if round_trace.kept[i]
        }
        dropped = {
            tokenizer.decode(round_trace.responses[i]): float(round_trace.scores[i])
            for i in rows
            if not round_trace.kept[i]
        }
        assert r["chosen"] in kept and r["rejected"] in dropped and r["chosen"] != r["rejected"]
        assert r["score_chosen"] == pytest.approx(kept[r["chosen"]])
        assert r["score_rejected"] == pytest.approx(dropped[r["rejected"]])
        assert r["score_chosen"] >= r["score_rejected"] - 1e-6  # top-W keeps the best
    # The pairing: the best kept with the worst dropped, per round and prompt, at most per_round of them.
    counts: dict[tuple[int, str], int] = {}
    for r in records:
        counts[(r["round"], r["prompt"])] = counts.get((r["round"], r["prompt"]), 0) + 1
    assert max(counts.values()) <= per_round
    first = [r for r in records if r["round"] == 0 and r["prompt"] == PROMPTS[0]][0]
    round0 = trace[0]
    rows = [i for i, o in enumerate(round0.prompt_index.tolist()) if o == 0]
    assert first["score_chosen"] == pytest.approx(
        max(float(round0.scores[i]) for i in rows if round0.kept[i])
    )
    assert first["score_rejected"] == pytest.approx(
        min(float(round0.scores[i]) for i in rows if not round0.kept[i])
    )


def test_a_discarded_copy_of_a_kept_response_is_never_rejected():
    """The search keeps one copy of identical responses and marks the others not kept: such a copy
    was kept all the same, so it is no "rejected" response."""
    round0 = w2s.RoundTrace(
        round=0,
        prompt_index=torch.tensor([0, 0, 0, 0, 1, 1, 1]),
        responses=[" great", " fine", " great", " awful", " dull", " odd", " dull"],
        scores=torch.tensor([2.0, 1.0, 2.0, -1.0, 0.5, 0.1, 0.5]),
        side_scores=torch.zeros(2, 7),
        kept=torch.tensor([True, True, False, False, True, True, False]),
    )
    records = w2s.preference_pairs([round0], ["the film was", "a story"], pairs_per_round=3)
    # Prompt 0: " great" over " awful"; " fine" has no discarded partner left. Prompt 1: none.
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in records] == [
        ("the film was", " great", " awful")
    ]


def test_preference_pairs_of_a_text_trace_need_no_decoding(pair):
    class Words:
        def sample(self, prefixes, n, max_tokens):
            words = [" fine", " dull", " bright", " odd"]
            return [[w2s.Chunk(words[i % 4], False) for i in range(n)] for _ in prefixes]

    out = w2s.ChunkBeamSearch(pair, 1, 4, 1).run(
        PROMPTS, sampler=Words(), max_new_tokens=2, return_trace=True
    )
    records = w2s.preference_pairs(out.trace, PROMPTS)
    assert {r["prompt"] for r in records} == set(PROMPTS)
    assert all(r["chosen"] != r["rejected"] for r in records)
    with pytest.raises(ValueError, match="1 prompts were given"):
        w2s.preference_pairs(out.trace, [PROMPTS[0]])


@pytest.mark.parametrize("family", ["gpt2"])
def test_align_raises_the_pairs_score_of_what_was_kept(family, tokenizer):
    pytest.importorskip("trl")
    base = make_model("gpt2", len(tokenizer), 31)
    config = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0)
    peft_model = get_peft_model(base, config)
    pair = w2s.WeakPair.from_peft(peft_model, tokenizer)
    records = [
        {"prompt": p, "chosen": " great and wonderful", "rejected": " dull and boring"} for p in PROMPTS * 4
    ]
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" not in n}
    before = pair.score(PROMPTS * 2, [" great and wonderful"] * 2 + [" dull and boring"] * 2)
    w2s.align_adapter(peft_model, tokenizer, records, learning_rate=1e-2, epochs=3, batch_size=4)
    after = pair.score(PROMPTS * 2, [" great and wonderful"] * 2 + [" dull and boring"] * 2)
    margin_before = before[:2] - before[2:]
    margin_after = after[:2] - after[2:]
    assert (margin_after > margin_before + 0.1).all(), (margin_before, margin_after)
    # Only the adapter trained; the base (the pair's untuned side and DPO's reference) is untouched.
    assert all(torch.equal(p, frozen[n]) for n, p in peft_model.named_parameters() if n in frozen)
    assert not any(p.requires_grad for p in peft_model.parameters()) and not peft_model.training


def test_align_refuses_what_it_cannot_train(small, tokenizer):
    pytest.importorskip("trl")
    records = [{"prompt": "a", "chosen": " b", "rejected": " c"}]
    with pytest.raises(TypeError, match="must be a peft model"):
        w2s.align_adapter(small, tokenizer, records)
    peft_model = get_peft_model(
        small, LoraConfig(r=2, target_modules=["c_attn"] if hasattr(small, "transformer") else ["q_proj"])
    )
    with pytest.raises(ValueError, match="records is empty"):
        w2s.align_adapter(peft_model, tokenizer, [])
    with pytest.raises(ValueError, match=r"records\[0\] must be a dict with"):
        w2s.align_adapter(peft_model, tokenizer, [{"prompt": "a", "chosen": " b"}])
    head = make_model("gpt2", len(tokenizer), 5)
    on_head = get_peft_model(head, LoraConfig(r=2, target_modules=["c_attn", "lm_head"]))
    with pytest.raises(ValueError, match="includes the output layer"):
        w2s.align_adapter(on_head, tokenizer, records)


def test_search_align_search_loop_runs_on_tiny_models(strong, tokenizer):
    pytest.importorskip("trl")
    base = make_model("gpt2" if hasattr(strong, "transformer") else "llama", len(tokenizer), 41)
    target = ["c_attn"] if hasattr(base, "transformer") else ["q_proj", "v_proj"]
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=target, init_lora_weights=False))
    pair = w2s.WeakPair.from_peft(peft_model, tokenizer)
    for _ in range(2):
        trace = search_trace(strong, pair, tokenizer, PROMPTS)
        records = w2s.preference_pairs(trace, PROMPTS, decode=tokenizer.decode, pairs_per_round=2)
        w2s.align_adapter(peft_model, tokenizer, records, batch_size=4)
    # The pair is still exact after training: the search returns its scores.
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 2, 2, 3),
        weak_prompts=PROMPTS,
        do_sample=True,
        max_new_tokens=6,
        return_dict_in_generate=True,
    )
    responses = responses_of(out.sequences, inputs["input_ids"].shape[1], tokenizer.pad_token_id)
    torch.testing.assert_close(out.log_ratios, pair.score(PROMPTS, responses), atol=1e-4, rtol=1e-4)
