"""The build ledger's contract on both engines: the SQLite file of one App process, and the
PostgreSQL database of several replicas (a real server, see tests/support/pgcluster.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.builds import run_mismatch
from bot.state import Ledger
from bot.state.ledger import BuildLedger

SHA1, SHA2 = "1" * 40, "2" * 40


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        own = BuildLedger(tmp_path / "builds.sqlite3")
        yield own
        own.close()
        return
    from bot.state.postgres.ledger import PgBuildLedger
    from bot.state.postgres.pool import open_pool

    pool = open_pool(str(request.getfixturevalue("pg_url")), max_size=2)
    yield PgBuildLedger(pool)
    pool.close()


def test_dispatch_is_recorded_and_binds_the_run(ledger: Ledger) -> None:
    build, new, folded = ledger.request("o/r", SHA1, 7, {1: ["skills/a"]})
    assert new and not folded and build.prs == {1: ["skills/a"]}
    assert ledger.awaiting("o/r") == []  # requested, but not dispatched yet
    ledger.update(
        build.id,
        dispatch_event="workflow_dispatch",
        workflow_id=99,
        workflow_path=".github/workflows/build-model.yml",
        dispatch_branch="main",
        dispatched_at=1_000.0,
        dispatch_run_id=555,
    )
    [waiting] = ledger.awaiting("o/r")
    assert (waiting.id, waiting.workflow_id, waiting.dispatch_run_id) == (build.id, 99, 555)
    assert ledger.awaiting("other/repo") == []
    found = ledger.by_run("o/r", 555)  # the run id GitHub returned for the dispatch
    assert found is not None and found.id == build.id
    assert ledger.by_run("o/r", 556) is None
    run: dict[str, Any] = {
        "id": 555,
        "event": "workflow_dispatch",
        "workflow_id": 99,
        "path": ".github/workflows/build-model.yml",
        "head_branch": "main",
        "head_repository": {"full_name": "o/r"},
        "created_at": "1970-01-01T00:16:41Z",
        "display_title": f"labbot build {SHA1}",
    }
    assert run_mismatch(found, run, "o/r") is None
    assert run_mismatch(found, {**run, "event": "pull_request"}, "o/r") is not None
    ledger.update(build.id, state="completed", conclusion="success", run_id=555)
    assert ledger.awaiting("o/r") == []
    with pytest.raises(ValueError):
        ledger.update(build.id, sha=SHA2)


def test_a_waiting_build_is_folded_into_the_newer_merge(ledger: Ledger) -> None:
    first, _, _ = ledger.request("o/r", SHA1, 7, {1: ["skills/a"]})
    second, new, folded = ledger.request("o/r", SHA2, 7, {2: ["skills/b"]})
    assert new and [b.id for b in folded] == [first.id]
    assert second.prs == {1: ["skills/a"], 2: ["skills/b"]}
    assert ledger.by_sha("o/r", SHA1) is None  # superseded
    got = ledger.get(first.id)
    assert got is not None and got.state == "superseded"
