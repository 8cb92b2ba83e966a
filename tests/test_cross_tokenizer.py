"""Across tokenizers the search's scores are the pair's scores of the text the large model wrote.

Realistic tokenizers built in code (``tokenizer_zoo``): a Llama-2-style SentencePiece one, a
GPT-2-style byte-level BPE with deep merges and a word-level one. The reference is computed here,
independently of the bridge: ``pair.score(decode(prompt), decode(prompt + response)[len(decode(prompt)):])``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_model_for as model_for
from tokenizer_zoo import TOKENIZERS

import w2s_generate as w2s

PROMPTS = ["the film was", "a quiet story about a family in a small town,"]
# (large model's tokenizer, weak pair's tokenizer)
COMBINATIONS = [
    ("llama2", "gpt2"),
    ("gpt2", "llama2"),
    ("llama2", "word"),
    ("word", "gpt2"),
    ("gpt2", "word"),
]


def pair_for(tokenizer, family: str = "llama") -> w2s.WeakPair:
    return w2s.WeakPair(model_for(tokenizer, family, 31), model_for(tokenizer, family, 32), tokenizer)


def response_texts(strong_tok, prompt_rows: list[list[int]], responses: list[list[int]]) -> list[str]:
    """What each response adds to the decoded prompt (the reference; no code of the bridge)."""
    texts = []
    for prompt, response in zip(prompt_rows, responses):
        before = strong_tok.decode(prompt, skip_special_tokens=True)
        texts.append(strong_tok.decode(prompt + response, skip_special_tokens=True)[len(before) :])
    return texts


@pytest.mark.parametrize("strong_name,weak_name", COMBINATIONS)
@pytest.mark.parametrize("width,successors,chunk", [(2, 2, 1), (2, 3, 3), (1, 4, None)])
def test_search_scores_equal_scoring_the_decoded_text(strong_name, weak_name, width, successors, chunk):
    strong_tok, weak_tok = TOKENIZERS[strong_name](), TOKENIZERS[weak_name]()
    strong = model_for(strong_tok, "llama", 30, width=48)
    pair = pair_for(weak_tok)
    inputs = strong_tok(PROMPTS, return_tensors="pt", padding=True)
    torch.manual_seed(width * 10 + successors)
    out = strong.generate(
        **inputs,
        custom_generate=w2s.ChunkBeamSearch(pair, width, successors, chunk, tokenizer=strong_tok),
        do_sample=True,
        max_new_tokens=12,
        num_return_sequences=width,
        return_dict_in_generate=True,
    )
    prompt_width = inputs["input_ids"].shape[1]
    prompt_rows = [
        [t for t, m in zip(ids, mask) if m]
        for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist())
    ]
    prompt_rows = [p for p in prompt_rows for _ in range(width)]
    pad = strong.generation_config.pad_token_id
    responses = []
    for row in out.sequences.tolist():
        response = row[prompt_width:]
        while response and response[-1] == pad:
            response.pop()
        responses.append(response)
    texts = response_texts(strong_tok, prompt_rows, responses)
    weak_prompts = [strong_tok.decode(p, skip_special_tokens=True) for p in prompt_rows]
    torch.testing.assert_close(out.log_ratios, pair.score(weak_prompts, texts), atol=2e-4, rtol=2e-4)


def test_sentencepiece_responses_keep_their_leading_space():
    """A Llama-2-style large model: the pair must read " wonderful", not "wonderful"."""
    strong_tok, weak_tok = TOKENIZERS["llama2"](), TOKENIZERS["gpt2"]()
    prompt = strong_tok("the film was")["input_ids"]
    response = strong_tok(" wonderful", add_special_tokens=False)["input_ids"]
    assert strong_tok.decode(response) == "wonderful"  # the trap: decoded alone, the space is gone
    bridge = w2s.bridge.TextBridge(strong_tok, pair_for(weak_tok))
    assert bridge.start([prompt]) == ["the film was"]
    texts = bridge.texts([response], [0])
    assert texts == [" wonderful"]


class CharacterSampler:
    """A text-only large model writing fixed texts one character per round: successor ``i`` of a
    beam continues the ``i``-th of the texts that the beam's response is a prefix of."""

    def __init__(self, prompts: list[str], texts: list[str]) -> None:
        self.prompts, self.texts = prompts, texts

    def sample(self, prefixes, n, max_tokens):
        out = []
        for prefix in prefixes:
            prompt = next(p for p in self.prompts if prefix.startswith(p))
            written = prefix[len(prompt) :]
            going_on = [t for t in self.texts if t.startswith(written)]
            out.append(
                [
                    w2s.Chunk(t[len(written) : len(written) + 1], len(written) + 1 >= len(t))
                    for t in (going_on * n)[:n]
                ]
            )
        return out


@pytest.mark.parametrize("weak_name", ["gpt2", "llama2", "word"])
def test_text_fed_character_by_character_scores_exactly(weak_name):
    """The server path: words grow one character per round, so the pair re-tokenizes them again and
    again (``[Ġw, o] -> [Ġw, on] -> [Ġwond] -> ...``), and multi-byte characters arrive whole."""
    pair = pair_for(TOKENIZERS[weak_name](), "gpt2")
    texts = [" wonderful wonderfully, café crème", " wondering about 日本の映画 😀 now", " a naïve hero"]
    sampler = CharacterSampler(PROMPTS, texts)
    cbs = w2s.ChunkBeamSearch(pair, beam_width=3, successors_per_beam=3, chunk_length=1)
    out = cbs.run(PROMPTS, sampler=sampler, max_new_tokens=40, num_return_sequences=3, return_trace=True)
    owners = [p for p in PROMPTS for _ in range(3)]
    torch.testing.assert_close(out.log_ratios, pair.score(owners, out.texts), atol=2e-4, rtol=2e-4)
    assert torch.equal(out.sequences_scores, out.log_ratios)
    for round_trace in out.trace:  # every candidate of every round, not only the returned ones
        prompts = [PROMPTS[int(b)] for b in round_trace.prompt_index]
        torch.testing.assert_close(
            round_trace.scores, pair.score(prompts, round_trace.responses), atol=2e-4, rtol=2e-4
        )
