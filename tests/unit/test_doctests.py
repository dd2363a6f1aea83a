"""The examples in the docstrings of bot/ and pipeline/ run, and hold.

Only the modules that have an example are imported, so this stays fast and needs neither a GPU
nor a server: a module whose examples need one has no place in this tier.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules_with_examples() -> list[str]:
    found = []
    for package in ("bot", "pipeline"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>>" in path.read_text(encoding="utf-8"):
                parts = path.relative_to(ROOT).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found.append(".".join(parts))
    return found


MODULES = _modules_with_examples()


def test_some_modules_have_examples() -> None:
    assert "pipeline.taxonomy.yamlsource" in MODULES and "bot.markup" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0, f"{name} has '>>>' but no example doctest could find"
    assert failures == 0, f"{failures} of {tried} examples in {name} failed"
