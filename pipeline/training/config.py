"""The build configuration: embedded defaults, a YAML file's overrides, validation.

Every key is optional; unknown keys and wrong types are errors that name the key. The resolved
configuration is printed at the start of a build and saved in its run directory.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.taxonomy.findings import Finding, Severity
from pipeline.taxonomy.yamlsource import compose, construct, decode

#: Sized so that `labbot build` on the sample taxonomy finishes on 2 CPU cores in ~15 minutes.
DEFAULTS: dict[str, Any] = {
    "student": "embedded",
    "teacher": "embedded",
    "teacher_concurrency": 4,
    "teacher_context_window": None,
    "seed": 42,
    "system_prompt": "You are a helpful assistant.",
    "generate": {"samples": 8, "critic": True, "max_tokens": 160},
    "mix": {"replay_fraction": 0.3, "skill_cap": 0},
    "phase1": {
        "lr": 3e-4,
        "epochs": 3,
        "batch_tokens": 2048,
        "micro_batch_tokens": 1024,
        "warmup_ratio": 0.1,
        "lora": True,
        "lora_r": 16,
        "lora_alpha": 32,
        "max_seq_len": 768,
        "keep_checkpoints": 2,
    },
    "phase2": {
        "lr": 2e-4,
        "epochs": 3,
        "batch_tokens": 2048,
        "micro_batch_tokens": 1024,
        "warmup_ratio": 0.1,
        "lora": True,
        "lora_r": 16,
        "lora_alpha": 32,
        "max_seq_len": 768,
        "keep_checkpoints": 2,
    },
    "eval": {"max_new_tokens": 64, "batch_size": 8},
}

_PHASE_KEYS = {
    "lr": float,
    "epochs": int,
    "batch_tokens": int,
    "micro_batch_tokens": int,
    "warmup_ratio": float,
    "min_steps_per_epoch": int,
    "lora": bool,
    "lora_r": int,
    "lora_alpha": int,
    "lora_dropout": float,
    "weight_decay": float,
    "grad_clip": float,
    "max_seq_len": int,
    "gradient_checkpointing": bool,
    "keep_checkpoints": int,
    "checkpoint_every_steps": int,
    "seed": int,
    "parallel": str,  # ddp or fsdp; only matters under torchrun / accelerate launch
}
_SCHEMA: dict[str, Any] = {
    "student": str,
    "teacher": str,
    "teacher_concurrency": int,
    "teacher_context_window": (int, type(None)),
    "seed": int,
    "system_prompt": str,
    "generate": {"samples": int, "critic": bool, "max_tokens": int, "temperature": float},
    "mix": {"replay_fraction": float, "skill_cap": int},
    "phase1": _PHASE_KEYS,
    "phase2": _PHASE_KEYS,
    "eval": {"max_new_tokens": int, "batch_size": int},
}


def _check(data: Any, schema: dict[str, Any], where: str, problems: list[str]) -> None:
    if not isinstance(data, dict):
        problems.append(f"{where or 'the file'} must be a mapping")
        return
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in schema:
            problems.append(f"unknown key '{path}' (known: {', '.join(sorted(schema))})")
            continue
        want = schema[key]
        if isinstance(want, dict):
            _check(value, want, path, problems)
            continue
        types = want if isinstance(want, tuple) else (want,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            names = " or ".join(t.__name__ for t in types)
            problems.append(f"'{path}' must be {names}, not {value!r}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults merged with ``overrides``.

    Raises:
        ConfigError: naming every unknown key and wrong type.
    """
    overrides = overrides or {}
    problems: list[str] = []
    _check(overrides, _SCHEMA, "", problems)
    if problems:
        raise ConfigError(
            "build config",
            [Finding("config.invalid", Severity.ERROR, 1, 1, p) for p in problems],
        )
    return _merge(DEFAULTS, overrides)


def load(path: Path) -> dict[str, Any]:
    """A build config file (YAML), resolved against the defaults."""
    text, findings = decode(path.read_bytes())
    if text is None:
        raise ConfigError(str(path), findings)
    root, findings = compose(text)
    if findings:
        raise ConfigError(str(path), findings)
    if root is None:
        return resolve({})
    data, findings = construct(root)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors or data is None:
        raise ConfigError(str(path), errors)
    if not isinstance(data, dict):
        raise ConfigError(
            str(path), [Finding("config.type", Severity.ERROR, 1, 1, "must be a mapping")]
        )
    return resolve(data)
