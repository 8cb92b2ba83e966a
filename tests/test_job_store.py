"""The JSON-lines job store behind ``--out``: refusals, the lock, write failures, and two runs at once.

A results file is only ever a regular file that this program wrote; one run holds it at a time; a
failed write leaves whole lines only and stops the run; whatever happens, no id is written twice.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import default_sigint, make_model, make_tokenizer

from w2s_generate import cli
from w2s_generate.cli import job_store
from w2s_generate.cli.job_store import OutputError, ResultsFile

RESULT = {"id": 1, "prompt": "a", "response": "x", "method": "bon", "settings": {}}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("job-store-models")
    tok = make_tokenizer()
    dirs = {}
    for name, seed in (("strong", 0), ("tuned", 1), ("untuned", 2)):
        dirs[name] = root / name
        make_model("gpt2", len(tok), seed, width=16, layers=1).save_pretrained(dirs[name])
        tok.save_pretrained(dirs[name])
    return dirs


def argv(models, out: Path, prompts: Path) -> list[str]:
    return [
        "generate",
        "--model",
        str(models["strong"]),
        "--tuned",
        str(models["tuned"]),
        "--untuned",
        str(models["untuned"]),
        "--method",
        "bon",
        "--n",
        "2",
        "--max-new-tokens",
        "3",
        "--no-progress",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
    ]


def prompts_file(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"the film was {i}"}) + "\n" for i in range(n)))
    return path


def ids_in(path: Path) -> list:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def cli_process(args: list[str], limits=None, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}

    def child_setup() -> None:
        default_sigint()
        if limits is not None:
            limits()

    return subprocess.Popen(
        [sys.executable, "-m", "w2s_generate.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=child_setup,
        **popen,
    )


def wait_for_lines(path: Path, n: int, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while (not path.exists() or path.read_text().count("\n") < n) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.05)


# --------------------------------------------------------------------------- the store on its own


@pytest.mark.parametrize("kind", ["character-device", "fifo", "folder"])
def test_a_path_that_is_not_a_regular_file_is_refused(kind, tmp_path):
    path = {"character-device": Path("/dev/null"), "fifo": tmp_path / "fifo", "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(OutputError) as error:
        ResultsFile(path).open()
    message = str(error.value)
    assert str(path) in message and ("give a file name" in message or "results.jsonl" in message)


def test_one_store_at_a_time_holds_a_results_file(tmp_path):
    path = tmp_path / "out.jsonl"
    with ResultsFile(path) as first:
        first.keep()
        with pytest.raises(OutputError, match="in use by another run"):
            ResultsFile(path).open()
    with ResultsFile(path):  # released on close
        pass


def test_a_store_that_wrote_nothing_leaves_no_file_behind(tmp_path):
    path = tmp_path / "out.jsonl"
    with ResultsFile(path):
        assert path.exists()
    assert not path.exists()
    with ResultsFile(path) as kept:
        kept.keep()
    assert path.exists() and path.read_bytes() == b""


def test_a_failed_write_stops_with_a_clear_error_and_leaves_whole_lines(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    with ResultsFile(path) as results:
        results.keep()
        results.append(json.dumps(RESULT))
        before = path.read_bytes()
        real = os.write
        calls = []

        def half_then_full(fd, data):
            calls.append(len(data))
            if len(calls) == 1:
                return real(fd, bytes(data[: len(data) // 2]))  # a short write, as on a nearly full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(job_store.os, "write", half_then_full)
        with pytest.raises(OutputError) as error:
            results.append(json.dumps({**RESULT, "id": 2}))
        monkeypatch.undo()
        assert path.read_bytes() == before  # the half line was taken back
        message = str(error.value)
        assert f"cannot write to --out {path}" in message and "No space left on device" in message
        assert "rerun" in message
        assert len(calls) == 2  # nothing is retried or buffered for later


def test_a_file_that_holds_no_results_is_refused_and_left_as_it_is(tmp_path):
    path = tmp_path / "config.json"
    text = '{\n  "model_type": "gpt2",\n  "n_layer": 2\n}'  # pretty JSON, no final newline
    path.write_text(text)
    with ResultsFile(path) as results, pytest.raises(OutputError) as error:
        results.read_done()
    assert "is not a results file" in str(error.value) and str(path) in str(error.value)
    assert path.read_text() == text


def test_a_cut_off_first_result_is_still_resumed(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": 1, "prom')  # killed while writing its very first line
    with ResultsFile(path) as results:
        assert results.read_done() == ({}, None)
    assert path.read_text() == ""


# --------------------------------------------------------------------------- the store in a run


def test_a_run_refuses_an_out_file_another_run_holds(models, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    prompts = prompts_file(tmp_path / "p.jsonl", 2)
    with open(out, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running generate holds
        code = cli.main(argv(models, out, prompts))
    err = capsys.readouterr().err
    assert code == 2
    assert f"--out {out} is in use by another run" in err and "wait for it" in err
    assert out.read_bytes() == b""


def test_two_runs_on_one_out_file_never_write_a_record_twice(models, tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = prompts_file(tmp_path / "p.jsonl", 2000)
    first = cli_process(argv(models, out, prompts))
    try:
        wait_for_lines(out, 1, first)
        second = cli_process(argv(models, out, prompts))
        _, err = second.communicate(timeout=300)
        assert second.returncode == 2, err[-2000:]
        assert "is in use by another run" in err
        assert first.poll() is None  # the refusal came while the first run was still writing
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 130, err[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    written = ids_in(out)
    assert written == list(range(1, len(written) + 1))  # in order, each id once


def test_a_full_disk_stops_the_run_with_whole_lines_and_a_rerun_finishes(models, tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = prompts_file(tmp_path / "p.jsonl", 40)  # 40 result lines take well over 4 KiB

    def small_files():  # writes past 4 KiB fail with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    process = cli_process(argv(models, out, prompts), limits=small_files)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 1, err[-2000:]
    lines = [e for e in err.splitlines() if "error" in e]
    assert len(lines) == 1 and f"cannot write to --out {out}" in lines[0], err[-2000:]
    assert "rerun" in lines[0] and "Traceback" not in err
    raw = out.read_bytes()
    assert raw.endswith(b"\n") and 0 < len(raw) <= 4096
    written = ids_in(out)  # every line whole
    assert written == list(range(1, len(written) + 1)) and len(written) < 40
    rerun = cli_process(argv(models, out, prompts))
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    assert sorted(ids_in(out)) == list(range(1, 41))
