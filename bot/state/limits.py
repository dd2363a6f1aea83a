"""What commands may cost: cached permission answers, one refusal per user and pull request,
and rate limits for previews (SQLite in the data folder, so a restart forgets none of it).

Anyone can comment ``/labbot preview`` on a public repository's pull request. Without these, each
such comment costs API calls, a comment edit and, when allowed, minutes of teacher time.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS permissions (
    repo TEXT NOT NULL,
    user TEXT NOT NULL,
    allowed INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (repo, user)
);
CREATE INDEX IF NOT EXISTS permissions_at ON permissions (at);
CREATE TABLE IF NOT EXISTS refusals (
    repo TEXT NOT NULL,
    pr INTEGER NOT NULL,
    user TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (repo, pr, user)
);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals (at);
CREATE TABLE IF NOT EXISTS previews (
    installation_id INTEGER NOT NULL,
    repo TEXT NOT NULL,
    pr INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS previews_installation ON previews (installation_id, at);
CREATE INDEX IF NOT EXISTS previews_pr ON previews (repo, pr, at);
"""

#: A refusal is remembered this long (then the user may be answered once more).
REFUSAL_MEMORY_SECONDS = 30 * 86400.0
#: At most this many cached permission answers and remembered refusals are kept.
MAX_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class PreviewLimits:
    """At most ``per_pr`` previews of one pull request and ``per_installation`` previews of
    one installation in any ``window_seconds``."""

    per_pr: int = 3
    per_installation: int = 30
    window_seconds: float = 3600.0


def preview_scopes(
    repo: str, pr: int, installation_id: int, limits: PreviewLimits, placeholder: str
) -> list[tuple[str, tuple[Any, ...], int]]:
    """The preview limits as ``(SQL condition, its arguments, limit)``: one pull request, one
    installation. ``placeholder`` is the engine's parameter mark (``?`` or ``%s``)."""
    p = placeholder
    return [
        (f"repo = {p} AND pr = {p}", (repo.lower(), pr), limits.per_pr),
        (f"installation_id = {p}", (installation_id,), limits.per_installation),
    ]


def preview_wait(
    starts: Sequence[tuple[Sequence[Sequence[Any]], int]], now: float, window: float
) -> float | None:
    """Seconds until one more preview fits every limit (at least 1), or ``None`` when it fits
    now. Each entry holds one scope's start rows inside the window, newest first (the start time
    first in each row, at most ``limit`` rows), and the scope's limit (0 allows none).

    >>> preview_wait([([(100.0,), (40.0,)], 2), ([], 30)], now=110.0, window=3600.0)
    3530.0
    >>> preview_wait([([(100.0,)], 2)], now=110.0, window=3600.0) is None
    True
    """
    waits = [
        (float(rows[-1][0]) if rows else now) + window - now
        for rows, limit in starts
        if limit <= 0 or len(rows) >= limit
    ]
    return max(max(waits), 1.0) if waits else None


def minutes(seconds: float) -> int:
    """Whole minutes to wait, rounded up (at least 1).

    >>> minutes(61), minutes(0.5)
    (2, 1)
    """
    return max(1, math.ceil(seconds / 60))


class CommandLimits:
    def __init__(
        self,
        path: str | Path,
        *,
        permission_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.permission_seconds = permission_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=10, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- permission answers --------------------------------------------------------------------

    def permission(self, repo: str, user: str) -> bool | None:
        """The cached answer to "may ``user`` run commands in ``repo``", if still fresh."""
        with self._lock:
            row = self._conn.execute(
                "SELECT allowed FROM permissions WHERE repo = ? AND user = ? AND at > ?",
                (repo.lower(), user.lower(), self._clock() - self.permission_seconds),
            ).fetchone()
        return None if row is None else bool(row[0])

    def remember_permission(self, repo: str, user: str, allowed: bool) -> None:
        now = self._clock()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "DELETE FROM permissions WHERE at <= ?", (now - self.permission_seconds,)
                )
                self._conn.execute(
                    "INSERT INTO permissions (repo, user, allowed, at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (repo, user) DO UPDATE SET allowed = excluded.allowed,"
                    " at = excluded.at",
                    (repo.lower(), user.lower(), int(allowed), now),
                )
                self._trim("permissions")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # -- refusals ------------------------------------------------------------------------------

    def first_refusal(self, repo: str, pr: int, user: str) -> bool:
        """Record that ``user`` was refused on this pull request; ``True`` only the first time
        (so the App answers once, however many commands follow)."""
        now = self._clock()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "DELETE FROM refusals WHERE at <= ?", (now - REFUSAL_MEMORY_SECONDS,)
                )
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO refusals (repo, pr, user, at) VALUES (?, ?, ?, ?)",
                    (repo.lower(), pr, user.lower(), now),
                )
                self._trim("refusals")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return cur.rowcount == 1

    # -- preview rate limits -------------------------------------------------------------------

    def take_preview(
        self, installation_id: int | None, repo: str, pr: int, limits: PreviewLimits
    ) -> float | None:
        """Count one preview against the limits and return ``None``; or, when a limit is
        reached, count nothing and return the seconds until a preview is allowed again."""
        now = self._clock()
        since = now - limits.window_seconds
        inst = installation_id or 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM previews WHERE at <= ?", (since,))
                starts = [
                    (
                        self._conn.execute(
                            f"SELECT at FROM previews WHERE {where} AND at > ? ORDER BY at DESC"
                            " LIMIT ?",
                            (*args, since, max(limit, 1)),
                        ).fetchall(),
                        limit,
                    )
                    for where, args, limit in preview_scopes(repo, pr, inst, limits, "?")
                ]
                wait = preview_wait(starts, now, limits.window_seconds)
                if wait is not None:
                    self._conn.execute("COMMIT")
                    return wait
                self._conn.execute(
                    "INSERT INTO previews (installation_id, repo, pr, at) VALUES (?, ?, ?, ?)",
                    (inst, repo.lower(), pr, now),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return None

    def _trim(self, table: str) -> None:
        """Keep at most ``MAX_ROWS`` rows of ``table``, dropping the oldest."""
        (count,) = self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        if int(count) > MAX_ROWS:
            self._conn.execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"
                " ORDER BY at LIMIT ?)",
                (int(count) - MAX_ROWS,),
            )
