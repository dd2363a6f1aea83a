"""The single summary comment under concurrent jobs, against the contract-checked fake."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import handlers, render
from bot.github import GitHubClient
from bot.handlers import sticky
from bot.metrics import Metrics
from bot.state.sqlite_queue import JobQueue
from tests.support.fakegithub import FakeGitHub, Setup


@pytest.fixture
def ctx(fake: FakeGitHub, scene: Setup, tmp_path: Path) -> Iterator[handlers.Context]:
    client = GitHubClient(scene.app.id, scene.app.private_key_pem, fake.url, write_interval=0.0)
    queue = JobQueue(tmp_path / "q.sqlite3")
    yield handlers.Context(client=client, queue=queue, metrics=Metrics())
    queue.close()


def test_concurrent_jobs_share_one_summary_comment(ctx: handlers.Context, scene: Setup) -> None:
    pr = scene.repo.create_pull(head="topic", files={"README.md": "changed\n"})
    inst = scene.installation.id
    start = threading.Barrier(4)

    def write(section: str) -> None:
        start.wait()
        sticky.upsert_sticky(ctx, inst, "org/taxonomy", pr.number, section, f"{section} text")

    threads = [threading.Thread(target=write, args=(s,)) for s in render.SECTION_ORDER]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stickies = [c for c in pr.live_comments if render.STICKY_MARKER in c.body]
    assert len(stickies) == 1
    assert render.sections_of(stickies[0].body) == {s: f"{s} text" for s in render.SECTION_ORDER}


def test_duplicate_summary_comments_are_merged_into_the_oldest(
    ctx: handlers.Context, scene: Setup
) -> None:
    """Two App processes can still race; the next update heals it."""
    pr = scene.repo.create_pull(head="topic", files={"README.md": "changed\n"})
    bot = scene.app.bot_login
    old = scene.repo.add_comment(
        pr.number, render.sticky_body({"validate": "old validate"}), user=bot, user_type="Bot"
    )
    scene.repo.add_comment(
        pr.number,
        render.sticky_body({"validate": "new validate", "command": "answer"}),
        user=bot,
        user_type="Bot",
    )
    # A person quoting the marker is not the App's comment and is left alone.
    scene.repo.add_comment(pr.number, "quoting " + render.STICKY_MARKER, user="octocat")
    sticky.upsert_sticky(ctx, scene.installation.id, "org/taxonomy", pr.number, "preview", "p")
    stickies = [c for c in pr.live_comments if render.STICKY_MARKER in c.body]
    assert [c.id for c in stickies if c.user_type == "Bot"] == [old.id]
    assert len(stickies) == 2
    assert render.sections_of(old.body) == {
        "validate": "new validate",
        "command": "answer",
        "preview": "p",
    }
