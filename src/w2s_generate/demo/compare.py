"""The main job: every method on the same prompts and seeds, at matched large-model budgets.

Runs the strong model alone, the tuned weak model alone, best-of-N, token-level guidance and
chunk-level beam search on the demo task; measures the gold reward (which the search never sees),
fluency, the large-model tokens each method sampled and wall time; prints a table and draws reward
against large-model compute (the shape of the paper's figures).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

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
        gold_reward: mean gold reward of prompt + response.
        fluency: mean share of grammatical sentences.
        large_tokens: large-model tokens forwarded per prompt (decoding steps, all rows).
        seconds: wall time for all prompts.
        example: one full text.
    """

    method: str
    family: str
    budget: int
    gold_reward: float
    fluency: float
    large_tokens: float
    seconds: float
    example: str


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
    from tqdm import tqdm

    tokenizer = models.tokenizer
    strong = models.strong
    tuned = models.tuned_weak()
    pair = WeakPair.from_peft(tuned, tokenizer)
    openings = demo_prompts(n_prompts, seed)
    sampling = dict(do_sample=True, temperature=temperature, top_k=top_k, max_new_tokens=max_new_tokens)
    sampling.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)

    plans: list[tuple[str, str, int, torch.nn.Module, object]] = [
        ("strong alone", "strong", 1, strong, None),
        ("tuned weak alone", "tuned", 0, tuned, None),
        (f"token guidance (beta={beta:g})", "token", 1, strong, TokenGuidance(pair, beta=beta)),
    ]
    for budget in budgets:
        width = max(int(round(budget**0.5)), 1)
        plans.append((f"best-of-{budget}", "bon", budget, strong, BestOfN(pair, n=budget)))
        plans.append(
            (
                f"CBS W={width} K={budget // width} L={chunk_length}",
                "cbs",
                width * (budget // width),
                strong,
                ChunkBeamSearch(pair, width, budget // width, chunk_length),
            )
        )
    results = []
    for name, family, budget, model, strategy in tqdm(plans, desc="methods", disable=not progress):
        counter = _TokenCounter(strong)
        started = time.perf_counter()
        texts = generate_texts(model, tokenizer, openings, strategy, seed, batch_size, **sampling)
        seconds = time.perf_counter() - started
        counter.close()
        results.append(
            MethodResult(
                method=name,
                family=family,
                budget=budget,
                gold_reward=sum(map(gold_reward, texts)) / len(texts),
                fluency=sum(map(fluency, texts)) / len(texts),
                large_tokens=counter.tokens / len(openings),
                seconds=seconds,
                example=texts[0],
            )
        )
    return results


def format_table(rows: list[MethodResult]) -> str:
    """A markdown table of ``run_comparison`` results."""
    lines = [
        "| method | gold reward | fluency | large-model tokens / prompt | wall time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.gold_reward:+.3f} | {r.fluency:.3f} | {r.large_tokens:.0f} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[MethodResult], path: str | Path) -> Path:
    """Gold reward against large-model tokens per prompt, one curve per method family, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("The plot needs matplotlib: pip install 'w2s-generate[plot]'") from error
    strong = next(r for r in rows if r.family == "strong")
    figure, axis = plt.subplots(figsize=(6, 4))
    for family, label, marker in (("bon", "best-of-N", "s"), ("cbs", "chunk-level beam search", "o")):
        points = [strong] + sorted((r for r in rows if r.family == family), key=lambda r: r.large_tokens)
        axis.plot(
            [p.large_tokens for p in points], [p.gold_reward for p in points], marker=marker, label=label
        )
    for r in rows:
        if r.family == "token":
            axis.scatter([r.large_tokens], [r.gold_reward], marker="^", s=60, label=r.method, zorder=3)
        if r.family == "tuned":
            axis.axhline(r.gold_reward, linestyle="--", color="grey", label="tuned weak model alone")
    axis.scatter(
        [strong.large_tokens], [strong.gold_reward], color="black", zorder=4, label="strong model alone"
    )
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel("large-model tokens per prompt (log)")
    axis.set_ylabel("gold reward (never seen by the search)")
    axis.set_title("Weak-to-strong search on the offline review task")
    axis.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
