"""PostgreSQL plumbing shared by the queue and the build ledger: the connection pool, the
versioned schema migrations, and advisory locks that hold across App replicas.

Migrations are the files ``bot/state/postgres/migrations/NNNN_name.sql``, applied in the order of
their number, each in its own transaction, and recorded in ``schema_migrations``. Replicas
that start together take turns (a session advisory lock), so each file runs once. A database
that has a migration this labbot does not know (a newer labbot migrated it) is refused.

:class:`PgLocks` replaces the per-process :class:`bot.handlers.KeyedLocks` when several
replicas share the database: ``hold(key)`` takes ``pg_advisory_xact_lock`` on a hash of the
key inside a transaction on a pooled connection, and keeps the transaction open for the
duration of the ``with`` block. A replica that dies mid-block drops its connection, which
releases the lock.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

__all__ = ["PgLocks", "lock_id", "migrations", "migrate", "open_pool", "redact"]

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_MIGRATE_LOCK = "labbot:migrate"


def lock_id(key: str) -> int:
    """A signed 64-bit advisory lock id for ``key`` (stable across processes and versions)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def migrations() -> list[tuple[int, str, str]]:
    """Every migration shipped with labbot as ``(version, name, sql)``, in order."""
    folder = resources.files("bot.state.postgres").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations ``conn``'s database lacks; the versions applied.

    Raises:
        RuntimeError: the database has a migration newer than this labbot knows.
    """
    known = migrations()
    applied: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (lock_id(_MIGRATE_LOCK),))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
        newest = known[-1][0] if known else 0
        if done and max(done) > newest:
            raise RuntimeError(
                f"the database has schema version {max(done)}; this labbot knows {newest} "
                "(upgrade labbot, or point it at another database)"
            )
        for version, name, sql in known:
            if version in done:
                continue
            with conn.transaction():
                conn.execute(sql.encode())  # no parameters: several statements in one call
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
            applied.append(version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id(_MIGRATE_LOCK),))
    return applied


def open_pool(
    url: str, *, max_size: int = 10, durable: bool = True, timeout: float = 10.0
) -> ConnectionPool:
    """A started pool of autocommit connections to ``url``, with the schema migrated.

    ``durable=False`` turns off ``synchronous_commit`` on its connections: a crash of the
    database server may then lose the last commits (never corrupt them)."""

    def configure(conn: psycopg.Connection[Any]) -> None:
        if not durable:
            conn.execute("SET synchronous_commit = off")

    with psycopg.connect(url, autocommit=True, connect_timeout=int(timeout)) as conn:
        migrate(conn)
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True},
        configure=configure,
        timeout=timeout,
        name="labbot",
        open=False,
    )
    pool.open(wait=True, timeout=timeout)
    return pool


class PgLocks:
    """Locks by key that exclude every thread of every replica on the database."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._guard = threading.Lock()
        self._local: dict[str, threading.Lock] = {}

    def _thread_lock(self, key: str) -> threading.Lock:
        # Threads of this process queue here first, so they wait without holding a connection.
        with self._guard:
            return self._local.setdefault(key, threading.Lock())

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Hold the lock on ``key`` for the ``with`` block (waiting for it)."""
        with self._thread_lock(key), self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(key),))
            yield True

    @contextmanager
    def try_hold(self, key: str) -> Iterator[bool]:
        """Hold the lock on ``key`` if it is free; the block gets False (and runs without it)
        when another thread or replica holds it."""
        local = self._thread_lock(key)
        if not local.acquire(blocking=False):
            yield False
            return
        try:
            with self.pool.connection() as conn, conn.transaction():
                row = conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s)", (lock_id(key),)
                ).fetchone()
                yield bool(row and row[0])
        finally:
            local.release()
