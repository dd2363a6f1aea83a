"""The layering the tree promises, read statically from every import statement (function-level
imports included): the taxonomy stage needs only the core dependencies (a pre-commit hook
installs nothing else), generation does not depend on training, the pipeline knows nothing of
the App, and the App's handlers know nothing of the web framework.

tests/integration/test_import_layers_loaded.py checks the same by importing the packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What a checker on core dependencies must not need.
HEAVY = {
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "fastapi",
    "starlette",
    "uvicorn",
    "github",
    "psycopg",
    "psycopg_pool",
}

#: (package folder, modules it must not import, why)
CONTRACT = [
    ("pipeline/taxonomy", HEAVY | {"bot", "pipeline.sdg", "pipeline.training", "pipeline.cli"}),
    ("pipeline/sdg", {"bot", "pipeline.training", "pipeline.cli"}),
    ("pipeline", {"bot"}),
    ("bot/handlers", {"fastapi", "starlette", "uvicorn"}),
]


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """Every module an import statement in ``path`` names (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def breaks(name: str, forbidden: set[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize(("folder", "forbidden"), CONTRACT, ids=[c[0] for c in CONTRACT])
def test_package_imports_respect_the_layers(folder: str, forbidden: set[str]) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in imported(path)
        if breaks(name, forbidden)
    }
    assert not offenders, sorted(offenders)


def test_the_checker_sees_forbidden_imports(tmp_path: Path) -> None:
    """The check above can fail: imports inside functions and relative imports are caught."""
    module = tmp_path / "pipeline" / "taxonomy" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from . import lint\n"
        "from ..training import loop\n"
        "def late():\n"
        "    import torch.nn\n"
        "    from fastapi import FastAPI\n"
    )
    names = imported(module, tmp_path)
    forbidden = CONTRACT[0][1]
    assert {n for n in names if breaks(n, forbidden)} == {
        "torch.nn",
        "fastapi",
        "fastapi.FastAPI",
        "pipeline.training",
        "pipeline.training.loop",
    }
    assert "pipeline.taxonomy.lint" in names
