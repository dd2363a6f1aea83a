"""Training records for the tests: copying tasks that a tiny model learns in a few steps."""

from __future__ import annotations

import random
from typing import Any

WORDS = "red green blue cyan amber olive coral ivory black white pearl slate".split()


def records(n: int, seed: int = 0, words: int = 4) -> list[dict[str, Any]]:
    """Copying tasks: easy to learn, so the loss must fall."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"Repeat: {text}"},
                    {"role": "assistant", "content": text},
                ],
                "unmask": False,
                "metadata": {},
            }
        )
    return out
