"""Adversarial tests of ``w2s-generate generate``: bad flags, bad records, faults mid-run, bad files.

Outcomes asserted: a one-line usage error before any model loads (exit 2); a bad record reported
with its line while every other prompt is answered exactly once (exit 1); a fault during one prompt
reported with its line, the run going on and a rerun answering only what is missing; never a
traceback, a lost line or a duplicated line. Ends with hypothesis fuzzing of the JSON-lines reader.
"""

from __future__ import annotations

import http.client
import http.server
import json
import math
import os
import resource
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel

from w2s_generate import cli
from w2s_generate.cli import generate_command

FAST = ["--max-new-tokens", "4", "--no-progress"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """strong (GPT-2, 256 positions), tuned/untuned (GPT-2), short-tuned/short-untuned (64 positions)."""
    root = tmp_path_factory.mktemp("adversarial-cli")
    tok = make_tokenizer()
    dirs = {}
    for name, seed in (("strong", 0), ("tuned", 1), ("untuned", 2)):
        dirs[name] = root / name
        make_model("gpt2", len(tok), seed, width=16, layers=1).save_pretrained(dirs[name])
        tok.save_pretrained(dirs[name])
    for name, seed in (("short-tuned", 3), ("short-untuned", 4)):
        dirs[name] = root / name
        config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2)
        torch.manual_seed(seed)
        GPT2LMHeadModel(config).save_pretrained(dirs[name])
        tok.save_pretrained(dirs[name])
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    config = LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    peft_model = get_peft_model(GPT2LMHeadModel.from_pretrained(dirs["untuned"]), config)
    dirs["adapter"] = root / "adapter"
    peft_model.save_pretrained(dirs["adapter"])
    dirs["orphan-adapter"] = root / "orphan-adapter"  # its base was moved away
    peft_model.peft_config["default"].base_model_name_or_path = "../moved-away"
    with warnings.catch_warnings():  # peft notes that it cannot read the moved base's config
        warnings.simplefilter("ignore", UserWarning)
        peft_model.save_pretrained(dirs["orphan-adapter"])
    dirs["bare"] = root / "bare"  # weights without tokenizer files
    make_model("gpt2", len(tok), 0, width=16, layers=1).save_pretrained(dirs["bare"])
    dirs["empty"] = root / "empty"
    dirs["empty"].mkdir()
    return dirs


def argv(models, out, *extra, method="cbs", pair=("tuned", "untuned")):
    method_args = {
        "cbs": ["--beam-width", "2", "--successors", "2", "--chunk-length", "2"],
        "bon": ["--n", "2"],
        "token": [],
    }[method]
    return [
        "generate",
        "--model",
        str(models["strong"]),
        "--tuned",
        str(models[pair[0]]),
        "--untuned",
        str(models[pair[1]]),
        "--method",
        method,
        *method_args,
        *FAST,
        "--out",
        str(out),
        *extra,
    ]


def results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]


def write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    raw = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        raw += (line.encode() if isinstance(line, str) else line) + b"\n"
    path.write_bytes(raw)
    return path


def no_traceback(err: str) -> None:
    assert "Traceback" not in err and 'File "' not in err


# --------------------------------------------------------------------------- class 1: usage errors before any load

USAGE = {
    "beta-nan": (["--method", "token", "--beta", "nan"], "argument --beta: must be a finite number, got nan"),
    "beta-inf": (["--method", "token", "--beta", "inf"], "argument --beta: must be a finite number, got inf"),
    "beta-text": (["--method", "token", "--beta", "strong"], "must be a finite number, got 'strong'"),
    "temperature-inf": (
        ["--temperature", "inf"],
        "argument --temperature: must be a finite number >= 0, got inf",
    ),
    "temperature-nan": (["--temperature", "nan"], "argument --temperature: must be a finite number >= 0"),
    "temperature-negative": (["--temperature", "-1"], "must be a finite number >= 0, got -1"),
    "top-p-zero": (["--top-p", "0"], "argument --top-p: must be in (0, 1], got 0"),
    "top-p-nan": (["--top-p", "nan"], "argument --top-p: must be in (0, 1]"),
    "beam-width-float": (
        ["--beam-width", "1.5"],
        "argument --beam-width: must be an integer >= 1, got '1.5'",
    ),
    "beam-width-zero": (["--beam-width", "0"], "must be an integer >= 1, got 0"),
    "max-new-tokens-zero": (["--max-new-tokens", "0"], "argument --max-new-tokens: must be an integer >= 1"),
    "batch-size-zero": (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    "seed-negative": (["--seed", "-1"], "argument --seed: must be an integer from 0 to 2**63 - 1, got -1"),
    "seed-huge": (["--seed", str(2**64)], "argument --seed: must be an integer from 0 to 2**63 - 1"),
    "extra-body-without-endpoint": (
        ["--extra-body", '{"top_k": 5}'],
        "--extra-body applies to --endpoint only",
    ),
    "api-key-env-without-endpoint": (["--api-key-env", "KEY"], "--api-key-env applies to --endpoint only"),
    "timeout-without-endpoint": (["--timeout", "5"], "--timeout applies to --endpoint only"),
    "extra-body-not-json": (["--extra-body", "{top_k: 5}"], "argument --extra-body: not valid JSON"),
    "extra-body-a-list": (["--extra-body", "[1]"], "argument --extra-body: must be a JSON object"),
    "extra-body-nan": (["--extra-body", '{"x": NaN}'], "must not hold NaN or Infinity"),
    "endpoint-without-scheme": (["--endpoint", "localhost:8000/v1"], "base_url must start with http://"),
    "endpoint-completions-url": (
        ["--endpoint", "http://127.0.0.1:1/v1/completions"],
        "already ends with /completions",
    ),
    "endpoint-extra-body-seed": (
        ["--endpoint", "http://127.0.0.1:1/v1", "--extra-body", '{"seed": 3}'],
        "extra_body sets 'seed', which the sampler sets itself: use seed=",
    ),
    "timeout-zero": (
        ["--endpoint", "http://127.0.0.1:1/v1", "--timeout", "0"],
        "argument --timeout: must be a finite number > 0",
    ),
    "weights-nan": (["--weights", "nan"], "argument --weights: must be a finite number, got nan"),
    "out-is-the-prompts-file": (["--prompts", "SELF"], "is the --prompts file"),
    # bad flag values (new in round three)
    "model-empty": (["--model", ""], "argument --model: must not be empty"),
    "out-empty": (["--out", ""], "argument --out: must not be empty: give a file name"),
    "adapter-empty": (["--adapter", ""], "argument --adapter: must not be empty"),
    "tokenizer-empty": (["--tokenizer", ""], "argument --tokenizer: must not be empty"),
    "weak-tokenizer-empty": (["--weak-tokenizer", ""], "argument --weak-tokenizer: must not be empty"),
    "device-map-unknown": (
        ["--device-map", "gpu0"],
        "argument --device-map: must be auto, balanced, balanced_low_0, sequential, cpu or a device such as "
        "cuda:0, got 'gpu0'",
    ),
    "api-key-env-empty": (
        ["--endpoint", "http://127.0.0.1:1/v1", "--api-key-env", ""],
        "argument --api-key-env: must be the name of an environment variable, got ''",
    ),
    "api-key-env-not-a-name": (
        ["--endpoint", "http://127.0.0.1:1/v1", "--api-key-env", "sk-123 abc"],
        "argument --api-key-env: must be the name of an environment variable (the key itself is read from it)",
    ),
    "api-key-env-unset": (
        ["--endpoint", "http://127.0.0.1:1/v1", "--api-key-env", "W2S_TEST_NEVER_SET"],
        "--api-key-env W2S_TEST_NEVER_SET: that environment variable is not set",
    ),
    # conflicting options, refused by name (new in round three)
    "draft-tokens-with-chunk-stop": (
        ["--draft-tokens", "2", "--chunk-stop", "."],
        "--draft-tokens needs chunks of a fixed length, which --chunk-stop ends early: give one",
    ),
    "top-k-with-endpoint": (
        ["--endpoint", "http://127.0.0.1:1/v1", "--top-k", "5"],
        "--top-k is not sent to --endpoint (the completions API has no top_k)",
    ),
    "top-p-with-greedy": (
        ["--method", "token", "--temperature", "0", "--top-p", "0.9"],
        "--top-p applies to sampling, and --temperature 0 is greedy decoding: drop --top-p",
    ),
    "top-k-with-greedy": (
        ["--method", "token", "--temperature", "0", "--top-k", "5"],
        "--top-k applies to sampling, and --temperature 0 is greedy decoding: drop --top-k",
    ),
    "tuned-is-untuned": (
        ["--untuned", "./T"],
        "--tuned ./T and --untuned ./T are one checkpoint: every log-ratio would be 0",
    ),
    "adapter-twice": (
        ["--adapter", "./A", "--adapter", "./A"],
        "--adapter ./A is given twice: give it once (with --weights for a larger weight)",
    ),
    "prompt-and-prompts": (
        ["--prompts", "p.jsonl", "--prompt", "x"],
        "argument --prompt: not allowed with argument --prompts",
    ),
}


@pytest.mark.parametrize("case", list(USAGE), ids=list(USAGE))
def test_bad_flags_are_one_line_usage_errors_before_any_model_loads(case, tmp_path, capsys):
    extra, message = USAGE[case]
    out = tmp_path / "out.jsonl"
    extra = [str(out) if e == "SELF" else e for e in extra]
    # Local paths that do not exist: were a bad flag let through, loading would fail at once (exit 2,
    # no SystemExit), not after minutes of trying the hub.
    args = ["generate", "--model", "./no-such-model", "--tuned", "./T", "--untuned", "./U", "--out", str(out)]
    if "--method" not in extra:
        args += ["--method", "cbs"]
    if "--prompts" not in extra:
        args += ["--prompt", "the film"]
    if case == "weights-nan" or "--adapter" in extra:
        args = [a for a in args if a not in ("--tuned", "./T", "--untuned", "./U")]
        args += [] if "--adapter" in extra else ["--adapter", "./A"]
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error: nothing was loaded
        cli.main(args + extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0], err
    no_traceback(err)
    assert case == "out-is-the-prompts-file" or not out.exists()


def test_all_zero_weights_are_refused(tmp_path, capsys):
    args = [
        "generate",
        "--model",
        "./M",
        "--adapter",
        "./A",
        "--adapter",
        "./B",
        "--weights",
        "0",
        "0",
        "--method",
        "cbs",
        "--prompt",
        "x",
        "--out",
        str(tmp_path / "o"),
    ]
    with pytest.raises(SystemExit):
        cli.main(args)
    assert "--weights 0.0 0.0: all zero" in capsys.readouterr().err


# --------------------------------------------------------------------------- class 2: bad records, the run goes on

LONG = " ".join(["the"] * 300)  # over the large model's 256 positions
NEAR = " ".join(["the"] * 253)  # fits the large model, not with 4 new tokens
WEAK_LONG = " ".join(["the"] * 80)  # fits the large model, not the short weak models (64 positions)
GOOD = [
    {"prompt": "the film was", "id": "good1"},
    {"prompt": "a quiet story", "id": "good2"},
    {"prompt": "line\u2028separator\x85inside", "id": "good3"},
]

BAD_RECORDS = {
    "invalid-json": ("{prompt: 1}", "not valid JSON"),
    "json-array": ('["the film"]', "expected a JSON object"),
    "no-prompt-field": ('{"text": "x"}', 'no "prompt" field (fields: text)'),
    "empty-prompt": ('{"prompt": ""}', '"prompt" is empty'),
    "prompt-a-number": ('{"prompt": 3}', '"prompt" must be text or a non-empty list of chat messages, got 3'),
    "prompt-null": ('{"prompt": null}', '"prompt" must be text or a non-empty list'),
    "empty-message-list": ('{"prompt": []}', '"prompt" must be text or a non-empty list'),
    "message-without-role": ('{"prompt": [{"content": "x"}]}', '"prompt"[0] is not a chat message'),
    "id-a-float": ('{"prompt": "x", "id": 1.5}', '"id" must be text or an integer, got 1.5'),
    "id-a-bool": ('{"prompt": "x", "id": true}', '"id" must be text or an integer, got true'),
    "id-duplicated": ('{"prompt": "other", "id": "good1"}', 'id "good1" already used on line'),
    "weak-prompt-empty": ('{"prompt": "x", "weak_prompt": ""}', '"weak_prompt" is empty'),
    "not-utf8": (b'{"prompt": "caf\xe9"}', "not valid UTF-8 (byte 0xe9 at byte 16): save the file as UTF-8"),
    "lone-surrogate": ('{"prompt": "bad \\ud800 text"}', "unpaired surrogate ('\\ud800' at character 4)"),
    "nested-too-deeply": ('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    "huge-integer": ('{"prompt": "x", "id": ' + "9" * 5000 + "}", "not valid JSON"),
    "duplicated-key": ('{"prompt": "a", "prompt": "b"}', 'the key "prompt" appears twice in one object'),
    "misspelt-weak-prompt": (
        '{"prompt": "x", "weak-prompt": "y"}',
        'unknown field "weak-prompt": did you mean "weak_prompt"?',
    ),
    "misspelt-id": ('{"prompt": "x", "ID": 7}', 'unknown field "ID": did you mean "id"?'),
    "a-json-array-of-records": (
        '[{"prompt": "a"}, {"prompt": "b"}]',
        "got a list: --prompts takes JSON lines, one object per line, not a JSON array",
    ),
    "prompt-an-object": ('{"prompt": {"text": "x"}}', '"prompt" must be text or a non-empty list'),
    "content-as-parts": (
        '{"prompt": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}',
        '"prompt"[0] is not a chat message',
    ),
    "longer-than-the-large-model": (
        json.dumps({"prompt": LONG}),
        "tokens for the large model, whose context holds 256: shorten the prompt",
    ),
    "no-room-for-new-tokens": (
        json.dumps({"prompt": NEAR}),
        "--max-new-tokens 4 for the large model, whose context holds 256",
    ),
}


@pytest.fixture(scope="module")
def mixed_run(models, tmp_path_factory):
    """One run over a file mixing every bad record with good ones; then a rerun."""
    root = tmp_path_factory.mktemp("mixed")
    lines = ["\ufeff" + json.dumps(GOOD[0]), ""]  # a byte-order mark on line 1; a blank line
    line_of = {}
    for name, (line, _) in BAD_RECORDS.items():
        lines.append(line)
        line_of[name] = len(lines)
    lines += [json.dumps(GOOD[1]) + "\r", json.dumps(GOOD[2])]  # a Windows line end
    prompts = write_lines(root / "prompts.jsonl", lines)
    out = root / "out.jsonl"
    import contextlib
    import io

    runs = []
    for _ in range(2):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(argv(models, out, "--prompts", str(prompts), "--batch-size", "3"))
        runs.append((code, err.getvalue()))
    return {"line_of": line_of, "runs": runs, "out": out}


@pytest.mark.parametrize("case", list(BAD_RECORDS), ids=list(BAD_RECORDS))
def test_a_bad_record_is_reported_with_its_line(mixed_run, case):
    code, err = mixed_run["runs"][0]
    line = mixed_run["line_of"][case]
    reported = [e for e in err.splitlines() if e.startswith(f"w2s-generate: line {line}:")]
    assert len(reported) == 1 and BAD_RECORDS[case][1] in reported[0], err
    assert code == 1
    no_traceback(err)


def test_good_records_next_to_bad_ones_are_answered_exactly_once(mixed_run):
    done = results(mixed_run["out"])
    assert sorted(r["id"] for r in done) == ["good1", "good2", "good3"]
    assert {r["prompt"] for r in done} >= {"line\u2028separator\x85inside"}
    code, err = mixed_run["runs"][1]  # the rerun answers nothing again: no duplicated line
    assert code == 1 and "resuming: 3 prompts already done" in err
    assert len(results(mixed_run["out"])) == 3


def test_a_prompt_over_the_weak_models_context_is_found_before_generating(
    models, tmp_path, capsys, monkeypatch
):
    calls = []
    real = generate_command.generate_batch
    monkeypatch.setattr(generate_command, "generate_batch", lambda *a: calls.append(1) or real(*a))
    prompts = write_lines(
        tmp_path / "p.jsonl", [{"prompt": WEAK_LONG, "id": "long"}, {"prompt": "a", "id": "ok"}]
    )
    code = cli.main(
        argv(models, tmp_path / "o.jsonl", "--prompts", str(prompts), pair=("short-tuned", "short-untuned"))
    )
    err = capsys.readouterr().err
    assert code == 1 and 'line 1: id "long": the prompt is' in err
    assert "for the weak pair, whose context holds 64" in err
    assert [r["id"] for r in results(tmp_path / "o.jsonl")] == ["ok"] and len(calls) == 1


# --------------------------------------------------------------------------- class 3: faults during one prompt

FAULTS = {
    "index-error": IndexError("index out of range in self"),
    "type-error": TypeError("unsupported operand type(s)"),
    "key-error": KeyError("logits"),
    "incomplete-read": http.client.IncompleteRead(b"{", 100),
    "zero-division": ZeroDivisionError("division by zero"),
    "memory-error": MemoryError("out of memory"),
    "runtime-error": RuntimeError("CUDA error: device-side assert triggered"),
    "value-error": ValueError("a weak-side row would hold 1030 tokens"),
}


def fail_on(monkeypatch, marker: str, error: BaseException):
    real = generate_command.generate_batch

    def fake(model, tokenizer, strategy, batch, args):
        if any(marker in str(p.record.prompt) for p in batch):
            raise error
        return real(model, tokenizer, strategy, batch, args)

    monkeypatch.setattr(generate_command, "generate_batch", fake)


def quick(models, out, *extra):
    """The cheapest run: best-of-2 with 2 new tokens."""
    args = argv(models, out, *extra, method="bon")
    args[args.index("--max-new-tokens") + 1] = "2"
    return cli.main(args)


THREE = [{"prompt": "first"}, {"prompt": "POISON here"}, {"prompt": "third"}]


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_a_fault_in_one_prompt_is_reported_and_the_run_goes_on(models, tmp_path, capsys, monkeypatch, fault):
    prompts = write_lines(tmp_path / "p.jsonl", THREE)
    out = tmp_path / "o.jsonl"
    fail_on(monkeypatch, "POISON", FAULTS[fault])
    assert quick(models, out, "--prompts", str(prompts)) == 1
    err = capsys.readouterr().err
    reported = [e for e in err.splitlines() if e.startswith("w2s-generate: line 2: id 2:")]
    error = FAULTS[fault]
    named = "" if type(error) in (ValueError, RuntimeError) else type(error).__name__ + ": "
    assert len(reported) == 1 and f"id 2: {named}" in reported[0], err
    no_traceback(err)
    assert sorted(r["id"] for r in results(out)) == [1, 3]  # the others were answered


@pytest.mark.parametrize("fault", ["index-error", "incomplete-read"])
def test_a_fault_in_a_batch_takes_down_only_its_own_prompt(models, tmp_path, capsys, monkeypatch, fault):
    prompts = write_lines(tmp_path / "p.jsonl", THREE)
    out = tmp_path / "o.jsonl"
    fail_on(monkeypatch, "POISON", FAULTS[fault])
    assert quick(models, out, "--prompts", str(prompts), "--batch-size", "3") == 1
    err = capsys.readouterr().err
    assert [e for e in err.splitlines() if "line" in e and "id" in e] == [
        e for e in err.splitlines() if e.startswith("w2s-generate: line 2: id 2:")
    ]
    assert sorted(r["id"] for r in results(out)) == [1, 3]  # batched with it, answered all the same


def test_a_rerun_is_never_stuck_on_a_bad_record(models, tmp_path, capsys, monkeypatch):
    prompts = write_lines(tmp_path / "p.jsonl", THREE)
    out = tmp_path / "o.jsonl"
    fail_on(monkeypatch, "POISON", IndexError("index out of range in self"))
    assert quick(models, out, "--prompts", str(prompts)) == 1
    # Still failing: reported again, nothing answered twice; once fixed, only line 2 is answered.
    assert quick(models, out, "--prompts", str(prompts)) == 1
    assert sorted(r["id"] for r in results(out)) == [1, 3]
    monkeypatch.undo()
    assert quick(models, out, "--prompts", str(prompts)) == 0
    assert sorted(r["id"] for r in results(out)) == [1, 2, 3]
    assert "resuming: 2 prompts already done" in capsys.readouterr().err


KEPT = {  # what a batch of the prompts "a" and "b" returns: (texts, log-ratios)
    "nan-log-ratio": (
        (["ok", "ok"], [0.5, math.nan]),
        "the pair scored the response nan: a log-ratio must be",
    ),
    "inf-log-ratio": ((["ok", "ok"], [math.inf, 0.1]), "scored the response inf"),
    "null-response": ((["ok", None], [0.1, 0.2]), "the response is a NoneType, not text"),
    "unencodable-response": ((["ok", "bad \ud800"], [0.1, 0.2]), "surrogates not allowed"),
    "a-response-missing": (None, "0 responses came back for 1 prompts"),
}


@pytest.mark.parametrize("case", list(KEPT), ids=list(KEPT))
def test_a_result_that_cannot_be_kept_is_a_bad_line_not_written(models, tmp_path, capsys, monkeypatch, case):
    returned, message = KEPT[case]

    def fake(model, tokenizer, strategy, batch, args):
        if returned is None:  # one response short, however many prompts
            return ["x"] * (len(batch) - 1), [0.1] * (len(batch) - 1), None
        rows = [0, 1] if len(batch) == 2 else [["a", "b"].index(batch[0].record.prompt)]
        return [returned[0][i] for i in rows], [returned[1][i] for i in rows], None

    monkeypatch.setattr(generate_command, "generate_batch", fake)
    out = tmp_path / "o.jsonl"
    code = quick(models, out, "--prompt", "a", "--prompt", "b", "--batch-size", "2")
    err = capsys.readouterr().err
    assert code == 1 and message in err, err
    raw = out.read_text()
    assert "NaN" not in raw and "Infinity" not in raw and "None" not in raw
    for result in results(out):  # what was written is whole and valid
        assert isinstance(result["response"], str) and math.isfinite(result["log_ratio"])


def test_an_unexpected_failure_outside_any_prompt_is_one_line(models, tmp_path, capsys, monkeypatch):
    def broken(args):
        raise KeyError("something nobody expected")

    monkeypatch.setattr(generate_command, "load_models", broken)
    code = cli.main(argv(models, tmp_path / "o.jsonl", "--prompt", "a"))
    err = capsys.readouterr().err
    assert code == 1 and "error: KeyError: 'something nobody expected'" in err and "--verbose" in err
    no_traceback(err)


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("config-not-json", "could not load --model"),
        ("config-wrong-type", "could not load --model"),
        ("weights-garbage", "could not load --model"),
    ],
    ids=["config-not-json", "config-wrong-type", "weights-garbage"],
)
def test_a_broken_checkpoint_is_a_load_error_not_a_traceback(models, tmp_path, capsys, breakage, message):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(models["strong"], broken)
    if breakage == "config-not-json":
        (broken / "config.json").write_text("{not json")
    elif breakage == "config-wrong-type":
        config = json.loads((broken / "config.json").read_text())
        config["n_layer"] = "two"
        (broken / "config.json").write_text(json.dumps(config))
    else:
        (broken / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    args = argv(models, tmp_path / "o.jsonl", "--prompt", "a")
    args[args.index("--model") + 1] = str(broken)
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err, err
    no_traceback(err)


# --------------------------------------------------------------------------- class 4: a faulty server behind --endpoint


class Server:
    """Completions on 127.0.0.1: prompts holding a marker get the scripted fault, others an answer."""

    def __init__(self, fault: str):
        server = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests += 1
                n = int(request.get("n", 1))
                choices = [{"index": i, "text": " fine", "finish_reason": "length"} for i in range(n)]
                if "POISON" in request["prompt"]:
                    if fault == "null-text":
                        choices = [{"index": i, "text": None} for i in range(n)]
                    elif fault == "cut-short":
                        payload = json.dumps({"choices": choices}).encode()
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload[:5])
                        self.close_connection = True
                        return
                payload = json.dumps({"choices": choices}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    "fault, message",
    [("null-text", 'choices[0]["text"] is null, not a string'), ("cut-short", "failed 2 times")],
    ids=["text-null", "body-cut-short"],
)
def test_a_faulty_server_answer_is_one_bad_line_and_never_written_as_text(
    models, tmp_path, capsys, fault, message
):
    server = Server(fault)
    try:
        args = [
            "generate",
            "--endpoint",
            server.base,
            "--model",
            "served",
            "--tuned",
            str(models["tuned"]),
            "--untuned",
            str(models["untuned"]),
            "--method",
            "bon",
            "--n",
            "2",
            *FAST,
            "--retries",
            "1",
            "--timeout",
            "5",
            "--prompt",
            "the film",
            "--prompt",
            "POISON",
            "--prompt",
            "a story",
            "--out",
            str(tmp_path / "o.jsonl"),
        ]
        code = cli.main(args)
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1 and "line 2: id 2:" in err and message in err, err
    no_traceback(err)
    done = results(tmp_path / "o.jsonl")
    assert sorted(r["id"] for r in done) == [1, 3] and all(r["response"] == " fine" for r in done)
    assert "None" not in (tmp_path / "o.jsonl").read_text()


# --------------------------------------------------------------------------- class 5: a damaged results file


def test_a_damaged_results_file_is_reported_and_the_run_resumes(models, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    ok = json.dumps({"id": 1, "prompt": "a", "response": "x", "method": "cbs", "settings": {}})
    out.write_bytes(
        ok.encode() + b"\n" + b'{"id": 2, "prompt": "caf\xe9"}\n' + b"[1, 2]\n" + b'{"id": 3, "pro'
    )
    code = cli.main(argv(models, out, "--prompt", "a", "--prompt", "b", "--prompt", "c"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "line 2 is not a result" in err and "line 3 is not a result" in err
    assert "removed an incomplete last line" in err
    no_traceback(err)
    kept = []
    for line in out.read_bytes().split(b"\n"):
        try:
            kept.append(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            continue
    assert sorted(kept) == [1, 2, 3]  # 1 kept, not answered again; 2 and 3 answered once


# --------------------------------------------------------------------------- class 6: the wrong kind of file

WRONG_FILES = {  # flag -> what it points at, and the one error line expected (before any model loads)
    "model-is-a-file": (
        ["--model", "PROMPTS"],
        "--model {PROMPTS} is a file, not a model folder: give the folder that holds config.json, or a hub id",
    ),
    "model-folder-without-config": (
        ["--model", "empty"],
        "--model {empty} holds no config.json: it is not a model folder",
    ),
    "model-without-tokenizer-files": (
        ["--model", "bare"],
        "--model {bare} holds no tokenizer files: save the tokenizer next to the model, or pass --tokenizer",
    ),
    "tokenizer-folder-without-tokenizer-files": (
        ["--tokenizer", "bare"],
        "--tokenizer {bare} holds no tokenizer files",
    ),
    "weak-tokenizer-is-a-file": (
        ["--weak-tokenizer", "PROMPTS"],
        "--weak-tokenizer {PROMPTS} is a file, not a tokenizer folder",
    ),
    "adapter-is-a-full-checkpoint": (
        ["--adapter", "tuned"],
        "--adapter {tuned} holds no adapter_config.json: it is not a LoRA adapter; for two full checkpoints "
        "use --tuned T --untuned U",
    ),
    "tuned-is-an-adapter": (
        ["--tuned", "adapter"],
        "--tuned {adapter} is a LoRA adapter, not a full checkpoint: pass it as --adapter {adapter}",
    ),
    "untuned-is-an-adapter": (
        ["--untuned", "adapter"],
        "--untuned {adapter} is a LoRA adapter, not a full checkpoint",
    ),
    "adapter-base-moved-away": (
        ["--adapter", "orphan-adapter"],
        "--adapter {orphan-adapter}: its base model ../moved-away (adapter_config.json's base_model_name_or_path, "
        "read from the adapter's folder) is not there",
    ),
}


@pytest.mark.parametrize("case", list(WRONG_FILES), ids=list(WRONG_FILES))
def test_the_wrong_kind_of_file_is_refused_before_any_model_loads(
    case, models, tmp_path, capsys, monkeypatch
):
    from transformers import AutoModelForCausalLM

    loaded = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loaded.append(a) or 1 / 0)
    prompts = write_lines(tmp_path / "p.jsonl", [{"prompt": "a"}])
    extra, message = WRONG_FILES[case]
    paths = {name: str(path) for name, path in models.items()} | {"PROMPTS": str(prompts)}
    extra = [paths.get(e, e) for e in extra]
    for name, path in paths.items():
        message = message.replace("{" + name + "}", path)
    args = argv(models, tmp_path / "o.jsonl", "--prompts", str(prompts))
    if "--adapter" in extra:
        for flag in ("--tuned", "--untuned"):
            del args[args.index(flag) : args.index(flag) + 2]
    code = cli.main(args + extra)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert loaded == []
    assert not (tmp_path / "o.jsonl").exists()
    no_traceback(err)


def test_a_prompts_file_that_is_not_json_lines_is_refused(models, tmp_path, capsys):
    binary = tmp_path / "model.safetensors"
    binary.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}" + bytes(range(256)) * 4)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    for path, message in (
        (binary, f"--prompts {binary} is not a text file (it holds NUL bytes): give a JSON-lines file"),
        (
            empty,
            f'--prompts {empty} holds no prompts: give one JSON object per line, e.g. {{"prompt": "..."}}',
        ),
    ):
        code = cli.main(argv(models, tmp_path / "o.jsonl", "--prompts", str(path)))
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
        assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("kind", ["model-config", "model-weights", "prompts-like"])
def test_an_out_file_that_holds_no_results_is_refused_and_left_as_it_is(models, tmp_path, capsys, kind):
    out = tmp_path / "o.jsonl"
    if kind == "model-config":
        out.write_bytes((models["strong"] / "config.json").read_bytes().rstrip(b"\n"))
    elif kind == "model-weights":
        out.write_bytes((models["strong"] / "model.safetensors").read_bytes())
    else:
        out.write_text(json.dumps({"prompt": "the film"}) + "\n")
    before = out.read_bytes()
    code = cli.main(argv(models, out, "--prompt", "a"))
    err = capsys.readouterr().err
    assert code == 2 and f"--out {out} is not a results file" in err and "give another --out" in err, err
    assert err.count("\n") == 1
    assert out.read_bytes() == before


# --------------------------------------------------------------------------- class 7: outputs that are not regular files


def run_limited(args: list[str], seconds: float = 60) -> subprocess.CompletedProcess:
    """The CLI in a child with 3 GiB of address space: a run that reads without end fails, not the machine."""

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    return subprocess.run(
        [sys.executable, "-m", "w2s_generate.cli", *args],
        capture_output=True,
        text=True,
        timeout=seconds,
        preexec_fn=limits,
    )


@pytest.mark.parametrize("kind", ["dev-full", "dev-null", "fifo", "link-to-dev-null", "prompts-dev-zero"])
def test_a_path_that_is_not_a_regular_file_is_refused_at_once(models, tmp_path, kind):
    out, prompts = tmp_path / "o.jsonl", write_lines(tmp_path / "p.jsonl", [{"prompt": "a"}])
    if kind == "dev-full":
        out = Path("/dev/full")
    elif kind == "dev-null":
        out = Path("/dev/null")
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "link-to-dev-null":
        out.symlink_to("/dev/null")
    else:
        prompts = Path("/dev/zero")
    result = run_limited(argv(models, out, "--prompts", str(prompts)))
    what = {"fifo": "a named pipe (FIFO)", "prompts-dev-zero": "a character device"}.get(
        kind, "a character device"
    )
    flag, path = ("--prompts", prompts) if kind == "prompts-dev-zero" else ("--out", out)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{flag} {path} is {what}, not a regular file" in result.stderr, result.stderr[-2000:]
    assert "give" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- class 8: fuzzing the JSON-lines reader

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        "prompt": json_values
        | st.text(max_size=12)
        | st.lists(
            st.fixed_dictionaries({"role": st.text(max_size=5), "content": st.text(max_size=8)}), max_size=2
        ),
        "id": json_values,
        "weak_prompt": json_values | st.text(max_size=6),
    },
)


def _valid(record: cli.PromptRecord) -> None:
    assert isinstance(record.id, (int, str)) and not isinstance(record.id, bool)
    for prompt in (record.prompt, record.weak_prompt):
        if prompt is None:
            assert prompt is record.weak_prompt
        elif isinstance(prompt, str):
            assert prompt and prompt.encode("utf-8")
        else:
            assert prompt and all(
                isinstance(m["role"], str) and isinstance(m["content"], str) for m in prompt
            )


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=80) | record_like.map(json.dumps) | st.builds(json.dumps, json_values),
    line=st.integers(1, 9),
)
def test_fuzz_parse_prompt_line(text, line):
    try:
        record = cli.parse_prompt_line(text, line)
    except ValueError as error:
        assert str(error)
    else:
        _valid(record)
        assert record.line == line


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.binary(max_size=40) | record_like.map(lambda r: json.dumps(r).encode()), max_size=8))
def test_fuzz_read_prompts_accounts_for_every_line(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    raw = b"".join(line.replace(b"\n", b" ") + b"\n" for line in lines)
    path.write_bytes(raw)
    records, bad = cli.read_prompts(path)
    for record in records:
        _valid(record)
    numbers = [r.line for r in records] + [b.line for b in bad]
    assert len(numbers) == len(set(numbers))  # each line at most once
    blank = set()
    for i, line in enumerate(raw.split(b"\n")[:-1], start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not (text.removeprefix("\ufeff") if i == 1 else text).strip():
            blank.add(i)
    assert set(numbers) | blank >= set(range(1, len(lines) + 1)) - blank
    assert len({r.id for r in records}) == len(records)  # ids unique
