"""The main job: every method on the same prompts and seeds, at matched large-model budgets.

Runs the strong model alone, the tuned weak model alone, best-of-N, token-level guidance and
chunk-level beam search on the demo task; measures the gold reward (which the search never sees),
fluency, the large-model tokens each method sampled and wall time; prints a table and draws reward
against large-model compute (the shape of the paper's figures).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._compat import cache_in_forward_kwargs
from ..generate import TokenGuidance
from ..pairs import WeakPair
from ..search import BestOfN, ChunkBeamSearch
from .language import prompts as demo_prompts
from .reward import fluency, gold_reward
from .train import DemoModels


@dataclass
class MethodResult:
    """One row of the comparison.

    Attributes:
        method: display name.
        family: the curve it belongs to in the plot (``strong``, ``bon``, ``cbs``, ``token``, ``tuned``).
        budget: large-model samples per prompt (``W*K`` for CBS, ``n`` for best-of-N).
        gold_reward: mean gold reward (the mean over seeds of the mean over prompts).
        fluency: mean fluency (synthetic task: share of grammatical sentences; real task: the large
            model's mean token log-prob of the response given the prompt).
        large_tokens: large-model tokens forwarded per prompt (decoding steps, all rows; mean over seeds).
        seconds: wall time for all prompts (mean over seeds).
        example: one full text (the first prompt, first seed).
        seeds: how many seeds the means are over.
        gold_reward_min: the lowest per-seed mean gold reward.
        gold_reward_max: the highest per-seed mean gold reward.
        gold_reward_std: the standard deviation of the per-seed means (0 for one seed).
        fluency_min: the lowest per-seed mean fluency.
        fluency_max: the highest per-seed mean fluency.
        prompts: prompts per seed.
        large_model: the model steered (and counted).
        weak_model: the small model alone / the pair that steers.
    """

    method: str
    family: str
    budget: int
    gold_reward: float
    fluency: float
    large_tokens: float
    seconds: float
    example: str
    seeds: int = 1
    gold_reward_min: float | None = None
    gold_reward_max: float | None = None
    gold_reward_std: float = 0.0
    fluency_min: float | None = None
    fluency_max: float | None = None
    prompts: int = 0
    large_model: str = ""
    weak_model: str = ""


@dataclass
class Method:
    """One method of a comparison: which model generates, with which tokenizer and strategy.

    Attributes:
        name: display name.
        family: plot family (see `MethodResult`).
        budget: large-model samples per prompt.
        model: the model whose ``generate`` runs.
        tokenizer: that model's tokenizer (left padding).
        strategy: the ``custom_generate`` callable, or None for plain sampling.
    """

    name: str
    family: str
    budget: int
    model: torch.nn.Module
    tokenizer: Any
    strategy: object | None = None


class _TokenCounter:
    """Counts the rows x tokens a model forwards after the prefill (one forward pre-hook).

    A pre-hook, because the forward fills the cache in place: afterwards the prefill's cache is no
    longer empty.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.tokens = 0
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids")
        cache = cache_in_forward_kwargs(kwargs)
        if ids is not None and cache is not None and cache.get_seq_length() > 0:
            self.tokens += ids.numel()

    def close(self) -> None:
        self._handle.remove()


def generate_texts(
    model, tokenizer, openings: list[str], strategy, seed: int, batch_size: int = 8, **sampling
) -> list[str]:
    """``prompt + " " + continuation`` for every opening, from ``model.generate`` with ``strategy``.

    The seed is set once, so every method sees the same random stream from the same start.
    """
    torch.manual_seed(seed)
    texts: list[str] = []
    for start in range(0, len(openings), batch_size):
        batch = openings[start : start + batch_size]
        enc = tokenizer(batch, return_tensors="pt", padding=True)
        kwargs = dict(sampling)
        if strategy is not None:
            kwargs["custom_generate"] = strategy
        out = model.generate(**enc, **kwargs)
        continuations = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        texts += [f"{p} {c}".strip() for p, c in zip(batch, continuations)]
    return texts


def _decode_response(tokenizer, prompt_ids: list[int], response_ids: list[int]) -> str:
    """The response text, decoded with its prompt as context so a leading space is kept."""
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = tokenizer.decode(prompt_ids + response_ids, skip_special_tokens=True)
    if full.startswith(prompt):
        return full[len(prompt) :]
    return tokenizer.decode(response_ids, skip_special_tokens=True)


def join_response(opening: str, response: str) -> str:
    """``opening`` followed by ``response``, with one space between them unless the response brings it."""
    if not response or response[:1].isspace():
        return (opening + response).strip()
    return f"{opening} {response}".strip()


def generate_responses(
    model, tokenizer, openings: Sequence[str], strategy, seed: int, batch_size: int = 8, **sampling
) -> list[str]:
    """The continuation text of every opening, from ``model.generate`` with ``strategy``.

    The seed is set once, so every method sees the same random stream from the same start. The
    tokenizer must pad on the left; responses are decoded in the context of their prompt.
    """
    torch.manual_seed(seed)
    responses: list[str] = []
    for start in range(0, len(openings), batch_size):
        batch = list(openings[start : start + batch_size])
        enc = tokenizer(batch, return_tensors="pt", padding=True)
        kwargs = dict(sampling)
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        if strategy is not None:
            kwargs["custom_generate"] = strategy
        out = model.generate(**enc, **kwargs)
        width = enc["input_ids"].shape[1]
        for row, mask, generated in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(), out):
            prompt_ids = [t for t, m in zip(row, mask) if m]
            response_ids = [t for t in generated[width:].tolist() if t != kwargs["pad_token_id"]]
            responses.append(_decode_response(tokenizer, prompt_ids, response_ids))
    return responses


#: ``score(openings, responses) -> (gold rewards, fluencies)``, one value per response.
Scorer = Callable[[Sequence[str], Sequence[str]], "tuple[list[float], list[float]]"]


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def compare_methods(
    methods: Sequence[Method],
    openings: Sequence[str],
    seeds: Sequence[int],
    score: Scorer,
    counted: torch.nn.Module,
    sampling: dict[str, Any],
    batch_size: int = 8,
    progress: bool = True,
    **row_fields: Any,
) -> list[MethodResult]:
    """Run every method on the same openings with each seed, and score and time it.

    Args:
        methods: what to run.
        openings: the prompts (the same for every method and seed).
        seeds: one run per seed; rows report the mean over seeds and its spread.
        score: gold reward and fluency of each response (the search never sees either).
        counted: the large model, whose decoding tokens are counted.
        sampling: ``generate`` keywords shared by every method (``do_sample``, temperature, ...).
        batch_size: prompts per ``generate`` call.
        progress: a progress bar over methods x seeds.
        **row_fields: extra `MethodResult` fields for every row (``large_model``, ``weak_model``).
    """
    from tqdm import tqdm

    results: list[MethodResult] = []
    bar = tqdm(total=len(methods) * len(seeds), desc="methods x seeds", disable=not progress)
    for method in methods:
        golds, fluencies, tokens, seconds = [], [], [], []
        example = ""
        for seed in seeds:
            bar.set_postfix_str(f"{method.name}, seed {seed}")
            counter = _TokenCounter(counted)
            started = time.perf_counter()
            try:
                responses = generate_responses(
                    method.model, method.tokenizer, openings, method.strategy, seed, batch_size, **sampling
                )
            finally:
                counter.close()
            seconds.append(time.perf_counter() - started)
            tokens.append(counter.tokens / len(openings))
            gold, flu = score(openings, responses)
            golds.append(_mean(gold))
            fluencies.append(_mean(flu))
            if not example:
                example = join_response(openings[0], responses[0])
            bar.update(1)
        results.append(
            MethodResult(
                method=method.name,
                family=method.family,
                budget=method.budget,
                gold_reward=_mean(golds),
                fluency=_mean(fluencies),
                large_tokens=sum(tokens) / len(tokens),
                seconds=sum(seconds) / len(seconds),
                example=example,
                seeds=len(seeds),
                gold_reward_min=min(golds),
                gold_reward_max=max(golds),
                gold_reward_std=statistics.stdev(golds) if len(golds) > 1 else 0.0,
                fluency_min=min(fluencies),
                fluency_max=max(fluencies),
                prompts=len(openings),
                **row_fields,
            )
        )
    bar.close()
    return results


def _synthetic_score(openings: Sequence[str], responses: Sequence[str]) -> tuple[list[float], list[float]]:
    texts = [join_response(p, r) for p, r in zip(openings, responses)]
    return [gold_reward(t) for t in texts], [fluency(t) for t in texts]


def run_comparison(
    models: DemoModels,
    n_prompts: int = 32,
    seed: int = 0,
    max_new_tokens: int = 40,
    temperature: float = 0.7,
    top_k: int = 50,
    budgets: tuple[int, ...] = (4, 16),
    chunk_length: int = 5,
    beta: float = 1.0,
    batch_size: int = 8,
    progress: bool = True,
) -> list[MethodResult]:
    """Run every method on ``n_prompts`` demo prompts with the same seeds.

    CBS with ``W = K = sqrt(budget)`` (the paper's W = K) and best-of-N with ``n = budget`` sample the
    same number of large-model sequences per prompt.

    Examples:
        >>> from w2s_generate.demo import load_demo_models                    # doctest: +SKIP
        >>> rows = run_comparison(load_demo_models(), n_prompts=8)             # doctest: +SKIP
        >>> print(format_table(rows))                                         # doctest: +SKIP
    """
    tokenizer = models.tokenizer
    strong = models.strong
    tuned = models.tuned_weak()
    pair = WeakPair.from_peft(tuned, tokenizer)
    openings = demo_prompts(n_prompts, seed)
    sampling = dict(do_sample=True, temperature=temperature, top_k=top_k, max_new_tokens=max_new_tokens)
    sampling.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)

    methods = [
        Method("strong alone", "strong", 1, strong, tokenizer),
        Method("tuned weak alone", "tuned", 0, tuned, tokenizer),
        Method(
            f"token guidance (beta={beta:g})", "token", 1, strong, tokenizer, TokenGuidance(pair, beta=beta)
        ),
    ]
    for budget in budgets:
        width = max(int(round(budget**0.5)), 1)
        methods.append(Method(f"best-of-{budget}", "bon", budget, strong, tokenizer, BestOfN(pair, n=budget)))
        methods.append(
            Method(
                f"CBS W={width} K={budget // width} L={chunk_length}",
                "cbs",
                width * (budget // width),
                strong,
                tokenizer,
                ChunkBeamSearch(pair, width, budget // width, chunk_length),
            )
        )
    return compare_methods(
        methods, openings, [seed], _synthetic_score, strong, sampling, batch_size, progress
    )


def _with_spread(mean: float, low: float | None, high: float | None, fmt: str) -> str:
    if low is None or high is None or low == high:
        return format(mean, fmt)
    return f"{mean:{fmt}} ({low:{fmt}} to {high:{fmt}})"


def format_table(rows: list[MethodResult]) -> str:
    """A markdown table of ``run_comparison`` results (with the spread over seeds when there are several)."""
    seeds = max((r.seeds for r in rows), default=1)
    spread = f" (min to max over {seeds} seeds)" if seeds > 1 else ""
    lines = [
        f"| method | gold reward{spread} | fluency{spread} | large-model tokens / prompt | wall time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        gold = _with_spread(r.gold_reward, r.gold_reward_min, r.gold_reward_max, "+.3f")
        flu = _with_spread(r.fluency, r.fluency_min, r.fluency_max, ".3f")
        lines.append(f"| {r.method} | {gold} | {flu} | {r.large_tokens:.0f} | {r.seconds:.1f} |")
    return "\n".join(lines)


def plot(
    rows: list[MethodResult],
    path: str | Path,
    title: str = "Weak-to-strong search on the offline review task",
    ylabel: str = "gold reward (never seen by the search)",
) -> Path:
    """Gold reward against large-model tokens per prompt, one curve per method family, as a PNG.

    With several seeds, each point carries a bar from the lowest to the highest per-seed mean.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("The plot needs matplotlib: pip install 'w2s-generate[plot]'") from error
    strong = next(r for r in rows if r.family == "strong")
    figure, axis = plt.subplots(figsize=(6, 4))

    def spread(points: list[MethodResult]) -> list[list[float]] | None:
        if all(p.gold_reward_min is None or p.gold_reward_max is None for p in points):
            return None
        return [
            [
                p.gold_reward - (p.gold_reward if p.gold_reward_min is None else p.gold_reward_min)
                for p in points
            ],
            [
                (p.gold_reward if p.gold_reward_max is None else p.gold_reward_max) - p.gold_reward
                for p in points
            ],
        ]

    for family, label, marker in (("bon", "best-of-N", "s"), ("cbs", "chunk-level beam search", "o")):
        points = [strong] + sorted((r for r in rows if r.family == family), key=lambda r: r.large_tokens)
        axis.errorbar(
            [p.large_tokens for p in points],
            [p.gold_reward for p in points],
            yerr=spread(points),
            marker=marker,
            capsize=3,
            label=label,
        )
    for r in rows:
        if r.family == "token":
            axis.scatter([r.large_tokens], [r.gold_reward], marker="^", s=60, label=r.method, zorder=3)
        if r.family == "tuned":
            axis.axhline(r.gold_reward, linestyle="--", color="grey", label="tuned weak model alone")
    axis.scatter([strong.large_tokens], [strong.gold_reward], color="black", zorder=4, label=strong.method)
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel("large-model tokens per prompt (log)")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
