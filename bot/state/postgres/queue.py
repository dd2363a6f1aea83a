"""The job queue on PostgreSQL, for several App replicas behind one load balancer.

Same contract as :class:`bot.state.sqlite_queue.JobQueue` (read its module docstring: job states,
coalescing, superseding, leases, retries, dead letters); only the engine differs:

- Enqueueing, recording a batch of deliveries and leasing are SQL functions of the schema
  (``bot/state/postgres/migrations``), so each is one round trip: the webhook's group commit of a
  whole event-loop turn is ONE statement, and its transaction holds the delivery ids' and
  supersede groups' advisory locks, taken in one global order (no deadlock between replicas).
- Leasing uses ``FOR UPDATE SKIP LOCKED``: concurrent workers, in any replica, take different
  jobs without waiting for each other.
- An enqueue sends ``NOTIFY labbot_jobs`` on commit; :meth:`PgJobQueue.wait_for_work` wakes
  the idle workers of every replica on it, so they poll only every ``poll_seconds`` (for
  delayed retries and expired leases, which no one announces).

Timestamps come from the injected ``clock`` as in the SQLite queue; replicas must share the
wall clock (NTP), which lease expiry relies on.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from bot.state.jobs import (
    DEAD,
    LOST,
    PENDING,
    STATES,
    SUPERSEDED,
    DeliveryRecord,
    Job,
    JobSpec,
    QueueStats,
    UnknownJobKind,
    dead_specs,
    dump_payload,
    row_to_job,
    spec_columns,
)
from bot.state.postgres.pool import open_pool, redact
from pipeline.retry import full_jitter

__all__ = ["PgJobQueue"]

log = logging.getLogger("labbot.pgqueue")

_CHANNEL = "labbot_jobs"
_JOB_COLUMNS = (
    "id, kind, repo, pr, head_sha, installation_id, payload, delivery_id,"
    " attempts, lease_owner, lease_expires_at"
)
#: The errors of one record that the database refuses (a NUL character, a constraint):
#: the batch is then retried one record per transaction.
_RECORD_ERRORS = (psycopg.IntegrityError, psycopg.DataError)


class PgJobQueue:
    """The durable queue on the PostgreSQL database at ``url`` (``postgresql://...``); the
    schema is migrated on first use. Parameters as :class:`bot.state.sqlite_queue.JobQueue`;
    ``pool`` shares an existing pool (the build ledger's and the locks') instead of opening one."""

    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 60.0,
        max_attempts: int = 5,
        base_backoff: float = 2.0,
        max_backoff: float = 300.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        durable: bool = True,
        pool: ConnectionPool | None = None,
        pool_size: int = 10,
        poll_seconds: float = 1.0,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if base_backoff < 0 or max_backoff < 0:
            raise ValueError("backoff must not be negative")
        self.url = url
        self.lease_seconds = float(lease_seconds)
        self.max_attempts = int(max_attempts)
        self.base_backoff = float(base_backoff)
        self.max_backoff = float(max_backoff)
        self.poll_seconds = float(poll_seconds)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._owns_pool = pool is None
        self.pool = (
            pool if pool is not None else open_pool(url, max_size=pool_size, durable=durable)
        )
        self._closed = False
        self._wake = threading.Condition()
        self._wakes = 0  # NOTIFYs received; a waiter sleeps until it changes
        self._seen = threading.local()
        self._listener: threading.Thread | None = None
        self._listener_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"PgJobQueue({redact(self.url)!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("JobQueue is closed")

    def open_connection(self) -> None:
        """Make sure the pool has a connection ready (the server calls this as it starts)."""
        self._check_open()
        with self.pool.connection() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        """Stop the listener and close the pool (when this queue opened it)."""
        self._closed = True
        with self._wake:
            self._wake.notify_all()
        if self._listener is not None:
            self._listener.join(5)
        if self._owns_pool:
            self.pool.close()

    def __enter__(self) -> PgJobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- producing --------------------------------------------------------------------------

    def record_delivery(
        self,
        delivery_id: str,
        event: str,
        action: str | None,
        jobs: Sequence[JobSpec],
        *,
        coalesce_done_within: float = 0.0,
    ) -> bool:
        """See :meth:`bot.state.sqlite_queue.JobQueue.record_delivery`."""
        record = DeliveryRecord(delivery_id, event, action, tuple(jobs), coalesce_done_within)
        result = self.record_deliveries([record])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def record_deliveries(self, records: Sequence[DeliveryRecord]) -> list[bool | Exception]:
        """See :meth:`bot.state.sqlite_queue.JobQueue.record_deliveries`: one transaction (one
        statement) for the batch; should the database refuse a record, each is retried alone."""
        self._check_open()
        prepared: list[dict[str, Any] | Exception] = []
        for record in records:
            try:
                if not record.delivery_id:
                    raise ValueError("delivery_id must not be empty")
                prepared.append(_record_json(record))
            except (TypeError, ValueError) as exc:
                prepared.append(exc)
        now = self._clock()
        good = [item for item in prepared if not isinstance(item, Exception)]
        outcomes: list[bool | Exception]
        try:
            outcomes = list(self._record(good, now)) if good else []
        except _RECORD_ERRORS:
            if len(good) == 1 and len(prepared) == 1:
                raise
            outcomes = []
            for item in good:
                try:
                    outcomes.append(self._record([item], now)[0])
                except _RECORD_ERRORS as exc:
                    outcomes.append(exc)
        it = iter(outcomes)
        return [item if isinstance(item, Exception) else next(it) for item in prepared]

    def _record(self, batch: list[dict[str, Any]], now: float) -> list[bool]:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT labbot_record_deliveries(%s::json, %s)", (json.dumps(batch), now)
            ).fetchone()
        assert row is not None
        return [bool(v) for v in row[0]]

    def enqueue(
        self,
        spec: JobSpec,
        *,
        delivery_id: str | None = None,
        run_after: float | None = None,
    ) -> int:
        """See :meth:`bot.state.sqlite_queue.JobQueue.enqueue`."""
        self._check_open()
        payload = dump_payload(spec)
        now = self._clock()
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT labbot_enqueue(%s, %s, %s, %s, %s, %s, %s, %s, %s, 0)",
                (
                    *spec_columns(spec),
                    payload,
                    delivery_id,
                    now,
                    now if run_after is None else run_after,
                ),
            ).fetchone()
        assert row is not None
        return int(row[0])

    # -- consuming --------------------------------------------------------------------------

    def lease(self, worker: str) -> Job | None:
        """See :meth:`bot.state.sqlite_queue.JobQueue.lease`."""
        if not worker:
            raise ValueError("worker must not be empty")
        self._check_open()
        self._seen.wakes = self._wakes  # a NOTIFY from now on ends the next wait at once
        now = self._clock()
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM labbot_lease(%s, %s, %s, %s)",
                (worker, now, self.lease_seconds, self.max_attempts),
            ).fetchone()
        if row is None:
            return None
        try:
            return row_to_job(row)
        except UnknownJobKind as exc:  # written by another version of labbot
            log.warning("job %s of unknown kind %r ignored", row[0], exc.stored)
            self.complete(int(row[0]), worker, "ignored")
            return None

    def wait_for_work(self, timeout: float, stop: threading.Event) -> None:
        """Sleep until a job is enqueued anywhere (``NOTIFY``), ``stop`` is set, or
        ``poll_seconds`` pass (``timeout``, the SQLite poll interval, is not needed here)."""
        self._start_listener()
        seen = getattr(self._seen, "wakes", self._wakes)
        deadline = time.monotonic() + self.poll_seconds
        with self._wake:
            while self._wakes == seen and not stop.is_set() and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._wake.wait(min(left, 0.1))

    def _start_listener(self) -> None:
        with self._listener_guard:
            if self._listener is None and not self._closed:
                self._listener = threading.Thread(
                    target=self._listen, name="labbot-listen", daemon=True
                )
                self._listener.start()

    def _listen(self) -> None:
        while not self._closed:
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {_CHANNEL}")
                    self._bump()  # anything enqueued while not listening: look again
                    while not self._closed:
                        if any(True for _ in conn.notifies(timeout=0.5)):
                            self._bump()
            except psycopg.Error as exc:
                if self._closed:
                    return
                log.warning("LISTEN %s: %s; reconnecting", _CHANNEL, exc)
                time.sleep(1.0)

    def _bump(self) -> None:
        with self._wake:
            self._wakes += 1
            self._wake.notify_all()

    def heartbeat(self, job_id: int, worker: str) -> bool:
        """See :meth:`bot.state.sqlite_queue.JobQueue.heartbeat`."""
        now = self._clock()
        with self.pool.connection() as conn:
            cur = conn.execute(
                "UPDATE jobs SET lease_expires_at = %s, updated_at = %s"
                " WHERE id = %s AND state = 'leased' AND lease_owner = %s",
                (now + self.lease_seconds, now, job_id, worker),
            )
            return cur.rowcount == 1

    def is_superseded(self, job_id: int) -> bool:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT superseded OR state = 'superseded' FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()
        return bool(row[0]) if row is not None else False

    def complete(self, job_id: int, worker: str, outcome: str = "success") -> bool:
        """See :meth:`bot.state.sqlite_queue.JobQueue.complete`."""
        now = self._clock()
        with self.pool.connection() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'done', outcome = %s, lease_expires_at = NULL,"
                " finished_at = %s, updated_at = %s"
                " WHERE id = %s AND state = 'leased' AND lease_owner = %s",
                (outcome, now, now, job_id, worker),
            )
            return cur.rowcount == 1

    def fail(self, job_id: int, worker: str, reason: str, *, retryable: bool = True) -> str:
        """See :meth:`bot.state.sqlite_queue.JobQueue.fail`."""
        now = self._clock()
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT attempts, superseded FROM jobs"
                " WHERE id = %s AND state = 'leased' AND lease_owner = %s FOR UPDATE",
                (job_id, worker),
            ).fetchone()
            if row is None:
                return LOST
            attempts, superseded = int(row[0]), bool(row[1])
            if superseded:
                state, run_after = SUPERSEDED, None
            elif retryable and attempts < self.max_attempts:
                state, run_after = PENDING, now + self.backoff(attempts)
            else:
                state, run_after = DEAD, None
            conn.execute(
                "UPDATE jobs SET state = %s, last_error = %s, lease_expires_at = NULL,"
                " run_after = COALESCE(%s, run_after), updated_at = %s,"
                " finished_at = CASE WHEN %s = 'pending' THEN NULL ELSE %s END"
                " WHERE id = %s",
                (state, reason, run_after, now, state, now, job_id),
            )
            if state == PENDING:
                conn.execute(f"NOTIFY {_CHANNEL}")
            return state

    def backoff(self, attempts: int) -> float:
        """See :meth:`bot.state.sqlite_queue.JobQueue.backoff`."""
        return full_jitter(attempts, base=self.base_backoff, cap=self.max_backoff, rng=self._rng)

    # -- inspection -------------------------------------------------------------------------

    def set_delivery_outcome(self, delivery_id: str, outcome: str) -> None:
        """Set a recorded delivery's outcome (e.g. ``"processed"``, ``"failed"``)."""
        with self.pool.connection() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET outcome = %s WHERE delivery_id = %s",
                (outcome, delivery_id),
            )
            if cur.rowcount != 1:
                raise KeyError(delivery_id)

    def delivery_seen(self, delivery_id: str) -> bool:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM deliveries WHERE delivery_id = %s", (delivery_id,)
            ).fetchone()
        return row is not None

    def job_state(self, job_id: int) -> str | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return str(row[0]) if row is not None else None

    def dead_jobs(self) -> list[tuple[int, JobSpec, str]]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, kind, repo, pr, head_sha, installation_id, payload, last_error"
                " FROM jobs WHERE state = 'dead' ORDER BY id"
            ).fetchall()
        return dead_specs(rows)

    def stats(self) -> QueueStats:
        now = self._clock()
        # One snapshot for every figure: a REPEATABLE READ, read-only transaction.
        with self.pool.connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                counts = dict.fromkeys(STATES, 0)
                for state, count in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
                    counts[str(state)] = int(count)
                oldest, expired = conn.execute(
                    "SELECT (SELECT MIN(created_at) FROM jobs WHERE state = 'pending'),"
                    " (SELECT COUNT(*) FROM jobs WHERE state = 'leased'"
                    "  AND lease_expires_at <= %s)",
                    (now,),
                ).fetchone() or (None, 0)
                deliveries = {
                    (str(event), str(outcome)): int(count)
                    for event, outcome, count in conn.execute(
                        "SELECT event, outcome, COUNT(*) FROM deliveries GROUP BY event, outcome"
                    )
                }
                row = conn.execute("SELECT COALESCE(SUM(duplicates), 0) FROM deliveries")
                duplicates = (row.fetchone() or (0,))[0]
            finally:
                conn.execute("COMMIT")
        return QueueStats(
            counts=counts,
            depth=counts[PENDING] + counts["leased"],
            oldest_pending_age=None if oldest is None else max(0.0, now - float(oldest)),
            expired_leases=int(expired),
            deliveries=deliveries,
            duplicate_deliveries=int(duplicates),
        )

    def purge(self, before: float, batch: int = 1000) -> tuple[int, int]:
        """See :meth:`bot.state.sqlite_queue.JobQueue.purge`: finished jobs and old deliveries, in
        transactions of at most ``batch`` rows; pending and leased jobs and the deliveries
        they came from are kept."""
        jobs = deliveries = 0
        while True:
            with self.pool.connection() as conn, conn.transaction():
                n = conn.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
                    " WHERE state IN ('done', 'dead', 'superseded') AND finished_at < %s"
                    " LIMIT %s)",
                    (before, batch),
                ).rowcount
            jobs += n
            if n < batch:
                break
        while True:
            with self.pool.connection() as conn, conn.transaction():
                n = conn.execute(
                    "DELETE FROM deliveries WHERE delivery_id IN (SELECT d.delivery_id"
                    " FROM deliveries d WHERE d.received_at < %s AND NOT EXISTS"
                    " (SELECT 1 FROM jobs j WHERE j.delivery_id = d.delivery_id"
                    " AND j.state IN ('pending', 'leased')) LIMIT %s)",
                    (before, batch),
                ).rowcount
            deliveries += n
            if n < batch:
                break
        return jobs, deliveries


def _record_json(record: DeliveryRecord) -> dict[str, Any]:
    """The record as the JSON object ``labbot_record_deliveries`` reads."""
    jobs = []
    for spec in record.jobs:
        kind, repo, pr, key, inst = spec_columns(spec)
        jobs.append(
            {
                "kind": kind,
                "repo": repo,
                "pr": pr,
                "head_sha": key,
                "installation_id": inst,
                "payload": dump_payload(spec),
            }
        )
    return {
        "id": record.delivery_id,
        "event": record.event,
        "action": record.action,
        "window": float(record.coalesce_done_within),
        # A refused delivery's reason (None for an accepted one).
        "outcome": record.outcome,
        "jobs": jobs,
    }
