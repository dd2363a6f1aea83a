"""What a teacher is to generation: the :class:`Teacher` protocol, its requests and results."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

from pipeline.errors import ServiceError, UsageError

Messages = Sequence[Mapping[str, str]]
"""One chat: a list of ``{"role": ..., "content": ...}`` messages."""


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters of one batch of requests (OpenAI semantics)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, not {self.max_tokens}")
        if self.temperature < 0:
            raise UsageError(f"temperature must not be negative, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], not {self.top_p}")


@dataclass(frozen=True)
class Completion:
    """The teacher's answer to one request."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class Failure:
    """A request that failed on its own (too long, timed out) without aborting the batch."""

    reason: str


@dataclass
class TeacherStats:
    """Counters of a teacher's work; safe to update from several threads.

    ``calls`` counts answered requests (completions and failures), ``retries`` extra attempts,
    ``busy_seconds`` the summed duration of the requests (for the embedded model: the time spent
    generating), ``wall_seconds`` the time spent inside :meth:`Teacher.chat`.
    """

    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_seconds: float = 0.0
    wall_seconds: float = 0.0
    retries: int = 0
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def add(
        self,
        *,
        calls: int = 0,
        failures: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        busy_seconds: float = 0.0,
        wall_seconds: float = 0.0,
        retries: int = 0,
    ) -> None:
        """Add to the counters atomically."""
        with self._lock:
            self.calls += calls
            self.failures += failures
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.busy_seconds += busy_seconds
            self.wall_seconds += wall_seconds
            self.retries += retries

    def as_dict(self) -> dict[str, int | float]:
        """The counters as a JSON-ready dict."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


class TeacherError(ServiceError):
    """The teacher is unreachable, refuses requests, or answers nonsense; the run cannot go on.

    ``str(error)`` is for the operator (CLI output, the App's log): it names the teacher's
    address, never its credentials. ``public`` is the same failure said for a pull request
    comment: it names the teacher's model, never its address, and quotes nothing the server said.

    Context for whoever renders it: ``base_url`` (credentials already stripped), ``status`` (the
    HTTP status, when the teacher answered one) and ``problem``, one of :data:`PROBLEMS`.
    """

    def __init__(
        self,
        message: str,
        public: str | None = None,
        *,
        base_url: str | None = None,
        status: int | None = None,
        problem: str = "failed",
    ) -> None:
        super().__init__(message)
        self.public = public or "the teacher failed"
        self.base_url = base_url
        self.status = status
        self.problem = problem if problem in PROBLEMS else "failed"


#: What went wrong with a teacher, for choosing advice: no connection; repeated server errors or
#: timeouts; a request refused; credentials refused; not an OpenAI-compatible API; anything else.
PROBLEMS = frozenset(
    {"unreachable", "overloaded", "refused", "credentials", "not-openai", "failed"}
)


@runtime_checkable
class Teacher(Protocol):
    """What synthetic data generation needs from a teacher model."""

    identity: str
    """Stable id for cache keys, e.g. ``openai:<base_url>:<model>`` or ``embedded:<name>``
    (never with credentials; it is written into provenance files)."""
    public_name: str
    """What a pull request comment may call this teacher: the model's name, never its address."""
    context_window: int
    stats: TeacherStats

    def count_tokens(self, messages: Messages) -> int:
        """Tokens of the rendered chat prompt (exact with a known tokenizer, else more)."""
        ...

    def chat(self, requests: Sequence[Messages], params: GenParams) -> list[Completion | Failure]:
        """Answer every request; results come in request order."""
        ...

    def close(self) -> None:
        """Release connections or model memory."""
        ...


def positive_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    return None


def public_model_name(model: str) -> str:
    """A model id as a comment may show it: its last path part (llama.cpp reports the model
    file's full path as its id), printable characters only, at most 80 of them."""
    name = model.replace("\\", "/").rstrip("/").rpartition("/")[2]
    name = "".join(c for c in name if c.isprintable())[:80]
    return name or "teacher"
