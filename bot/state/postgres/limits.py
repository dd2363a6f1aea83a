"""The command limits (:class:`bot.state.limits.CommandLimits`) on PostgreSQL, shared by App
replicas.

Same methods and meaning: cached permission answers, one refusal per user and pull request,
and preview rate limits. Replicas must share them, or each would answer a refused user once
and allow its own quota of previews. Counting a preview holds an advisory lock on the
installation for its transaction, so two replicas cannot both take the last one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from bot.state.limits import (
    MAX_ROWS,
    REFUSAL_MEMORY_SECONDS,
    PreviewLimits,
    preview_scopes,
    preview_wait,
)
from bot.state.postgres.pool import lock_id

__all__ = ["PgCommandLimits"]


class PgCommandLimits:
    def __init__(
        self,
        pool: ConnectionPool,
        *,
        permission_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.permission_seconds = permission_seconds
        self._clock = clock

    def close(self) -> None:
        """Nothing to do: the pool belongs to the backend that opened it."""

    def permission(self, repo: str, user: str) -> bool | None:
        """See :meth:`bot.state.limits.CommandLimits.permission`."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT allowed FROM command_permissions WHERE repo = %s AND login = %s"
                " AND at > %s",
                (repo.lower(), user.lower(), self._clock() - self.permission_seconds),
            ).fetchone()
        return None if row is None else bool(row[0])

    def remember_permission(self, repo: str, user: str, allowed: bool) -> None:
        now = self._clock()
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "DELETE FROM command_permissions WHERE at <= %s", (now - self.permission_seconds,)
            )
            conn.execute(
                "INSERT INTO command_permissions (repo, login, allowed, at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (repo, login)"
                " DO UPDATE SET allowed = excluded.allowed, at = excluded.at",
                (repo.lower(), user.lower(), allowed, now),
            )
            _trim(conn, "command_permissions", "repo, login")

    def first_refusal(self, repo: str, pr: int, user: str) -> bool:
        """See :meth:`bot.state.limits.CommandLimits.first_refusal`."""
        now = self._clock()
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "DELETE FROM command_refusals WHERE at <= %s", (now - REFUSAL_MEMORY_SECONDS,)
            )
            inserted = conn.execute(
                "INSERT INTO command_refusals (repo, pr, login, at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (repo.lower(), pr, user.lower(), now),
            ).rowcount
            _trim(conn, "command_refusals", "repo, pr, login")
        return inserted == 1

    def take_preview(
        self, installation_id: int | None, repo: str, pr: int, limits: PreviewLimits
    ) -> float | None:
        """See :meth:`bot.state.limits.CommandLimits.take_preview`."""
        now = self._clock()
        since = now - limits.window_seconds
        inst = installation_id or 0
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(f"labbot:previews:{inst}"),))
            conn.execute("DELETE FROM preview_starts WHERE at <= %s", (since,))
            starts = [
                (
                    conn.execute(
                        f"SELECT at FROM preview_starts WHERE {where} AND at > %s"
                        " ORDER BY at DESC LIMIT %s",
                        (*args, since, max(limit, 1)),
                    ).fetchall(),
                    limit,
                )
                for where, args, limit in preview_scopes(repo, pr, inst, limits, "%s")
            ]
            wait = preview_wait(starts, now, limits.window_seconds)
            if wait is not None:
                return wait
            conn.execute(
                "INSERT INTO preview_starts (installation_id, repo, pr, at)"
                " VALUES (%s, %s, %s, %s)",
                (inst, repo.lower(), pr, now),
            )
        return None


def _trim(conn: psycopg.Connection[Any], table: str, key: str) -> None:
    """Keep at most ``MAX_ROWS`` rows of ``table``, dropping the oldest."""
    row = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    count = int(row[0]) if row else 0
    if count > MAX_ROWS:
        conn.execute(
            f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table}"
            " ORDER BY at LIMIT %s)",
            (count - MAX_ROWS,),
        )
