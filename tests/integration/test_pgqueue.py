"""What only the PostgreSQL engine has to prove: versioned migrations, records the server
refuses, NOTIFY wake-ups, replicas recording overlapping batches, advisory locks that die
with their holder, and the build ledger under concurrent merges. The queue contract itself
runs on both engines in test_queue.py."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot.state.jobs import DeliveryRecord, JobKind, JobSpec
from bot.state.ledger import BuildLedger
from bot.state.postgres.ledger import PgBuildLedger
from bot.state.postgres.pool import PgLocks, migrations, open_pool
from bot.state.postgres.queue import PgJobQueue

ROOT = Path(__file__).resolve().parents[2]


def spec(pr: int = 1, sha: str = "a" * 40, repo: str = "octo/taxonomy") -> JobSpec:
    return JobSpec.for_commit(JobKind.VALIDATE, repo, pr, sha, 42)


def test_migrations_run_once_under_concurrent_starts_and_a_newer_schema_is_refused(
    pg_url: str,
) -> None:
    errors: list[BaseException] = []
    queues: list[PgJobQueue] = []

    def start() -> None:
        try:
            queues.append(PgJobQueue(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for q in queues:
        q.close()
    assert errors == []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == [v for v, _, _ in migrations()]
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    with pytest.raises(RuntimeError, match="schema version 999"):
        PgJobQueue(pg_url)


def test_a_record_the_server_refuses_is_isolated_and_leaves_nothing_behind(pg_url: str) -> None:
    nul = JobSpec.for_commit(JobKind.VALIDATE, "octo/\x00evil", 2, "b" * 40, 42)
    with PgJobQueue(pg_url) as q:
        results = q.record_deliveries(
            [
                DeliveryRecord("d-1", "pull_request", "opened", (spec(pr=1),)),
                DeliveryRecord("d-2", "pull_request", "opened", (spec(pr=2), nul)),
                DeliveryRecord("d-3", "pull_request", "opened", (spec(pr=3),)),
            ]
        )
        assert results[0] is True and results[2] is True
        assert isinstance(results[1], psycopg.DataError)
        # d-2 is one transaction: neither the delivery nor its first (valid) job survived.
        assert not q.delivery_seen("d-2")
        with pytest.raises(psycopg.DataError):
            q.record_delivery("d-4", "pull_request", "opened", [spec(pr=4), nul])
        assert not q.delivery_seen("d-4")
        # ... and a NUL inside the payload is only JSON text: it is kept, not refused.
        payload = JobSpec(
            JobKind.COMMAND, "octo/taxonomy", 5, 42, "", group="1", payload={"body": "a\x00b"}
        )
        assert q.record_delivery("d-5", "issue_comment", "created", [payload])
        leased = [q.lease("w") for _ in range(4)]
        assert sorted(j.spec.pr or 0 for j in leased if j) == [1, 3, 5]
        assert [j.spec.payload for j in leased if j and j.spec.pr == 5] == [{"body": "a\x00b"}]


def test_notify_wakes_an_idle_worker_of_another_replica(pg_url: str) -> None:
    stop = threading.Event()
    with PgJobQueue(pg_url, poll_seconds=60) as idle, PgJobQueue(pg_url) as other:
        idle.wait_for_work(0.05, stop)  # starts the listener (whose start ends this wait)
        woke: list[float] = []

        def wait() -> None:
            assert idle.lease("w") is None
            start = time.monotonic()
            idle.wait_for_work(0.05, stop)
            woke.append(time.monotonic() - start)

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.5)
        assert woke == []  # still asleep: nothing was enqueued
        job_id = other.enqueue(spec())
        t.join(20)
        assert woke and woke[0] < 20  # not the 60 s poll
        job = idle.lease("w")
        assert job is not None and job.id == job_id
    with PgJobQueue(pg_url, poll_seconds=0.5) as q:
        q.wait_for_work(0.05, stop)
        q.lease("w")
        start = time.monotonic()
        q.wait_for_work(0.05, stop)
        assert time.monotonic() - start >= 0.45  # no NOTIFY: sleeps its poll interval


def test_replicas_recording_overlapping_batches_neither_deadlock_nor_duplicate(
    pg_url: str,
) -> None:
    replicas = [PgJobQueue(pg_url, durable=False) for _ in range(2)]
    ids = [f"d-{n}" for n in range(40)]
    errors: list[object] = []
    sent = 0
    lock = threading.Lock()

    def record(worker: int) -> None:
        nonlocal sent
        rng = random.Random(worker)
        q = replicas[worker % 2]
        for _ in range(15):
            batch = [
                DeliveryRecord(d, "pull_request", "synchronize", (spec(pr=int(d[2:]) % 7),))
                for d in rng.sample(ids, 8)
            ]
            for result in q.record_deliveries(batch):
                if isinstance(result, Exception):
                    errors.append(result)
            with lock:
                sent += len(batch)

    threads = [threading.Thread(target=record, args=(w,)) for w in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        stats = replicas[0].stats()
        seen = sum(n for (event, _), n in stats.deliveries.items() if event == "pull_request")
        assert seen == len({*ids} & {d for d in ids if replicas[1].delivery_seen(d)})
        assert seen + stats.duplicate_deliveries == sent
        # One job per coalescing key: 7 pull requests, one head SHA.
        assert stats.counts["pending"] == 7
    finally:
        for q in replicas:
            q.close()


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from bot.state.postgres.pool import PgLocks, open_pool
locks = PgLocks(open_pool({url!r}, max_size=2))
with locks.hold("sticky:octo/taxonomy#1"):
    print("HELD", flush=True)
    time.sleep(600)
"""


def test_advisory_locks_exclude_across_replicas_and_die_with_their_holder(pg_url: str) -> None:
    pools = [open_pool(pg_url, max_size=3) for _ in range(2)]
    a, b = PgLocks(pools[0]), PgLocks(pools[1])
    try:
        order: list[str] = []
        with a.hold("k"):
            with b.try_hold("k") as got:
                assert got is False

            def wait_then_note() -> None:
                with b.hold("k"):
                    order.append("b")

            waiter = threading.Thread(target=wait_then_note)
            waiter.start()
            time.sleep(0.3)
            order.append("a-done")
        waiter.join(10)
        assert order == ["a-done", "b"]
        with b.try_hold("other") as got:
            assert got is True

        script = _HOLDER.format(root=str(ROOT), url=pg_url)
        with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as proc:
            try:
                assert proc.stdout is not None and proc.stdout.readline().strip() == b"HELD"
                with a.try_hold("sticky:octo/taxonomy#1") as got:
                    assert got is False
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            finally:
                if proc.poll() is None:
                    proc.kill()
        deadline = time.monotonic() + 10
        while True:
            with a.try_hold("sticky:octo/taxonomy#1") as got:
                if got:
                    break
            assert time.monotonic() < deadline, "the dead holder's lock was never released"
            time.sleep(0.05)
    finally:
        for pool in pools:
            pool.close()


@pytest.fixture(params=["sqlite", "postgres"])
def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[object]]:
    """Two handles on one ledger (two replicas, or two connections to the SQLite file)."""
    if request.param == "sqlite":
        made: list[object] = [BuildLedger(tmp_path / "builds.sqlite3") for _ in range(2)]
        yield made
        for ledger in made:
            ledger.close()  # type: ignore[attr-defined]
        return
    url = request.getfixturevalue("pg_url")
    pools = [open_pool(url, max_size=6) for _ in range(2)]
    yield [PgBuildLedger(pool) for pool in pools]
    for pool in pools:
        pool.close()


def test_build_ledger_folds_waiting_builds_even_when_merges_race(ledgers: list[object]) -> None:
    first, second = ledgers[0], ledgers[1]
    assert isinstance(first, BuildLedger | PgBuildLedger)
    assert isinstance(second, BuildLedger | PgBuildLedger)
    one, new, folded = first.request("o/r", "1" * 40, 7, {1: ["a/qna.yaml"]})
    assert new and folded == [] and one.prs == {1: ["a/qna.yaml"]}
    two, new, folded = second.request("o/r", "2" * 40, 7, {2: ["b/qna.yaml"]})
    assert new and [b.id for b in folded] == [one.id]
    assert two.prs == {1: ["a/qna.yaml"], 2: ["b/qna.yaml"]}
    again, new, folded = first.request("o/r", "2" * 40, 7, {3: ["c/qna.yaml"]})
    assert (again.id, new, folded) == (two.id, False, [])
    first.update(two.id, state="running", run_id=99)
    by_run = second.by_run("o/r", 99)
    assert by_run is not None and by_run.id == two.id and sorted(by_run.prs) == [1, 2, 3]
    assert second.by_sha("o/r", "1" * 40) is None  # folded
    # Merges racing on two replicas: every pull request ends up in the one waiting build.
    errors: list[BaseException] = []

    def merge(n: int) -> None:
        ledger = ledgers[n % 2]
        assert isinstance(ledger, BuildLedger | PgBuildLedger)
        try:
            ledger.request("o/race", f"{n:040d}", 7, {100 + n: [f"l{n}/qna.yaml"]})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=merge, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    waiting = [
        b
        for b in (first.by_sha("o/race", f"{n:040d}") for n in range(8))
        if b is not None and b.state == "requested"
    ]
    assert len(waiting) == 1
    assert sorted(waiting[0].prs) == [100 + n for n in range(8)]
