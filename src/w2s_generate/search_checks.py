"""What a chunk-level search refuses before any forward: generate options and inputs it cannot honour.

Each check names the bad value and the fix; none runs a model.
"""

from __future__ import annotations

from transformers import GenerationConfig, LogitsProcessorList

from ._compat import cache_in_forward_kwargs, output_rows, processor_traits
from .boundaries import ChunkBoundary
from .strategy import refuse_options

#: generate options the search's own loop does not apply: option -> why, and what to use instead.
NOT_APPLIED = {
    "output_scores": "the pair's log-ratio of each returned sequence is out.log_ratios, every round's in out.trace",
    "output_logits": "the pair's log-ratio of each returned sequence is out.log_ratios, every round's in out.trace",
    "output_attentions": "it returns no per-step model outputs",
    "output_hidden_states": "it returns no per-step model outputs",
    "prompt_lookup_num_tokens": "every candidate token is sampled from the large model itself; for fewer large-model "
    "forwards use draft_tokens=",
    "dola_layers": "DoLa contrasts the model's layers inside transformers' own decoding loop",
}


def check_boundary_processors(boundary: ChunkBoundary, processors: LogitsProcessorList) -> None:
    """Refuse the processors that read a row's length from the batch width when chunks end early."""
    if boundary.is_fixed:
        return
    for processor in processors:
        name = type(processor).__name__
        option = processor_traits(processor).reads_width
        by_prompt_width = name == "RepetitionPenaltyLogitsProcessor" and (
            getattr(processor, "prompt_ignore_length", None) is not None
        )
        if option or by_prompt_width:
            raise ValueError(
                f"{name} ({option or 'repetition_penalty ignoring the prompt'}) reads a "
                "row's length from the batch width, which chunks that end at stop strings or tokens make "
                "unequal: use a fixed chunk_length with it, or drop it."
            )


def check_model_kwargs(name: str, model_kwargs: dict, config: GenerationConfig, return_trace: bool) -> None:
    """Refuse what generate hands the search that it would not apply: inputs other than input_ids, a
    prefilled cache, a trace with nowhere to go, and generate options of other decoding loops."""
    if model_kwargs.get("inputs_embeds") is not None:
        raise ValueError(
            f"inputs_embeds: {name} needs input_ids (the pair reads the prompts' token ids or text); pass "
            "input_ids instead."
        )
    if model_kwargs.get("token_type_ids") is not None:
        raise ValueError(
            f"token_type_ids: {name} does not pass them to the large model (its forwards take the ids, the "
            "mask and the positions); drop them."
        )
    cache = cache_in_forward_kwargs(model_kwargs)
    held = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
    if held:
        raise ValueError(
            f"cache/past_key_values: {name} was given a KV cache that already holds {held} tokens; it prefills "
            "its own cache from input_ids: drop the cache and pass the whole prompt as input_ids."
        )
    if return_trace and not config.return_dict_in_generate:
        raise ValueError(
            "return_trace=True needs return_dict_in_generate=True: the trace comes in the output object "
            "(out.trace)."
        )
    refuse_options(config, name, NOT_APPLIED)


def check_stop_token_ids(boundary: ChunkBoundary, model) -> None:
    """Refuse stop token ids past the large model's table: a chunk could never end at them."""
    rows = output_rows(model)
    bad = next((i for i in boundary.stop_token_ids if rows is not None and i >= rows), None)
    if bad is not None:
        raise ValueError(
            f"ChunkBoundary's stop_token_ids holds {bad}, outside the large model's {rows} rows: the model never "
            "samples it. Give ids of the large model's tokenizer (or stop_strings= for text)."
        )


def check_call(name: str, beam_width: int, model, config: GenerationConfig) -> None:
    """Refuse generate settings the search cannot keep the meaning of (encoder-decoder, greedy, beams)."""
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"{name} drives decoder-only models; {model.config.model_type} is encoder-decoder.")
    if not config.do_sample:
        raise ValueError(
            f"{name} samples candidate chunks: pass do_sample=True (with temperature/top_k/top_p as wished)."
        )
    if config.num_beams != 1:
        raise ValueError(f"num_beams={config.num_beams}: {name} keeps its own beams; set beam_width instead.")
    if config.num_return_sequences < 1:
        raise ValueError(
            f"num_return_sequences={config.num_return_sequences} must be at least 1 (and at most "
            f"beam_width={beam_width})."
        )
    if config.num_return_sequences > beam_width:
        raise ValueError(
            f"num_return_sequences={config.num_return_sequences} exceeds beam_width={beam_width}: the search "
            "keeps only beam_width hypotheses per prompt. Raise beam_width or ask for fewer sequences."
        )
