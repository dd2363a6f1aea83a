"""Models the tests share: where the embedded SmolLM2 is converted once, and a tiny student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The converted embedded model is cached here once for every test module (and CI run).
EMBEDDED_CACHE = Path("/tmp/labbot-cache")


def smol_tokenizer() -> Any:
    """SmolLM2's real tokenizer and chat template."""
    from transformers import AutoTokenizer

    from pipeline.embedded import model_dir

    return AutoTokenizer.from_pretrained(str(model_dir(EMBEDDED_CACHE)))


def tiny_llama_config(vocab: int, **overrides: Any) -> Any:
    """The tests' one tiny model: a 2-layer random Llama (hidden size 64) over ``vocab`` tokens,
    seconds to train on a CPU. ``overrides`` set the token ids, context length and tying."""
    from transformers import LlamaConfig

    settings: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    }
    settings.update(overrides)
    return LlamaConfig(**settings)


def tiny_student(folder: Path) -> Path:
    """The tiny Llama with SmolLM2's tokenizer: a real chat template, seconds to train."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = smol_tokenizer()
    config = tiny_llama_config(
        len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
