"""Align the weak side with what the search found: preference pairs from traces, DPO on the LoRA adapter.

The third step of "Explanation, Debate, Align" (arXiv 2409.07335), closed into a loop: a search's
trace holds, per round and prompt, the candidates it kept and the ones it discarded, with the pair's
scores. [`preference_pairs`][w2s_generate.preference_pairs] turns them into ``(prompt, chosen,
rejected)`` records; [`align_adapter`][w2s_generate.align_adapter] tunes the pair's LoRA adapter on
them with trl's ``DPOTrainer``; the search then runs again with the updated pair.

With a LoRA pair the fit is direct: DPO's reference is the adapter as it was before the call (trl
keeps a frozen copy), so DPO's implicit reward ``beta * (log p_new - log p_old)`` is ``beta`` times
the change of the pair's own log-ratio (the base, the pair's untuned side, cancels). DPO raises the
pair's score of what the search kept over what it discarded, relative to the pair before.

Requires the ``align`` extra (trl and datasets): ``pip install -e '.[align]'`` in a clone of the
repository.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase


def preference_pairs(
    trace: Sequence,
    prompts: Sequence[str],
    decode: Callable[[list[int]], str] | None = None,
    pairs_per_round: int = 1,
    last_round_only: bool = False,
) -> list[dict]:
    """``(prompt, chosen, rejected)`` records from a search trace: kept candidates over discarded ones.

    In every round and for every prompt, the best kept candidate is paired with the worst discarded
    one, the second best with the second worst, and so on (``pairs_per_round`` pairs at most).
    A candidate not kept that reads the same as a response the prompt kept (in that round or an
    earlier one) is a copy the search merged into the kept one, never a rejected response; identical
    discarded candidates count once.

    Args:
        trace: ``out.trace`` of a search run with ``return_trace=True``
            ([`RoundTrace`][w2s_generate.RoundTrace] per round).
        prompts: the prompt text of each prompt of the search, in order (what the pair should read).
        decode: ``ids -> text`` for traces of token ids (e.g. ``lambda ids: tok.decode(ids,
            skip_special_tokens=True)``); not needed for traces of text (a text sampler's).
        pairs_per_round: pairs per prompt and round at most.
        last_round_only: only the last round each prompt took part in, whose candidates are whole
            responses (trl's DPO appends an end-of-sequence token to every completion, which fits whole
            responses better than the partial ones of earlier rounds).

    Returns:
        One dict per pair: ``prompt``, ``chosen``, ``rejected`` (the columns trl's DPO reads), and
        ``round``, ``score_chosen``, ``score_rejected`` (the pair's log-ratios in the trace).

    Examples:
        >>> out = model.generate(**inputs, custom_generate=cbs, do_sample=True, max_new_tokens=8,
        ...                      return_dict_in_generate=True, return_trace=True)
        >>> records = preference_pairs(out.trace, prompts, decode=tok.decode)
        >>> sorted(records[0])
        ['chosen', 'prompt', 'rejected', 'round', 'score_chosen', 'score_rejected']
    """
    if isinstance(prompts, str):
        raise ValueError(f"prompts must be a list (one per prompt); got a str: wrap it, [{prompts!r:.40}].")
    if isinstance(pairs_per_round, bool) or not isinstance(pairs_per_round, int) or pairs_per_round < 1:
        raise ValueError(f"pairs_per_round must be an integer >= 1; got {pairs_per_round!r}.")
    last_round = {}
    for round_trace in trace:
        for b in set(round_trace.prompt_index.tolist()):
            last_round[b] = round_trace.round
    kept_texts: dict[int, set[str]] = {}  # per prompt, every response kept so far
    records: list[dict] = []
    for round_trace in trace:
        owners = round_trace.prompt_index.tolist()
        scores = round_trace.scores.tolist()
        kept = round_trace.kept.tolist()
        if owners and max(owners) >= len(prompts):
            raise ValueError(f"the trace holds prompt {max(owners)} but {len(prompts)} prompts were given.")
        texts = [_text(response, decode) for response in round_trace.responses]
        for b in sorted(set(owners)):
            rows = [r for r, o in enumerate(owners) if o == b]
            best_kept = sorted((r for r in rows if kept[r]), key=lambda r: -scores[r])
            kept_so_far = kept_texts.setdefault(b, set())
            kept_so_far.update(texts[r] for r in best_kept)
            if last_round_only and last_round[b] != round_trace.round:
                continue
            # A row not kept that reads as a kept response is a copy the search merged into it (one
            # slot per distinct response), not a discarded one; identical discarded rows count once.
            worst_dropped = []
            seen = set(kept_so_far)
            for r in sorted((r for r in rows if not kept[r]), key=lambda r: scores[r]):
                if texts[r] not in seen:
                    seen.add(texts[r])
                    worst_dropped.append(r)
            for chosen, rejected in list(zip(best_kept, worst_dropped))[:pairs_per_round]:
                records.append(
                    {
                        "prompt": prompts[b],
                        "chosen": texts[chosen],
                        "rejected": texts[rejected],
                        "round": round_trace.round,
                        "score_chosen": scores[chosen],
                        "score_rejected": scores[rejected],
                    }
                )
    return records


@contextlib.contextmanager
def _quiet_training():
    """No progress bars from datasets and no deprecation notes from trl's and transformers' internals."""
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            yield
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _text(response, decode: Callable[[list[int]], str] | None) -> str:
    if isinstance(response, str):
        return response
    if decode is None:
        raise ValueError(
            "the trace holds token ids: pass decode= (e.g. tokenizer.decode) to turn them into text."
        )
    return decode(list(response))


def align_adapter(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[dict],
    beta: float = 0.1,
    learning_rate: float = 5e-4,
    epochs: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    output_dir: str | None = None,
):
    """Tune ``model``'s active LoRA adapter on preference records with trl's DPO; returns it in eval mode.

    The reference is the adapter as it was before the call: trl keeps a frozen copy as a second
    adapter on the same model (named ``"ref"``, removed afterwards), so no model is copied. Only the
    active adapter's weights train; the base (the pair's untuned side) is untouched.

    trl's DPO reads log-probs from the output layer's weight directly, so an adapter on the output layer
    (``lm_head`` in ``target_modules``) is refused; adapt the attention and MLP projections instead.

    Args:
        model: a peft model whose active adapter is the pair's tuned side (e.g. the model behind
            ``WeakPair.from_peft``).
        tokenizer: its tokenizer (needs a padding token).
        records: ``prompt``/``chosen``/``rejected`` dicts, e.g. from
            [`preference_pairs`][w2s_generate.preference_pairs].
        beta: DPO's temperature (how far the adapter may move from the base).
        learning_rate: the optimizer's step size.
        epochs: passes over the records.
        batch_size: records per step.
        seed: seed of the shuffling and of dropout.
        output_dir: where the trainer may write (default: a temporary folder, removed afterwards;
            no checkpoint is saved either way).

    Examples:
        >>> from peft import LoraConfig, get_peft_model
        >>> peft_model = get_peft_model(small, LoraConfig(r=2, target_modules=["c_attn"]))
        >>> records = [{"prompt": "the film was", "chosen": " great", "rejected": " dull"}] * 4
        >>> peft_model = align_adapter(peft_model, tok, records, batch_size=2)
    """
    try:
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import DPOConfig, DPOTrainer
    except ImportError as error:
        raise ImportError(
            "align_adapter needs trl and datasets: pip install -e '.[align]' in a clone of w2s-generate"
        ) from error
    if not hasattr(model, "peft_config") or not hasattr(model, "active_adapter"):
        raise TypeError(
            f"model must be a peft model with a LoRA adapter (the pair's tuned side); got a {type(model).__name__}."
        )
    columns = {"prompt", "chosen", "rejected"}
    if not records:
        raise ValueError(
            "records is empty: there is nothing to align on (a search trace with one beam has no pairs)."
        )
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not columns <= set(record):
            raise ValueError(f"records[{i}] must be a dict with {sorted(columns)}; got {record!r:.80}.")
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "the tokenizer has no padding token: set tokenizer.pad_token (e.g. to its EOS token)."
        )
    from peft.tuners.tuners_utils import BaseTunerLayer

    if isinstance(model.get_output_embeddings(), BaseTunerLayer):
        raise ValueError(
            "the adapter includes the output layer (lm_head in target_modules): trl's DPO computes log-probs "
            "from lm_head.weight directly, so that part would be ignored and never trained. Align an adapter "
            "whose target_modules leave the output layer out (attention and MLP projections)."
        )
    adapter = model.active_adapter
    if "ref" in model.peft_config:
        raise ValueError(
            "the model already has an adapter named 'ref', the name trl's DPO gives its frozen reference copy: "
            "rename or delete that adapter first."
        )
    for name, parameter in model.named_parameters():
        parameter.requires_grad = f".{adapter}." in name and ("lora_" in name or "modules_to_save" in name)
    dataset = Dataset.from_list([{k: r[k] for k in columns} for r in records])
    with tempfile.TemporaryDirectory() as scratch, _quiet_training():
        config = DPOConfig(
            output_dir=output_dir or scratch,
            beta=beta,
            learning_rate=learning_rate,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            seed=seed,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = DPOTrainer(
            model=model, ref_model=None, args=config, train_dataset=dataset, processing_class=tokenizer
        )
        trainer.remove_callback(PrinterCallback)  # it prints the training metrics to stdout
        try:
            trainer.train()
        finally:
            if "ref" in model.peft_config:  # the reference copy trl added
                model.delete_adapter("ref")
            model.set_adapter(adapter)
    for parameter in model.parameters():
        parameter.requires_grad = False
    return model.eval()
