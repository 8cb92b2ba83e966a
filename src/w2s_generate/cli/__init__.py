"""The ``w2s-generate`` command line.

Each subcommand is one ``Command`` (a help line, a function that adds its arguments, a function
that runs it) registered in ``COMMANDS``; adding a subcommand is one function pair plus one entry
there. Heavy imports (torch, transformers) happen inside the run functions, so ``--help`` is instant.

The modules: ``options`` (value types, arguments and the checks between them), ``prompts`` (the
prompt lines read), ``job_store`` (``--out``: results appended, locked, resumed), ``loading``
(models, pair, strategy), ``encoding`` (each prompt as each model reads it), ``generate_command``
and ``demo_command`` (one per subcommand), ``messages`` (what the program prints).

Examples:
    w2s-generate generate --model path/to/strong --adapter path/to/weak-lora --method cbs \\
        --prompts prompts.jsonl --out results.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .demo_command import DEMO_DESCRIPTION, add_demo_arguments, run_demo
from .encoding import strong_prompt_ids, strong_prompt_text, weak_prompt
from .generate_command import GENERATE_DESCRIPTION, run_generate
from .job_store import ResultsFile, read_done
from .loading import LoadError, load_pair, load_strong, make_strategy
from .messages import PROG, library_messages
from .options import add_generate_arguments, check_generate_args
from .prompts import BadLine, PromptRecord, parse_prompt_line, read_prompts

__all__ = [
    "COMMANDS",
    "PROG",
    "BadLine",
    "Command",
    "LoadError",
    "PromptRecord",
    "ResultsFile",
    "add_demo_arguments",
    "add_generate_arguments",
    "build_parser",
    "check_generate_args",
    "load_pair",
    "load_strong",
    "main",
    "make_strategy",
    "parse_prompt_line",
    "read_done",
    "read_prompts",
    "run_demo",
    "run_generate",
    "strong_prompt_ids",
    "strong_prompt_text",
    "weak_prompt",
]


@dataclass(frozen=True)
class Command:
    """One subcommand: ``add_arguments(parser)`` fills its parser, ``run(args)`` returns the exit code."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


COMMANDS: dict[str, Command] = {
    "generate": Command(
        help="generate with a large model steered by a weak pair (cbs, bon or token guidance)",
        add_arguments=add_generate_arguments,
        run=run_generate,
        description=GENERATE_DESCRIPTION,
    ),
    "demo": Command(
        help="the offline demo: steer Gemma-3-270M with a SmolLM2 pair toward positive reviews, every method",
        add_arguments=add_demo_arguments,
        run=run_demo,
        description=DEMO_DESCRIPTION,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The program's parser with one sub-parser per entry of ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Weak-to-strong search: steer a large language model at decoding time with a small "
        "tuned/untuned model pair.",
        epilog=f"Run '{PROG} COMMAND --help' for the options of one command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=command.description or command.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(_command=command, _parser=sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program stands so that it stops as on Ctrl-C (results kept, resumable)."""


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM does not cut the clean stop short
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler, a container stop) handled like Ctrl-C while a command runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``w2s-generate`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    verbose = getattr(args, "verbose", False)
    out = getattr(args, "out", None)
    kept = f"; {out} holds every result finished so far, and a rerun resumes after them" if out else ""
    try:
        with _sigterm_as_interrupt(), library_messages(verbose=verbose):
            return command.run(args)
    except KeyboardInterrupt as stop:
        how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        print(f"{PROG}: {how}{kept}", file=sys.stderr)
        return 130
    except Exception as error:  # the last resort: one line, not a traceback (--verbose shows it)
        if verbose:
            raise
        print(
            f"{PROG}: error: {type(error).__name__}: {error}{kept} (run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return 1
