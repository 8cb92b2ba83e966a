"""Summarization: a small pair tuned for summaries steers a larger base model.

The large model (default Qwen/Qwen2.5-7B, a base model) reads "Article: ...\\nTL;DR:" and writes the
summary; chunk-level beam search with W,K,L = 2,2,30 (the paper's long-form settings) keeps the chunks
that a small pair prefers: log p_tuned(summary | prompt) - log p_untuned(summary | prompt).

The default pair, Qwen/Qwen2.5-0.5B-Instruct (tuned) against Qwen/Qwen2.5-0.5B (untuned), is a
stand-in: an off-the-shelf chat-tuned vs base small model, whose ratio rewards "what an assistant
would write" rather than summaries specifically. A pair tuned for summaries is the real thing, e.g. a
LoRA adapter trained on TL;DR data with examples/train_weak_lora.py and passed as --adapter.

For each article it prints a plain sample of the large model (the baseline; --no-baseline skips it)
and the CBS summary, each with the pair's log-ratio. Summaries end at the first newline (--stop).

Example:
    python examples/summarization.py                               # the real models (~16 GB)
    python examples/summarization.py --articles articles.jsonl --output summaries.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # run as a script or loaded from elsewhere: _common sits next to this file
    sys.path.insert(0, HERE)
import _common as common  # noqa: E402

import w2s_generate as w2s  # noqa: E402

PROMPT_FORMAT = "Article: {article}\nTL;DR:"
ARTICLES = [
    "The city council voted on Tuesday to turn the old railway yard into a public park. The plan, "
    "debated for six years, includes a playground, a community garden and a cycle path linking two "
    "neighbourhoods. Work starts next spring and should take eighteen months; the cost will be shared "
    "between the city and a regional fund.",
    "A team of marine biologists has counted more young sea turtles on the island's beaches this year "
    "than in any year since records began. They credit a ban on night-time beach lighting, which used "
    "to lead hatchlings away from the sea, and volunteers who guard the nests during the summer.",
    "The local library will stay open until ten in the evening on weekdays from next month. Librarians "
    "say students asked for a quiet place to work after school, and a survey found that most visitors "
    "would use the later hours. Weekend opening times do not change.",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="summarization.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    models = parser.add_argument_group("models (local paths or hub ids)")
    models.add_argument(
        "--strong", default="Qwen/Qwen2.5-7B", metavar="M", help="the large model (default Qwen/Qwen2.5-7B)"
    )
    common.add_pair_arguments(parser, tuned="Qwen/Qwen2.5-0.5B-Instruct", untuned="Qwen/Qwen2.5-0.5B")
    data = parser.add_argument_group("articles and results")
    data.add_argument(
        "--articles",
        metavar="FILE",
        help='JSON lines with an "article", or a text file with one article per paragraph (blank-line '
        "separated); default: 3 built-in articles",
    )
    data.add_argument("--num-articles", type=int, default=None, metavar="N", help="use the first N articles")
    data.add_argument(
        "--stop",
        default="\n",
        metavar="TEXT",
        help="a summary ends at this text (default a newline; \\n is read as a newline; an empty string: only "
        "at end-of-sequence)",
    )
    data.add_argument("--no-baseline", action="store_true", help="skip the plain-sampling baseline")
    data.add_argument("--output", metavar="FILE", help="write every summary as JSON lines to FILE")
    common.add_sampling_arguments(parser, max_new_tokens=128, beam=(2, 2, 30), batch_size=1)
    common.add_loading_arguments(parser)
    return parser


def summarize(model, tokenizer, pair, prompts, method, args, eos):
    """Response ids of one batch of prompts and the search's log-ratios (``None`` for the baseline)."""
    inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    kwargs = {
        "do_sample": True,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "return_dict_in_generate": True,
        "tokenizer": tokenizer,
    }
    stop = args.stop.replace("\\n", "\n")
    if stop:
        kwargs["stop_strings"] = [stop]
    if method == "cbs":
        strategy = w2s.ChunkBeamSearch(pair, args.beam_width, args.successors, args.chunk_length)
        kwargs.update(strategy=strategy, weak_prompts=prompts)
    out = model.generate(**inputs, **kwargs)
    ids = common.response_ids(out.sequences, inputs["input_ids"].shape[1], eos, tokenizer.pad_token_id)
    ratios = getattr(out, "log_ratios", None)
    return ids, None if ratios is None else [float(r) for r in ratios]


def run(args: argparse.Namespace) -> tuple[list[dict], dict[str, float]]:
    """One record per article and method, and the seconds each method took."""
    if args.articles:
        articles = common.read_prompt_file(args.articles, field="article", blocks=True)
    else:
        articles = list(ARTICLES)
    if not all(isinstance(a, str) for a in articles):
        raise common.RecipeError("the articles must be text")
    articles = articles[: args.num_articles] if args.num_articles else articles
    prompts = [PROMPT_FORMAT.format(article=a.strip()) for a in articles]

    model, tokenizer = common.load_causal_lm(args.strong, args)
    pair = common.load_pair(args)
    w2s.enable(model)
    shared = common.shares_vocabulary(pair, tokenizer)
    eos = common.eos_ids(model, tokenizer)
    methods = ["cbs"] if args.no_baseline else ["sample", "cbs"]
    records: list[dict] = []
    seconds: dict[str, float] = {}
    for method in methods:
        torch.manual_seed(args.seed)
        seconds[method] = 0.0
        for batch in common.batches(prompts, args.batch_size):
            with common.Timer() as timer:
                ids, ratios = summarize(model, tokenizer, pair, batch, method, args, eos)
            seconds[method] += timer.seconds
            texts = [tokenizer.decode(r, skip_special_tokens=True) for r in ids]
            if ratios is None:
                ratios = pair.score(batch, ids if shared else texts).tolist()
            for prompt, response, text, ratio in zip(batch, ids, texts, ratios):
                records.append(
                    {
                        "method": method,
                        "prompt": prompt,
                        "summary": text.strip(),
                        "response": text,
                        "response_ids": response,
                        "log_ratio": ratio,
                    }
                )
    return records, seconds


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        records, seconds = run(args)
    except common.RecipeError as error:
        return common.fail(str(error))
    except ValueError as error:  # e.g. a prompt longer than a weak model's context
        print(f"error: {error}", file=sys.stderr)
        return 1
    W, K, L = args.beam_width, args.successors, args.chunk_length
    names = {"sample": "plain sample", "cbs": f"CBS W={W} K={K} L={L}"}
    prompts = list(dict.fromkeys(r["prompt"] for r in records))
    for i, prompt in enumerate(prompts, start=1):
        article = prompt.split("\n")[0].removeprefix("Article: ")
        print(f"## Article {i}: {common.one_line(article, 90)}")
        for record in (r for r in records if r["prompt"] == prompt):
            print(
                f"   {names[record['method']]:<20} log-ratio {record['log_ratio']:+8.3f}  {json.dumps(record['summary'], ensure_ascii=False)}"
            )
        print()
    rows = []
    for method, time_taken in seconds.items():
        ratios = [r["log_ratio"] for r in records if r["method"] == method]
        rows.append([names[method], sum(ratios) / len(ratios), time_taken])
    print(common.format_table(["method", "mean log-ratio", "seconds"], rows))
    if args.output:
        common.write_jsonl(args.output, records)
        print(f"\nwrote {len(records)} summaries to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
