"""pytest fixtures for the fake; tests/conftest.py imports them, so every tier has them.

* ``fake_github``: a started ``FakeGitHub``; teardown fails the test (as a teardown error) if
  any GitHub contract violation was recorded and not consumed by ``expect_violations``.
* ``github_setup``: ``fake_github.quickstart()``: App ``labbot`` installed on ``org``, repo
  ``org/taxonomy``; ``.github()`` / ``.integration()`` give PyGithub clients.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import ContractViolationError, FakeGitHub, Setup


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    try:
        yield fake
    finally:
        fake.stop(check=False)
    try:
        fake.assert_no_violations()
    except ContractViolationError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def github_setup(fake_github: FakeGitHub) -> Setup:
    return fake_github.quickstart()
