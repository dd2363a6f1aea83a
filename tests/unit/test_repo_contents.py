"""Everything the project ships validates: schemas, the config, the sample taxonomy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from pipeline.config import load_config
from pipeline.taxonomy.validate import PROFILES, validate_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "schemas").glob("*.json")))
def test_schema_files_are_valid_2020_12_schemas(name: str) -> None:
    schema = json.loads((ROOT / "schemas" / name).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_repository_config_is_valid() -> None:
    config = load_config(ROOT / ".github" / "labbot.yml")
    assert config.taxonomy_root == "taxonomy"
    assert "https://github.com/labbot-dev/sample-docs" in config.documents.mirrors


def test_every_sample_leaf_is_valid_and_attributed() -> None:
    config = load_config(ROOT / ".github" / "labbot.yml")
    leaves = sorted((ROOT / "taxonomy").rglob("qna.yaml"))
    assert len(leaves) >= 6
    for leaf in leaves:
        result = validate_path(str(leaf), PROFILES["pr"], config)
        assert result.valid and not result.findings, (leaf, result.findings)
        assert (leaf.parent / "attribution.txt").read_text().strip()
