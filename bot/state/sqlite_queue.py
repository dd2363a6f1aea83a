"""A durable job queue in one SQLite file, shared by threads and processes.

GitHub does not retry a failed webhook delivery and gives the handler 10 seconds, so the handler
does no work itself: :meth:`JobQueue.record_delivery` records the ``X-GitHub-Delivery`` id and
enqueues the jobs the event implies in ONE transaction, and the handler answers 202. A delivery id
seen before is acknowledged and enqueues nothing. Workers (threads of this process, or other
processes on the same file) then :meth:`~JobQueue.lease` jobs, :meth:`~JobQueue.heartbeat` while
they run, and :meth:`~JobQueue.complete` or :meth:`~JobQueue.fail` them.

Job states (``jobs.state``)::

    pending ──lease──▶ leased ──complete──▶ done
       ▲                 │ ▲ │
       │   fail(retry)   │ └─┤ lease expired: another worker leases it, attempts + 1
       └─────────────────┘   └──fail(final) / lease expired max_attempts times──▶ dead
    pending ──newer dedupe key enqueued──▶ superseded
    leased, flagged superseded ──fail / lease expired──▶ superseded

``pending``
    Waiting to run. ``run_after`` holds it back (retry backoff, or a delayed enqueue).
``leased``
    A worker (``lease_owner``) holds it until ``lease_expires_at``; heartbeats push that forward.
    A worker that dies (``kill -9``) stops heartbeating; once the lease has expired the next
    :meth:`~JobQueue.lease` call anywhere takes the job over, counting one more attempt. A job
    whose lease expires on its ``max_attempts``-th attempt goes to ``dead`` instead, with the
    reason ``"lease expired N times"``, so a job that kills its worker cannot loop forever.
``done``
    Completed; ``outcome`` holds what the worker reported (``"success"`` by default).
``dead``
    Failed for good (not retryable, or out of attempts); ``last_error`` keeps the reason.
    :meth:`~JobQueue.dead_jobs` lists them.
``superseded``
    Never ran to any effect: a job with a new dedupe key in the same group (a newer head SHA
    of the same pull request and kind) replaced it while it was pending, or it was flagged
    superseded while leased and then failed or lost its lease.

Coalescing and superseding (see :class:`bot.state.jobs.JobSpec`). The supersede group is
``(repo, pr, kind, group)``, stored as the ``repo``, ``pr`` and ``kind`` columns (``kind`` or
``kind:group``); the coalescing key adds the spec's ``dedupe_key``, stored in the ``head_sha``
column (the name is historical: for validations, previews and builds the key is the commit SHA).
Enqueueing a key that is already pending or leased returns that job's id and adds nothing (the
first job's payload and ``run_after`` are kept). Enqueueing a new dedupe key turns the group's
pending jobs with another key into ``superseded``,
and flags leased ones (``superseded = 1``) so their worker can see :meth:`~JobQueue.is_superseded`
and drop its result. A flagged job is never coalesced with and never retried.

Delivery is at least once: a job whose worker vanished runs again, so jobs must be idempotent.
A worker whose lease was taken over learns it from ``heartbeat``/``complete`` returning False
(``fail`` returns :data:`LOST`). Lease ownership is by worker id, so every worker (thread) needs
its own id; :func:`default_worker_id` builds one from host, pid and thread.

Concurrency. Each thread gets its own connection (``check_same_thread=False`` only so that
:meth:`~JobQueue.close` can close them all). The database is in WAL mode with a busy timeout,
and every write runs in ``BEGIN IMMEDIATE``, which takes the write lock up front: two
processes can never both read a job as free and both lease it, and a writer never hits the
``SQLITE_BUSY`` that a deferred read-then-write transaction gets in WAL mode. A partial unique
index on the coalescing key of active, unflagged jobs backs the coalescing rule in the
database itself. Do not share a :class:`JobQueue` across ``fork``; open one per process.

All timestamps come from the injected ``clock`` (seconds, ``time.time`` by default), so tests
move time instead of sleeping. Processes sharing a file must share a clock (the wall clock).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bot.state.jobs import (
    DEAD,
    LEASED,
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
from pipeline.retry import full_jitter

__all__ = ["SCHEMA_VERSION", "JobQueue"]

log = logging.getLogger("labbot.queue")


SCHEMA_VERSION = 1

_NO_PR = -1  # stands for ``pr IS NULL`` in the coalescing index expression ``IFNULL(pr, -1)``

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    action TEXT,
    received_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    job_count INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    repo TEXT NOT NULL,
    pr INTEGER,
    head_sha TEXT NOT NULL,
    installation_id INTEGER,
    payload TEXT NOT NULL,
    delivery_id TEXT,
    state TEXT NOT NULL CHECK (state IN ({", ".join(repr(s) for s in STATES)})),
    superseded INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    expirations INTEGER NOT NULL DEFAULT 0,
    run_after REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    lease_owner TEXT,
    lease_expires_at REAL,
    finished_at REAL,
    outcome TEXT,
    last_error TEXT
);

-- Coalescing: at most one active, unflagged job per key. Also serves the supersede lookup,
-- whose (repo, pr, kind) is a prefix of it.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_active_key
    ON jobs (repo, IFNULL(pr, {_NO_PR}), kind, head_sha)
    WHERE state IN ('pending', 'leased') AND superseded = 0;

-- lease(): runnable pending jobs, and expired leases.
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (run_after) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (lease_expires_at) WHERE state = 'leased';
"""

_JOB_COLUMNS = (
    "id, kind, repo, pr, head_sha, installation_id, payload, delivery_id,"
    " attempts, lease_owner, lease_expires_at"
)


class JobQueue:
    """The durable queue on the SQLite file at ``path`` (created, with its schema, if missing).

    ``lease_seconds`` is how long a lease lasts without a heartbeat; ``max_attempts`` bounds the
    runs of a job (failures and expired leases alike); a retryable failure waits a random delay
    in ``[0, min(max_backoff, base_backoff * 2 ** (attempts - 1))]`` ("full jitter", drawn from
    ``rng``). ``durable=False`` trades the fsync on each commit (``synchronous=FULL``) for
    ``synchronous=NORMAL``, which survives a crashed process but not a power cut.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        lease_seconds: float = 60.0,
        max_attempts: int = 5,
        base_backoff: float = 2.0,
        max_backoff: float = 300.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        busy_timeout: float = 10.0,
        durable: bool = True,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if base_backoff < 0 or max_backoff < 0:
            raise ValueError("backoff must not be negative")
        self.path = Path(path)
        self.lease_seconds = float(lease_seconds)
        self.max_attempts = int(max_attempts)
        self.base_backoff = float(base_backoff)
        self.max_backoff = float(max_backoff)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._busy_timeout = float(busy_timeout)
        self._synchronous = "FULL" if durable else "NORMAL"
        self._local = threading.local()
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False
        self._init_schema()

    # -- connections and transactions -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # only so that close() can close every thread's connection
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"could not enable WAL mode on {self.path}: {mode}")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("JobQueue is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = self._connect()
        with self._conns_lock:
            if self._closed:
                conn.close()
                raise RuntimeError("JobQueue is closed")
            # Close the connections of threads that have ended, so short-lived threads do not
            # leak file handles.
            alive = []
            for thread, other in self._conns:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    other.close()
            alive.append((threading.current_thread(), conn))
            self._conns = alive
        self._local.conn = conn
        return conn

    def open_connection(self) -> None:
        """Open the calling thread's connection now, so that its first real query does not
        pay for it (a server thread calls this as it starts, not on its first request)."""
        self._conn()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any error."""
        conn = self._conn()
        # Threads of this process queue on a lock instead of SQLite's busy handler, which
        # sleeps in steps of up to 100 ms and made acknowledgements slow under load.
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several SELECTs see one snapshot."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _init_schema(self) -> None:
        with self._write() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has queue schema version {version}; this labbot knows "
                    f"{SCHEMA_VERSION}"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close every connection. Stop the workers first; the queue is unusable afterwards."""
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for _, conn in conns:
            conn.close()

    def __enter__(self) -> JobQueue:
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
        """Record a webhook delivery and enqueue its jobs, in one transaction.

        ``coalesce_done_within`` also folds a job into one with the same key that finished
        successfully that many seconds ago or less (GitHub sends several events for one push).

        Returns True when the delivery is new. A delivery id seen before enqueues nothing (its
        ``duplicates`` counter goes up) and returns False. The delivery's outcome starts as
        ``"queued"``, or ``"no_jobs"`` when ``jobs`` is empty; see :meth:`set_delivery_outcome`.
        """
        record = DeliveryRecord(delivery_id, event, action, tuple(jobs), coalesce_done_within)
        result = self.record_deliveries([record])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def record_deliveries(self, records: Sequence[DeliveryRecord]) -> list[bool | Exception]:
        """Record several deliveries in ONE transaction (one commit, one fsync): the group
        commit of :mod:`bot.intake`. Each record behaves as :meth:`record_delivery`, in
        order. A record that cannot be recorded (a payload that is not JSON) gets its
        exception in its place and the others are still recorded; should the database refuse
        one record, each is retried in a transaction of its own. An error of the database
        itself (disk full, I/O error) is raised and records nothing."""
        prepared: list[tuple[DeliveryRecord, list[str]] | Exception] = []
        for record in records:
            try:
                if not record.delivery_id:
                    raise ValueError("delivery_id must not be empty")
                # Fail before touching the database.
                prepared.append((record, [dump_payload(spec) for spec in record.jobs]))
            except (TypeError, ValueError) as exc:
                prepared.append(exc)
        now = self._clock()
        try:
            with self._write() as conn:
                return [
                    item if isinstance(item, Exception) else self._record(conn, *item, now)
                    for item in prepared
                ]
        except sqlite3.IntegrityError:
            if len(prepared) == 1:
                raise
        results: list[bool | Exception] = []
        for item in prepared:
            if isinstance(item, Exception):
                results.append(item)
                continue
            try:
                with self._write() as conn:
                    results.append(self._record(conn, *item, now))
            except sqlite3.IntegrityError as exc:
                results.append(exc)
        return results

    def _record(
        self, conn: sqlite3.Connection, record: DeliveryRecord, payloads: list[str], now: float
    ) -> bool:
        # One statement whether the id is new or seen before: this runs on the event loop,
        # once per delivery, so each statement saved is latency saved.
        (duplicates,) = conn.execute(
            "INSERT INTO deliveries (delivery_id, event, action, received_at, outcome,"
            " job_count) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (delivery_id)"
            " DO UPDATE SET duplicates = duplicates + 1 RETURNING duplicates",
            (
                record.delivery_id,
                record.event,
                record.action,
                now,
                record.outcome or ("queued" if record.jobs else "no_jobs"),
                len(record.jobs),
            ),
        ).fetchone()
        if duplicates:
            return False
        for spec, payload in zip(record.jobs, payloads, strict=True):
            self._enqueue(
                conn, spec, payload, record.delivery_id, now, now, record.coalesce_done_within
            )
        return True

    def enqueue(
        self,
        spec: JobSpec,
        *,
        delivery_id: str | None = None,
        run_after: float | None = None,
    ) -> int:
        """Enqueue ``spec`` (coalescing and superseding, see the module docstring); its job id."""
        payload = dump_payload(spec)
        now = self._clock()
        with self._write() as conn:
            return self._enqueue(
                conn, spec, payload, delivery_id, now, now if run_after is None else run_after
            )

    def _enqueue(
        self,
        conn: sqlite3.Connection,
        spec: JobSpec,
        payload: str,
        delivery_id: str | None,
        now: float,
        run_after: float,
        coalesce_done_within: float = 0.0,
    ) -> int:
        kind, repo, pr, key, inst = spec_columns(spec)
        pr_key = _NO_PR if pr is None else pr
        row = conn.execute(
            "SELECT id FROM jobs WHERE repo = ? AND IFNULL(pr, -1) = ? AND kind = ?"
            " AND head_sha = ? AND state IN ('pending', 'leased') AND superseded = 0",
            (repo, pr_key, kind, key),
        ).fetchone()
        if row is not None:
            return int(row[0])
        if coalesce_done_within > 0:
            row = conn.execute(
                "SELECT id FROM jobs WHERE repo = ? AND IFNULL(pr, -1) = ? AND kind = ?"
                " AND head_sha = ? AND state = 'done' AND superseded = 0 AND finished_at >= ?"
                " ORDER BY id DESC LIMIT 1",
                (repo, pr_key, kind, key, now - coalesce_done_within),
            ).fetchone()
            if row is not None:
                return int(row[0])
        # Supersede the group's other dedupe keys: pending jobs end, leased ones are flagged.
        conn.execute(
            "UPDATE jobs SET superseded = 1, updated_at = :now,"
            " state = CASE state WHEN 'pending' THEN 'superseded' ELSE state END,"
            " finished_at = CASE state WHEN 'pending' THEN :now ELSE finished_at END"
            " WHERE repo = :repo AND IFNULL(pr, -1) = :pr AND kind = :kind"
            " AND head_sha != :key AND state IN ('pending', 'leased') AND superseded = 0",
            {"now": now, "repo": repo, "pr": pr_key, "kind": kind, "key": key},
        )
        cur = conn.execute(
            "INSERT INTO jobs (kind, repo, pr, head_sha, installation_id, payload, delivery_id,"
            " state, run_after, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (kind, repo, pr, key, inst, payload, delivery_id, run_after, now, now),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    # -- consuming --------------------------------------------------------------------------

    def lease(self, worker: str) -> Job | None:
        """Lease the oldest (lowest id) runnable job: a pending job whose ``run_after`` has come,
        or a leased job whose lease has expired (its worker is presumed dead; ``attempts`` goes
        up by one). None when there is nothing to run.

        Expired leases that cannot run again are settled first: out of attempts, to ``dead``
        (``"lease expired N times"``); flagged superseded, to ``superseded``.
        """
        if not worker:
            raise ValueError("worker must not be empty")
        now = self._clock()
        # Most polls find nothing: look without the write lock first, so idle workers never
        # hold up the webhook's writer (a reader does not block a writer in WAL mode).
        with self._read() as conn:
            (due,) = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'pending' AND run_after <= ?)"
                " OR EXISTS (SELECT 1 FROM jobs WHERE state = 'leased' AND lease_expires_at <= ?)",
                (now, now),
            ).fetchone()
        if not due:
            return None
        with self._write() as conn:
            self._settle_expired(conn, now)
            candidates = [
                row[0]
                for row in (
                    conn.execute(
                        "SELECT id FROM jobs WHERE state = 'pending' AND run_after <= ?"
                        " ORDER BY id LIMIT 1",
                        (now,),
                    ).fetchone(),
                    conn.execute(
                        "SELECT id FROM jobs WHERE state = 'leased' AND lease_expires_at <= ?"
                        " ORDER BY id LIMIT 1",
                        (now,),
                    ).fetchone(),
                )
                if row is not None
            ]
            if not candidates:
                return None
            row = conn.execute(
                "UPDATE jobs SET"
                " expirations = expirations + (state = 'leased'),"
                " state = 'leased', attempts = attempts + 1, lease_owner = ?,"
                " lease_expires_at = ?, updated_at = ?"
                f" WHERE id = ? RETURNING {_JOB_COLUMNS}",
                (worker, now + self.lease_seconds, now, min(candidates)),
            ).fetchone()
        try:
            return row_to_job(row)
        except UnknownJobKind as exc:  # written by another version of labbot
            log.warning("job %s of unknown kind %r ignored", row[0], exc.stored)
            self.complete(int(row[0]), worker, "ignored")
            return None

    def _settle_expired(self, conn: sqlite3.Connection, now: float) -> None:
        conn.execute(
            "UPDATE jobs SET state = 'superseded', expirations = expirations + 1,"
            " last_error = 'lease expired after being superseded',"
            " finished_at = :now, updated_at = :now"
            " WHERE state = 'leased' AND lease_expires_at <= :now AND superseded = 1",
            {"now": now},
        )
        conn.execute(
            "UPDATE jobs SET state = 'dead', expirations = expirations + 1,"
            " last_error = 'lease expired ' || (expirations + 1) || ' times',"
            " finished_at = :now, updated_at = :now"
            " WHERE state = 'leased' AND lease_expires_at <= :now AND attempts >= :max",
            {"now": now, "max": self.max_attempts},
        )

    def wait_for_work(self, timeout: float, stop: threading.Event) -> None:
        """Sleep ``timeout`` seconds, or until ``stop`` is set: an idle worker's pause between
        polls (SQLite cannot announce new jobs; the PostgreSQL queue wakes on NOTIFY)."""
        stop.wait(timeout)

    def heartbeat(self, job_id: int, worker: str) -> bool:
        """Extend ``worker``'s lease to ``now + lease_seconds``. False when the lease is lost
        (taken over by another worker after expiring, or the job is no longer leased)."""
        now = self._clock()
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET lease_expires_at = ?, updated_at = ?"
                " WHERE id = ? AND state = 'leased' AND lease_owner = ?",
                (now + self.lease_seconds, now, job_id, worker),
            )
            return cur.rowcount == 1

    def is_superseded(self, job_id: int) -> bool:
        """True when a newer head_sha replaced this job: its result should be dropped."""
        row = (
            self._conn()
            .execute("SELECT superseded OR state = 'superseded' FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return bool(row[0]) if row is not None else False

    def complete(self, job_id: int, worker: str, outcome: str = "success") -> bool:
        """Mark ``worker``'s leased job ``done`` with ``outcome``. False when the lease is lost
        (nothing changed); a job flagged superseded still completes (the flag stays)."""
        now = self._clock()
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'done', outcome = ?, lease_expires_at = NULL,"
                " finished_at = ?, updated_at = ?"
                " WHERE id = ? AND state = 'leased' AND lease_owner = ?",
                (outcome, now, now, job_id, worker),
            )
            return cur.rowcount == 1

    def fail(self, job_id: int, worker: str, reason: str, *, retryable: bool = True) -> str:
        """Record a failed run of ``worker``'s leased job; the job's new state.

        Retryable with attempts left: back to ``pending``, ``run_after = now + backoff``.
        Otherwise ``dead`` with ``reason`` kept. A job flagged superseded goes to ``superseded``
        (never retried). :data:`LOST` when ``worker`` does not hold the lease (nothing changed).
        """
        now = self._clock()
        with self._write() as conn:
            row = conn.execute(
                "SELECT attempts, superseded FROM jobs"
                " WHERE id = ? AND state = 'leased' AND lease_owner = ?",
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
                "UPDATE jobs SET state = ?, last_error = ?, lease_expires_at = NULL,"
                " run_after = IFNULL(?, run_after), updated_at = ?,"
                " finished_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END"
                " WHERE id = ?",
                (state, reason, run_after, now, state, now, job_id),
            )
            return state

    def backoff(self, attempts: int) -> float:
        """The delay before retry after failed attempt number ``attempts`` (1-based): uniform
        in ``[0, min(max_backoff, base_backoff * 2 ** (attempts - 1))]``
        (:func:`pipeline.retry.full_jitter`)."""
        return full_jitter(attempts, base=self.base_backoff, cap=self.max_backoff, rng=self._rng)

    # -- inspection -------------------------------------------------------------------------

    def set_delivery_outcome(self, delivery_id: str, outcome: str) -> None:
        """Set a recorded delivery's outcome (e.g. ``"processed"``, ``"failed"``)."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET outcome = ? WHERE delivery_id = ?", (outcome, delivery_id)
            )
            if cur.rowcount != 1:
                raise KeyError(delivery_id)

    def delivery_seen(self, delivery_id: str) -> bool:
        row = (
            self._conn()
            .execute("SELECT 1 FROM deliveries WHERE delivery_id = ?", (delivery_id,))
            .fetchone()
        )
        return row is not None

    def job_state(self, job_id: int) -> str | None:
        """The job's state, or None when there is no such job."""
        row = self._conn().execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return str(row[0]) if row is not None else None

    def dead_jobs(self) -> list[tuple[int, JobSpec, str]]:
        """Every dead job as ``(id, spec, reason)``, oldest first."""
        rows = (
            self._conn()
            .execute(
                "SELECT id, kind, repo, pr, head_sha, installation_id, payload, last_error"
                " FROM jobs WHERE state = 'dead' ORDER BY id"
            )
            .fetchall()
        )
        return dead_specs(rows)

    def stats(self) -> QueueStats:
        now = self._clock()
        with self._read() as conn:
            counts = dict.fromkeys(STATES, 0)
            for state, count in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
                counts[str(state)] = int(count)
            oldest = conn.execute(
                "SELECT MIN(created_at) FROM jobs WHERE state = 'pending'"
            ).fetchone()[0]
            expired = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = 'leased' AND lease_expires_at <= ?",
                (now,),
            ).fetchone()[0]
            deliveries = {
                (str(event), str(outcome)): int(count)
                for event, outcome, count in conn.execute(
                    "SELECT event, outcome, COUNT(*) FROM deliveries GROUP BY event, outcome"
                )
            }
            duplicates = conn.execute(
                "SELECT IFNULL(SUM(duplicates), 0) FROM deliveries"
            ).fetchone()[0]
        return QueueStats(
            counts=counts,
            depth=counts[PENDING] + counts[LEASED],
            oldest_pending_age=None if oldest is None else max(0.0, now - float(oldest)),
            expired_leases=int(expired),
            deliveries=deliveries,
            duplicate_deliveries=int(duplicates),
        )

    def purge(self, before: float, batch: int = 1000) -> tuple[int, int]:
        """Delete finished jobs (done, dead, superseded) finished before ``before`` and
        deliveries received before it; ``(jobs, deliveries)`` deleted. Pending and leased jobs
        are kept, and so are the deliveries they came from. Rows go in transactions of at most
        ``batch``, so webhooks are never kept waiting long. A purged delivery id would be
        processed again if redelivered, so keep ``before`` well in the past (GitHub keeps its
        delivery log for 3 days)."""
        jobs = deliveries = 0
        while True:
            with self._write() as conn:
                n = conn.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
                    " WHERE state IN ('done', 'dead', 'superseded') AND finished_at < ? LIMIT ?)",
                    (before, batch),
                ).rowcount
            jobs += n
            if n < batch:
                break
        while True:
            with self._write() as conn:
                n = conn.execute(
                    "DELETE FROM deliveries WHERE delivery_id IN (SELECT delivery_id"
                    " FROM deliveries WHERE received_at < ? AND delivery_id NOT IN"
                    " (SELECT delivery_id FROM jobs WHERE state IN ('pending', 'leased')"
                    " AND delivery_id IS NOT NULL) LIMIT ?)",
                    (before, batch),
                ).rowcount
            deliveries += n
            if n < batch:
                break
        return jobs, deliveries
