"""Fixtures of every tier: paths, the real-world corpus, running the CLI in-process, the SmolLM2
tokenizer, and the App's fake GitHub, its usual scene and a throwaway PostgreSQL server."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakegithub import FakeGitHub, Setup

# The fake GitHub's own fixtures.
from tests.support.fakegithub.pytest_plugin import fake_github, github_setup  # noqa: E402,F401
from tests.support.pgcluster import PgCluster, PgUnavailable

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "taxonomy-corpus"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that read the real-world corpus are ``corpus`` tests (``-m "not corpus"`` skips
    them), whichever tier they sit in."""
    for item in items:
        if "corpus" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.corpus)


@dataclass
class CliRun:
    code: int
    out: str
    err: str

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.out)  # type: ignore[no-any-return]


@pytest.fixture
def run_cli() -> Callable[..., CliRun]:
    """Run ``labbot`` in this process and capture its output and exit status."""
    from bot.cli import main

    def run(args: Sequence[str], stdin: str | None = None) -> CliRun:
        out, err = io.StringIO(), io.StringIO()
        old_stdin = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exc:  # argparse usage errors
                    code = int(exc.code or 0)
        finally:
            sys.stdin = old_stdin
        return CliRun(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def corpus() -> Path:
    if not (CORPUS / "verdicts.jsonl").is_file():
        pytest.skip("../shared/taxonomy-corpus is not present")
    return CORPUS


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """SmolLM2's real tokenizer (the embedded model is converted once: tests/support/models.py)."""
    from tests.support.models import smol_tokenizer

    return smol_tokenizer()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: the test models are small, and two OpenMP threads that spin-wait for
    each other slow down many times over as soon as anything else runs on a 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
