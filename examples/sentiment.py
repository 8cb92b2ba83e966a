"""Controlled sentiment generation, the setting of the weak-to-strong search paper (arXiv 2405.19262).

A large model (gpt2-large) continues movie-review openings; a small pair, GPT-2 tuned on IMDB reviews
(lvwerra/gpt2-imdb) against plain GPT-2, steers it. Each method generates one continuation per prompt
and every output is scored by a sentiment classifier (lvwerra/distilbert-imdb, probability of
POSITIVE on prompt + continuation) and by the pair's log-likelihood ratio:

    sample   plain sampling from the large model (the baseline)
    bon      best-of-N by the pair's log-ratio, N = W*K (the same sampling budget as CBS)
    cbs      chunk-level beam search, W=4, K=4, L=5 (the paper's sentiment settings)
    token    token-level guidance with --beta (only when the large model and the pair share a vocabulary)

All with temperature 0.7, top-k 50 and 50 new tokens unless told otherwise. It prints one table row per
method: the mean positive probability, the mean log-ratio and the generation time.

Note: lvwerra/gpt2-imdb is tuned to *write IMDB reviews*, not to be positive, so its ratio against
GPT-2 rewards "IMDB-review-ness"; the paper's tuned model was tuned toward positive reviews. Swap in
such a pair with --tuned/--untuned, or train a LoRA one with examples/train_weak_lora.py (--adapter).

Example:
    python examples/sentiment.py                                # the real models (downloads ~4 GB)
    python examples/sentiment.py --num-prompts 32 --output sentiment.jsonl
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # run as a script or loaded from elsewhere: _common sits next to this file
    sys.path.insert(0, HERE)
import _common as common  # noqa: E402
from transformers import pipeline  # noqa: E402

import w2s_generate as w2s  # noqa: E402

METHODS = ("sample", "bon", "cbs", "token")
PROMPTS = [
    "I rented this movie last weekend and",
    "The acting in this film was",
    "I went to see this movie with my family, and",
    "After all the hype, I expected",
    "This is the kind of film that",
    "The director's previous work was brilliant, but this one",
    "I have seen a lot of horror movies, and",
    "The plot of this movie",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentiment.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    models = parser.add_argument_group("models (local paths or hub ids)")
    models.add_argument(
        "--strong", default="gpt2-large", metavar="M", help="the large model (default gpt2-large)"
    )
    models.add_argument(
        "--classifier",
        default="lvwerra/distilbert-imdb",
        metavar="C",
        help="a text-classification model (default lvwerra/distilbert-imdb)",
    )
    models.add_argument(
        "--positive-label",
        default="POSITIVE",
        metavar="NAME",
        help="the classifier's positive label (default POSITIVE)",
    )
    common.add_pair_arguments(parser, tuned="lvwerra/gpt2-imdb", untuned="gpt2")
    data = parser.add_argument_group("prompts and results")
    data.add_argument(
        "--prompts",
        metavar="FILE",
        help='review openings: one per line, or JSON lines with a "prompt" (default: 8 built-in openings)',
    )
    data.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        metavar="N",
        help="use N prompts, cycling through the list when N exceeds it (default: each prompt once)",
    )
    data.add_argument(
        "--methods",
        default=",".join(METHODS),
        metavar="LIST",
        help=f"comma-separated subset of {','.join(METHODS)} (default: all)",
    )
    data.add_argument(
        "--beta", type=float, default=1.0, metavar="B", help="token guidance strength (default 1.0)"
    )
    data.add_argument("--output", metavar="FILE", help="write every output as JSON lines to FILE")
    common.add_sampling_arguments(parser, max_new_tokens=50, beam=(4, 4, 5))
    common.add_loading_arguments(parser)
    return parser


def generate(
    model, tokenizer, pair, prompts, method, args, eos
) -> tuple[list[list[int]], list[float] | None]:
    """Response ids of one batch, and the search's own log-ratios (searches only)."""
    inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    kwargs = {
        "do_sample": True,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "return_dict_in_generate": True,
    }
    W, K, L = args.beam_width, args.successors, args.chunk_length
    if method == "cbs":
        kwargs.update(strategy=w2s.ChunkBeamSearch(pair, W, K, L), weak_prompts=prompts, tokenizer=tokenizer)
    elif method == "bon":
        kwargs.update(strategy=w2s.BestOfN(pair, n=W * K), weak_prompts=prompts, tokenizer=tokenizer)
    elif method == "token":
        kwargs.update(strategy=w2s.TokenGuidance(pair, beta=args.beta), tokenizer=tokenizer)
    out = model.generate(**inputs, **kwargs)
    ids = common.response_ids(out.sequences, inputs["input_ids"].shape[1], eos, tokenizer.pad_token_id)
    ratios = getattr(out, "log_ratios", None)
    return ids, None if ratios is None else [float(r) for r in ratios]


def positive_probabilities(classifier, texts: list[str], label: str, max_length: int | None) -> list[float]:
    """P(``label``) of each text under the classifier (texts truncated to what it can read)."""
    extra = {"truncation": True} if max_length is None else {"truncation": True, "max_length": max_length}
    outputs = classifier(texts, top_k=None, **extra)
    probs = []
    for scores in outputs:
        by_label = {s["label"].upper(): s["score"] for s in scores}
        if label.upper() not in by_label:
            raise common.RecipeError(
                f"the classifier has no label {label!r} (its labels: {', '.join(sorted(by_label))}); "
                "pass --positive-label"
            )
        probs.append(float(by_label[label.upper()]))
    return probs


def load_classifier(args):
    """The classifier pipeline (one device: --device-map's when it names one) and its input limit."""
    device = args.device_map
    if device is None or not (device == "cpu" or device.startswith("cuda")):
        device = "cuda:0" if torch.cuda.is_available() else "cpu"  # auto, balanced, ...: a small model
    try:
        classifier = pipeline(
            "text-classification",
            model=args.classifier,
            device=device,
            trust_remote_code=args.trust_remote_code,
            model_kwargs={"use_safetensors": None if args.allow_pickle else True},
        )
    except (OSError, ValueError) as error:
        raise common.RecipeError(f"could not load the classifier {args.classifier}: {error}") from error
    limits = [
        getattr(classifier.model.config, "max_position_embeddings", None),
        classifier.tokenizer.model_max_length if classifier.tokenizer.model_max_length < 10**6 else None,
    ]
    limits = [n for n in limits if n]
    return classifier, (min(limits) if limits else None)


def run(args: argparse.Namespace) -> tuple[list[dict], list[list]]:
    """Every output (one record per method and prompt) and the table rows."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise common.RecipeError(
            f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {METHODS}"
        )
    prompts = common.read_prompt_file(args.prompts) if args.prompts else list(PROMPTS)
    if not all(isinstance(p, str) for p in prompts):
        raise common.RecipeError("the prompts must be text (review openings), not chat messages")
    count = len(prompts) if args.num_prompts is None else args.num_prompts
    if count < 1:
        raise common.RecipeError(f"--num-prompts must be >= 1, got {count}")
    prompts = [prompts[i % len(prompts)] for i in range(count)]

    model, tokenizer = common.load_causal_lm(args.strong, args)
    pair = common.load_pair(args)
    classifier, max_length = load_classifier(args)
    w2s.enable(model)
    shared = common.shares_vocabulary(pair, tokenizer)
    if "token" in methods and not shared:
        print(
            f"note: {args.strong} and the pair have different vocabularies: token guidance skipped "
            "(the searches bridge the two through text)",
            file=sys.stderr,
        )
        methods.remove("token")
    eos = common.eos_ids(model, tokenizer)

    records: list[dict] = []
    table: list[list] = []
    for method in methods:
        torch.manual_seed(args.seed)
        ids, ratios, seconds = [], [], 0.0
        for batch in common.batches(prompts, args.batch_size):
            with common.Timer() as timer:
                batch_ids, batch_ratios = generate(model, tokenizer, pair, batch, method, args, eos)
            seconds += timer.seconds
            if batch_ratios is None:  # plain sampling, token guidance: score what was generated
                texts = [tokenizer.decode(r, skip_special_tokens=True) for r in batch_ids]
                batch_ratios = pair.score(batch, batch_ids if shared else texts).tolist()
            ids += batch_ids
            ratios += batch_ratios
        texts = [tokenizer.decode(r, skip_special_tokens=True) for r in ids]
        positive = positive_probabilities(
            classifier, [p + t for p, t in zip(prompts, texts)], args.positive_label, max_length
        )
        for prompt, response, text, ratio, prob in zip(prompts, ids, texts, ratios, positive):
            records.append(
                {
                    "method": method,
                    "prompt": prompt,
                    "response": text,
                    "response_ids": response,
                    "log_ratio": ratio,
                    "positive": prob,
                }
            )
        table.append([method, sum(positive) / len(positive), sum(ratios) / len(ratios), seconds])
    return records, table


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        records, table = run(args)
    except common.RecipeError as error:
        return common.fail(str(error))
    except ValueError as error:  # e.g. a prompt longer than a weak model's context
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"{len(records) // len(table)} prompts, {args.max_new_tokens} new tokens, T={args.temperature}, top-k {args.top_k}"
    )
    print(common.format_table(["method", "mean positive prob", "mean log-ratio", "seconds"], table))
    first: dict[str, dict] = {}
    for record in records:
        first.setdefault(record["method"], record)
    print(f"\nFirst prompt: {records[0]['prompt']!r}")
    for method, record in first.items():
        print(f"  {method:>6}: {common.one_line(record['response'])!r}")
    if args.output:
        common.write_jsonl(args.output, records)
        print(f"\nwrote {len(records)} outputs to {args.output}")
    if not all(math.isfinite(r["log_ratio"]) for r in records):
        print("warning: some log-ratios are not finite", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
