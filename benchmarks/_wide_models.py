"""A wide copy of a Llama that computes exactly the same function: a large model the demo's pair drafts well.

``widen(model, hidden, intermediate, layers)`` embeds a trained Llama (hidden ``h``, intermediate
``i``, ``n`` heads of ``head_dim`` d) in a wider and deeper one (hidden ``H``, intermediate ``I``,
``H / d`` heads of the same ``d``, ``layers`` blocks) whose logits are the original's:

* the original weights sit in the leading blocks of every matrix (rows and columns ``[:h]``, heads
  ``[:n]``, MLP units ``[:i]``) and the original layers come first;
* the residual stream's extra dimensions stay exactly zero: the embedding's columns past ``h`` are
  zero, and so is every weight that writes into the stream outside the original block (``o_proj``
  and ``down_proj``: rows past ``h``, and the columns of the new heads and new MLP units);
* the weights that only read the stream into new heads or new MLP units (q/k/v rows of new heads,
  gate/up rows of new units, and every weight of the appended layers but ``o_proj``/``down_proj``,
  which are zero) are random, so the wide model does the full work of its size on them; their
  results are multiplied by the zero weights above and never reach the output;
* RMSNorm over ``[x, 0]`` sees the mean square ``ms * h / H``:
  ``rsqrt(ms * h/H + eps * h/H) = sqrt(H/h) * rsqrt(ms + eps)``, so the norm's eps is scaled by
  ``h / H`` and its leading ``h`` weights by ``sqrt(h / H)`` (1/8 and 1/sqrt(8) for 128 -> 1024);
* the output layer keeps the original rows over the first ``h`` columns, zero past them (untied
  when the original is).

``check_same_function`` asserts that the two models' logits agree and that the extra dimensions of
every hidden state are exactly zero.
"""

from __future__ import annotations

import copy
import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# The --models wide sizes: demo strong (hidden 128, 4 layers) -> 1024 wide, 6 layers, >= 100M parameters.
WIDE = {"hidden": 1024, "intermediate": 4096, "layers": 6}


def widen(
    model: LlamaForCausalLM, hidden: int, intermediate: int, layers: int, seed: int = 0, std: float = 0.02
) -> LlamaForCausalLM:
    """A ``hidden``-wide, ``layers``-deep Llama computing ``model``'s function (see the module docstring)."""
    config = model.config
    h, i, n = config.hidden_size, config.intermediate_size, config.num_attention_heads
    d = getattr(config, "head_dim", None) or h // n
    kv = config.num_key_value_heads
    if kv != n:
        raise ValueError(f"widen keeps every head's own key and value: num_key_value_heads {kv} != heads {n}")
    if hidden % d or hidden < h or intermediate < i or layers < config.num_hidden_layers:
        raise ValueError(
            f"widen needs hidden >= {h} (a multiple of head_dim {d}), intermediate >= {i}, layers >= "
            f"{config.num_hidden_layers}; got {hidden}, {intermediate}, {layers}"
        )
    wide_config = LlamaConfig(
        **{
            **config.to_dict(),
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": hidden // d,
            "num_key_value_heads": hidden // d,
            "head_dim": d,
            "rms_norm_eps": config.rms_norm_eps * h / hidden,
        }
    )
    wide_config.tie_word_embeddings = config.tie_word_embeddings
    torch.manual_seed(seed)
    wide = LlamaForCausalLM(wide_config).to(torch.float32)
    wide.generation_config = copy.deepcopy(model.generation_config)
    norm_scale = math.sqrt(h / hidden)
    source = model.state_dict()

    def random_(weight: torch.Tensor) -> torch.Tensor:
        return weight.normal_(0.0, std)

    def norm(weight: torch.Tensor, original: torch.Tensor | None) -> None:
        weight.fill_(1.0)  # past h the norm only scales zeros
        if original is not None:
            weight[:h] = original.float() * norm_scale

    with torch.no_grad():
        for weight in wide.parameters():
            weight.zero_()
        wide.model.embed_tokens.weight[:, :h] = source["model.embed_tokens.weight"].float()
        if not wide_config.tie_word_embeddings:
            wide.lm_head.weight[:, :h] = source["lm_head.weight"].float()
        norm(wide.model.norm.weight, source["model.norm.weight"])
        for index, layer in enumerate(wide.model.layers):
            prefix = f"model.layers.{index}."
            old = {k[len(prefix) :]: v.float() for k, v in source.items() if k.startswith(prefix)}
            attention, mlp = layer.self_attn, layer.mlp
            norm(layer.input_layernorm.weight, old.get("input_layernorm.weight"))
            norm(layer.post_attention_layernorm.weight, old.get("post_attention_layernorm.weight"))
            # Readers of the stream are random; writers into it (o_proj, down_proj) stay zero.
            for reader in (attention.q_proj, attention.k_proj, attention.v_proj, mlp.gate_proj, mlp.up_proj):
                random_(reader.weight)
            if old:  # an original layer: its weights in the leading blocks
                for name in ("q_proj", "k_proj", "v_proj"):
                    getattr(attention, name).weight[: n * d, :h] = old[f"self_attn.{name}.weight"]
                    getattr(attention, name).weight[: n * d, h:] = 0.0
                attention.o_proj.weight[:h, : n * d] = old["self_attn.o_proj.weight"]
                for name in ("gate_proj", "up_proj"):
                    getattr(mlp, name).weight[:i, :h] = old[f"mlp.{name}.weight"]
                    getattr(mlp, name).weight[:i, h:] = 0.0
                mlp.down_proj.weight[:h, :i] = old["mlp.down_proj.weight"]
    return wide.eval()


@torch.no_grad()
def check_same_function(
    original: LlamaForCausalLM, wide: LlamaForCausalLM, inputs: dict, atol: float = 1e-4
) -> float:
    """Assert that ``wide`` computes ``original``'s logits (within ``atol``) on ``inputs``, with the
    residual stream's extra dimensions exactly zero; returns the largest logit difference."""
    h = original.config.hidden_size
    mask = inputs["attention_mask"].bool()
    expected = original(**inputs).logits.float()
    out = wide(**inputs, output_hidden_states=True)
    difference = float((out.logits.float() - expected)[mask].abs().max())
    assert difference <= atol, f"the widened model's logits differ from the original's by {difference:.2e}"
    for layer, state in enumerate(out.hidden_states):
        assert not state[..., h:].any(), f"hidden state {layer} has non-zero dimensions past {h}"
    return difference
