"""Retention: finished jobs and deliveries older than LABBOT_RETENTION_DAYS are purged on the
recovery schedule; recent rows and unfinished jobs stay. Real SQLite, time moved by the clock."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from bot.app import purge_expired
from bot.errors import SettingsError
from bot.settings import from_env
from bot.state.jobs import JobKind, JobSpec
from bot.state.sqlite_queue import JobQueue
from tests.support.app import Server, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup

DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spec(pr: int, sha: str, kind: JobKind = JobKind.VALIDATE) -> JobSpec:
    return JobSpec.for_commit(kind, "org/taxonomy", pr, sha, 1)


def rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        if table == "jobs":
            return list(conn.execute("SELECT pr, head_sha, state FROM jobs ORDER BY id"))
        return list(conn.execute("SELECT delivery_id FROM deliveries ORDER BY delivery_id"))


def fill(queue: JobQueue, clock: Clock) -> None:
    """40 days ago: a done job, a dead job, a superseded one, a still-pending one (with its
    delivery) and a leased one; 2 days ago: a done job and a delivery."""
    clock.now = 1_000 * DAY - 40 * DAY
    queue.record_delivery("old-done", "pull_request", "opened", [spec(1, "a" * 40)])
    queue.record_delivery("old-pending", "pull_request", "opened", [spec(2, "b" * 40)])
    queue.enqueue(spec(3, "c" * 40))
    queue.enqueue(spec(4, "d" * 40))
    queue.enqueue(spec(4, "e" * 40))  # supersedes d
    queue.enqueue(spec(5, "f" * 40))
    done = queue.lease("w")
    assert done is not None and done.spec.pr == 1
    assert queue.complete(done.id, "w")
    dead = queue.lease("w")
    assert dead is not None and dead.spec.pr == 2
    queue.fail(dead.id, "w", "boom", retryable=True)  # back to pending: unfinished
    third = queue.lease("w")
    assert third is not None and third.spec.pr == 3
    queue.fail(third.id, "w", "boom", retryable=False)  # dead
    leased = queue.lease("w")
    assert leased is not None and leased.spec.pr == 4  # e: leased, never finished
    clock.now = 1_000 * DAY - 2 * DAY
    queue.record_delivery("recent", "pull_request", "opened", [spec(6, "9" * 40)])
    recent = queue.lease("w2")
    while recent is not None and recent.spec.pr != 6:
        recent = queue.lease("w2")
    assert recent is not None
    assert queue.complete(recent.id, "w2")
    clock.now = 1_000 * DAY


def test_purge_keeps_recent_and_unfinished(tmp_path: Path) -> None:
    clock = Clock(0.0)
    queue = JobQueue(tmp_path / "q.sqlite3", clock=clock)
    fill(queue, clock)
    before = rows(queue.path, "jobs")
    assert ("a" * 40, "done") in [(sha, state) for _, sha, state in before]
    purge_expired(queue, 30.0, now=clock.now)
    after = rows(queue.path, "jobs")
    states = {sha[0]: state for _, sha, state in after}
    # gone: the old done job (a), the old dead job (c), the old superseded job (d)
    assert "a" not in states and "c" not in states and "d" not in states
    # kept: unfinished jobs however old (b pending again, e leased, f pending) and recent ones
    assert {states["b"], states["e"], states["f"]} <= {"pending", "leased"}
    assert states["9"] == "done"
    # the old delivery whose job is still pending stays; the old finished one goes
    assert [d for (d,) in rows(queue.path, "deliveries")] == ["old-pending", "recent"]
    # a second purge has nothing left to do
    assert queue.purge(clock.now - 30 * DAY) == (0, 0)


def test_purge_works_in_batches(tmp_path: Path) -> None:
    clock = Clock(100 * DAY)
    queue = JobQueue(tmp_path / "q.sqlite3", clock=clock)
    for i in range(25):
        queue.record_delivery(f"d{i}", "push", None, [spec(i, f"{i:040x}")])
        job = queue.lease("w")
        assert job is not None
        queue.complete(job.id, "w")
    clock.now += 31 * DAY
    assert queue.purge(clock.now - 30 * DAY, batch=7) == (25, 25)
    assert rows(queue.path, "jobs") == [] and rows(queue.path, "deliveries") == []


def test_the_app_purges_on_its_recovery_schedule(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    settings = settings_for(fake, scene, tmp_path, retention_days=30.0)
    settings.data_dir.mkdir(parents=True)
    for delivery, when, sha in (("ancient", 1_000.0, "a" * 40), ("recent", time.time(), "b" * 40)):
        queue = JobQueue(settings.database, clock=lambda when=when: when)
        queue.record_delivery(delivery, "pull_request", "opened", [spec(1, sha)])
        job = queue.lease("w")
        assert job is not None and queue.complete(job.id, "w")
    assert len(rows(settings.database, "deliveries")) == 2
    with Server(settings):
        wait_for(
            lambda: [d for (d,) in rows(settings.database, "deliveries")] == ["recent"],
            what="the purge at start-up",
        )
    assert [sha for _, sha, _ in rows(settings.database, "jobs") if sha == "a" * 40] == []


def app_env(scene: Setup, **extra: str) -> dict[str, str]:
    return {
        "LABBOT_APP_ID": str(scene.app.id),
        "LABBOT_PRIVATE_KEY": scene.app.private_key_pem,
        "LABBOT_WEBHOOK_SECRET": "s3cret",
        **extra,
    }


@pytest.mark.parametrize("value", ["0", "-1", "abc", "2", "inf", "nan"])
def test_retention_days_must_be_sensible(scene: Setup, value: str) -> None:
    with pytest.raises(SettingsError, match="LABBOT_RETENTION_DAYS"):
        from_env(app_env(scene, LABBOT_RETENTION_DAYS=value))


def test_retention_days_default_and_value(scene: Setup) -> None:
    assert from_env(app_env(scene)).retention_days == 30.0
    assert from_env(app_env(scene, LABBOT_RETENTION_DAYS="90")).retention_days == 90.0
