"""What commands may cost: unauthorised users get no work and one answer per pull request,
permission answers are cached, and previews are rate-limited per pull request and per
installation, across restarts (App, fake GitHub, real SQLite)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from bot.state import Limits
from bot.state.limits import CommandLimits, PreviewLimits
from tests.support.app import ATTR, LEAF, Server, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.markdown_safety import assert_safe
from tests.support.samples import SKILL


def api_calls(fake: FakeGitHub) -> list[Any]:
    """Calls the App made for its work (not for its own tokens)."""
    return [c for c in fake.calls_to("*", r"^/repos/")]


def bot_comments(pr: Any) -> list[Any]:
    return [c for c in pr.live_comments if c.user_type == "Bot"]


def comment(fake: FakeGitHub, scene: Setup, pr: Any, user: str, text: str) -> None:
    made = scene.repo.add_comment(pr.number, text, user=user)
    fake.deliver(
        "issue_comment",
        fake.webhook_payload(
            "issue_comment", "created", "pull_request", repo=scene.repo, comment=made
        ),
    )


def idle(srv: Server) -> None:
    wait_for(lambda: srv.app.state.queue.stats().depth == 0, what="queue drained")


def preview_jobs(settings: Settings) -> int:
    with sqlite3.connect(settings.database) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE kind = 'preview'").fetchone()
    return int(count)


def start(fake: FakeGitHub, settings: Settings) -> Server:
    srv = Server(settings).__enter__()
    fake.set_webhook_target(srv.url + "/webhook")
    wait_for(lambda: srv.app.state.queue.stats().counts["done"] >= 1, what="start-up recovery")
    idle(srv)
    return srv


def test_unauthorised_commands_cost_one_answer_and_few_calls_even_after_a_restart(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    settings = settings_for(fake, scene, tmp_path, teacher="http://127.0.0.1:9/v1")
    pr = scene.repo.create_pull(head="units", files={LEAF: SKILL, ATTR: "x\n"})
    srv = start(fake, settings)
    try:
        before = len(api_calls(fake))
        for _ in range(10):
            comment(fake, scene, pr, "mallory", "/labbot preview")
        idle(srv)
        calls = api_calls(fake)[before:]
        replies = bot_comments(pr)
        assert len(replies) == 1 and "needs write access" in replies[0].body
        assert "@mallory" in replies[0].body
        # permission, the config (repository + file), the sticky comment (list + create)
        assert len(calls) <= 6, [(c.method, c.path) for c in calls]
        assert len(fake.calls_to("GET", r"/collaborators/mallory/permission")) == 1
        assert not fake.calls_to("POST", r"/reactions$")
        assert preview_jobs(settings) == 0
        body_before = replies[0].body
    finally:
        srv.__exit__(None, None, None)

    srv = start(fake, settings)  # what was learnt survives a restart
    try:
        before = len(api_calls(fake))
        for _ in range(3):
            comment(fake, scene, pr, "mallory", "/labbot check")
        idle(srv)
        assert api_calls(fake)[before:] == []
        assert [c.body for c in bot_comments(pr)] == [body_before]
    finally:
        srv.__exit__(None, None, None)


def test_a_second_unauthorised_user_is_answered_once_too(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    settings = settings_for(fake, scene, tmp_path, teacher="")
    pr = scene.repo.create_pull(head="units", files={LEAF: SKILL, ATTR: "x\n"})
    srv = start(fake, settings)  # the start-up recovery validates the PR: one comment
    try:
        before = len(fake.calls)
        for user in ("mallory", "trudy", "mallory", "trudy"):
            comment(fake, scene, pr, user, "/labbot preview")
        idle(srv)
        writes = [c for c in fake.calls[before:] if c.method in ("POST", "PATCH", "DELETE")]
        assert len(writes) == 2, writes  # one answer for each user
        assert "@trudy" in bot_comments(pr)[0].body
    finally:
        srv.__exit__(None, None, None)


def test_previews_are_rate_limited_per_pull_request_and_installation(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        settings_for(fake, scene, tmp_path, teacher=""),
        preview_limit_per_pr=2,
        preview_limit_per_installation=3,
    )
    scene.repo.set_permission("maintainer", "write")
    first = scene.repo.create_pull(head="units", files={LEAF: SKILL, ATTR: "x\n"})
    second = scene.repo.create_pull(
        head="lengths",
        files={LEAF.replace("units", "lengths"): SKILL, ATTR.replace("units", "lengths"): "x\n"},
    )
    srv = start(fake, settings)
    try:
        for _ in range(2):
            comment(fake, scene, first, "maintainer", "/labbot preview")
            idle(srv)
        assert preview_jobs(settings) == 2
        comment(fake, scene, first, "maintainer", "/labbot preview")
        idle(srv)
        assert preview_jobs(settings) == 2
        body = bot_comments(first)[0].body
        assert "try again in 60 minutes" in body, body
        assert_safe(body, [], allowed_mentions=["@maintainer"])

        comment(fake, scene, second, "maintainer", "/labbot preview")  # the installation's third
        idle(srv)
        assert preview_jobs(settings) == 3
        comment(fake, scene, second, "maintainer", "/labbot preview")
        idle(srv)
        assert preview_jobs(settings) == 3
        assert "this installation" in bot_comments(second)[0].body
    finally:
        srv.__exit__(None, None, None)


def test_permission_answers_are_cached(fake: FakeGitHub, scene: Setup, tmp_path: Path) -> None:
    settings = settings_for(fake, scene, tmp_path, teacher="")
    scene.repo.set_permission("maintainer", "write")
    pr = scene.repo.create_pull(head="units", files={LEAF: SKILL, ATTR: "x\n"})
    srv = start(fake, settings)
    try:
        for _ in range(4):
            comment(fake, scene, pr, "maintainer", "/labbot help")
        idle(srv)
        assert len(fake.calls_to("GET", r"/collaborators/maintainer/permission")) == 1
        assert len(fake.calls_to("POST", r"/reactions$")) == 4
    finally:
        srv.__exit__(None, None, None)


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Limits]]:
    """Opens limit stores on one engine: a SQLite file, or a fresh PostgreSQL database (the
    store of several replicas). Two stores opened here share their state, as a restarted App
    (or another replica) does."""
    pools: list[Any] = []

    def open_(**options: Any) -> Limits:
        if request.param == "sqlite":
            return CommandLimits(tmp_path / "limits.sqlite3", **options)
        from bot.state.postgres.limits import PgCommandLimits
        from bot.state.postgres.pool import open_pool

        if not pools:
            pools.append(open_pool(str(request.getfixturevalue("pg_url")), max_size=2))
        return PgCommandLimits(pools[0], **options)

    yield open_
    for pool in pools:
        pool.close()


def test_limits_store_counts_windows_and_bounds_its_cache(
    open_store: Callable[..., Limits],
) -> None:
    now = [1000.0]
    store = open_store(permission_seconds=300, clock=lambda: now[0])
    limits = PreviewLimits(per_pr=2, per_installation=3, window_seconds=3600)
    assert store.take_preview(1, "o/r", 1, limits) is None
    now[0] += 600
    assert store.take_preview(1, "o/r", 1, limits) is None
    wait = store.take_preview(1, "o/r", 1, limits)
    assert wait == 3000.0  # the first preview leaves the window then
    assert store.take_preview(1, "o/r", 2, limits) is None
    assert store.take_preview(1, "o/other", 3, limits) is not None  # installation: 3 taken
    assert store.take_preview(2, "x/y", 1, limits) is None  # another installation
    now[0] += 3001
    assert store.take_preview(1, "o/r", 1, limits) is None
    assert store.take_preview(1, "o/r", 1, PreviewLimits(per_pr=0)) is not None

    store.remember_permission("O/R", "Alice", True)
    assert store.permission("o/r", "alice") is True
    now[0] += 301
    assert store.permission("o/r", "alice") is None
    assert store.first_refusal("o/r", 1, "bob") and not store.first_refusal("o/r", 1, "BOB")
    assert store.first_refusal("o/r", 2, "bob")
    store.close()
    reopened = open_store(clock=lambda: now[0])
    assert not reopened.first_refusal("o/r", 1, "bob")
    reopened.close()


def test_doctests() -> None:
    import doctest

    from bot.state import limits

    failures, tried = doctest.testmod(limits)
    assert tried >= 1 and failures == 0
