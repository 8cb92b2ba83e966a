"""Host synchronizations inside a decoding step, counted and placed, so they cannot creep back.

Every call that moves a tensor's value to the host (``.item()``, ``.tolist()``, ``bool``/``int``/
``float`` of a tensor, ``torch.equal``) made from w2s_generate's own code is counted while
``generate`` runs; a step's share is the difference between two runs of different lengths.
"""

from __future__ import annotations

import contextlib
import sys

import pytest
import torch
from conftest import make_model

import w2s_generate as w2s

METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def counting_syncs():
    counts: dict[str, int] = {}

    def wrap(name, original):
        def counted(*args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("w2s_generate"):
                where = f"{caller}:{sys._getframe(1).f_lineno} {name}"
                counts[where] = counts.get(where, 0) + 1
            return original(*args, **kwargs)

        return counted

    originals = {name: getattr(torch.Tensor, name) for name in METHODS}
    original_equal = torch.equal
    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(name, original))
        torch.equal = wrap("torch.equal", original_equal)
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        torch.equal = original_equal


def syncs_per_step(model, inputs, make_kwargs) -> tuple[float, dict]:
    """The syncs a step makes, and where: ``(per step, {place: per step})``."""
    runs = []
    for steps in (4, 12):
        with counting_syncs() as counts:
            model.generate(**inputs, **make_kwargs(), min_new_tokens=steps, max_new_tokens=steps)
        runs.append(counts)
    short, long = runs
    places = {place: (long[place] - short.get(place, 0)) / 8 for place in long}
    places = {place: n for place, n in places.items() if n}
    return sum(places.values()), places


@pytest.fixture
def setup(family, tokenizer):
    strong = make_model(family, len(tokenizer), 70, width=48)
    pair = w2s.WeakPair(
        make_model(family, len(tokenizer), 71), make_model(family, len(tokenizer), 72), tokenizer
    )
    inputs = tokenizer(["the film was", "a quiet story about"], return_tensors="pt", padding=True)
    return strong, pair, inputs


@pytest.mark.parametrize("do_sample", [True, False])
def test_token_guidance_steps_sync_only_to_ask_whether_every_row_ended(setup, do_sample):
    """Its decoding loop asks the host once a step whether every row has ended, as transformers'
    loop does (``this_peer_finished``); the guided processor and the pair's step add nothing."""
    strong, pair, inputs = setup
    per_step, places = syncs_per_step(
        strong, inputs, lambda: dict(custom_generate=w2s.TokenGuidance(pair, 1.5), do_sample=do_sample)
    )
    assert per_step == 1, places
    [place] = places
    assert place.startswith("w2s_generate.candidates:") and place.endswith("__bool__"), places


def test_the_processor_path_makes_one_sync_per_step(setup):
    """Passed as logits_processor=, the processor cannot know whether rows get reordered (beam
    search): it compares each row's history with the last step's, one host sync per step."""
    strong, pair, inputs = setup
    per_step, counts = syncs_per_step(
        strong,
        inputs,
        lambda: dict(logits_processor=[w2s.WeakToStrongLogitsProcessor(pair, 1.5)], do_sample=True),
    )
    assert per_step == 1, counts


def test_drafted_rounds_sync_a_bounded_number_of_times(setup):
    """A drafted round asks the host whether every row has finished; retracting the rejected drafts
    from the pair's state asks whether any row retracts (tensor shapes depend on it) and checks the
    depth once. Three per round, whatever the number of tokens it keeps."""
    strong, pair, inputs = setup
    per_round = []
    for new_tokens in (6, 18):
        with counting_syncs() as counts:
            out = strong.generate(
                **inputs,
                custom_generate=w2s.TokenGuidance(pair, 1.5, draft_tokens=3),
                do_sample=True,
                max_new_tokens=new_tokens,
                eos_token_id=[],
                return_dict_in_generate=True,
            )
        per_round.append((sum(counts.values()), out.large_forwards - 1, counts))
    (short, short_rounds, _), (long, long_rounds, counts) = per_round
    assert long_rounds > short_rounds
    assert (long - short) / (long_rounds - short_rounds) <= 3, counts
