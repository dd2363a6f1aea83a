"""The durable job queue: real database files, a fake clock, threads and processes.

The contract tests run on both engines: SQLite, and a real PostgreSQL server (a throwaway
cluster, see tests/support/pgcluster.py; skipped where PostgreSQL is not installed). Tests that
reach into SQLite itself (its pragmas, its errors) take the ``db`` path directly."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bot.state import Queue, open_queue
from bot.state.jobs import (
    DEAD,
    DONE,
    LEASED,
    LOST,
    PENDING,
    SUPERSEDED,
    DeliveryRecord,
    JobKind,
    JobSpec,
)
from bot.state.sqlite_queue import SCHEMA_VERSION, JobQueue

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MaxRandom(random.Random):
    """Jitter always at its upper bound, so the backoff ceiling is observable."""

    def uniform(self, a: float, b: float) -> float:
        return b


def spec(
    pr: int | None = 1,
    sha: str = "a" * 40,
    kind: str = "validate",
    repo: str = "octo/taxonomy",
    **payload: Any,
) -> JobSpec:
    return JobSpec.for_commit(JobKind(kind), repo, pr, sha, 42, dict(payload))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queue.sqlite3"


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, db: Path) -> str | Path:
    """Where the queue lives: the SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return db
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def make_queue(target: str | Path) -> Iterator[Callable[..., Queue]]:
    """Opens queues on ``target`` (each test's engine), closing them after the test."""
    made: list[Queue] = []

    def make(**options: Any) -> Queue:
        q = open_queue(target, **options)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


@pytest.fixture
def queue(make_queue: Callable[..., Queue], clock: FakeClock) -> Queue:
    return make_queue(lease_seconds=30, max_attempts=3, clock=clock, rng=random.Random(7))


def job_rows(q: Queue) -> list[Mapping[str, Any]]:
    """Every row of the jobs table, as the engine stores it."""
    if isinstance(q, JobQueue):
        conn = sqlite3.connect(q.path)
        conn.row_factory = sqlite3.Row
        try:
            return list(conn.execute("SELECT * FROM jobs ORDER BY id").fetchall())
        finally:
            conn.close()
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(q.url, row_factory=dict_row) as pg:
        return pg.execute("SELECT * FROM jobs ORDER BY id").fetchall()


# -- schema -------------------------------------------------------------------------------


def test_schema_version_wal_and_reopen(db: Path, clock: FakeClock) -> None:
    q = JobQueue(db, clock=clock)
    job_id = q.enqueue(spec(payload_key="x"))
    q.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    with JobQueue(db, clock=clock) as reopened:  # survives a restart
        job = reopened.lease("w")
        assert job is not None and job.id == job_id
        assert job.spec == spec(payload_key="x")


def test_newer_schema_is_refused(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="schema version"):
        JobQueue(db)


def test_closed_queue_refuses_use(make_queue: Callable[..., Queue]) -> None:
    q = make_queue()
    q.close()
    with pytest.raises(RuntimeError, match="closed"):
        q.enqueue(spec())


# -- deliveries ---------------------------------------------------------------------------


def test_duplicate_delivery_is_acknowledged_once(queue: Queue) -> None:
    jobs = [spec(kind="validate"), spec(kind="preview")]
    assert not queue.delivery_seen("d-1")
    assert queue.record_delivery("d-1", "pull_request", "opened", jobs) is True
    assert queue.delivery_seen("d-1")
    # The redelivery carries a different job; it must still enqueue nothing.
    assert queue.record_delivery("d-1", "pull_request", "opened", [spec(sha="b" * 40)]) is False
    rows = job_rows(queue)
    assert [(r["kind"], r["delivery_id"], r["state"]) for r in rows] == [
        ("validate", "d-1", PENDING),
        ("preview", "d-1", PENDING),
    ]
    stats = queue.stats()
    assert stats.duplicate_deliveries == 1
    assert stats.deliveries == {("pull_request", "queued"): 1}
    job = queue.lease("w")
    assert job is not None and job.delivery_id == "d-1"


def test_record_delivery_is_one_transaction(db: Path, clock: FakeClock) -> None:
    class Exploding(JobQueue):
        calls = 0

        def _enqueue(self, *args: Any, **kwargs: Any) -> int:
            Exploding.calls += 1
            if Exploding.calls == 2:
                raise OSError("disk on fire")
            return super()._enqueue(*args, **kwargs)

    q = Exploding(db, clock=clock)
    try:
        with pytest.raises(OSError):
            q.record_delivery("d-1", "pull_request", "synchronize", [spec(), spec(kind="preview")])
        # Neither the delivery nor the first job survived, so a redelivery is processed.
        assert not q.delivery_seen("d-1")
        assert job_rows(q) == []
        assert q.record_delivery("d-1", "pull_request", "synchronize", [spec()]) is True
        assert len(job_rows(q)) == 1
    finally:
        q.close()


def test_unserialisable_payload_records_nothing(queue: Queue) -> None:
    bad = JobSpec.for_commit(JobKind.VALIDATE, "o/r", 1, "s", None, {"when": object()})
    with pytest.raises(ValueError, match="JSON"):
        queue.record_delivery("d-1", "pull_request", "opened", [spec(), bad])
    assert not queue.delivery_seen("d-1")
    assert job_rows(queue) == []


def test_record_deliveries_commits_a_batch_and_isolates_a_bad_record(queue: Queue) -> None:
    bad = JobSpec.for_commit(JobKind.VALIDATE, "o/r", 9, "s", None, {"when": object()})
    results = queue.record_deliveries(
        [
            DeliveryRecord("d-1", "pull_request", "opened", (spec(pr=1),)),
            DeliveryRecord("d-2", "pull_request", "opened", (bad,)),
            DeliveryRecord("d-1", "pull_request", "opened", (spec(pr=3),)),  # same id again
            DeliveryRecord("d-3", "ping", None, ()),
            DeliveryRecord("", "ping", None, ()),
        ]
    )
    assert results[0] is True and results[2] is False and results[3] is True
    assert isinstance(results[1], ValueError) and "JSON" in str(results[1])
    assert isinstance(results[4], ValueError)
    assert [(r["pr"], r["delivery_id"]) for r in job_rows(queue)] == [(1, "d-1")]
    assert not queue.delivery_seen("d-2")
    stats = queue.stats()
    assert stats.duplicate_deliveries == 1
    assert stats.deliveries == {("pull_request", "queued"): 1, ("ping", "no_jobs"): 1}


def test_record_deliveries_retries_one_by_one_when_the_database_refuses_one(
    db: Path, clock: FakeClock
) -> None:
    class Refusing(JobQueue):
        def _enqueue(self, conn: sqlite3.Connection, spec: JobSpec, *args: Any) -> int:
            if spec.pr == 2:
                raise sqlite3.IntegrityError("refused")
            return super()._enqueue(conn, spec, *args)

    q = Refusing(db, clock=clock)
    try:
        results = q.record_deliveries(
            [
                DeliveryRecord("d-1", "pull_request", "opened", (spec(pr=1),)),
                DeliveryRecord("d-2", "pull_request", "opened", (spec(pr=2),)),
                DeliveryRecord("d-3", "pull_request", "opened", (spec(pr=3),)),
            ]
        )
        assert results[0] is True and results[2] is True
        assert isinstance(results[1], sqlite3.IntegrityError)
        assert [r["pr"] for r in job_rows(q)] == [1, 3]
        assert not q.delivery_seen("d-2")
    finally:
        q.close()


def test_delivery_outcomes_in_stats(queue: Queue) -> None:
    assert queue.record_delivery("d-1", "pull_request", "opened", [spec()])
    assert queue.record_delivery("d-2", "ping", None, [])
    assert queue.record_delivery("d-3", "pull_request", "closed", [spec(pr=2)])
    queue.set_delivery_outcome("d-1", "processed")
    assert queue.stats().deliveries == {
        ("pull_request", "processed"): 1,
        ("pull_request", "queued"): 1,
        ("ping", "no_jobs"): 1,
    }
    with pytest.raises(KeyError):
        queue.set_delivery_outcome("nope", "processed")


# -- coalescing and superseding -----------------------------------------------------------


def test_coalescing_identical_key(queue: Queue) -> None:
    first = queue.enqueue(spec(n=1))
    assert queue.enqueue(spec(n=2)) == first  # same key, pending: no new row
    app_wide = JobSpec(JobKind.RECOVER, "", None, None, "")
    assert queue.enqueue(app_wide) == queue.enqueue(app_wide)  # pr None coalesces too
    # Any other key component differing makes a new job.
    others = {
        queue.enqueue(spec(kind="preview")),
        queue.enqueue(spec(pr=2)),
        queue.enqueue(spec(pr=None)),
        queue.enqueue(spec(repo="octo/other")),
    }
    assert first not in others and len(others) == 4
    assert len(job_rows(queue)) == 6
    assert json.loads(job_rows(queue)[0]["payload"]) == {"n": 1}  # the first payload is kept

    job = queue.lease("w")
    assert job is not None and job.id == first
    assert queue.enqueue(spec()) == first  # still coalesces while leased
    assert queue.complete(first, "w")
    assert queue.enqueue(spec()) != first  # finished: a new run is a new job


def test_superseding_pending_job(queue: Queue) -> None:
    old = queue.enqueue(spec(sha="a" * 40))
    other_kind = queue.enqueue(spec(sha="a" * 40, kind="preview"))
    other_pr = queue.enqueue(spec(sha="a" * 40, pr=2))
    new = queue.enqueue(spec(sha="b" * 40))
    assert queue.job_state(old) == SUPERSEDED
    assert queue.is_superseded(old)
    assert not queue.is_superseded(new)
    # Only the same (repo, pr, kind) group is touched.
    assert queue.job_state(other_kind) == PENDING
    assert queue.job_state(other_pr) == PENDING
    leased = [queue.lease("w") for _ in range(4)]
    assert sorted(j.id for j in leased if j is not None) == sorted([other_kind, other_pr, new])
    assert queue.stats().counts[SUPERSEDED] == 1


def test_superseding_leased_job(queue: Queue, clock: FakeClock) -> None:
    old = queue.enqueue(spec(sha="a" * 40))
    job = queue.lease("w1")
    assert job is not None and job.id == old
    assert not queue.is_superseded(old)
    new = queue.enqueue(spec(sha="b" * 40))
    # Leased: it keeps running (and heartbeating), but the worker can see it is stale.
    assert queue.job_state(old) == LEASED
    assert queue.is_superseded(old)
    assert queue.heartbeat(old, "w1")
    # A flagged job never coalesces: going back to sha a makes a fresh job, superseding b.
    again = queue.enqueue(spec(sha="a" * 40))
    assert again not in (old, new)
    assert queue.job_state(new) == SUPERSEDED
    # A flagged job is not retried after failing.
    assert queue.fail(old, "w1", "boom") == SUPERSEDED
    assert queue.job_state(old) == SUPERSEDED


def test_flagged_job_is_not_rerun_after_its_lease_expires(queue: Queue, clock: FakeClock) -> None:
    old = queue.enqueue(spec(sha="a" * 40))
    assert queue.lease("w1") is not None
    new = queue.enqueue(spec(sha="b" * 40))
    clock.advance(31)  # w1 died while its job was flagged
    job = queue.lease("w2")
    assert job is not None and job.id == new  # not the expired, superseded one
    assert queue.job_state(old) == SUPERSEDED
    assert queue.lease("w3") is None


def test_superseded_leased_job_can_still_complete(queue: Queue) -> None:
    old = queue.enqueue(spec(sha="a" * 40))
    assert queue.lease("w") is not None
    queue.enqueue(spec(sha="b" * 40))
    assert queue.complete(old, "w")
    assert queue.job_state(old) == DONE
    assert queue.is_superseded(old)  # the flag stays for the record


def _status(run: int, key: str) -> JobSpec:
    return JobSpec(JobKind.BUILD_STATUS, "octo/taxonomy", None, 42, key, group=str(run))


def test_groups_narrow_superseding(queue: Queue) -> None:
    # A newer state of one workflow run supersedes its older one, never another run's.
    run_a = queue.enqueue(_status(1, "requested-1"))
    run_b = queue.enqueue(_status(2, "requested-1"))
    newer_a = queue.enqueue(_status(1, "completed-1"))
    assert queue.job_state(run_a) == SUPERSEDED
    assert queue.job_state(run_b) == PENDING and queue.job_state(newer_a) == PENDING
    assert queue.enqueue(_status(1, "completed-1")) == newer_a  # same group and key: one job
    # Each comment is a group of its own: a second command never supersedes a first.
    first, second = (
        queue.enqueue(JobSpec(JobKind.COMMAND, "octo/taxonomy", 1, 42, "", group=str(c)))
        for c in (10, 11)
    )
    assert first != second and queue.job_state(first) == PENDING
    rows = {row["id"]: (row["kind"], row["head_sha"]) for row in job_rows(queue)}
    assert rows[newer_a] == ("build-status:1", "completed-1")  # the format rows always had
    assert rows[second] == ("command:11", "")


def _insert_raw(q: Queue, kind: str, key: str, now: float) -> None:
    """A pending row as an earlier version of labbot (or another one) wrote it."""
    values = (kind, "octo/taxonomy", 3, key, 42, "{}", now, now, now)
    sql = (
        "INSERT INTO jobs (kind, repo, pr, head_sha, installation_id, payload, state,"
        " run_after, created_at, updated_at) VALUES ({0}, {0}, {0}, {0}, {0}, {0}, 'pending',"
        " {0}, {0}, {0})"
    )
    if isinstance(q, JobQueue):
        with sqlite3.connect(q.path) as conn:
            conn.execute(sql.format("?"), values)
        return
    import psycopg

    with psycopg.connect(q.url) as pg:
        pg.execute(sql.format("%s").encode(), values)


def test_stored_rows_of_every_shape_lease_back_and_unknown_kinds_are_ignored(
    queue: Queue, clock: FakeClock
) -> None:
    stored = [
        ("validate", "a" * 40),
        ("deploy:7", "x"),  # a kind this version does not know
        ("command:55", ""),
        ("build-status:9", "completed-2"),
        ("build-job:9", "12"),
        ("recover", "1767225600"),
    ]
    for kind, key in stored:
        _insert_raw(queue, kind, key, clock.now)
    leased = [queue.lease("w") for _ in range(len(stored) + 1)]
    specs = [(j.spec.kind, j.spec.group, j.spec.dedupe_key, j.spec.sha) for j in leased if j]
    assert specs == [
        (JobKind.VALIDATE, "", "a" * 40, "a" * 40),
        (JobKind.COMMAND, "55", "", None),
        (JobKind.BUILD_STATUS, "9", "completed-2", None),
        (JobKind.BUILD_JOB, "9", "12", None),
        (JobKind.RECOVER, "", "1767225600", None),
    ]
    unknown = next(row for row in job_rows(queue) if row["kind"] == "deploy:7")
    assert (unknown["state"], unknown["outcome"]) == (DONE, "ignored")


# -- leasing ------------------------------------------------------------------------------


def test_lease_and_complete(queue: Queue, clock: FakeClock) -> None:
    assert queue.lease("w") is None
    first = queue.enqueue(spec(pr=1, note="hi"))
    second = queue.enqueue(spec(pr=2))
    job = queue.lease("w")
    assert job is not None
    assert job.id == first  # oldest first
    assert job.spec == spec(pr=1, note="hi")
    assert job.attempts == 1
    assert job.lease_owner == "w"
    assert job.lease_expires_at == clock.now + 30
    assert job.delivery_id is None
    assert queue.complete(first, "other") is False  # not the owner
    assert queue.complete(first, "w", "failure-reported") is True
    assert queue.complete(first, "w") is False  # only once
    assert queue.job_state(first) == DONE
    assert job_rows(queue)[0]["outcome"] == "failure-reported"
    nxt = queue.lease("w")
    assert nxt is not None and nxt.id == second
    assert queue.lease("w") is None


def test_run_after_delays_a_job(queue: Queue, clock: FakeClock) -> None:
    later = queue.enqueue(spec(pr=1), run_after=clock.now + 10)
    now = queue.enqueue(spec(pr=2))
    job = queue.lease("w")
    assert job is not None and job.id == now
    assert queue.lease("w") is None
    clock.advance(10)
    job = queue.lease("w")
    assert job is not None and job.id == later


def test_threads_never_share_a_job(make_queue: Callable[..., Queue]) -> None:
    q = make_queue(lease_seconds=60, durable=False)
    try:
        ids = {q.enqueue(spec(pr=n)) for n in range(1, 201)}
        leased: list[int] = []
        lock = threading.Lock()
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def work(name: str) -> None:
            try:
                start.wait()
                while (job := q.lease(name)) is not None:
                    with lock:
                        leased.append(job.id)
                    assert q.complete(job.id, name)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert Counter(leased) == Counter(ids)  # every job exactly once
        assert q.stats().counts[DONE] == 200
    finally:
        q.close()


def test_two_queue_objects_never_share_a_job(make_queue: Callable[..., Queue]) -> None:
    queues = [make_queue(durable=False) for _ in range(2)]
    try:
        ids = {queues[0].enqueue(spec(pr=n)) for n in range(1, 151)}
        got: list[list[int]] = [[], [], [], []]
        start = threading.Barrier(4)

        def work(i: int) -> None:
            q = queues[i % 2]
            start.wait()
            while (job := q.lease(f"w{i}")) is not None:
                got[i].append(job.id)
                q.complete(job.id, f"w{i}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        everything = [j for g in got for j in g]
        assert Counter(everything) == Counter(ids)
        assert got[0] + got[2] and got[1] + got[3]  # both queue objects did work
    finally:
        for q in queues:
            q.close()


_WORKER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from bot.state import open_queue
q = open_queue({db!r}, durable=False)
print("READY", flush=True)
while not Path({go!r}).exists():
    time.sleep(0.005)
while (job := q.lease({name!r})) is not None:
    assert q.complete(job.id, {name!r})
    print(job.id, flush=True)
q.close()
"""


def test_processes_never_share_a_job(
    make_queue: Callable[..., Queue], target: str | Path, tmp_path: Path
) -> None:
    db = target
    q = make_queue(durable=False)
    ids = {q.enqueue(spec(pr=n)) for n in range(1, 301)}
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER.format(root=str(ROOT), db=str(db), go=str(go), name=f"p{i}"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "READY"
        go.touch()
        outputs = [p.communicate(timeout=30)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
    assert [p.returncode for p in procs] == [0, 0, 0]
    per_proc = [[int(line) for line in out.split()] for out in outputs]
    assert Counter(j for ids_ in per_proc for j in ids_) == Counter(ids)


# -- expiry, heartbeats, retries ----------------------------------------------------------


def test_expired_lease_is_released_with_one_more_attempt(queue: Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue(spec())
    first = queue.lease("w1")
    assert first is not None and first.attempts == 1
    clock.advance(29.9)
    assert queue.lease("w2") is None  # not expired yet
    assert queue.stats().expired_leases == 0
    clock.advance(0.2)
    assert queue.stats().expired_leases == 1
    second = queue.lease("w2")
    assert second is not None
    assert (second.id, second.attempts, second.lease_owner) == (job_id, 2, "w2")
    # The first worker has lost it.
    assert queue.heartbeat(job_id, "w1") is False
    assert queue.complete(job_id, "w1") is False
    assert queue.fail(job_id, "w1", "late") == LOST
    assert queue.job_state(job_id) == LEASED
    assert queue.complete(job_id, "w2") is True


def test_heartbeat_extends_the_lease(queue: Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue(spec())
    assert queue.lease("w1") is not None
    clock.advance(25)
    assert queue.heartbeat(job_id, "w1") is True  # now expires at +55
    clock.advance(25)
    assert queue.lease("w2") is None  # would have expired at +30 without the heartbeat
    assert queue.heartbeat(job_id, "w2") is False  # not the owner
    clock.advance(31)  # +81: expired
    job = queue.lease("w2")
    assert job is not None and job.id == job_id
    assert queue.heartbeat(job_id, "w1") is False  # lost
    assert queue.heartbeat(job_id, "w2") is True
    assert queue.complete(job_id, "w2")
    assert queue.heartbeat(job_id, "w2") is False  # nothing left to extend


def test_backoff_grows_and_is_capped(make_queue: Callable[..., Queue], clock: FakeClock) -> None:
    q = make_queue(base_backoff=2, max_backoff=10, rng=MaxRandom(), clock=clock)
    try:
        assert [q.backoff(n) for n in range(1, 8)] == [2, 4, 8, 10, 10, 10, 10]
        assert q.backoff(10_000) == 10  # no float overflow
    finally:
        q.close()
    seeded = make_queue(base_backoff=2, max_backoff=10, rng=random.Random(1), clock=clock)
    try:
        for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (4, 10), (9, 10)]:
            samples = [seeded.backoff(attempts) for _ in range(300)]
            assert all(0 <= s <= ceiling for s in samples)
            assert max(samples) > 0.8 * ceiling  # full jitter spans the range...
            assert min(samples) < 0.2 * ceiling  # ...from near zero
    finally:
        seeded.close()


def test_fail_retries_with_backoff_then_dead_letters(
    make_queue: Callable[..., Queue], clock: FakeClock
) -> None:
    q = make_queue(max_attempts=3, base_backoff=2, max_backoff=3, rng=MaxRandom(), clock=clock)
    try:
        job_id = q.enqueue(spec())
        expected_delays = [2, 3]  # 2 * 2**0, then 2 * 2**1 capped at 3
        for attempt, delay in enumerate(expected_delays, start=1):
            job = q.lease("w")
            assert job is not None and job.attempts == attempt
            assert q.fail(job_id, "w", f"flaky {attempt}") == PENDING
            clock.advance(delay - 0.01)
            assert q.lease("w") is None  # still backing off
            clock.advance(0.01)
        job = q.lease("w")
        assert job is not None and job.attempts == 3
        assert q.fail(job_id, "w", "still broken") == DEAD
        assert q.lease("w") is None
        assert q.dead_jobs() == [(job_id, spec(), "still broken")]
        assert q.stats().counts[DEAD] == 1
    finally:
        q.close()


def test_non_retryable_failure_is_dead_at_once(queue: Queue) -> None:
    job_id = queue.enqueue(spec())
    assert queue.lease("w") is not None
    assert queue.fail(job_id, "w", "bad taxonomy", retryable=False) == DEAD
    assert queue.dead_jobs() == [(job_id, spec(), "bad taxonomy")]


def test_expired_leases_dead_letter_after_max_attempts(queue: Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue(spec())
    for attempt in (1, 2, 3):
        job = queue.lease(f"w{attempt}")
        assert job is not None and (job.id, job.attempts) == (job_id, attempt)
        clock.advance(31)  # the worker died
    assert queue.lease("w4") is None
    assert queue.job_state(job_id) == DEAD
    assert queue.dead_jobs() == [(job_id, spec(), "lease expired 3 times")]


# -- stats --------------------------------------------------------------------------------


def test_stats_depth_and_oldest_age(queue: Queue, clock: FakeClock) -> None:
    empty = queue.stats()
    assert empty.depth == 0 and empty.oldest_pending_age is None
    assert empty.counts == {PENDING: 0, LEASED: 0, DONE: 0, DEAD: 0, SUPERSEDED: 0}
    a = queue.enqueue(spec(pr=1))
    clock.advance(5)
    queue.enqueue(spec(pr=2))
    clock.advance(5)
    queue.enqueue(spec(pr=3))
    stats = queue.stats()
    assert (stats.depth, stats.oldest_pending_age) == (3, 10)
    job = queue.lease("w")
    assert job is not None and job.id == a
    stats = queue.stats()
    assert stats.counts[PENDING] == 2 and stats.counts[LEASED] == 1
    assert (stats.depth, stats.oldest_pending_age) == (3, 5)  # the leased one is not pending
    assert queue.complete(a, "w")
    stats = queue.stats()
    assert (stats.depth, stats.counts[DONE]) == (2, 1)


def test_purge_removes_old_finished_work(queue: Queue, clock: FakeClock) -> None:
    queue.record_delivery("d-old", "pull_request", "opened", [spec(pr=1)])
    job = queue.lease("w")
    assert job is not None and queue.complete(job.id, "w")
    clock.advance(100)
    queue.record_delivery("d-new", "pull_request", "opened", [spec(pr=2)])
    assert queue.purge(clock.now - 50) == (1, 1)
    assert not queue.delivery_seen("d-old") and queue.delivery_seen("d-new")
    assert queue.stats().depth == 1


# -- kill -9 ------------------------------------------------------------------------------

_VICTIM = """
import sys, time
sys.path.insert(0, {root!r})
from bot.state import open_queue
q = open_queue({db!r}, lease_seconds={lease!r})
job = q.lease("victim")
print("LEASED", job.id if job else None, flush=True)
while True:  # keep the lease alive, as a real worker does, until killed
    q.heartbeat(job.id, "victim")
    time.sleep(0.05)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_job_survives_kill_9(make_queue: Callable[..., Queue], target: str | Path) -> None:
    lease = 0.5
    db = target
    with make_queue(lease_seconds=lease) as q:
        assert q.record_delivery("d-1", "pull_request", "opened", [spec()])
        victim = _VICTIM.format(root=str(ROOT), db=str(db), lease=lease)
        with subprocess.Popen(
            [sys.executable, "-c", victim], stdout=subprocess.PIPE, text=True
        ) as proc:
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline().split()
                assert line[0] == "LEASED" and line[1] != "None", line
                job_id = int(line[1])
                # Alive and heartbeating: the job is not up for grabs, even past one lease.
                time.sleep(lease * 1.5)
                assert q.lease("rescuer") is None
                os.kill(proc.pid, signal.SIGKILL)
                assert proc.wait(timeout=10) == -signal.SIGKILL
            finally:
                if proc.poll() is None:
                    proc.kill()
        deadline = time.monotonic() + 10
        rescued = q.lease("rescuer")
        while rescued is None and time.monotonic() < deadline:
            time.sleep(0.02)
            rescued = q.lease("rescuer")
        assert rescued is not None
        assert (rescued.id, rescued.attempts, rescued.delivery_id) == (job_id, 2, "d-1")
        assert q.complete(job_id, "rescuer") is True
        assert q.complete(job_id, "rescuer") is False
        assert q.complete(job_id, "victim") is False
        assert q.lease("rescuer") is None
        stats = q.stats()
        assert stats.counts[DONE] == 1 and stats.depth == 0
        rows = job_rows(q)
        assert [(r["state"], r["lease_owner"], r["attempts"]) for r in rows] == [
            (DONE, "rescuer", 2)
        ]
