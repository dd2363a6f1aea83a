"""How long to wait before retrying: one exponential backoff with full jitter, for every caller.

The job queue, the GitHub client and the teacher client all retry transient failures. Each keeps
its own base and cap, and all of them draw the delay the same way ("full jitter", as in the AWS
architecture blog's "Exponential Backoff And Jitter"): uniformly between zero and an exponential
ceiling. Spreading retries over the whole interval keeps clients that failed together from
retrying together.

>>> backoff_ceiling(1, base=2.0, cap=300.0)
2.0
>>> [backoff_ceiling(n, base=0.5, cap=8.0) for n in (1, 2, 3, 4, 5, 6)]
[0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
>>> backoff_ceiling(10**9, base=2.0, cap=300.0)  # no overflow, however many attempts
300.0
>>> import random
>>> 0.0 <= full_jitter(3, base=2.0, cap=300.0, rng=random.Random(1)) <= 8.0
True
"""

from __future__ import annotations

import random

__all__ = ["backoff_ceiling", "full_jitter"]

#: Beyond this exponent every ceiling is the cap (2.0 ** 1000 is still a finite float).
_MAX_EXPONENT = 1000


def backoff_ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The most to wait after failed attempt number ``attempt`` (1-based):
    ``min(cap, base * 2 ** (attempt - 1))``; ``base`` for attempt 1 or less."""
    if base < 0 or cap < 0:
        raise ValueError("backoff base and cap must not be negative")
    exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
    return min(cap, base * 2.0**exponent)


def full_jitter(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """A delay drawn uniformly from ``[0, backoff_ceiling(attempt, base=base, cap=cap)]``;
    ``rng`` makes it reproducible (the module's generator by default)."""
    ceiling = backoff_ceiling(attempt, base=base, cap=cap)
    uniform = rng.uniform if rng is not None else random.uniform
    return uniform(0.0, ceiling)
