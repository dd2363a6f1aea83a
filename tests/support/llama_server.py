"""Run the real llama.cpp server (llama-cpp-python) on a loopback port for tests.

    with LlamaServer(embedded.gguf_path(), log_path=tmp / "llama.log") as server:
        teacher = OpenAITeacher(server.url, context_window=server.n_ctx)

``require_llama_cpp()`` skips the calling test when llama-cpp-python is not installed (CI installs
it, so there the tests run). A server that is installed but fails to start is an error, not a
skip: the log's tail goes into the exception.

``llama_server`` is a session-scoped pytest fixture yielding a started :class:`LlamaServer` for
the embedded SmolLM2; import it into a test module or a conftest to use it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def require_llama_cpp() -> None:
    """Skip the current test unless llama-cpp-python (with its server) can be imported."""
    for module in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(
                f"llama-cpp-python's server is not installed (no module {module!r}); "
                "install 'llama-cpp-python[server]' to run the real-teacher tests"
            )


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` for one GGUF model, on 127.0.0.1 only."""

    def __init__(
        self,
        model: Path,
        *,
        n_ctx: int = 2048,
        log_path: Path | None = None,
        startup_timeout: float = 180.0,
        threads: int | None = None,
    ) -> None:
        self.model = Path(model)
        self.n_ctx = n_ctx
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.threads = threads or os.cpu_count() or 1
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (ends in ``/v1``)."""
        return f"{self.root_url}/v1"

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def start(self) -> LlamaServer:
        if self.log_path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="llama-server-")
            self.log_path = Path(self._tmpdir.name) / "server.log"
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise RuntimeError(
                        f"the llama.cpp server exited with status {code} before it was ready:\n"
                        + self.log_tail()
                    )
                try:
                    if client.get(f"{self.url}/models").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the llama.cpp server did not answer within {self.startup_timeout} s:\n"
                        + self.log_tail()
                    )
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            self.process = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The real llama.cpp server with the embedded SmolLM2 (2,048-token context)."""
    require_llama_cpp()
    from pipeline import embedded

    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with LlamaServer(embedded.gguf_path(), n_ctx=2048, log_path=log_path) as server:
        yield server
