"""Fixtures of the App's tests: a started, contract-checked fake GitHub and its usual scene."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakegithub import FakeGitHub, Setup


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
