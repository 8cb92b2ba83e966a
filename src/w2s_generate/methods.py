"""The decoding methods and their options, in one table read by the command line and the hub folder.

A method is a name (``"cbs"``, ``"bon"``, ``"token"``), the options it reads with their defaults,
and a function that builds its strategy from a pair and those options. ``w2s-generate generate``
makes its ``--method`` choices and its method flags from this table, and the ``custom_generate``
folder in ``hub/`` takes the same names as keyword arguments, so a method or an option added here
reaches both, and an option given to a method that does not read it is refused by name in both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["METHODS", "MethodOption", "MethodSpec", "build_strategy", "method_defaults", "option_owners"]


@dataclass(frozen=True)
class MethodOption:
    """One option of a method.

    Attributes:
        name: the keyword (hub folder) and the command line's ``--name-with-dashes`` flag.
        default: the value when the option is not given (``None``: the method's own rule).
        help: what it does, for ``--help`` and the docs (without the method's name).
        cli_type: the command line's name for the value parser in ``w2s_generate.cli.values``
            (``"positive_int"``, ...), or None for a plain string.
        metavar: the value's name in ``--help``.
        choices: the values allowed on the command line.
        repeatable: the command line flag may be given several times (a list).
    """

    name: str
    default: Any
    help: str
    cli_type: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    repeatable: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class MethodSpec:
    """A decoding method: its options and how its strategy is built.

    Attributes:
        name: ``--method`` value and the hub folder's ``method=``.
        summary: one line for ``--help`` and the docs.
        options: what it reads.
        build: ``build(pair, tokenizer, seed, **options) -> strategy``; ``tokenizer`` is the large
            model's (or None), ``seed`` the job's seed (or None), ``options`` every option of the
            method, defaults filled in.
    """

    name: str
    summary: str
    options: tuple[MethodOption, ...]
    build: Callable[..., Any]


def _chunk_beam_search(
    pair,
    tokenizer,
    seed,
    *,
    beam_width,
    successors,
    chunk_length,
    selection,
    max_per_parent,
    selection_temperature,
    successors_schedule,
    settle_margin,
    chunk_stop,
    draft_tokens,
):
    from .boundaries import ChunkBoundary
    from .policies import (
        AdaptiveBudget,
        DiverseSelection,
        ScheduledBudget,
        StochasticSelection,
        TopDistinct,
    )
    from .search import ChunkBeamSearch

    # Scalars (the command line) become policies; policy objects (Python callers) pass through.
    if successors_schedule is not None:
        successors = ScheduledBudget(successors_schedule)
    elif settle_margin is not None:
        successors = AdaptiveBudget(successors, settle_margin)
    if selection == "diverse":
        selection = DiverseSelection(max_per_parent or 1)
    elif selection == "stochastic":
        selection = StochasticSelection(selection_temperature or 1.0, seed=seed)
    elif selection == "top":
        selection = TopDistinct()
    if chunk_stop is not None:
        chunk_length = ChunkBoundary(chunk_length, stop_strings=chunk_stop)
    return ChunkBeamSearch(
        pair,
        beam_width,
        successors,
        chunk_length,
        tokenizer=tokenizer,
        selection=selection,
        draft_tokens=draft_tokens,
    )


def _best_of_n(pair, tokenizer, seed, *, n):
    from .search import BestOfN

    return BestOfN(pair, n, tokenizer=tokenizer)


def _token_guidance(pair, tokenizer, seed, *, beta, draft_tokens):
    from .generate import TokenGuidance

    return TokenGuidance(pair, beta, draft_tokens=draft_tokens)


_DRAFT_TOKENS = MethodOption(
    "draft_tokens",
    None,
    "the weak pair drafts G tokens, the large model verifies them in one forward (the same "
    "distribution, fewer large-model forwards; local models only)",
    "positive_int",
    "G",
)

METHODS: dict[str, MethodSpec] = {
    "cbs": MethodSpec(
        "cbs",
        "chunk-level beam search",
        (
            MethodOption("beam_width", 4, "beams kept per prompt (default 4)", "positive_int", "W"),
            MethodOption(
                "successors", 4, "chunks sampled per beam and round (default 4)", "positive_int", "K"
            ),
            MethodOption("chunk_length", 5, "tokens per chunk (default 5)", "positive_int", "L"),
            MethodOption(
                "selection",
                "top",
                "which candidates survive a round: the W best (top, default), at most --max-per-parent "
                "per beam (diverse), or drawn by softmax(score / --selection-temperature) (stochastic)",
                choices=("top", "diverse", "stochastic"),
            ),
            MethodOption("max_per_parent", None, "with --selection diverse: default 1", "positive_int", "M"),
            MethodOption(
                "selection_temperature",
                None,
                "with --selection stochastic: default 1.0 (seeded by --seed)",
                "positive_float",
                "T",
            ),
            MethodOption(
                "successors_schedule",
                None,
                "successors per beam by round, the last repeating (instead of --successors)",
                "schedule",
                "K0,K1,...",
            ),
            MethodOption(
                "settle_margin",
                None,
                "stop sampling for a prompt once a finished response leads every live beam by D",
                "non_negative_float",
                "D",
            ),
            MethodOption(
                "chunk_stop",
                None,
                r"also end a chunk at the token that completes TEXT (repeatable; \n and \t understood)",
                "stop_string",
                "TEXT",
                repeatable=True,
            ),
            _DRAFT_TOKENS,
        ),
        _chunk_beam_search,
    ),
    "bon": MethodSpec(
        "bon",
        "best-of-N",
        (MethodOption("n", 16, "number of samples (default 16)", "positive_int", "N"),),
        _best_of_n,
    ),
    "token": MethodSpec(
        "token",
        "token-level guidance",
        (
            MethodOption("beta", 1.0, "guidance strength (default 1.0)", "finite_float", "B"),
            _DRAFT_TOKENS,
        ),
        _token_guidance,
    ),
}


def method_defaults(method: str) -> dict[str, Any]:
    """``{option: default}`` of one method."""
    return {option.name: option.default for option in _spec(method).options}


def option_owners() -> dict[str, list[str]]:
    """``{option: [methods that read it]}`` over the whole table, in table order."""
    owners: dict[str, list[str]] = {}
    for spec in METHODS.values():
        for option in spec.options:
            owners.setdefault(option.name, []).append(spec.name)
    return owners


def build_strategy(
    method: str, pair, tokenizer=None, seed: int | None = None, options: Mapping[str, Any] | None = None
):
    """The strategy of ``method`` with ``options`` (the rest at their defaults).

    Args:
        method: a name in `METHODS`.
        pair: the weak pair.
        tokenizer: the large model's tokenizer (bridges a pair with another tokenizer).
        seed: the job's seed, for what the method seeds itself (stochastic selection).
        options: option values; None values take the default.

    Raises:
        ValueError: an unknown method, or an option the method does not read (named, with the
            methods that do).

    Examples:
        >>> from w2s_generate.methods import build_strategy
        >>> strategy = build_strategy("bon", pair, options={"n": 4})
        >>> strategy.n
        4
    """
    spec = _spec(method)
    given = dict(options or {})
    owners = option_owners()
    for name in given:
        if name not in owners:
            raise ValueError(f"{name!r} is not an option of any method; the options: {sorted(owners)}.")
        if method not in owners[name]:
            readers = " or ".join(f"method={m!r}" for m in owners[name])
            raise ValueError(f"{name!r} applies to {readers} only, not method={method!r}: drop it.")
    values = method_defaults(method)
    values.update({name: value for name, value in given.items() if value is not None})
    return spec.build(pair, tokenizer, seed, **values)


def _spec(method: str) -> MethodSpec:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {sorted(METHODS)}.")
    return METHODS[method]
