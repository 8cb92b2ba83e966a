"""Instruction following: an off-the-shelf 7B chat pair steers a 70B instruct model of another family.

The pair is HuggingFaceH4/zephyr-7b-beta (DPO-tuned, the tuned side) against
HuggingFaceH4/mistral-7b-sft-beta (the model it was tuned from). The large model,
meta-llama/Meta-Llama-3-70B-Instruct by default, has another tokenizer and another chat template:

- the large model reads each instruction formatted with ITS chat template;
- the pair reads the same instruction as chat messages (``weak_prompts=[messages]``), formatted with
  the pair's own template;
- chunk-level beam search (W,K,L = 2,2,30, the paper's instruction-following settings) gets the large
  model's tokenizer (``tokenizer=``) and bridges the two vocabularies through text: each candidate's
  text is re-encoded with the pair's tokenizer and scored by log p_zephyr - log p_sft.

The large model loads with ``device_map="auto"`` (spread over every visible GPU) in bfloat16 on GPU.
With ``--endpoint URL`` no large model is loaded: it is reached through an OpenAI-compatible completions
server (vLLM, TGI, SGLang, ``transformers serve``) with ``CompletionsSampler`` and ``cbs.run``; its
tokenizer is still loaded (small) for the chat template.

It prints each instruction, the response and the pair's log-ratio of the response.

Example:
    python examples/instruction_following.py                                     # 70B + 2x7B on GPUs
    python examples/instruction_following.py --endpoint http://127.0.0.1:8000/v1  # 70B behind vLLM
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

INSTRUCTIONS = [
    "Write a short, friendly email inviting my team to a picnic on Friday.",
    "Explain to a ten-year-old why the sky is blue.",
    "Give me three tips for staying focused while working from home.",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instruction_following.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models = parser.add_argument_group("large model (a local path or hub id)")
    models.add_argument(
        "--strong",
        default="meta-llama/Meta-Llama-3-70B-Instruct",
        metavar="M",
        help="the large instruct model (default meta-llama/Meta-Llama-3-70B-Instruct)",
    )
    models.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="the large model's tokenizer and chat template (default: --strong)",
    )
    models.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="cap the large model's share of each GPU (e.g. 60GiB) to leave room for the pair",
    )
    common.add_pair_arguments(
        parser,
        tuned="HuggingFaceH4/zephyr-7b-beta",
        untuned="HuggingFaceH4/mistral-7b-sft-beta",
        weak_device_map=True,
    )
    server = parser.add_argument_group("a served large model")
    server.add_argument(
        "--endpoint",
        metavar="URL",
        help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1: sample the large model's chunks there "
        "instead of loading it",
    )
    server.add_argument(
        "--served-model", metavar="NAME", help="the model name the server knows (default: --strong)"
    )
    server.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", metavar="NAME", help="where the API key is read from"
    )
    server.add_argument(
        "--extra-body",
        default="{}",
        metavar="JSON",
        help="more request fields, e.g. '{\"top_k\": 50}' for vLLM (--top-k is not sent otherwise)",
    )
    server.add_argument("--retries", type=int, default=3, metavar="N", help="retries per request (default 3)")
    server.add_argument(
        "--timeout", type=float, default=120.0, metavar="S", help="seconds per request (default 120)"
    )
    data = parser.add_argument_group("instructions and results")
    data.add_argument(
        "--prompts",
        metavar="FILE",
        help='JSON lines with a "prompt" (text or chat messages), or one instruction per line (default: 3 built in)',
    )
    data.add_argument("--num-prompts", type=int, default=None, metavar="N", help="use the first N prompts")
    data.add_argument(
        "--system", metavar="TEXT", help="a system message put before every instruction (that has none)"
    )
    data.add_argument("--output", metavar="FILE", help="write every response as JSON lines to FILE")
    common.add_sampling_arguments(parser, max_new_tokens=256, beam=(2, 2, 30), batch_size=1)
    common.add_loading_arguments(parser, device_map="auto")
    return parser


def as_messages(prompt, system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def chat_text(tokenizer, messages) -> str:
    """The large model's prompt: the messages through its own chat template."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def max_memory(size: str | None) -> dict | None:
    if size is None or not torch.cuda.is_available():
        return None
    return {i: size for i in range(torch.cuda.device_count())}


def make_search(args, tokenizer=None) -> w2s.ChunkBeamSearch:
    """CBS over the weak pair; ``tokenizer`` is the large model's (the cross-tokenizer bridge)."""
    pair = common.load_pair(args, device_map=args.weak_device_map)
    check_template(pair.tokenizer, args.weak_tokenizer or args.adapter or args.tuned)
    return w2s.ChunkBeamSearch(pair, args.beam_width, args.successors, args.chunk_length, tokenizer=tokenizer)


def run_local(args, conversations) -> tuple[list[dict], float]:
    """The large model loaded here, across every GPU with --device-map auto."""
    model, tokenizer = common.load_causal_lm(
        args.strong, args, tokenizer=args.tokenizer, max_memory=max_memory(args.max_memory)
    )
    check_template(tokenizer, args.tokenizer or args.strong)
    # The pair loads after the large model, into the room it leaves (see --max-memory). With the large
    # model's tokenizer the search bridges the two vocabularies through text.
    cbs = make_search(args, tokenizer)
    eos = common.eos_ids(model, tokenizer)
    torch.manual_seed(args.seed)
    records, seconds = [], 0.0
    for batch in common.batches(conversations, args.batch_size):
        texts = [chat_text(tokenizer, m) for m in batch]
        # The template already holds the special tokens (BOS): add none twice.
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            model.device
        )
        with common.Timer() as timer:
            out = model.generate(
                **inputs,
                custom_generate=cbs,
                weak_prompts=batch,
                do_sample=True,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                return_dict_in_generate=True,
            )
        seconds += timer.seconds
        ids = common.response_ids(out.sequences, inputs["input_ids"].shape[1], eos, tokenizer.pad_token_id)
        responses = [tokenizer.decode(r, skip_special_tokens=True) for r in ids]
        for messages, text, response, ratio in zip(batch, texts, responses, out.log_ratios.tolist()):
            records.append(
                {"prompt": messages, "prompt_text": text, "response": response, "log_ratio": ratio}
            )
    return records, seconds


def run_remote(args, conversations) -> tuple[list[dict], float]:
    """The large model behind --endpoint: chunks come from the server, the pair scores them here."""
    tokenizer = common.load_tokenizer(args.tokenizer or args.strong, args)
    check_template(tokenizer, args.tokenizer or args.strong)
    try:
        extra = json.loads(args.extra_body)
    except json.JSONDecodeError as error:
        raise common.RecipeError(f"--extra-body is not valid JSON: {error}") from None
    if not isinstance(extra, dict):
        raise common.RecipeError("--extra-body must be a JSON object")
    try:
        sampler = w2s.CompletionsSampler(
            args.endpoint,
            args.served_model or args.strong,
            api_key_env=args.api_key_env,
            temperature=args.temperature,
            top_p=args.top_p,
            retries=args.retries,
            timeout=args.timeout,
            seed=args.seed,
            extra_body=extra,
        )
    except ValueError as error:
        raise common.RecipeError(f"--endpoint: {error}") from error
    cbs = make_search(args)  # text in, text out: no tokenizer to bridge
    torch.manual_seed(args.seed)
    records, seconds = [], 0.0
    for batch in common.batches(conversations, args.batch_size):
        texts = [chat_text(tokenizer, m) for m in batch]
        with common.Timer() as timer:
            out = cbs.run(texts, sampler=sampler, weak_prompts=batch, max_new_tokens=args.max_new_tokens)
        seconds += timer.seconds
        for messages, text, response, ratio in zip(batch, texts, out.texts, out.log_ratios.tolist()):
            records.append(
                {"prompt": messages, "prompt_text": text, "response": response, "log_ratio": ratio}
            )
    return records, seconds


def check_template(tokenizer, source: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise common.RecipeError(
            f"the tokenizer of {source} has no chat template: use an instruct/chat model, or pass --tokenizer"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prompts = common.read_prompt_file(args.prompts) if args.prompts else list(INSTRUCTIONS)
        prompts = prompts[: args.num_prompts] if args.num_prompts else prompts
        conversations = [as_messages(p, args.system) for p in prompts]
        run = run_remote if args.endpoint is not None else run_local
        records, seconds = run(args, conversations)
    except common.RecipeError as error:
        return common.fail(str(error))
    except (ValueError, w2s.RemoteSamplerError) as error:  # a prompt too long, a server down
        print(f"error: {error}", file=sys.stderr)
        return 1
    for i, record in enumerate(records, start=1):
        instruction = record["prompt"][-1]["content"]
        print(f"## {i}. {common.one_line(instruction)}\n")
        print(record["response"].strip())
        print(f"\nlog-ratio {record['log_ratio']:+.3f}\n")
    where = f"served at {args.endpoint}" if args.endpoint else "loaded locally"
    W, K, L = args.beam_width, args.successors, args.chunk_length
    print(f"{len(records)} responses, CBS W={W} K={K} L={L}, large model {where}: {seconds:.1f} s")
    if args.output:
        common.write_jsonl(args.output, records)
        print(f"wrote {len(records)} responses to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
