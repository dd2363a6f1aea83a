"""The teacher model seam: one interface over an OpenAI-compatible server or the embedded model.

Synthetic data generation talks to a *teacher* through :class:`Teacher`. Two implementations:

* :class:`OpenAITeacher` speaks ``/v1/chat/completions`` to any OpenAI-compatible server
  (llama.cpp, llama-cpp-python, vLLM, ...). Requests run in a bounded thread pool so a server with
  several slots stays busy; transient failures (connection errors, 429, 5xx) are retried with
  backoff; anything that cannot work (unreachable, refused, nonsense answers) raises
  :class:`TeacherError` with a message that says what to do.
* :class:`EmbeddedTeacher` runs a Hugging Face model in-process (the embedded SmolLM2) with
  batched, left-padded generation.

The modules: :mod:`.types` (the protocol and its results), :mod:`.budget` (token counting and
the context window), :mod:`.openai` and :mod:`.embedded` (the two teachers).

Both enforce the context window *before* sending: a prompt's token count plus ``max_tokens`` must
fit. ``max_tokens`` shrinks to the room left when that is still useful, otherwise the request
becomes a :class:`Failure` without reaching the teacher. This prevents the HTTP 400 "maximum
context length" errors that stop InstructLab's SDG runs.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pipeline.errors import UsageError
from pipeline.redact import redact
from pipeline.sdg.teacher.budget import (
    DEFAULT_CONTEXT_WINDOW,
    MIN_COMPLETION_TOKENS,
    TokenCounter,
    chat_template_counter,
    estimate_text_tokens,
    estimate_tokens,
    fit_max_tokens,
)
from pipeline.sdg.teacher.embedded import EmbeddedTeacher
from pipeline.sdg.teacher.openai import OpenAITeacher
from pipeline.sdg.teacher.types import (
    Completion,
    Failure,
    GenParams,
    Messages,
    Teacher,
    TeacherError,
    TeacherStats,
    public_model_name,
)

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "MIN_COMPLETION_TOKENS",
    "Completion",
    "EmbeddedTeacher",
    "Failure",
    "GenParams",
    "Messages",
    "OpenAITeacher",
    "Teacher",
    "TeacherError",
    "TeacherStats",
    "TokenCounter",
    "chat_template_counter",
    "estimate_text_tokens",
    "estimate_tokens",
    "fit_max_tokens",
    "make_teacher",
    "public_model_name",
]


# -- choosing a teacher -------------------------------------------------------------------------


def make_teacher(
    spec: str,
    *,
    cache_dir: Path,
    concurrency: int = 4,
    context_window: int | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
) -> Teacher:
    """The teacher named by ``--teacher``: ``embedded`` or the URL of an OpenAI-compatible API.

    ``api_key`` is sent as a bearer token; ``timeout`` bounds each HTTP request, in seconds.
    Neither applies to the embedded model.
    """
    if concurrency < 1:
        raise UsageError(
            f"the teacher's concurrency must be at least 1, not {concurrency}",
            setting="concurrency",
        )
    if context_window is not None and context_window < 1:
        raise UsageError(
            f"the teacher's context window must be positive, not {context_window}",
            setting="context_window",
        )
    if spec == "embedded":
        from pipeline import embedded

        return EmbeddedTeacher(embedded.model_dir(cache_dir), max_context=context_window or 2048)
    if urlsplit(spec).scheme in ("http", "https"):
        return OpenAITeacher(
            spec,
            api_key=api_key or None,
            concurrency=concurrency,
            context_window=context_window,
            timeout=timeout,
        )
    raise UsageError(
        f"unknown teacher {redact(spec)!r}: use 'embedded' (the built-in SmolLM2) or the URL of an "
        "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1",
        setting="teacher",
    )
