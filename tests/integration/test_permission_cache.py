"""Permission answers for commands are looked up once, even when two commands of one user
reach two workers at the same moment (the cache is a SQLite file, as in the App)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bot.handlers.access import may_command
from bot.handlers.common import Context
from bot.metrics import Metrics
from bot.state.limits import CommandLimits


class SlowPermissions:
    """GitHub's collaborator-permission endpoint, slow enough for two workers to overlap."""

    def __init__(self) -> None:
        self.calls = 0
        self._guard = threading.Lock()

    def permission(self, inst: int | None, repo: str, user: str) -> str:
        with self._guard:
            self.calls += 1
        time.sleep(0.2)
        return "write"


def test_concurrent_commands_of_one_user_ask_github_once(tmp_path: Path) -> None:
    client = SlowPermissions()
    limits = CommandLimits(tmp_path / "limits.sqlite3")
    ctx: Any = Context(client=client, queue=None, metrics=Metrics(), limits=limits)  # type: ignore[arg-type]
    answers: list[bool] = []
    threads = [
        threading.Thread(target=lambda: answers.append(may_command(ctx, 1, "o/r", "Alice")))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert answers == [True] * 4
    assert client.calls == 1
    assert may_command(ctx, 1, "O/R", "alice") and client.calls == 1  # cached, case-blind
    limits.close()
