"""Validation of contributors' files in child processes, so a validator that misbehaves costs
one file's verdict and never the App.

A file's bytes come from an untrusted pull request, and the validator parses them with C code
(ruamel's parser). A bug there can kill the process with a signal, loop, or eat memory. So the
App never validates in its own process: each worker thread borrows a long-lived child
(``python -m bot.isolation``) from a small pool, sends it one file, and waits at most the time
left to the job. The child runs under an address-space limit (``RLIMIT_AS``) and without core
dumps; its environment carries none of the App's secrets. A child that dies, hangs or answers
nonsense is killed and replaced; the caller gets :class:`ValidatorFailed` with a reason people
can read ("the validator stopped (signal 11, SIGSEGV)", "timed out after 30 s").

The child's answer is JSON, not pickle: a compromised child cannot run code in the App. The
child also bounds its answer: at most :data:`KEEP_PER_RULE` findings of each rule come back,
with the count of the rest, so a file with 60,000 findings costs kilobytes, not megabytes.

Requests go the other way as pickles (the App is the trusted side). Overhead per file, once a
child is warm, is a pipe round trip: ``benchmarks/isolation.py`` measures it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import IO, Any

from bot.errors import BotError
from pipeline.taxonomy.findings import FileResult, Finding, Severity

log = logging.getLogger("labbot.isolation")

DEFAULT_TARGET = "pipeline.taxonomy.validate:validate_bytes"
#: Findings of one rule in one file that come back from the child (the rest are counted).
KEEP_PER_RULE = 100
#: Largest answer a child may send; a larger one means something went wrong.
MAX_ANSWER_BYTES = 16 << 20
#: How long a fresh child may take to import the validator (not counted against a file).
START_SECONDS = 60.0
#: The rule of a file labbot could not read at the pull request's head (a link, a folder...).
UNREADABLE_RULE = "file.unreadable"
#: The rule of a file the validator gave no verdict for (it crashed, hung, ran out of memory).
STOPPED_RULE = "validator.stopped"
UNCHECKED_RULES = frozenset({UNREADABLE_RULE, STOPPED_RULE})
_FRAME = struct.Struct(">Q")
_SECRET_WORDS = ("SECRET", "TOKEN", "KEY", "PASSWORD", "CREDENTIAL")


class ValidatorFailed(BotError):
    """The validator gave no verdict for a file; ``reason`` says why, in plain words, and
    ``timed_out`` whether it ran out of time."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


def bounded(result: FileResult, keep: int = KEEP_PER_RULE) -> FileResult:
    """``result`` with at most ``keep`` findings of each rule; the rest only counted (in
    ``omitted``, ``omitted_errors`` and ``omitted_warnings``), so its verdict stays exact."""
    out = FileResult(result.path, result.kind, result.version)
    out.add(result.findings, cap=keep)
    for rule, n in result.omitted.items():
        out.omitted[rule] = out.omitted.get(rule, 0) + n
    out.omitted_errors += result.omitted_errors
    out.omitted_warnings += result.omitted_warnings
    return out


def failed(path: str, kind: str | None, rule: str, message: str, hint: str) -> FileResult:
    """A result of one error at line 1: for a file that could not be read or validated."""
    return FileResult(path, kind, None, [Finding(rule, Severity.ERROR, 1, 1, message, hint)])


# -- the child ------------------------------------------------------------------------------


def _load(target: str) -> Callable[..., FileResult]:
    module, _, name = target.partition(":")
    func: Callable[..., FileResult] = getattr(importlib.import_module(module), name)
    return func


def _result_json(result: FileResult) -> dict[str, Any]:
    return {
        "result": result.as_dict(),
        "omitted": result.omitted,
        "omitted_errors": result.omitted_errors,
        "omitted_warnings": result.omitted_warnings,
    }


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    return stream.read(size)


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def child_main(memory_bytes: int) -> int:
    """The child's loop: read a request, validate, answer; until stdin closes."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the answers
    _load(DEFAULT_TARGET)
    _write_frame(answers, b'{"ready": true}')
    while True:
        frame = _read_frame(requests)
        if frame is None:
            return 0
        target, args = pickle.loads(frame)
        try:
            answer: dict[str, Any] = _result_json(bounded(_load(target)(*args)))
        except MemoryError:
            answer = {"failed": "ran out of memory"}
        except RecursionError:
            answer = {"failed": "the validator recursed too deeply"}
        except Exception as exc:  # a bug in the validator: report it, keep serving
            answer = {
                "failed": f"the validator failed ({type(exc).__name__})",
                "detail": traceback.format_exc(limit=8)[-4000:],
            }
        _write_frame(answers, json.dumps(answer).encode())


# -- the App's side -------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """The App's environment without its secrets, and with its import path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LABBOT_") and not any(w in k.upper() for w in _SECRET_WORDS)
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    return env


def _result_from(data: dict[str, Any]) -> FileResult:
    raw = data["result"]
    findings = [
        Finding(
            str(f["rule"]),
            Severity(f["severity"]),
            int(f["line"]),
            int(f["column"]),
            str(f["message"]),
            str(f.get("hint") or ""),
            None if f.get("path") is None else str(f["path"]),
        )
        for f in raw["findings"]
    ]
    kind, version = raw.get("kind"), raw.get("version")
    result = FileResult(
        str(raw["path"]),
        None if kind is None else str(kind),
        None if version is None else int(version),
        findings,
    )
    result.omitted = {str(k): int(v) for k, v in dict(data.get("omitted") or {}).items()}
    result.omitted_errors = int(data.get("omitted_errors") or 0)
    result.omitted_warnings = int(data.get("omitted_warnings") or 0)
    return result


class _Child:
    """One validation process and its pipes."""

    def __init__(self, memory_bytes: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.isolation", str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_child_env(),
            close_fds=True,
        )
        self.memory_bytes = memory_bytes
        self.ready = False

    def _read(self, size: int, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks: list[bytes] = []
        while size > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                raise TimeoutError
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def answer(self, deadline: float) -> dict[str, Any]:
        (size,) = _FRAME.unpack(self._read(_FRAME.size, deadline))
        if size > MAX_ANSWER_BYTES:
            raise ValueError(f"answer of {size} bytes")
        data = json.loads(self._read(size, deadline))
        if not isinstance(data, dict):
            raise ValueError("answer is not an object")
        return data

    def send(self, payload: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(_FRAME.pack(len(payload)) + payload)
        self.proc.stdin.flush()

    def death(self) -> str:
        """Why the child is gone (it is killed first if it is not)."""
        try:  # its pipe closes a moment before the process is reaped
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            self.kill()
            return "the validator stopped answering"
        self.kill()  # closes the pipes
        code = self.proc.returncode
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown"
            if -code == signal.SIGKILL:
                return f"the validator was killed (signal 9, {name}); it may have run out of memory"
            return f"the validator stopped (signal {-code}, {name})"
        return f"the validator stopped (exit status {code})"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class IsolatedValidator:
    """Validates files in child processes (see the module docstring). Thread-safe.

    ``target`` names the validator as ``module:function`` with :func:`validate_bytes`'s
    signature; anything but the default is a test seam. ``seconds`` is the default time limit
    of one call; ``memory_bytes`` each child's address-space limit (0: none).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        seconds: float = 30.0,
        memory_bytes: int = 1 << 30,
    ) -> None:
        self.target = target
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False
        self.started = 0  # children started, for tests and benchmarks

    def warm(self, count: int) -> None:
        """Start ``count`` children now (in the background), so the first files wait less."""

        def start() -> None:
            children = []
            for _ in range(count):
                try:
                    children.append(self._start())
                except (OSError, ValidatorFailed):
                    return
            with self._lock:
                if self._closed:
                    for child in children:
                        child.kill()
                    return
                self._idle.extend(children)

        threading.Thread(target=start, name="labbot-validator-warm", daemon=True).start()

    def _start(self) -> _Child:
        child = _Child(self.memory_bytes)
        self.started += 1
        try:
            child.answer(time.monotonic() + START_SECONDS)
        except (TimeoutError, EOFError, ValueError, OSError) as exc:
            reason = child.death()
            raise ValidatorFailed(f"the validator could not start: {reason}") from exc
        child.ready = True
        return child

    def _borrow(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.proc.poll() is None:
                    return child
                child.kill()
        return self._start()

    def _give_back(self, child: _Child) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(child)
                return
        child.kill()

    def validate(
        self,
        raw: bytes,
        path: str,
        *args: Any,
        seconds: float | None = None,
    ) -> FileResult:
        """Validate one file as ``validate_bytes(raw, path, *args)`` would, in a child; at
        most :data:`KEEP_PER_RULE` findings of a rule come back, the rest counted.

        Raises:
            ValidatorFailed: the child died, hung past ``seconds`` (default: the instance's),
                ran out of memory, raised, or answered nonsense.
        """
        limit = self.seconds if seconds is None else seconds
        request = pickle.dumps((self.target, (raw, path, *args)), protocol=pickle.HIGHEST_PROTOCOL)
        child = self._borrow()
        try:
            child.send(request)
            data = child.answer(time.monotonic() + limit)
        except TimeoutError as exc:
            child.kill()
            raise ValidatorFailed(f"timed out after {limit:g} s", timed_out=True) from exc
        except (EOFError, OSError, ValueError) as exc:
            raise ValidatorFailed(child.death()) from exc
        if "failed" in data:
            self._give_back(child)
            if data.get("detail"):
                log.warning("validator failure in the child:\n%s", str(data["detail"]))
            reason = str(data["failed"])
            if reason == "ran out of memory" and self.memory_bytes:
                reason += f" (limit {self.memory_bytes >> 20} MiB)"
            raise ValidatorFailed(reason)
        try:
            result = _result_from(data)
        except (KeyError, TypeError, ValueError) as exc:
            child.kill()
            raise ValidatorFailed("the validator answered something unreadable") from exc
        self._give_back(child)
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.kill()


if __name__ == "__main__":
    sys.exit(child_main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
