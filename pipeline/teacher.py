"""The teacher model seam: one interface over an OpenAI-compatible server or the embedded model.

Synthetic data generation talks to a *teacher* through :class:`Teacher`. Two implementations:

* :class:`OpenAITeacher` speaks ``/v1/chat/completions`` to any OpenAI-compatible server
  (llama.cpp, llama-cpp-python, vLLM, ...). Requests run in a bounded thread pool so a server with
  several slots stays busy; transient failures (connection errors, 429, 5xx) are retried with
  backoff; anything that cannot work (unreachable, refused, nonsense answers) raises
  :class:`TeacherError` with a message that says what to do.
* :class:`EmbeddedTeacher` runs a Hugging Face model in-process (the embedded SmolLM2) with
  batched, left-padded generation.

Both enforce the context window *before* sending: a prompt's token count plus ``max_tokens`` must
fit. ``max_tokens`` shrinks to the room left when that is still useful, otherwise the request
becomes a :class:`Failure` without reaching the teacher. This prevents the HTTP 400 "maximum
context length" errors that stop InstructLab's SDG runs.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pipeline.errors import PipelineError, UsageError
from pipeline.redact import redact, strip_credentials, url_credentials

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

Messages = Sequence[Mapping[str, str]]
"""One chat: a list of ``{"role": ..., "content": ...}`` messages."""

MIN_COMPLETION_TOKENS = 32
"""A request whose ``max_tokens`` would have to shrink below this fails instead."""

DEFAULT_CONTEXT_WINDOW = 4096
"""Assumed when a server does not say how long its context is (a warning is logged)."""

# Token estimate when no tokenizer is known (see estimate_tokens). The overheads cover role markers
# and the system prompt that some chat templates inject by themselves.
_PIECES = re.compile(r" ?[A-Za-z]+|\s+|[^A-Za-z\s]")
_SAFETY = 1.1
_MESSAGE_OVERHEAD = 8
_TEMPLATE_OVERHEAD = 32

_MAX_BACKOFF = 10.0
_MAX_RETRY_AFTER = 30.0


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


class TeacherError(PipelineError):
    """The teacher is unreachable, refuses requests, or answers nonsense; the run cannot go on.

    ``str(error)`` is for the operator (CLI output, the App's log): it names the teacher's
    address, never its credentials. ``public`` is the same failure said for a pull request
    comment: it names the teacher's model, never its address, and quotes nothing the server said.
    """

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or "the teacher failed"


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


def fit_max_tokens(prompt_tokens: int, params: GenParams, context_window: int) -> int | Failure:
    """The ``max_tokens`` to send so that the prompt plus the answer fit the context window.

    Returns ``params.max_tokens`` when it fits, less when only that much room is left (but at
    least ``MIN_COMPLETION_TOKENS``, or what was asked if that is smaller), else a Failure.
    """
    room = context_window - prompt_tokens
    if params.max_tokens <= room:
        return params.max_tokens
    floor = max(1, min(MIN_COMPLETION_TOKENS, params.max_tokens))
    if room >= floor:
        return room
    return Failure(
        f"prompt of {prompt_tokens} tokens does not fit the teacher's {context_window}-token "
        f"context (at least {floor} tokens must be left for the answer)"
    )


def estimate_text_tokens(text: str) -> int:
    """An upper estimate of a text's BPE tokens, for when the tokenizer is unknown.

    A word of up to five ASCII letters (with its leading space) counts as one token, a longer one
    as one per three letters; every digit, punctuation mark and run of whitespace counts as one;
    a non-ASCII character as its UTF-8 length minus one (CJK 2, emoji 3). Checked against
    SmolLM2's tokenizer, this over-counts English prose and code by about 50% and never
    under-counts digits, tables, JSON, hex, URLs, German, Chinese or emoji; 10% is added on top.
    """
    total = 0
    for match in _PIECES.finditer(text):
        piece = match.group()
        last = piece[-1]
        if last.isascii() and last.isalpha():
            letters = len(piece) - piece.startswith(" ")
            total += 1 if letters <= 5 else math.ceil(letters / 3)
        elif last.isascii():
            total += 1
        else:
            total += max(1, len(last.encode()) - 1)
    return math.ceil(total * _SAFETY)


def estimate_tokens(messages: Messages) -> int:
    """A conservative token count of a chat prompt when the tokenizer is unknown."""
    total = _TEMPLATE_OVERHEAD
    for message in messages:
        total += _MESSAGE_OVERHEAD + estimate_text_tokens(message.get("content", ""))
    return total


TokenCounter = Callable[[Messages], int]
"""A function giving the number of tokens of a chat prompt as the server renders it."""


def chat_template_counter(tokenizer: Any) -> TokenCounter:
    """Exact prompt-token counting with a Hugging Face tokenizer and its chat template."""

    def count(messages: Messages) -> int:
        text = tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(ids)

    return count


def _as_counter(tokenizer: object | None) -> TokenCounter | None:
    if tokenizer is None:
        return None
    if hasattr(tokenizer, "apply_chat_template"):
        return chat_template_counter(tokenizer)
    if callable(tokenizer):

        def count(messages: Messages) -> int:
            return int(tokenizer(messages))

        return count
    raise TypeError("tokenizer must be a Hugging Face tokenizer or a function of the messages")


# -- OpenAI-compatible servers ------------------------------------------------------------------

_OVERFLOW = re.compile(
    r"context (length|window)|maximum context|n_ctx|too (long|many tokens)", re.I
)
_LIMIT_PATTERNS = (
    re.compile(r"maximum context length is (\d+)", re.I),
    re.compile(r"context window of (\d+)", re.I),
    re.compile(r"context (?:length|size|window)\D{0,20}(\d+)", re.I),
    re.compile(r"n_ctx\D{0,5}(\d+)", re.I),
)
_PROMPT_PATTERNS = (
    re.compile(r"(\d+) (?:tokens )?in the (?:messages|prompt)", re.I),
    re.compile(r"requested tokens \((\d+)\)", re.I),
)


def _first_int(patterns: Sequence[re.Pattern[str]], text: str) -> int | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    return None


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _normalise_base_url(base_url: str) -> str:
    """The base URL without credentials, ending in ``/v1`` when it had no path."""
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"the teacher URL {redact(base_url)!r} is not an http(s) URL; pass the base URL of "
            "an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
        )
    url = strip_credentials(base_url).rstrip("/")
    if parts.path in ("", "/"):
        url += "/v1"
    return url


def public_model_name(model: str) -> str:
    """A model id as a comment may show it: its last path part (llama.cpp reports the model
    file's full path as its id), printable characters only, at most 80 of them."""
    name = model.replace("\\", "/").rstrip("/").rpartition("/")[2]
    name = "".join(c for c in name if c.isprintable())[:80]
    return name or "teacher"


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class _Retry(Exception):
    """An attempt failed in a way that another attempt may fix.

    ``kind`` is ``unreachable`` (no connection), ``timeout`` (no answer in time; the request
    fails alone) or ``server`` (429, 5xx, broken connection).
    """

    def __init__(
        self, what: str, kind: str = "server", delay: float | None = None, status: int = 0
    ) -> None:
        super().__init__(what)
        self.what = what
        self.kind = kind
        self.delay = delay
        self.status = status


class _Aborted(TeacherError):
    """Another request of the batch failed; this one stopped early."""


def _cause(futures: Sequence[Future[Any]], exc: BaseException) -> BaseException:
    """The error that aborted a batch, rather than a request that merely stopped because of it."""
    if not isinstance(exc, _Aborted):
        return exc
    for future in futures:
        if not future.cancelled():
            error = future.exception()
            if error is not None and not isinstance(error, _Aborted):
                return error
    return exc


class _Overflow(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OpenAITeacher:
    """A teacher behind an OpenAI-compatible HTTP API (``/v1/chat/completions``)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 120.0,
        retries: int = 3,
        context_window: int | None = None,
        tokenizer: object | None = None,
        backoff: float = 0.5,
    ) -> None:
        import httpx

        if concurrency < 1:
            raise UsageError(f"teacher concurrency must be at least 1, not {concurrency}")
        if retries < 0:
            raise UsageError(f"teacher retries must be 0 or more, not {retries}")
        if context_window is not None and context_window < 1:
            raise UsageError(f"the teacher's context window must be positive, not {context_window}")
        self.base_url = _normalise_base_url(base_url)
        credentials = url_credentials(base_url)
        self._secrets = tuple(s for s in (api_key, *(credentials or ())) if s)
        self.public_name = public_model_name(model) if model else ""
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.stats = TeacherStats()
        self._counter = _as_counter(tokenizer)
        self._scale = 1.0  # raised when the server counts more prompt tokens than we do
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        # An API key goes in a bearer header; credentials written in the URL (and only when there
        # is no key) become HTTP basic auth. Either way the URL kept and shown has none.
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        auth = httpx.BasicAuth(*credentials) if credentials and not api_key else None
        self._client = httpx.Client(
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        try:
            entry: dict[str, Any] = {"id": model}
            if model is None or context_window is None:
                entry = self._discover_model(model)
            if context_window is None:
                context_window = self._discover_context(entry)
        except BaseException:
            self._client.close()
            raise
        self.model: str = str(entry["id"])
        self.public_name = public_model_name(self.model)
        self.context_window = context_window
        self.identity = f"openai:{self.base_url}:{self.model}"

    # -- public API ----------------------------------------------------------------------------

    def count_tokens(self, messages: Messages) -> int:
        """Prompt tokens: exact with a tokenizer, else a conservative estimate."""
        raw = self._counter(messages) if self._counter else estimate_tokens(messages)
        with self._lock:
            scale = self._scale
        return raw if scale == 1.0 else math.ceil(raw * scale)

    def chat(self, requests: Sequence[Messages], params: GenParams) -> list[Completion | Failure]:
        """Send every request (at most ``concurrency`` at a time); results in request order."""
        start = time.monotonic()
        results: list[Completion | Failure | None] = [None] * len(requests)
        abort = threading.Event()
        try:
            if len(requests) == 1:
                results[0] = self._one(requests[0], params, abort)
            elif requests:
                workers = min(self.concurrency, len(requests))
                with ThreadPoolExecutor(workers, thread_name_prefix="teacher") as pool:
                    futures = [pool.submit(self._one, r, params, abort) for r in requests]
                    try:
                        for i, future in enumerate(futures):
                            results[i] = future.result()
                    except BaseException as exc:
                        abort.set()
                        for future in futures:
                            future.cancel()
                        raise _cause(futures, exc) from None
        finally:
            self.stats.add(wall_seconds=time.monotonic() - start)
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAITeacher({self.identity!r}, context_window={self.context_window})"

    # -- one request ---------------------------------------------------------------------------

    def _one(
        self, messages: Messages, params: GenParams, abort: threading.Event
    ) -> Completion | Failure:
        try:
            result = self._attempts(messages, params, abort)
        except BaseException:
            abort.set()  # stop the rest of the batch now, not when its turn to be read comes
            raise
        if isinstance(result, Failure):
            self.stats.add(calls=1, failures=1)
        else:
            self.stats.add(
                calls=1,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
            )
        return result

    def _attempts(
        self, messages: Messages, params: GenParams, abort: threading.Event
    ) -> Completion | Failure:
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if abort.is_set():
                raise _Aborted(f"the batch to the teacher at {self.base_url} was aborted")
            if attempt:
                self.stats.add(retries=1)
            counted = self.count_tokens(messages)
            fitted = fit_max_tokens(counted, params, self.context_window)
            if isinstance(fitted, Failure):
                return fitted
            try:
                return self._send(messages, params, fitted, counted)
            except _Overflow as exc:
                last = f"the teacher refused the prompt as too long: {exc.message}"
                self._learn_overflow(exc.message, counted)
                delay = 0.0
            except _Retry as exc:
                last = exc.what
                if attempt == self.retries:
                    if exc.kind == "timeout":
                        break
                    raise self._gave_up(exc) from None
                delay = exc.delay if exc.delay is not None else self._backoff(attempt)
            if delay > 0 and abort.wait(delay):
                raise _Aborted(f"the batch to the teacher at {self.base_url} was aborted")
        return Failure(f"{last} (after {self.retries + 1} tries)")

    def _backoff(self, attempt: int) -> float:
        base: float = min(_MAX_BACKOFF, self.backoff * (2**attempt))
        return base * random.uniform(0.75, 1.25)

    def _who(self) -> str:
        """The teacher as a pull request comment may name it."""
        return f"the teacher ({self.public_name})" if self.public_name else "the teacher"

    def _error(self, message: str, public: str) -> TeacherError:
        """A TeacherError whose operator message is cleaned of every secret labbot knows."""
        return TeacherError(redact(message, self._secrets), public)

    def _gave_up(self, exc: _Retry) -> TeacherError:
        if exc.kind == "unreachable":
            return self._error(
                f"cannot reach the teacher at {self.base_url}: {exc.what}; start it "
                "or pass --teacher embedded",
                f"{self._who()} cannot be reached",
            )
        if exc.kind == "timeout":
            public = f"{self._who()} did not answer in time"
        elif exc.status:
            public = f"{self._who()} keeps failing (HTTP {exc.status})"
        else:
            public = f"{self._who()} keeps failing"
        return self._error(
            f"the teacher at {self.base_url} keeps failing: {exc.what} "
            f"({self.retries + 1} tries); check the server's log, or lower "
            "--concurrency if it is overloaded",
            public,
        )

    def _send(
        self, messages: Messages, params: GenParams, max_tokens: int, counted: int
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        response = self._request("POST", f"{self.base_url}/chat/completions", body)
        if response.status_code != 200:
            message = self._error_message(response)
            if response.status_code == 400 and _OVERFLOW.search(message):
                raise _Overflow(message)
            raise self._error(
                f"the teacher at {self.base_url} refused a chat request with HTTP "
                f"{response.status_code}: {message}; check --teacher and the server's model",
                f"{self._who()} refused a request (HTTP {response.status_code})",
            )
        data = self._json(response, "/chat/completions")
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content")
            text = "" if content is None else content
            if not isinstance(text, str):
                raise TypeError("content is not a string")
            finish = str(choice.get("finish_reason") or "unknown")
            usage = data.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._error(
                f"the teacher at {self.base_url} answered nonsense: no choices[0].message.content "
                f"in {_snippet(response.text)!r} ({exc}); is it an OpenAI-compatible server?",
                f"{self._who()} answered something that is not a chat completion",
            ) from None
        if not isinstance(usage, dict):
            usage = {}
        prompt_tokens = _count(usage.get("prompt_tokens"))
        done = _count(usage.get("completion_tokens"))
        if prompt_tokens and prompt_tokens > counted:
            self._raise_scale(prompt_tokens, counted)
        if finish == "length" and prompt_tokens and done is not None and done < max_tokens:
            # The server cut the answer short of max_tokens: its context ends here.
            self._learn_limit(prompt_tokens + done)
        if done is None:
            done = 0 if not text else max(1, math.ceil(len(text.encode()) / 4))
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens if prompt_tokens is not None else counted,
            completion_tokens=done,
            finish_reason=finish,
        )

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """One HTTP exchange in a concurrency slot; transient problems raise :class:`_Retry`."""
        import httpx

        with self._slots:
            start = time.monotonic()
            try:
                response = self._client.request(method, url, json=body)
            except httpx.ConnectError as exc:
                raise _Retry(_connect_reason(exc), kind="unreachable") from None
            except httpx.ConnectTimeout:
                raise _Retry("connection timed out", kind="unreachable") from None
            except httpx.TimeoutException:
                raise _Retry(f"no answer within {self._client.timeout.read} s", "timeout") from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                raise _Retry(f"the connection broke ({exc or type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise self._error(
                    f"cannot talk to the teacher at {self.base_url}: {exc}",
                    f"cannot talk to {self._who()}",
                ) from None
            finally:
                self.stats.add(busy_seconds=time.monotonic() - start)
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retry(
                f"HTTP {response.status_code}: {self._error_message(response)}",
                delay=_retry_after(response),
                status=response.status_code,
            )
        if response.status_code in (401, 403):
            raise self._error(
                f"the teacher at {self.base_url} rejected the credentials (HTTP "
                f"{response.status_code}): pass the right API key (LABBOT_TEACHER_API_KEY)",
                f"{self._who()} rejected labbot's credentials (HTTP {response.status_code})",
            )
        if response.status_code == 404:
            raise self._error(
                f"the teacher at {self.base_url} has no {urlsplit(url).path} (HTTP 404); the "
                "teacher URL should be the base of an OpenAI-compatible API, usually ending in /v1",
                f"{self._who()} does not serve the OpenAI API labbot needs (HTTP 404)",
            )
        return response

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise self._error(
                f"the teacher at {self.base_url} answered nonsense to {what}: "
                f"{_snippet(response.text)!r} is not JSON; is it an OpenAI-compatible server?",
                f"{self._who()} answered something that is not JSON",
            ) from None

    def _error_message(self, response: httpx.Response) -> str:
        """The server's own words about an error, cleaned of the secrets labbot sent it."""
        return redact(_server_message(response), self._secrets)

    def _raise_scale(self, actual: int, counted: int) -> None:
        with self._lock:
            self._scale = max(self._scale, self._scale * actual / counted * 1.02)
        log.info("the teacher counts more prompt tokens than estimated; estimates scaled up")

    def _learn_limit(self, limit: int) -> bool:
        """Lower the context window to what the server revealed; True if it was lower."""
        with self._lock:
            if limit >= self.context_window:
                return False
            log.warning(
                "the teacher at %s has a %d-token context, not %d; using %d from now on",
                self.base_url,
                limit,
                self.context_window,
                limit,
            )
            self.context_window = limit
            return True

    def _learn_overflow(self, message: str, counted: int) -> None:
        limit = _first_int(_LIMIT_PATTERNS, message)
        prompt = _first_int(_PROMPT_PATTERNS, message)
        if limit is not None and self._learn_limit(limit):
            return
        if prompt is not None and prompt > counted:
            self._raise_scale(prompt, counted)
            return
        # Nothing to learn from the message: count more conservatively next time.
        with self._lock:
            self._scale *= 1.25

    # -- discovery -----------------------------------------------------------------------------

    def _get(self, url: str) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                return self._request("GET", url)
            except _Retry as exc:
                if attempt == self.retries:
                    raise self._gave_up(exc) from None
                self.stats.add(retries=1)
                time.sleep(exc.delay if exc.delay is not None else self._backoff(attempt))
        raise AssertionError("unreachable")

    def _discover_model(self, model: str | None) -> dict[str, Any]:
        response = self._get(f"{self.base_url}/models")
        if response.status_code != 200:
            raise self._error(
                f"the teacher at {self.base_url} answered HTTP {response.status_code} to "
                f"GET /models: {self._error_message(response)}",
                f"{self._who()} refused to list its models (HTTP {response.status_code})",
            )
        data = self._json(response, "GET /models")
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries
        ):
            raise self._error(
                f"the teacher at {self.base_url} answered nonsense to GET /models: "
                f"{_snippet(response.text)!r}; is it an OpenAI-compatible server?",
                f"{self._who()} answered something that is not a model list",
            )
        if not entries:
            raise self._error(
                f"the teacher at {self.base_url} serves no model (GET /models)",
                f"{self._who()} serves no model",
            )
        if model is None:
            return dict(entries[0])
        for entry in entries:
            if entry["id"] == model:
                return dict(entry)
        return {"id": model}  # some servers accept names they do not list

    def _discover_context(self, entry: Mapping[str, Any]) -> int:
        meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
        assert isinstance(meta, dict)
        # vLLM: max_model_len; LM Studio: max_context_length; llama.cpp: meta.n_ctx.
        for key in ("max_model_len", "context_window", "context_length", "max_context_length"):
            found = _positive_int(entry.get(key))
            if found:
                return found
        found = _positive_int(meta.get("n_ctx"))
        if found:
            return found
        found = self._props_context()
        if found:
            return found
        trained = _positive_int(meta.get("n_ctx_train"))
        if trained:
            return trained
        log.warning(
            "the teacher at %s does not say how long its context is; assuming %d tokens "
            "(pass --context-window to set it)",
            self.base_url,
            DEFAULT_CONTEXT_WINDOW,
        )
        return DEFAULT_CONTEXT_WINDOW

    def _props_context(self) -> int | None:
        """``n_ctx`` from the llama.cpp server's ``/props``, if it has one."""
        root = self.base_url.removesuffix("/v1")
        try:
            response = self._request("GET", f"{root}/props")
        except (_Retry, TeacherError):
            return None
        if response.status_code != 200:
            return None
        try:
            data = response.json()
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        settings = data.get("default_generation_settings")
        if isinstance(settings, dict) and _positive_int(settings.get("n_ctx")):
            return _positive_int(settings.get("n_ctx"))
        return _positive_int(data.get("n_ctx"))


def _server_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return _snippet(response.text) or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return _snippet(response.text)


def _connect_reason(exc: Exception) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service" in text or "nodename" in text or "resolve" in text:
        return "unknown host"
    return f"cannot connect ({exc or type(exc).__name__})"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(_MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        return None


# -- the embedded model -------------------------------------------------------------------------


class EmbeddedTeacher:
    """A Hugging Face causal LM run in this process (by default the embedded SmolLM2)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_context: int = 2048,
        device: str = "cpu",
        batch_size: int = 8,
    ) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise UsageError(
                f"{self.model_dir} is not a Hugging Face model folder (no config.json)"
            )
        config = json.loads((self.model_dir / "config.json").read_text())
        trained = _positive_int(config.get("max_position_embeddings"))
        self.context_window = min(max_context, trained) if trained else max_context
        self.device = device
        self.batch_size = max(1, batch_size)
        self.identity = f"embedded:{self.model_dir.name}"
        self.public_name = public_model_name(self.model_dir.name)
        self.stats = TeacherStats()
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._tokenize_lock = threading.Lock()
        self._tokenizer: Any = None
        self._model: Any = None

    def __repr__(self) -> str:
        return f"EmbeddedTeacher({self.identity!r}, context_window={self.context_window})"

    def _load_tokenizer(self) -> Any:
        with self._load_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
                tokenizer.padding_side = "left"
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                self._tokenizer = tokenizer
            return self._tokenizer

    def _load_model(self) -> Any:
        with self._load_lock:
            if self._model is None:
                import torch
                import transformers

                loader: Any = transformers.AutoModelForCausalLM
                model = loader.from_pretrained(str(self.model_dir), dtype=torch.float32)
                model.to(self.device)
                model.eval()
                self._model = model
            return self._model

    def _encode(self, messages: Messages) -> list[int]:
        """The prompt's token ids, rendered with the model's chat template."""
        tokenizer = self._load_tokenizer()
        # A fast tokenizer used from several threads at once can fail ("Already borrowed").
        with self._tokenize_lock:
            text = tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
            return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])

    def count_tokens(self, messages: Messages) -> int:
        """Exact prompt tokens with the model's own chat template."""
        return len(self._encode(messages))

    def close(self) -> None:
        """Drop the model (the memory is freed when nothing else holds it)."""
        with self._load_lock:
            self._model = None

    def chat(self, requests: Sequence[Messages], params: GenParams) -> list[Completion | Failure]:
        """Generate for every request in length-sorted, left-padded batches."""
        start = time.monotonic()
        try:
            return self._chat(requests, params)
        finally:
            self.stats.add(wall_seconds=time.monotonic() - start)

    def _chat(self, requests: Sequence[Messages], params: GenParams) -> list[Completion | Failure]:
        results: list[Completion | Failure | None] = [None] * len(requests)
        jobs: list[tuple[int, int, list[int]]] = []  # (max_tokens, index, prompt ids)
        for index, messages in enumerate(requests):
            ids = self._encode(messages)
            fitted = fit_max_tokens(len(ids), params, self.context_window)
            if isinstance(fitted, Failure):
                results[index] = fitted
                self.stats.add(calls=1, failures=1)
            else:
                jobs.append((fitted, index, ids))
        jobs.sort(key=lambda job: (job[0], len(job[2])))
        for batch in _batches(jobs, self.batch_size):
            for index, completion in self._generate(batch, params):
                results[index] = completion
        return [r for r in results if r is not None]

    def _generate(
        self, batch: list[tuple[int, int, list[int]]], params: GenParams
    ) -> list[tuple[int, Completion]]:
        import torch
        import transformers

        model = self._load_model()
        tokenizer = self._tokenizer
        pad = int(tokenizer.pad_token_id)
        eos = tokenizer.eos_token_id
        width = max(len(ids) for _, _, ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, _, ids) in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        max_new = max(limit for limit, _, _ in batch)
        sampling = params.temperature > 0
        options: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": sampling,
            "pad_token_id": pad,
            "eos_token_id": eos,
        }
        if sampling:
            options.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            options["stop_strings"] = list(params.stop)
        config = transformers.GenerationConfig(**options)  # type: ignore[no-untyped-call]
        begin = time.monotonic()
        seed = params.seed if sampling else None
        with self._generate_lock, torch.inference_mode(), _seeded(seed, self.device):
            output = model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                generation_config=config,
                tokenizer=tokenizer if params.stop else None,
            )
        self.stats.add(busy_seconds=time.monotonic() - begin)
        done: list[tuple[int, Completion]] = []
        for row, (limit, index, ids) in enumerate(batch):
            new = [int(t) for t in output[row, width:].tolist()]
            finish = "length"
            kept: list[int] = []
            for token in new[:limit]:
                if token == eos:
                    finish = "stop"
                    break
                kept.append(token)
            with self._tokenize_lock:
                text = tokenizer.decode(kept, skip_special_tokens=True)
            for stop in params.stop:
                cut = text.find(stop)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            completion = Completion(text, len(ids), len(kept), finish)
            self.stats.add(
                calls=1, prompt_tokens=completion.prompt_tokens, completion_tokens=len(kept)
            )
            done.append((index, completion))
        return done


def _batches(
    jobs: list[tuple[int, int, list[int]]], size: int
) -> Iterator[list[tuple[int, int, list[int]]]]:
    """Consecutive chunks of at most ``size`` jobs that share one ``max_tokens``."""
    batch: list[tuple[int, int, list[int]]] = []
    for job in jobs:
        if batch and (len(batch) == size or batch[0][0] != job[0]):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


@contextmanager
def _seeded(seed: int | None, device: str) -> Iterator[None]:
    """Seed torch's generators for sampling, restoring their state afterwards."""
    if seed is None:
        yield
        return
    import torch

    where = torch.device(device)
    devices: list[int] = []
    if where.type == "cuda":
        devices = [where.index if where.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices, device_type=where.type):
        torch.manual_seed(seed)
        yield


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
        raise UsageError(f"--concurrency must be at least 1, not {concurrency}")
    if context_window is not None and context_window < 1:
        raise UsageError(f"--context-window must be positive, not {context_window}")
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
        "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
    )
