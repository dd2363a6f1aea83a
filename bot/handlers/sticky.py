"""The pull request's single summary comment: one section per concern, updated under a lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bot import render

if TYPE_CHECKING:
    from bot.handlers.common import Context


class KeyedLocks:
    """One lock per key (a PR's summary comment, say), for the worker threads of a process."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def hold(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    @contextmanager
    def try_hold(self, key: str) -> Iterator[bool]:
        """The lock on ``key`` if it is free: the block gets False when another thread holds it."""
        lock = self.hold(key)
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()


def upsert_sticky(
    ctx: Context, inst: int | None, repo: str, number: int, section: str, text: str
) -> None:
    """Set one section of the PR's single summary comment.

    Jobs of one PR run on several workers (a validation and a command, say): without the lock
    two of them could both find no comment and both create one, or overwrite each other's
    section. Duplicates that still appear (two App processes) are merged into the oldest
    comment, newer sections winning, and deleted."""
    with ctx.locks.hold(f"sticky:{repo}#{number}"):
        found = ctx.client.find_stickies(inst, repo, number, render.STICKY_MARKER)
        sections: dict[str, str] = {}
        for comment in found:
            sections.update(render.sections_of(comment.get("body") or ""))
        sections[section] = text
        body = render.sticky_body(sections)
        if not found:
            ctx.client.create_comment(inst, repo, number, body)
            return
        if found[0].get("body") != body:
            ctx.client.edit_comment(inst, repo, int(found[0]["id"]), body)
        for extra in found[1:]:
            ctx.client.delete_comment(inst, repo, int(extra["id"]))
