"""Fixtures of the App's tests: a started, contract-checked fake GitHub and its usual scene."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fakegithub import FakeGitHub, Setup
from tests.pgcluster import PgCluster, PgUnavailable


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    """A fake GitHub on loopback; the test fails if the App broke GitHub's API contract."""
    fake = FakeGitHub().start()
    yield fake
    fake.stop(check=False)
    fake.assert_no_violations()


@pytest.fixture
def scene(fake: FakeGitHub) -> Setup:
    """The App installed on org/taxonomy."""
    return fake.quickstart("org/taxonomy", files={"README.md": "taxonomy\n"})


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL server for the session (skips where none is installed)."""
    try:
        cluster = PgCluster().start()
    except PgUnavailable as exc:
        if os.environ.get("LABBOT_REQUIRE_POSTGRES"):  # .ci/run: a real server or a red run
            pytest.fail(f"LABBOT_REQUIRE_POSTGRES is set: {exc}")
        pytest.skip(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database on the session's server."""
    return pg_cluster.create_database()
