"""A tiny build configuration: a build that runs end to end in seconds on a CPU."""

from __future__ import annotations

TINY = {
    "generate": {"samples": 2, "max_tokens": 64},
    "phase1": {
        "epochs": 1,
        "max_seq_len": 384,
        "batch_tokens": 1024,
        "micro_batch_tokens": 512,
        "min_steps_per_epoch": 2,
    },
    "phase2": {
        "epochs": 1,
        "max_seq_len": 384,
        "batch_tokens": 1024,
        "micro_batch_tokens": 512,
        "min_steps_per_epoch": 2,
    },
    "eval": {"max_new_tokens": 8},
}
