"""Where the App keeps its state: the interfaces handlers use, and the factory that picks
the engine from the settings.

No ``LABBOT_DATABASE_URL``: one SQLite file in the data folder
(:class:`bot.state.sqlite_queue.JobQueue`, :class:`bot.state.ledger.BuildLedger`, process locks),
for one ``labbot serve``. ``LABBOT_DATABASE_URL=postgresql://...``: PostgreSQL
(:class:`bot.state.postgres.queue.PgJobQueue`, :class:`bot.state.postgres.ledger.PgBuildLedger`,
:class:`bot.state.postgres.pool.PgLocks` advisory locks) for any number of replicas behind
one load balancer. Handlers see only the protocols below, so no SQL dialect reaches them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.state.jobs import DeliveryRecord, Job, JobSpec, QueueStats
from bot.state.ledger import BuildLedger, BuildRecord
from bot.state.limits import CommandLimits, PreviewLimits
from bot.state.sqlite_queue import JobQueue

if TYPE_CHECKING:
    from bot.settings import Settings

__all__ = [
    "Backend",
    "Ledger",
    "Limits",
    "Locks",
    "Queue",
    "is_postgres",
    "open_backend",
    "open_queue",
]


class Queue(Protocol):
    """The job queue's interface (see :mod:`bot.state.sqlite_queue` for the contract both
    engines keep)."""

    @property
    def lease_seconds(self) -> float: ...

    def open_connection(self) -> None: ...

    def close(self) -> None: ...

    def record_delivery(
        self,
        delivery_id: str,
        event: str,
        action: str | None,
        jobs: Sequence[JobSpec],
        *,
        coalesce_done_within: float = 0.0,
    ) -> bool: ...

    def record_deliveries(self, records: Sequence[DeliveryRecord]) -> list[bool | Exception]: ...

    def enqueue(
        self, spec: JobSpec, *, delivery_id: str | None = None, run_after: float | None = None
    ) -> int: ...

    def lease(self, worker: str) -> Job | None: ...

    def wait_for_work(self, timeout: float, stop: threading.Event) -> None: ...

    def heartbeat(self, job_id: int, worker: str) -> bool: ...

    def is_superseded(self, job_id: int) -> bool: ...

    def complete(self, job_id: int, worker: str, outcome: str = "success") -> bool: ...

    def fail(self, job_id: int, worker: str, reason: str, *, retryable: bool = True) -> str: ...

    def backoff(self, attempts: int) -> float: ...

    def set_delivery_outcome(self, delivery_id: str, outcome: str) -> None: ...

    def delivery_seen(self, delivery_id: str) -> bool: ...

    def job_state(self, job_id: int) -> str | None: ...

    def dead_jobs(self) -> list[tuple[int, JobSpec, str]]: ...

    def stats(self) -> QueueStats: ...

    def purge(self, before: float) -> tuple[int, int]: ...


class Ledger(Protocol):
    """The build ledger's interface (see :mod:`bot.state.ledger`)."""

    def close(self) -> None: ...

    def get(self, build_id: int) -> BuildRecord | None: ...

    def by_sha(self, repo: str, sha: str) -> BuildRecord | None: ...

    def by_run(self, repo: str, run_id: int) -> BuildRecord | None: ...

    def awaiting(self, repo: str) -> list[BuildRecord]: ...

    def request(
        self, repo: str, sha: str, installation_id: int | None, prs: dict[int, list[str]]
    ) -> tuple[BuildRecord, bool, list[BuildRecord]]: ...

    def update(self, build_id: int, **fields: Any) -> None: ...


class Limits(Protocol):
    """What commands may cost (see :mod:`bot.state.limits`), shared by every replica."""

    def close(self) -> None: ...

    def permission(self, repo: str, user: str) -> bool | None: ...

    def remember_permission(self, repo: str, user: str, allowed: bool) -> None: ...

    def first_refusal(self, repo: str, pr: int, user: str) -> bool: ...

    def take_preview(
        self, installation_id: int | None, repo: str, pr: int, limits: PreviewLimits
    ) -> float | None: ...


class Locks(Protocol):
    """Mutual exclusion by key: among a process's threads (SQLite), or among every replica
    on the database (PostgreSQL)."""

    def hold(self, key: str) -> AbstractContextManager[object]: ...

    def try_hold(self, key: str) -> AbstractContextManager[bool]: ...


@dataclass
class Backend:
    """The App's state, opened by :func:`open_backend`. ``locks`` is None for SQLite: the
    handlers' process locks suffice for one process."""

    queue: Queue
    builds: Ledger
    limits: Limits
    locks: Locks | None
    close: Callable[[], None]


def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def open_queue(location: str | Path, **options: Any) -> Queue:
    """The queue at ``location``: a PostgreSQL URL, or the path of a SQLite file."""
    if isinstance(location, str) and is_postgres(location):
        from bot.state.postgres.queue import PgJobQueue

        return PgJobQueue(location, **options)
    return JobQueue(location, **options)


def open_backend(settings: Settings, queue: Queue | None = None) -> Backend:
    """The engine ``settings`` choose; ``queue`` replaces the queue it would open (tests)."""
    if not is_postgres(settings.database_url):
        ledger = BuildLedger(settings.data_dir / "builds.sqlite3")
        limits = CommandLimits(
            settings.data_dir / "limits.sqlite3",
            permission_seconds=settings.permission_cache_seconds,
        )
        if queue is None:
            queue = JobQueue(settings.database, lease_seconds=settings.lease_seconds)

        def close_files() -> None:
            ledger.close()
            limits.close()

        return Backend(queue, ledger, limits, None, close_files)
    from bot.state.postgres.ledger import PgBuildLedger
    from bot.state.postgres.limits import PgCommandLimits
    from bot.state.postgres.pool import PgLocks, open_pool
    from bot.state.postgres.queue import PgJobQueue

    url = str(settings.database_url)
    # Each worker may hold three connections at once (its job, the job's heartbeat, a lock),
    # plus the event loop's and the recovery's.
    pool = open_pool(url, max_size=3 * settings.workers + 4)
    own: PgJobQueue | None = None
    if queue is None:
        queue = own = PgJobQueue(url, lease_seconds=settings.lease_seconds, pool=pool)

    def close() -> None:
        if own is not None:
            own.close()
        pool.close()

    shared: Limits = PgCommandLimits(pool, permission_seconds=settings.permission_cache_seconds)
    return Backend(queue, PgBuildLedger(pool), shared, PgLocks(pool), close)
