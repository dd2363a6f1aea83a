"""pytest fixtures for the fake. Enable with ``pytest_plugins = ["fakegithub.pytest_plugin"]``
in the top-level ``tests/conftest.py`` (``tests/`` on ``sys.path``, pytest's default rootdir
insertion does that), or import the fixtures into a conftest.

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
