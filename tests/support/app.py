"""The App under test: a `labbot serve` process against the fake GitHub, its settings, and waiting
for what it does.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bot.app import create_app
from bot.settings import Settings
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.qna import replace_line
from tests.support.samples import SKILL

LEAF = "taxonomy/compositional_skills/units/qna.yaml"


ATTR = "taxonomy/compositional_skills/units/attribution.txt"


BROKEN = replace_line(replace_line(SKILL, 2, "created_by: "), 6, "    answer: yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    def __init__(self, settings: Settings, **collaborators: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, **collaborators)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        wait_for(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def settings_for(fake: FakeGitHub, scene: Setup, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(
        app_id=scene.app.id,
        private_key=scene.app.private_key_pem,
        webhook_secret=scene.app.webhook_secret,
        github_api_url=fake.url,
        data_dir=tmp_path / "data",
        workers=2,
        write_interval_seconds=0.0,
        **kw,
    )


def validate_runs(scene: Setup, sha: str) -> list[Any]:
    return [r for r in scene.repo.check_runs if r.head_sha == sha and r.name == "labbot/validate"]


def completed(scene: Setup, sha: str) -> Any:
    runs = [r for r in validate_runs(scene, sha) if r.status == "completed"]
    return runs[0] if runs else None


def is_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
