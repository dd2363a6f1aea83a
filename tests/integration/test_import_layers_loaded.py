"""The layering of tests/unit/test_import_contract.py, checked by importing every module of a
package in a fresh interpreter and looking at what ended up in ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if not info.name.endswith(".__main__"):  # running it would start the command line
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""

HEAVY = ["torch", "transformers", "peft", "accelerate", "fastapi", "starlette", "uvicorn"]
HEAVY += ["github", "psycopg", "psycopg_pool"]

CASES = [
    ("pipeline.taxonomy", [*HEAVY, "bot", "pipeline.sdg", "pipeline.training"]),
    ("pipeline.sdg", ["bot", "pipeline.training"]),
    ("bot.handlers", ["fastapi", "starlette", "uvicorn"]),
]


def loaded(package: str) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, package],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    modules: list[str] = json.loads(run.stdout)
    return modules


@pytest.mark.parametrize(("package", "forbidden"), CASES, ids=[c[0] for c in CASES])
def test_importing_a_package_loads_nothing_it_must_not(package: str, forbidden: list[str]) -> None:
    modules = loaded(package)
    assert package in modules
    bad = [m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not bad, bad


@pytest.mark.slow  # imports torch and transformers: seconds
def test_nothing_in_pipeline_loads_the_app() -> None:
    modules = [m for m in loaded("pipeline") if m == "bot" or m.startswith("bot.")]
    assert not modules, modules
