"""The teacher behind an OpenAI-compatible HTTP API (``/v1/chat/completions``).

Requests run in a bounded thread pool so a server with several slots stays busy; transient
failures (connection errors, 429, 5xx) are retried with backoff; anything that cannot work
(unreachable, refused, nonsense answers) raises :class:`TeacherError` with a message that says
what to do.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.errors import UsageError
from pipeline.redact import redact, strip_credentials, url_credentials
from pipeline.retry import full_jitter

if TYPE_CHECKING:
    import httpx


from pipeline.sdg.teacher.budget import (
    DEFAULT_CONTEXT_WINDOW,
    as_counter,
    estimate_tokens,
    fit_max_tokens,
)
from pipeline.sdg.teacher.types import (
    Completion,
    Failure,
    GenParams,
    Messages,
    TeacherError,
    TeacherStats,
    positive_int,
    public_model_name,
)

_MAX_BACKOFF = 10.0
_MAX_RETRY_AFTER = 30.0

log = logging.getLogger(__name__)


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
            "an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1",
            setting="teacher",
        )
    url = strip_credentials(base_url).rstrip("/")
    if parts.path in ("", "/"):
        url += "/v1"
    return url


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
        self._counter = as_counter(tokenizer)
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
        """The wait after try ``attempt`` (0-based) failed."""
        return full_jitter(attempt + 1, base=self.backoff, cap=_MAX_BACKOFF)

    def _who(self) -> str:
        """The teacher as a pull request comment may name it."""
        return f"the teacher ({self.public_name})" if self.public_name else "the teacher"

    def _error(
        self, message: str, public: str, *, status: int | None = None, problem: str = "failed"
    ) -> TeacherError:
        """A TeacherError whose operator message is cleaned of every secret labbot knows."""
        return TeacherError(
            redact(message, self._secrets),
            public,
            base_url=self.base_url,
            status=status,
            problem=problem,
        )

    def _gave_up(self, exc: _Retry) -> TeacherError:
        if exc.kind == "unreachable":
            return self._error(
                f"cannot reach the teacher at {self.base_url}: {exc.what}; start it, "
                "or use the embedded teacher",
                f"{self._who()} cannot be reached",
                problem="unreachable",
            )
        if exc.kind == "timeout":
            public = f"{self._who()} did not answer in time"
        elif exc.status:
            public = f"{self._who()} keeps failing (HTTP {exc.status})"
        else:
            public = f"{self._who()} keeps failing"
        return self._error(
            f"the teacher at {self.base_url} keeps failing: {exc.what} "
            f"({self.retries + 1} tries); check the server's log, or send fewer requests "
            "at once if it is overloaded",
            public,
            status=exc.status or None,
            problem="overloaded",
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
                f"{response.status_code}: {message}; check the teacher URL and the server's model",
                f"{self._who()} refused a request (HTTP {response.status_code})",
                status=response.status_code,
                problem="refused",
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
                problem="not-openai",
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
                    problem="unreachable",
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
                status=response.status_code,
                problem="credentials",
            )
        if response.status_code == 404:
            raise self._error(
                f"the teacher at {self.base_url} has no {urlsplit(url).path} (HTTP 404); the "
                "teacher URL should be the base of an OpenAI-compatible API, usually ending in /v1",
                f"{self._who()} does not serve the OpenAI API labbot needs (HTTP 404)",
                status=404,
                problem="not-openai",
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
                status=response.status_code,
                problem="not-openai",
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
                status=response.status_code,
                problem="refused",
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
                problem="not-openai",
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
            found = positive_int(entry.get(key))
            if found:
                return found
        found = positive_int(meta.get("n_ctx"))
        if found:
            return found
        found = self._props_context()
        if found:
            return found
        trained = positive_int(meta.get("n_ctx_train"))
        if trained:
            return trained
        log.warning(
            "the teacher at %s does not say how long its context is; assuming %d tokens "
            "(set the teacher's context window to override)",
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
        if isinstance(settings, dict) and positive_int(settings.get("n_ctx")):
            return positive_int(settings.get("n_ctx"))
        return positive_int(data.get("n_ctx"))


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
