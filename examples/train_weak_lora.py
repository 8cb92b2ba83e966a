"""Tune the *tuned* side of a weak pair: a LoRA adapter on a small causal LM, trained with peft.

Supervised fine-tuning on the preferred responses. The data is either JSON lines with a "prompt"
(text or chat messages) and a "response" (loss on the response tokens only), or plain text, one
training example per line (loss on every token). The adapter is saved as safetensors, with the
tokenizer, and its ``adapter_config.json`` records the base model, so that

    pair = WeakPair.from_pretrained(OUT_DIR)      # tuned = base + adapter, untuned = base

is the weak pair (or ``w2s-generate generate --adapter OUT_DIR ...`` on the command line).

Prompts are encoded by the package's one rule (``w2s_generate.prompt_format.encode_prompt``), the
one the pair scores with: through the tokenizer's chat template when it has one (text prompts as one
user message), or raw with ``--no-chat-template``; responses without special tokens, followed by
end-of-sequence. The choice is recorded next to the adapter (``w2s_prompt_format.json``), and
``WeakPair.from_pretrained(OUT_DIR)`` reads prompts the same way.

Example:
    python examples/train_weak_lora.py --base gpt2 --data preferred.jsonl --out weak-lora
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.pytorch_utils import Conv1D

from w2s_generate.prompt_format import encode_prompt, resolve_chat_template, write_prompt_format

IGNORE = -100  # label of the tokens without loss (prompt, padding)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_weak_lora.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", required=True, help="the small model to tune (local path or hub id)")
    parser.add_argument("--data", required=True, help="JSON lines (prompt/response) or a text file")
    parser.add_argument("--out", required=True, help="folder for the adapter and the tokenizer")
    parser.add_argument(
        "--format",
        choices=("auto", "jsonl", "text"),
        default="auto",
        help="data format; auto: jsonl for .jsonl/.json files, else text",
    )
    parser.add_argument("--epochs", type=int, default=3, help="passes over the data (default 3)")
    parser.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (default 5e-4)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per step (default 8)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    parser.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default 2 * rank)")
    parser.add_argument(
        "--target-modules",
        default="auto",
        help="comma-separated module names; 'auto' (default): every linear layer including the output "
        "layer (lm_head); 'all-linear': peft's choice, every linear layer except the output layer",
    )
    parser.add_argument("--max-length", type=int, default=512, help="tokens per example (default 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--no-chat-template", action="store_true", help="never format prompts with one")
    parser.add_argument("--allow-pickle", action="store_true", help="also load .bin (pickle) base weights")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


# --------------------------------------------------------------------------- data


def read_examples(path: Path, fmt: str) -> list[tuple[object | None, str]]:
    """``(prompt, response)`` pairs; a text line is ``(None, line)``. ValueError names a bad line."""
    if fmt == "auto":
        fmt = "jsonl" if path.suffix in (".jsonl", ".json") else "text"
    examples: list[tuple[object | None, str]] = []
    with open(path, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            if fmt == "text":
                examples.append((None, text.rstrip("\n")))
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {line}: not valid JSON ({error.msg})") from None
            if not isinstance(data, dict) or not isinstance(data.get("response"), str):
                raise ValueError(f'{path} line {line}: expected {{"prompt": ..., "response": TEXT}}')
            prompt = data.get("prompt", "")
            if not isinstance(prompt, (str, list)):
                raise ValueError(f'{path} line {line}: "prompt" must be text or a list of chat messages')
            examples.append((prompt, data["response"]))
    if not examples:
        raise ValueError(f"{path} holds no training examples")
    return examples


def encode_examples(examples, tokenizer, max_length: int, use_chat_template: bool) -> list[tuple[list, list]]:
    """``(input_ids, labels)`` per example, labels ``IGNORE`` on the prompt; at most ``max_length`` tokens."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    encoded, dropped = [], 0
    for prompt, response in examples:
        if prompt is None:  # a plain text line: loss on every token
            prompt_ids = []
            response_ids = list(tokenizer(response, add_special_tokens=True)["input_ids"]) + eos
        else:
            prompt_ids = encode_prompt(tokenizer, prompt, chat_template=use_chat_template)
            response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"]) + eos
        ids = (prompt_ids + response_ids)[:max_length]
        labels = ([IGNORE] * len(prompt_ids) + response_ids)[:max_length]
        if all(label == IGNORE for label in labels[1:]):
            dropped += 1  # the prompt fills the window: nothing to learn from
            continue
        encoded.append((ids, labels))
    if dropped:
        print(f"skipped {dropped} examples whose prompt fills --max-length", file=sys.stderr)
    return encoded


def collate(batch: list[tuple[list, list]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``B`` examples: ``input_ids``, ``attention_mask``, ``labels``, each ``[B, T]``."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


# --------------------------------------------------------------------------- model


def resolve_target_modules(model: torch.nn.Module, spec: str) -> str | list[str]:
    """peft ``target_modules`` for ``--target-modules``.

    ``auto`` is every linear layer *including the output layer*: with attention/MLP projections only,
    a small model barely picks up a lexical preference in a short run, while a low-rank update of the
    output layer learns "prefer these words" almost at once.
    """
    if spec == "all-linear":
        return spec
    if spec != "auto":
        return [name.strip() for name in spec.split(",") if name.strip()]
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D))
    }
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is output:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def base_reference(base: str) -> str:
    """What adapter_config.json records as the base: an absolute path for a local folder, else the hub id."""
    path = Path(base)
    return str(path.resolve()) if path.is_dir() else base


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)

    try:
        examples = read_examples(Path(args.data), args.format)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tokenizer = AutoTokenizer.from_pretrained(args.base, trust_remote_code=args.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        args.base,
        dtype=torch.float32,
        use_safetensors=None if args.allow_pickle else True,
        trust_remote_code=args.trust_remote_code,
    )
    rows = model.get_output_embeddings().weight.shape[0]
    if len(tokenizer) < rows // 2:  # transformers 5 makes an empty tokenizer when the files are missing
        print(
            f"error: the tokenizer of {args.base} has {len(tokenizer)} tokens for {rows} output rows: "
            "save the tokenizer next to the model",
            file=sys.stderr,
        )
        return 2
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    use_template = resolve_chat_template(tokenizer, False if args.no_chat_template else None)
    try:
        data = encode_examples(examples, tokenizer, args.max_length, use_template)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    target_modules = resolve_target_modules(model, args.target_modules)
    config = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha if args.alpha is not None else 2 * args.rank,
        lora_dropout=0.0,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # GPT-2 mixes Conv1D projections and a Linear lm_head: peft fixes fan_in_fan_out per layer
        # and says so once for each kind. The tied-embeddings note is about merging the adapter or
        # non-safetensors formats; this adapter is saved as safetensors and never merged.
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to")
        warnings.filterwarnings("ignore", message="Model has `tie_word_embeddings=True`")
        model = get_peft_model(model, config)
    # Set explicitly: peft would otherwise record whatever name the base was loaded under.
    model.peft_config["default"].base_model_name_or_path = base_reference(args.base)
    model.to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{len(data)} examples; LoRA r={args.rank} on {target_modules}: {trainable:,} trainable parameters")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = math.ceil(len(data) / args.batch_size)
    model.train()
    with tqdm(total=args.epochs * steps_per_epoch, disable=args.no_progress, desc="train") as bar:
        for epoch in range(args.epochs):
            order = torch.randperm(len(data), generator=generator).tolist()
            total = 0.0
            for start in range(0, len(order), args.batch_size):
                batch = collate([data[i] for i in order[start : start + args.batch_size]], pad_id)
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                value = loss.item()
                total += value
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}")
            bar.write(f"epoch {epoch + 1}: mean loss {total / steps_per_epoch:.4f}")
    model.eval()

    out.mkdir(parents=True, exist_ok=True)
    # save_embedding_layers=False: the adapter holds only the LoRA weights, never a copy of the base
    # output/embedding layers (peft would add them because lm_head is a target).
    model.save_pretrained(out, safe_serialization=True, save_embedding_layers=False)
    tokenizer.save_pretrained(out)
    write_prompt_format(out, use_template)
    base = model.peft_config["default"].base_model_name_or_path
    print(
        f"\nSaved the LoRA adapter and the tokenizer to {out} (base model: {base}).\n"
        "Use it as a weak pair (tuned = base + adapter, untuned = base):\n\n"
        "    from w2s_generate import WeakPair\n"
        f"    pair = WeakPair.from_pretrained({str(out)!r})\n\n"
        "or from the command line:\n\n"
        f"    w2s-generate generate --model STRONG_MODEL --adapter {out} --method cbs \\\n"
        "        --prompts prompts.jsonl --out results.jsonl"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
