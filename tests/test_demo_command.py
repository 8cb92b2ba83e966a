"""`w2s-generate demo` end to end on a quickly trained demo cache."""

from __future__ import annotations

import json

import pytest

from w2s_generate.cli import main
from w2s_generate.demo import train_demo_models


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-cache")
    train_demo_models(root, progress=False, scale=0.05)
    return root


def test_demo_writes_table_json_and_plot(cache, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "demo",
            "--task",
            "synthetic",
            "--cache-dir",
            str(cache),
            "--prompts",
            "4",
            "--budgets",
            "4",
            "--max-new-tokens",
            "12",
            "--out-dir",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for method in ("strong alone", "tuned weak alone", "token guidance", "best-of-4", "CBS W=2 K=2 L=5"):
        assert method in printed
    rows = json.loads((out / "results.json").read_text())
    assert [r["family"] for r in rows] == ["strong", "tuned", "token", "bon", "cbs"]
    by = {r["family"]: r for r in rows}
    assert by["tuned"]["large_tokens"] == 0
    # The large model's decoding steps are counted under either name of the cache keyword.
    assert 1 <= by["strong"]["large_tokens"] <= 12
    assert 1 <= by["token"]["large_tokens"] <= 12
    # Budgets are matched by samples: best-of-4 forwards about 4x the strong model's tokens, CBS no more.
    assert by["bon"]["large_tokens"] > 2 * by["strong"]["large_tokens"]
    assert by["cbs"]["large_tokens"] <= by["bon"]["large_tokens"] + 4 * 2
    assert all(0.0 <= r["fluency"] <= 1.0 for r in rows)
    png = (out / "reward_vs_compute.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().startswith("| method |")
