"""The repository config (.github/labbot.yml) as typed sections, checked by its schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import (
    SECTIONS,
    BuildSettings,
    CommandSettings,
    PreviewSettings,
    RepoConfig,
    load_config,
    parse_config,
)
from pipeline.errors import ConfigError
from pipeline.taxonomy.schemas import load_schema

ROOT = Path(__file__).resolve().parents[2]


def test_every_section_of_the_schema_becomes_a_typed_field() -> None:
    schema = load_schema("labbot-config.json")
    sections = {
        name
        for name, node in schema["properties"].items()
        if node.get("type") == "object" and node.get("properties")
    }
    assert sections == set(SECTIONS)
    assert not hasattr(RepoConfig(), "raw")  # no untyped reads left


def test_sections_are_typed_with_defaults() -> None:
    config = parse_config(
        b"preview:\n  samples: 3\n  time_limit_seconds: 60\n  everyone: true\n"
        b"commands:\n  allowed_users: [Alice, bob]\n"
        b"build:\n  dispatch: repository_dispatch\n  workflow: .github/workflows/b.yml\n"
        b'documents:\n  clone_timeout_seconds: 5\n  mirrors:\n    "https://x.test/r": docs\n'
    )
    assert config.preview == PreviewSettings(
        enabled=True, everyone=True, samples=3, time_limit_seconds=60.0
    )
    assert isinstance(config.preview.time_limit_seconds, float)
    assert config.commands.allowed_users == ("Alice", "bob")
    assert config.commands.allows("alice") and config.commands.allows("BOB")
    assert not config.commands.allows("carol") and not CommandSettings().allows("alice")
    assert config.build.dispatch == "repository_dispatch" and config.build.workflow_file == "b.yml"
    assert config.build.event_type == "labbot-build" and config.build.enabled
    assert config.documents.clone_timeout_seconds == 5.0
    assert config.documents.mirrors == {"https://x.test/r": "docs"}
    assert config.documents.allowed_hosts == ("github.com",)  # untouched keys keep defaults
    empty = parse_config(b"")
    assert empty.preview == PreviewSettings() and empty.build == BuildSettings()
    assert empty.preview.time_limit_seconds is None  # the App's own limit then


def test_the_repository_config_loads() -> None:
    config = load_config(ROOT / ".github" / "labbot.yml")
    assert config.base_dir == ROOT and config.preview.samples >= 1


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        (b"preview:\n  sample: 3\n", "2:3", "Did you mean 'samples'?"),
        (b"preview:\n  samples: 0\n", "2:12", "minimum"),
        (b"build:\n  dispatch: webhook\n", "2:13", "is not one of"),
        (b"commands:\n  allowed_users: alice\n", "2:18", "must be a list"),
        (b"preview: yes\n", "1:10", "must be a mapping"),
        (b"previews:\n  samples: 3\n", "1:1", "Did you mean 'preview'?"),
    ],
)
def test_bad_values_get_located_findings(text: bytes, where: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert f".github/labbot.yml:{where}:" in message and words in message, message
