"""The ``w2s-generate`` command line, end to end on tiny GPT-2 checkpoints saved to a temporary folder."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import default_sigint, make_model, make_tokenizer
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from w2s_generate import cli

PROMPTS = [{"prompt": "the film was"}, {"prompt": "a quiet story", "id": "quiet"}, {"prompt": "the plot"}]
FIELDS = {"id", "prompt", "response", "method", "settings"}
FAST = ["--max-new-tokens", "4"]
METHOD_ARGS = {
    "cbs": ["--beam-width", "2", "--successors", "2", "--chunk-length", "2"],
    "bon": ["--n", "3"],
    "token": ["--beta", "2.0"],
}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Folders: strong, tuned, untuned (safetensors + tokenizer), adapter (LoRA on untuned), pickle-only."""
    root = tmp_path_factory.mktemp("cli-models")
    tokenizer = make_tokenizer()
    vocab = len(tokenizer)
    dirs = {name: root / name for name in ("strong", "tuned", "untuned", "adapter", "pickled", "chat-tok")}
    for name, seed, width in (("strong", 0, 48), ("tuned", 1, 32), ("untuned", 2, 32)):
        make_model("gpt2", vocab, seed, width=width).save_pretrained(dirs[name])
        tokenizer.save_pretrained(dirs[name])
    base = AutoModelForCausalLM.from_pretrained(dirs["untuned"])
    config = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    torch.manual_seed(3)
    get_peft_model(base, config).save_pretrained(dirs["adapter"])
    # A checkpoint with pickle weights only (what old repositories ship).
    dirs["pickled"].mkdir()
    strong = make_model("gpt2", vocab, 0, width=48)
    strong.config.save_pretrained(dirs["pickled"])
    torch.save(strong.state_dict(), dirs["pickled"] / "pytorch_model.bin")
    tokenizer.save_pretrained(dirs["pickled"])
    # The same tokenizer with a chat template.
    chat = make_tokenizer()
    chat.chat_template = CHAT_TEMPLATE
    chat.save_pretrained(dirs["chat-tok"])
    return dirs


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli-prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def pair_args(models, kind: str = "two") -> list[str]:
    if kind == "adapter":
        return ["--adapter", str(models["adapter"])]
    return ["--tuned", str(models["tuned"]), "--untuned", str(models["untuned"])]


def generate(
    models,
    out: Path,
    *extra: str,
    method: str = "cbs",
    pair: str = "two",
    prompts=None,
    progress=False,
    method_args: list[str] | None = None,
) -> int:
    args = ["generate", "--model", str(models["strong"]), *pair_args(models, pair), "--method", method]
    args += (
        (METHOD_ARGS[method] if method_args is None else method_args)
        + FAST
        + ["--out", str(out)]
        + ([] if progress else ["--no-progress"])
    )
    if prompts is not None:
        args += ["--prompts", str(prompts)]
    return cli.main(args + list(extra))


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- help and usage errors


def test_help_of_the_program_and_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "generate" in text and "COMMAND" in text
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--model",
        "--adapter",
        "--tuned",
        "--untuned",
        "--method",
        "--prompts",
        "--out",
        "--beta",
    ):
        assert option in text
    assert "cbs" in text and "safetensors" in text


def test_no_subcommand_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "generate" in capsys.readouterr().err


def test_adding_a_subcommand_is_one_registration(monkeypatch, capsys):
    def add_arguments(parser):
        parser.add_argument("--word", default="hi")

    def run(args):
        print(args.word)
        return 0

    monkeypatch.setitem(cli.COMMANDS, "echo", cli.Command("say a word", add_arguments, run))
    assert cli.main(["echo", "--word", "yes"]) == 0
    assert capsys.readouterr().out.strip() == "yes"


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (["--adapter", "A", "--untuned", "U"], "--adapter cannot be combined with --untuned"),
        (["--adapter", "A", "--tuned", "T"], "--adapter cannot be combined with --tuned"),
        (["--tuned", "T"], "--tuned needs --untuned"),
        (["--untuned", "U"], "--untuned needs --tuned"),
        ([], "no weak pair given"),
        (["--adapter", "A", "--beta", "2"], "--beta applies to --method token only"),
        (["--adapter", "A", "--temperature", "0"], "--temperature 0 is greedy"),
        (["--adapter", "A", "--max-per-parent", "2"], "--max-per-parent applies to --selection diverse only"),
        (
            ["--adapter", "A", "--selection", "diverse", "--selection-temperature", "2"],
            "--selection-temperature applies to --selection stochastic only",
        ),
        (["--adapter", "A", "--successors", "2", "--successors-schedule", "4,2"], "give one"),
        (["--adapter", "A", "--successors-schedule", "4,0"], "integers >= 1 separated by commas"),
        (["--adapter", "A", "--successors-schedule", "4,2", "--settle-margin", "1"], "does not combine"),
        (["--adapter", "A", "--settle-margin", "-1"], "a finite number >= 0"),
        (["--adapter", "A", "--draft-tokens", "0"], "an integer >= 1"),
    ],
)
def test_bad_combinations_are_refused_clearly(pair, message, tmp_path, capsys):
    argv = [
        "generate",
        "--model",
        "M",
        *pair,
        "--method",
        "cbs",
        "--prompt",
        "x",
        "--out",
        str(tmp_path / "o"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- generating


@pytest.mark.parametrize("method", ["cbs", "bon", "token"])
def test_each_method_writes_one_line_per_prompt_and_a_rerun_adds_nothing(
    method, models, prompts_file, tmp_path
):
    out = tmp_path / "results.jsonl"
    assert generate(models, out, method=method, prompts=prompts_file) == 0
    results = read_results(out)
    assert [r["id"] for r in results] == [1, "quiet", 3]
    assert [r["prompt"] for r in results] == [p["prompt"] for p in PROMPTS]
    for r in results:
        assert set(r) >= FIELDS and r["method"] == method
        assert isinstance(r["response"], str)
        assert ("log_ratio" in r) == (method != "token") == ("cost" in r)
        assert r["settings"]["max_new_tokens"] == 4 and r["settings"]["model"] == str(models["strong"])
    if method != "token":
        assert all(isinstance(r["log_ratio"], float) for r in results)
        n_rows = 2 * 2 if method == "cbs" else 3  # W*K candidates or N samples, 4 tokens at most each
        assert all(0 < r["cost"]["large_tokens"] <= n_rows * 4 for r in results)
        assert all(r["cost"]["weak_tokens"] == r["cost"]["large_tokens"] for r in results)  # one vocabulary
        assert all(r["cost"]["large_forwards"] >= 1 for r in results)
    before = out.read_bytes()
    assert generate(models, out, method=method, prompts=prompts_file) == 0
    assert out.read_bytes() == before


@pytest.mark.parametrize("method", ["cbs", "token"])
def test_drafted_methods_from_the_command_line(method, models, prompts_file, tmp_path, capsys):
    drafted, plain = tmp_path / "drafted.jsonl", tmp_path / "plain.jsonl"
    assert generate(models, drafted, "--draft-tokens", "2", method=method, prompts=prompts_file) == 0
    assert generate(models, plain, method=method, prompts=prompts_file) == 0
    results = read_results(drafted)
    assert len(results) == 3 and all(r["settings"]["draft_tokens"] == 2 for r in results)
    assert all(r["settings"]["draft_tokens"] is None for r in read_results(plain))
    if method == "cbs":
        assert all(isinstance(r["log_ratio"], float) and "cost" in r for r in results)
    with pytest.raises(SystemExit):
        generate(models, tmp_path / "bon.jsonl", "--draft-tokens", "2", method="bon", prompts=prompts_file)
    assert "--draft-tokens applies to --method cbs or --method token only" in capsys.readouterr().err


@pytest.mark.parametrize(
    "policy",
    [
        ["--selection", "diverse", "--max-per-parent", "1"],
        ["--selection", "stochastic", "--selection-temperature", "0.5"],
        ["--successors-schedule", "3,1"],
        ["--settle-margin", "0.5"],
        ["--chunk-stop", "e", "--chunk-stop", "\\n\\n"],
    ],
)
def test_search_policies_from_the_command_line(policy, models, prompts_file, tmp_path):
    out = tmp_path / "results.jsonl"
    own = ["--beam-width", "2", "--chunk-length", "2"]  # --successors-schedule replaces --successors
    if "--successors-schedule" not in policy:
        own += ["--successors", "2"]
    assert generate(models, out, *policy, "--max-new-tokens", "6", prompts=prompts_file, method_args=own) == 0
    results = read_results(out)
    assert len(results) == 3 and all("cost" in r and isinstance(r["log_ratio"], float) for r in results)
    settings = results[0]["settings"]
    flags = dict(zip(policy[::2], policy[1::2]))
    if "--selection" in flags:
        assert settings["selection"] == flags["--selection"]
    if "--successors-schedule" in flags:
        assert settings["successors_schedule"] == [3, 1]
    if "--chunk-stop" in flags:
        assert settings["chunk_stop"] == ["e", "\n\n"]


@pytest.mark.parametrize(
    ("policy", "kinds"),
    [
        ([], ("TopDistinct", "ConstantBudget", [])),
        (["--selection", "diverse", "--max-per-parent", "2"], ("DiverseSelection", "ConstantBudget", [])),
        (["--selection", "stochastic"], ("StochasticSelection", "ConstantBudget", [])),
        (["--successors-schedule", "3,1"], ("TopDistinct", "ScheduledBudget", [])),
        (["--settle-margin", "0.5"], ("TopDistinct", "AdaptiveBudget", [])),
        (["--chunk-stop", "\\n\\n"], ("TopDistinct", "ConstantBudget", ["\n\n"])),
    ],
)
def test_policy_flags_build_the_policies(policy, kinds):
    tokenizer = make_tokenizer()
    pair = cli_pair(tokenizer)
    parser = cli.build_parser()
    argv = ["generate", "--model", "M", "--adapter", "A", "--method", "cbs", "--prompt", "x", "--out", "o"]
    args = parser.parse_args(argv + policy)
    cli.check_generate_args(args._parser, args)
    strategy = cli.make_strategy(args, pair, None)
    selection, budget, stops = kinds
    assert type(strategy.selection).__name__ == selection
    assert type(strategy.budget).__name__ == budget
    assert strategy.boundary.stop_strings == stops and strategy.chunk_length == 5


def cli_pair(tokenizer):
    import w2s_generate as w2s

    return w2s.WeakPair(
        make_model("gpt2", len(tokenizer), 1), make_model("gpt2", len(tokenizer), 2), tokenizer
    )


def test_an_interrupted_run_resumes_and_matches_an_uninterrupted_one(models, prompts_file, tmp_path, capsys):
    full = tmp_path / "full.jsonl"
    assert generate(models, full, prompts=prompts_file) == 0
    first = full.read_text().splitlines()[0]
    cut = tmp_path / "cut.jsonl"
    cut.write_text(first + "\n" + '{"id": "quiet", "prom')  # killed while writing the second result
    assert generate(models, cut, prompts=prompts_file) == 0
    assert "incomplete last line" in capsys.readouterr().err
    # Each prompt samples with its own seed, so the resumed file equals the uninterrupted one.
    assert cut.read_text() == full.read_text()


def test_malformed_lines_are_reported_and_the_others_still_done(models, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        json.dumps({"prompt": "the film was"}),
        '{"prompt": "unterminated',
        json.dumps({"id": "no-prompt", "text": "hi"}),
        "",
        json.dumps({"prompt": [{"role": "user"}]}),
        json.dumps({"prompt": "the plot", "id": "last"}),
        json.dumps({"prompt": "again", "id": "last"}),
    ]
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.jsonl"
    assert generate(models, out, prompts=prompts) == 1
    err = capsys.readouterr().err
    assert "line 2: not valid JSON" in err
    assert 'line 3: no "prompt" field' in err
    assert "line 4" not in err  # blank lines are ignored
    assert 'line 5: "prompt"[0] is not a chat message' in err
    assert 'line 7: id "last" already used on line 6' in err
    assert [r["id"] for r in read_results(out)] == [1, "last"]


def test_adapter_pair_and_direct_prompts(models, tmp_path):
    out = tmp_path / "results.jsonl"
    assert (
        generate(
            models, out, "--prompt", "the film was", "--prompt", "a quiet", pair="adapter", progress=True
        )
        == 0
    )
    results = read_results(out)
    assert [r["id"] for r in results] == [1, 2]
    assert results[0]["settings"]["adapter"] == str(models["adapter"])
    assert all(isinstance(r["log_ratio"], float) for r in results)


def test_chat_templates_format_prompts_and_can_be_turned_off(models, tmp_path, capsys):
    chat = str(models["chat-tok"])
    prompts = tmp_path / "prompts.jsonl"
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "the film"}]
    prompts.write_text(json.dumps({"prompt": "the plot"}) + "\n" + json.dumps({"prompt": messages}) + "\n")
    out = tmp_path / "results.jsonl"
    extra = ["--tokenizer", chat, "--weak-tokenizer", chat]
    assert generate(models, out, *extra, prompts=prompts) == 0
    assert [r["prompt"] for r in read_results(out)] == ["the plot", messages]
    off = tmp_path / "off.jsonl"
    assert generate(models, off, *extra, "--no-chat-template", prompts=prompts) == 1
    assert (
        "line 2: id 2: the prompt is a list of chat messages but --no-chat-template"
        in capsys.readouterr().err
    )
    assert [r["id"] for r in read_results(off)] == [1]


def test_prompt_formatting_per_model():
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    args = cli.build_parser().parse_args(
        ["generate", "--model", "M", "--adapter", "A", "--method", "cbs", "--prompt", "x", "--out", "o"]
    )
    record = cli.PromptRecord(1, 1, "the film")
    expected = tokenizer("<|bos|>user: the film\nassistant:", add_special_tokens=False)["input_ids"]
    assert cli.strong_prompt_ids(record, tokenizer, args) == expected

    class Pair:  # only the tokenizer is read
        pass

    pair = Pair()
    pair.tokenizer = tokenizer
    assert cli.weak_prompt(record, pair, args) == "the film"  # the pair's own rule formats text
    chat = cli.PromptRecord(1, 1, [{"role": "user", "content": "the film"}])
    assert cli.weak_prompt(chat, pair, args) == chat.prompt
    args.no_chat_template = True
    assert cli.strong_prompt_ids(record, tokenizer, args) == tokenizer("the film")["input_ids"]
    assert cli.weak_prompt(cli.PromptRecord(1, 1, "x", weak_prompt="weak side"), pair, args) == "weak side"


# --------------------------------------------------------------------------- loading safely


def test_pickle_weights_are_refused_without_allow_pickle(models, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    argv = ["generate", "--model", str(models["pickled"]), *pair_args(models), "--method", "bon", "--n", "2"]
    argv += FAST + ["--no-progress", "--prompt", "the film", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "safetensors" in err and "--allow-pickle" in err and "pytorch_model.bin" in err
    assert not out.exists()
    assert cli.main(argv + ["--allow-pickle"]) == 0
    assert len(read_results(out)) == 1


def test_a_checkpoint_without_tokenizer_files_is_refused(models, tmp_path, capsys):
    bare = tmp_path / "bare"
    AutoModelForCausalLM.from_pretrained(models["strong"]).save_pretrained(bare)
    argv = ["generate", "--model", str(bare), *pair_args(models), "--method", "bon", "--n", "2"]
    argv += FAST + ["--no-progress", "--prompt", "the film", "--out", str(tmp_path / "o.jsonl")]
    assert cli.main(argv) == 2
    assert "no tokenizer files" in capsys.readouterr().err
    assert cli.main(argv + ["--tokenizer", str(models["strong"])]) == 0


def test_checks_that_need_no_model(tmp_path, capsys):
    base = ["generate", "--model", "M", "--adapter", "A", "--method", "cbs"]
    # A rerun whose prompt changed under a done id says so (and loads nothing: all ids are done).
    out = tmp_path / "results.jsonl"
    out.write_text(
        json.dumps({"id": 1, "prompt": "old", "response": "", "method": "cbs", "settings": {}}) + "\n"
    )
    assert cli.main(base + ["--prompt", "new", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 id(s) already in" in err and "another prompt" in err and "nothing to do" in err
    assert cli.main(base + ["--prompts", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "cannot read --prompts" in capsys.readouterr().err
    assert cli.main(base + ["--prompt", "x", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert cli.main(base + ["--prompt", "x", "--out", str(blocked / "results.jsonl")]) == 2
    assert f"cannot write --out {blocked / 'results.jsonl'}" in capsys.readouterr().err  # before any load


def test_several_adapters_make_one_ensemble(models, tmp_path):
    import w2s_generate as w2s

    second = tmp_path / "adapter2"
    base = AutoModelForCausalLM.from_pretrained(models["untuned"])
    torch.manual_seed(4)
    config = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(second)
    ensemble = w2s.GuidanceEnsemble.from_adapters([models["adapter"], second], [1.0, 0.5])
    assert len({id(s.model) for s in ensemble.sides}) == 1 and len(ensemble.sides) == 3
    one = w2s.WeakPair.from_pretrained(models["adapter"])
    two = w2s.WeakPair.from_pretrained(second)
    prompts, responses = ["the film was"], [" wonderful"]
    torch.testing.assert_close(
        ensemble.score(prompts, responses),
        one.score(prompts, responses) + 0.5 * two.score(prompts, responses),
        atol=1e-4,
        rtol=1e-4,
    )
    out = tmp_path / "results.jsonl"
    args = [
        "generate",
        "--model",
        str(models["strong"]),
        "--adapter",
        str(models["adapter"]),
        "--adapter",
        str(second),
        "--weights",
        "1",
        "0.5",
        "--method",
        "bon",
        "--n",
        "2",
        "--max-new-tokens",
        "4",
        "--prompt",
        "the film was",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert cli.main(args) == 0
    result = read_results(out)[0]
    assert result["settings"]["adapter"] == [str(models["adapter"]), str(second)]
    assert result["settings"]["weights"] == [1.0, 0.5]
    assert isinstance(result["log_ratio"], float)
    with pytest.raises(SystemExit):
        cli.main(args[:-1] + ["--weights", "1"] + ["--no-progress"])


def run_cli(*args: str, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "w2s_generate.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def test_help_starts_without_torch_or_transformers():
    """--help answers at once: the heavy libraries load only when a command runs."""
    script = (
        "import sys\n"
        "from w2s_generate import cli\n"
        "for argv in (['--help'], ['generate', '--help'], ['demo', '--help']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted({'torch', 'transformers', 'peft'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: w2s-generate" in result.stdout


def test_ctrl_c_says_one_line_and_a_rerun_resumes(models, tmp_path):
    prompts = tmp_path / "many.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"the film was {i}"}) + "\n" for i in range(200)))
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--model", str(models["strong"]), *pair_args(models), "--method", "bon", "--n", "2"]
    argv += ["--max-new-tokens", "3", "--prompts", str(prompts), "--out", str(out), "--no-progress"]
    process = subprocess.Popen(
        [sys.executable, "-m", "w2s_generate.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    while (not out.exists() or out.read_text().count("\n") < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"w2s-generate: interrupted; {out} holds every result finished so far, and a rerun resumes after them"
    ]
    done = [json.loads(line) for line in out.read_text().splitlines()]  # every line is whole
    assert 2 <= len(done) < 200
    resumed = run_cli(*argv, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == list(range(1, 201))


def test_sigterm_is_handled_like_ctrl_c(models, tmp_path):
    prompts = tmp_path / "many.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"the film was {i}"}) + "\n" for i in range(300)))
    out = tmp_path / "out.jsonl"
    argv = ["generate", "--model", str(models["strong"]), *pair_args(models), "--method", "bon", "--n", "2"]
    argv += ["--max-new-tokens", "3", "--prompts", str(prompts), "--out", str(out), "--no-progress"]
    process = subprocess.Popen(
        [sys.executable, "-m", "w2s_generate.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while (not out.exists() or out.read_text().count("\n") < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # what `kill`, a job scheduler or a container stop sends
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == [
        f"w2s-generate: terminated (SIGTERM); {out} holds every result finished so far, and a rerun resumes "
        "after them"
    ]
    done = [json.loads(line)["id"] for line in out.read_text().splitlines()]  # every line is whole
    assert done == list(range(1, len(done) + 1)) and 2 <= len(done) < 300
    resumed = run_cli(*argv, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == list(range(1, 301))


def test_library_warnings_are_quiet_unless_verbose(tmp_path):
    script = (
        "import sys, warnings, dataclasses\n"
        "from w2s_generate import cli\n"
        "from w2s_generate._compat import W2SWarning\n"
        "def noisy(args):\n"
        "    from transformers.utils import logging\n"
        "    warnings.warn('library noise', FutureWarning)\n"
        "    logging.get_logger('transformers.modeling_utils').warning('library log line')\n"
        "    warnings.warn('our own warning', W2SWarning)\n"
        "    return 0\n"
        "cli.COMMANDS['demo'] = dataclasses.replace(cli.COMMANDS['demo'], run=noisy)\n"
        "sys.exit(cli.main(['demo'] + sys.argv[1:]))\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    loud = subprocess.run([sys.executable, "-c", script, "--verbose"], capture_output=True, text=True)
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert "library noise" not in quiet.stderr and "library log line" not in quiet.stderr
    assert "our own warning" in quiet.stderr
    assert "library noise" in loud.stderr and "library log line" in loud.stderr


def test_load_errors_hint_at_their_cause(models, tmp_path, capsys):
    out = str(tmp_path / "o.jsonl")
    base = ["generate", "--method", "cbs", "--prompt", "x", "--out", out, "--no-progress"]
    assert cli.main(base + ["--model", str(tmp_path / "nowhere"), *pair_args(models)]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "nowhere" in err and "safetensors" not in err
    assert cli.main(base + ["--model", str(models["strong"]), "--adapter", "./missing-adapter"]) == 2
    err = capsys.readouterr().err
    assert "--adapter ./missing-adapter: no such file or folder" in err and "safetensors" not in err
    assert cli.main(base + ["--model", str(models["pickled"]), *pair_args(models)]) == 2
    assert "safetensors" in capsys.readouterr().err  # the hint where it is the cause


# --------------------------------------------------------------------------- the demo's own models


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    """A cache root holding ``demo-v1`` as ``w2s-generate demo --task synthetic`` builds it (quick steps)."""
    from w2s_generate.demo import train_demo_models

    root = tmp_path_factory.mktemp("demo-cache")
    train_demo_models(root, progress=False, scale=0.02)
    return root


def documented_demo_command() -> list[str]:
    """The ``w2s-generate generate`` command that docs/recipes/demo.md shows on the cached demo models."""
    page = (Path(__file__).parents[1] / "docs" / "recipes" / "demo.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", page, flags=re.S)
    [block] = [b for b in blocks if "w2s-generate generate" in b and "demo-v1" in b]
    return shlex.split(block.replace("\\\n", " "))


def test_the_documented_command_runs_on_the_demo_models(demo_cache, tmp_path, monkeypatch, capsys):
    command = documented_demo_command()
    assert command[:2] == ["w2s-generate", "generate"]
    argv = [a.replace("~/.cache/w2s_generate", str(demo_cache)) for a in command[1:]]
    work = tmp_path / "elsewhere"  # not the cache: the adapter's base (../weak) is found all the same
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli.main(argv + ["--no-progress"]) == 0, capsys.readouterr().err
    [result] = read_results(work / "demo-results.jsonl")
    assert result["prompt"] == "the film was" and isinstance(result["response"], str)
    assert result["response"].strip() and isinstance(result["log_ratio"], float)
    for folder in ("strong", "weak", "weak-positive-lora"):  # each model folder holds its tokenizer
        assert (demo_cache / "demo-v1" / folder / "tokenizer.json").is_file()
    # The Python loaders read the adapter's base the same way, from any working folder.
    import w2s_generate as w2s

    adapter = demo_cache / "demo-v1" / "weak-positive-lora"
    assert w2s.WeakPair.from_pretrained(adapter).vocab_rows > 1
    assert len(w2s.GuidanceEnsemble.from_adapters([adapter], [1.0]).sides) == 2
