"""Shared test helpers: paths, the real-world corpus, and running the CLI in-process."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "taxonomy-corpus"


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
    """SmolLM2's real tokenizer (the embedded model is converted once, in tests/models.py)."""
    from tests.models import smol_tokenizer

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
