"""``w2s-generate generate``: answer every pending prompt, appending one JSON line per result to ``--out``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..methods import method_defaults
from .encoding import Prepared, prepare
from .job_store import OutputError, ResultsFile, check_output_path, result_line, warn_about_existing
from .loading import LoadError, check_paths, hub_progress_bars, load_models
from .messages import PROG, reason, report
from .options import check_generate_args
from .prompts import BadLine, PromptRecord, check_prompts_file, direct_prompts, read_prompts

GENERATE_DESCRIPTION = """\
Generate a response for each prompt with a large model steered by a weak pair, one JSON line per
prompt appended to --out as soon as it is done.

The weak pair is either
  --adapter DIR            one small base model with a LoRA adapter (tuned = adapter on,
                           untuned = adapter off; the base is read from the adapter's config), or
  --tuned T --untuned U    two full checkpoints of the same small model, after and before tuning.

Methods:
  cbs    chunk-level beam search   (--beam-width, --successors, --chunk-length; policies:
                                    --selection, --successors-schedule, --settle-margin,
                                    --chunk-stop)
  bon    best-of-N                 (--n)
  token  token-level guidance      (--beta; needs the large model's vocabulary)

--draft-tokens G (cbs, token) lets the weak pair draft G tokens that the large model verifies in one
forward: the same distribution, fewer large-model forwards.

--prompts reads JSON lines: {"prompt": TEXT or [chat messages], "id": optional,
"weak_prompt": optional TEXT or [chat messages]}. The id defaults to the line number. A rerun skips
the ids already in --out, so an interrupted job resumes where it stopped. Malformed lines are
reported on stderr and skipped; the exit code is then 1.

Text prompts are wrapped as a user message and formatted with each model's chat template when its
tokenizer has one (the large model's with its tokenizer, the weak pair's with the pair's; an adapter
trained by examples/train_weak_lora.py records which format it was trained on, and the pair follows
it), unless --no-chat-template is given.

Weights load from safetensors only, unless --allow-pickle is given; repository code runs only with
--trust-remote-code.
"""


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What produced a result (the per-prompt seed is added per record)."""
    if args.adapter:
        adapter = args.adapter[0] if len(args.adapter) == 1 else args.adapter
        weak = {"adapter": adapter, **({"weights": args.weights} if args.weights else {})}
    else:
        weak = {"tuned": args.tuned, "untuned": args.untuned}
    tokenizers = {"tokenizer": args.tokenizer, "weak_tokenizer": args.weak_tokenizer}
    remote = {"endpoint": args.endpoint, "extra_body": args.extra_body} if args.endpoint else {}
    return {
        "model": args.model,
        **remote,
        **weak,
        **{key: value for key, value in tokenizers.items() if value is not None},
        **{option: getattr(args, option) for option in method_defaults(args.method)},
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "chat_template": not args.no_chat_template,
        "dtype": args.dtype,
    }


def _response_ids(row: list[int], eos_ids: set[int], pad_id: int | None) -> list[int]:
    """Generated ids up to (not including) the first end-of-sequence token, trailing padding removed."""
    for i, token in enumerate(row):
        if token in eos_ids:
            return row[:i]
    while row and pad_id is not None and row[-1] == pad_id:
        row = row[:-1]
    return row


def _eos_ids(model, tokenizer) -> set[int]:
    from .._compat import eos_token_ids

    eos = eos_token_ids(model.generation_config)
    if tokenizer.eos_token_id is not None:
        eos.append(tokenizer.eos_token_id)
    return set(eos)


def generate_batch(
    model, tokenizer, strategy, batch: list[Prepared], args
) -> tuple[list[str], list | None, list | None]:
    """Responses (text), log-ratios and costs (searches only) for one batch of prepared prompts."""
    import torch

    if args.endpoint is not None:  # `model` is a CompletionsSampler
        out = strategy.run(
            [p.text for p in batch],
            sampler=model,
            weak_prompts=[p.weak for p in batch],
            max_new_tokens=args.max_new_tokens,
        )
        return list(out.texts), [float(x) for x in out.log_ratios], _costs(out, len(batch))

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = tokenizer.pad({"input_ids": [p.ids for p in batch]}, return_tensors="pt")
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    torch.manual_seed(args.seed + batch[0].record.line)
    kwargs: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": args.temperature > 0,
        "pad_token_id": pad,
        "return_dict_in_generate": True,
    }
    if args.temperature > 0:
        kwargs.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.method != "token":
        kwargs["weak_prompts"] = [p.weak for p in batch]
    out = model.generate(**inputs, strategy=strategy, tokenizer=tokenizer, **kwargs)
    width = inputs["input_ids"].shape[1]
    eos = _eos_ids(model, tokenizer)
    texts = [
        tokenizer.decode(_response_ids(row[width:], eos, pad), skip_special_tokens=True)
        for row in out.sequences.tolist()
    ]
    log_ratios = getattr(out, "log_ratios", None)
    return texts, None if log_ratios is None else [float(x) for x in log_ratios], _costs(out, len(batch))


def _costs(out, prompts: int) -> list[dict[str, int]] | None:
    """Each prompt's search cost as plain numbers (``None`` for token guidance, which has none)."""
    cost = getattr(out, "cost", None)
    return None if cost is None else [cost.to_dict(b) for b in range(prompts)]


def answer(model, tokenizer, strategy, batch: list[Prepared], settings: dict, args):
    """``(item, result line or BadLine)`` for each prompt of ``batch``.

    Any exception is this batch's failure, never the run's. A failed batch of several prompts is
    tried again one prompt at a time, so one bad prompt never takes good ones down with it (and a
    rerun is never stuck on it).
    """
    try:
        texts, log_ratios, costs = generate_batch(model, tokenizer, strategy, batch, args)
        if len(texts) != len(batch) or (log_ratios is not None and len(log_ratios) != len(batch)):
            raise RuntimeError(f"{len(texts)} responses came back for {len(batch)} prompts")
    except Exception as error:  # a prompt too long, a server down, a bug: the others may still work
        if len(batch) > 1:
            return [
                done for item in batch for done in answer(model, tokenizer, strategy, [item], settings, args)
            ]
        return [
            (
                batch[0],
                BadLine(batch[0].record.line, f"id {json.dumps(batch[0].record.id)}: {reason(error)}"),
            )
        ]
    seeded = {**settings, "seed": args.seed + batch[0].record.line}
    outcomes: list[tuple[Prepared, str | BadLine]] = []
    for i, item in enumerate(batch):
        ratio = None if log_ratios is None else log_ratios[i]
        cost = None if costs is None else costs[i]
        try:
            outcomes.append((item, result_line(item.record, texts[i], ratio, args.method, seeded, cost)))
        except ValueError as error:
            outcomes.append((item, BadLine(item.record.line, f"id {json.dumps(item.record.id)}: {error}")))
    return outcomes


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _records(args: argparse.Namespace) -> tuple[list[PromptRecord], list[BadLine]]:
    """The prompts of ``--prompts`` or ``--prompt`` and the bad ones (OSError when the file is unreadable)."""
    if args.prompts is not None:
        return read_prompts(args.prompts)
    return direct_prompts(args.prompt)


def run_generate(args: argparse.Namespace) -> int:
    """``w2s-generate generate``: answer every pending prompt, appending results to ``--out``."""
    check_generate_args(args._parser, args)
    out_path = Path(args.out)
    try:  # a folder, a device or a pipe is refused before anything is read from it
        check_output_path(out_path)
        if args.prompts is not None:
            check_prompts_file(args.prompts)
    except (OutputError, ValueError) as error:
        report(f"error: {error}")
        return 2
    try:
        records, bad = _records(args)
    except (OSError, UnicodeDecodeError) as error:
        report(f"error: cannot read --prompts {args.prompts}: {getattr(error, 'strerror', None) or error}")
        return 2
    for line in bad:
        report(str(line))
    if not records and not bad:
        report(
            f'error: --prompts {args.prompts} holds no prompts: give one JSON object per line, e.g. {{"prompt": "..."}}'
        )
        return 2
    if not records:
        report(f"{len(bad)} prompt(s) skipped (see above) and none left to answer: fix them and rerun")
        return 1
    try:
        with ResultsFile(out_path) as results:  # held (locked) until the run ends
            return _run(args, results, records, bad)
    except OutputError as error:
        report(f"error: {error}")
        return 2


def _run(
    args: argparse.Namespace, results: ResultsFile, records: list[PromptRecord], bad: list[BadLine]
) -> int:
    # 1. Skip what an earlier run already answered.
    done, last = results.read_done()
    settings = settings_of(args)
    warn_about_existing(records, done, last, args.method, settings, results.path)
    pending = [r for r in records if r.id not in done]
    if not pending:
        report(f"nothing to do: all {len(records)} prompts already have a result in {results.path}")
        return 1 if bad else 0
    results.check_writable()  # before the models load: an unwritable --out is found at once

    # 2. Load the models and encode the prompts (a prompt its model cannot take is a bad line).
    with hub_progress_bars(not args.no_progress):
        try:
            check_paths(args)
            model, tokenizer, pair, strategy = load_models(args)
        except LoadError as error:
            report(f"error: {error}")
            return 2
    prepared, unprepared = prepare(pending, tokenizer, pair, args, None if args.endpoint else model)
    for line in unprepared:
        report(str(line))
    bad += unprepared

    # 3. Generate, appending each result as soon as its batch is done.
    from tqdm import tqdm

    results.keep()
    with tqdm(total=len(prepared), disable=args.no_progress, desc=args.method, unit="prompt") as bar:
        if len(pending) < len(records):
            bar.write(
                f"{PROG}: resuming: {len(records) - len(pending)} prompts already done", file=sys.stderr
            )
        for batch in _batches(prepared, args.batch_size):
            for _, outcome in answer(model, tokenizer, strategy, batch, settings, args):
                if isinstance(outcome, BadLine):
                    bar.write(f"{PROG}: {outcome}", file=sys.stderr)
                    bad.append(outcome)
                    continue
                try:
                    results.append(outcome)
                except OutputError as error:  # a full disk: stop now, every line written so far is whole
                    bar.write(f"{PROG}: error: {error}", file=sys.stderr)
                    return 1
            bar.update(len(batch))
    if bad:
        report(f"{len(bad)} prompt(s) skipped (see above); fix them and rerun to answer just those")
        return 1
    return 0
