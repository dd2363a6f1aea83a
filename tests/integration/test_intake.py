"""Group commit of webhook deliveries on the event loop (bot/intake.py), on a real database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.intake import DeliveryWriter
from bot.state.jobs import DeliveryRecord, JobKind, JobSpec
from bot.state.sqlite_queue import JobQueue


def record(n: int, pr: int | None = None) -> DeliveryRecord:
    jobs = () if pr is None else (JobSpec.for_commit(JobKind.VALIDATE, "o/r", pr, f"{pr:040d}", 1),)
    return DeliveryRecord(f"d-{n}", "pull_request", "opened", jobs)


def test_deliveries_of_one_loop_turn_share_one_transaction(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite3")
    writer = DeliveryWriter(queue)

    async def burst() -> list[bool]:
        return await asyncio.gather(*(writer.record(record(n, pr=n)) for n in range(40)))

    try:
        assert asyncio.run(burst()) == [True] * 40
        assert writer.batches == 1 and writer.recorded == 40
        assert queue.stats().counts["pending"] == 40

        async def again() -> list[bool]:
            first = await writer.record(record(100))
            rest = await asyncio.gather(writer.record(record(100)), writer.record(record(101)))
            return [first, *rest]

        assert asyncio.run(again()) == [True, False, True]
        assert writer.batches == 3
    finally:
        queue.close()


def test_a_bad_delivery_fails_alone_and_a_failed_commit_fails_its_batch(tmp_path: Path) -> None:
    class Broken(JobQueue):
        broken = False

        def _record(self, conn: sqlite3.Connection, *args: object) -> bool:
            if self.broken:
                raise sqlite3.OperationalError("disk I/O error")
            return super()._record(conn, *args)  # type: ignore[arg-type]

    queue = Broken(tmp_path / "q.sqlite3")
    writer = DeliveryWriter(queue)
    bad = DeliveryRecord(
        "d-bad", "ping", None, (JobSpec(JobKind.RECOVER, "o/r", 1, 1, "s", payload={"o": {1}}),)
    )

    async def mixed() -> list[object]:
        return await asyncio.gather(
            writer.record(record(1)), writer.record(bad), return_exceptions=True
        )

    try:
        ok, refused = asyncio.run(mixed())
        assert ok is True and isinstance(refused, ValueError)
        queue.broken = True

        async def doomed() -> list[object]:
            return await asyncio.gather(
                writer.record(record(2)), writer.record(record(3)), return_exceptions=True
            )

        results = asyncio.run(doomed())
        assert all(isinstance(r, sqlite3.OperationalError) for r in results)
        queue.broken = False
        assert not queue.delivery_seen("d-2") and not queue.delivery_seen("d-3")
        assert queue.delivery_seen("d-1")
    finally:
        queue.close()


def test_a_cancelled_request_does_not_break_the_batch(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite3")
    writer = DeliveryWriter(queue)

    async def main() -> bool:
        doomed = asyncio.ensure_future(writer.record(record(1)))
        kept = asyncio.ensure_future(writer.record(record(2)))
        await asyncio.sleep(0)  # both are queued; the flush has not run yet
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return await kept

    try:
        assert asyncio.run(main()) is True
        # At least once: the cancelled client's delivery is still recorded, so a redelivery
        # of it is recognised as a duplicate.
        assert queue.delivery_seen("d-1") and queue.delivery_seen("d-2")
    finally:
        queue.close()
