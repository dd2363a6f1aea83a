"""A scripted OpenAI-compatible teacher server for tests and benchmarks (stdlib only).

It listens on 127.0.0.1, serves ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/completions``, and answers with whatever ``responder(messages, body)`` returns. It
behaves like a real server where it matters to the client:

* tokens are whitespace-separated words; a chat prompt costs ``prompt_tokens(messages)``
  (words plus a few tokens of role markers per message);
* a request whose prompt plus ``max_tokens`` exceeds ``n_ctx`` gets HTTP 400 with a vLLM-style
  "maximum context length" message, and is counted in ``overflows``;
* with ``on_overflow="truncate"`` it behaves like llama-cpp-python instead: only a prompt that
  fills the whole context is refused, and ``max_tokens`` is silently cut to the room left;
* ``concurrency`` bounds how many requests are served at once: the others wait in a queue, so a
  fixed-latency server with C slots can answer at most C / latency requests per second;
* ``fail_next(503, 429, "nonsense", "wrong-shape")`` injects faults for the next requests
  (an HTTP status, a non-JSON page, JSON that is not a completion), and
  ``nonsense = True`` makes every answer non-JSON.

    with ScriptedTeacherServer(lambda messages, body: "hello", latency=0.1) as server:
        teacher = OpenAITeacher(server.url)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[list[dict[str, Any]], dict[str, Any]], str]

MESSAGE_OVERHEAD = 3
"""Tokens a message costs beyond its words (role and separators), like a chat template."""
GENERATION_PROMPT = 3
"""Tokens of the assistant header that opens the answer."""


def words(text: str) -> int:
    """The scripted server's token count of a text."""
    return len(text.split())


def prompt_tokens(messages: list[dict[str, Any]], count: Callable[[str], int] = words) -> int:
    """Tokens of a chat prompt as the scripted server counts them (its "chat template")."""
    return GENERATION_PROMPT + sum(
        MESSAGE_OVERHEAD + count(str(m.get("content") or "")) for m in messages
    )


class _Server(ThreadingHTTPServer):
    """A client that hangs up mid-answer (a CLI run ending, a cancelled request) is normal
    here: keep it off stderr, which the tests capture from in-process CLI runs."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class ScriptedTeacherServer:
    """A real HTTP server on a free loopback port that answers from a Python function."""

    def __init__(
        self,
        responder: Responder,
        *,
        latency: float = 0.0,
        concurrency: int | None = None,
        n_ctx: int = 2048,
        model: str = "scripted",
        count: Callable[[str], int] = words,
        advertise_context: bool = True,
        on_overflow: str = "error",
    ) -> None:
        self.responder = responder
        self.latency = latency
        self.concurrency = concurrency
        self.n_ctx = n_ctx
        self.model = model
        self.count = count
        self.advertise_context = advertise_context
        if on_overflow not in ("error", "truncate"):
            raise ValueError("on_overflow must be 'error' or 'truncate'")
        self.on_overflow = on_overflow
        self.nonsense = False
        self.requests: list[dict[str, Any]] = []
        """One entry per request: path, body, status, prompt_tokens, start, end."""
        self.overflows = 0
        self.max_in_flight = 0
        self.busy_seconds = 0.0
        self._in_flight = 0
        self._faults: deque[int | str] = deque()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency) if concurrency else None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ScriptedTeacherServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        httpd = _Server(("127.0.0.1", 0), handler, bind_and_activate=False)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        httpd.request_queue_size = 128
        httpd.server_bind()
        httpd.server_activate()
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-teacher"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> ScriptedTeacherServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not started"
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (ends in ``/v1``)."""
        return f"{self.root_url}/v1"

    # -- scripting and inspection -------------------------------------------------------------

    def fail_next(self, *faults: int | str) -> None:
        """The next requests get these HTTP statuses (or ``"nonsense"``) instead of an answer."""
        with self._lock:
            self._faults.extend(faults)

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        return prompt_tokens(messages, self.count)

    def chat_requests(self) -> list[dict[str, Any]]:
        """The logged generation requests (chat and completions)."""
        with self._lock:
            return [r for r in self.requests if r["path"] != "/v1/models"]

    def utilisation(self) -> float:
        """Busy slot-seconds over available slot-seconds between the first and last request."""
        with self._lock:
            served = [r for r in self.requests if r.get("served")]
            if not served or not self.concurrency:
                return 0.0
            span = max(r["end"] for r in served) - min(r["start"] for r in served)
            return self.busy_seconds / (span * self.concurrency) if span > 0 else 0.0

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.overflows = 0
            self.max_in_flight = 0
            self.busy_seconds = 0.0
            self._faults.clear()

    # -- serving (called from handler threads) -------------------------------------------------

    def _next_fault(self) -> int | str | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            return "nonsense" if self.nonsense else None

    def _log(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def _generate(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str]:
        if path == "/v1/chat/completions":
            messages = body.get("messages")
            if not isinstance(messages, list):
                return 400, _error("'messages' is required")
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return 400, _error("'prompt' must be a string")
            messages = [{"role": "user", "content": prompt}]
        prompt_count = self.prompt_tokens(messages)
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            max_tokens = self.n_ctx - prompt_count
        entry = {
            "path": path,
            "body": body,
            "prompt_tokens": prompt_count,
            "max_tokens": max_tokens,
            "start": time.monotonic(),
        }
        self._log(entry)
        if self.on_overflow == "truncate" and prompt_count < self.n_ctx:
            # llama-cpp-python: an answer that would not fit is silently cut at the context end.
            max_tokens = min(max_tokens, self.n_ctx - prompt_count)
        if prompt_count + max_tokens > self.n_ctx:
            with self._lock:
                self.overflows += 1
            entry["status"] = 400
            return 400, _error(
                f"This model's maximum context length is {self.n_ctx} tokens. However, you "
                f"requested {prompt_count + max_tokens} tokens ({prompt_count} in the messages, "
                f"{max_tokens} in the completion). Please reduce the length of the messages or "
                "completion.",
                code="context_length_exceeded",
            )
        if self._slots:
            self._slots.acquire()
        try:
            begin = time.monotonic()
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                if self.latency:
                    time.sleep(self.latency)
                text = self.responder(messages, body)
            finally:
                end = time.monotonic()
                with self._lock:
                    self._in_flight -= 1
                    self.busy_seconds += end - begin
        finally:
            if self._slots:
                self._slots.release()
        entry.update(start=begin, end=end, served=True, status=200)
        finish = "stop"
        for stop in body.get("stop") or []:
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
        if self.count(text) > max_tokens:
            text, finish = self._truncate(text, max_tokens), "length"
        completion_count = self.count(text)
        usage = {
            "prompt_tokens": prompt_count,
            "completion_tokens": completion_count,
            "total_tokens": prompt_count + completion_count,
        }
        created = int(time.time())
        if path == "/v1/chat/completions":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            kind = "text_completion"
        return 200, {
            "id": f"scripted-{len(self.requests)}",
            "object": kind,
            "created": created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        }

    def _truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that costs at most ``max_tokens`` tokens."""
        low, high = 0, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if self.count(text[:middle]) <= max_tokens:
                low = middle
            else:
                high = middle - 1
        return text[:low].rstrip()

    def _models(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.model, "object": "model", "owned_by": "tests"}
        if self.advertise_context:
            entry["max_model_len"] = self.n_ctx
        return {"object": "list", "data": [entry]}


def _error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


class _Handler(BaseHTTPRequestHandler):
    owner: ScriptedTeacherServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any] | str) -> None:
        raw = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status)
        content_type = "text/html" if isinstance(payload, str) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        if status in (429, 503):
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(raw)

    def _fault(self, path: str) -> bool:
        fault = self.owner._next_fault()
        if fault is None:
            return False
        self.owner._log({"path": path, "fault": fault, "status": fault})
        if fault == "nonsense":
            self._send(200, "<html><body>It works!</body></html>")
        elif fault == "wrong-shape":
            self._send(200, {"object": "list", "data": []})
        else:
            assert isinstance(fault, int)
            self._send(fault, _error(f"injected HTTP {fault}"))
        return True

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            if not self._fault(self.path):
                self.owner._log({"path": "/v1/models", "status": 200})
                self._send(200, self.owner._models())
        else:
            self._send(404, _error(f"no route {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = self.path.rstrip("/")
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._send(404, _error(f"no route {self.path}"))
            return
        if self._fault(path):
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, _error("the body is not JSON"))
            return
        status, payload = self.owner._generate(path, body)
        self._send(status, payload)
