"""Whether a file is a qna file is decided by one function, and every caller agrees with it."""

from __future__ import annotations

import pytest

from bot.handlers.builds import _touches_taxonomy
from bot.handlers.common import in_taxonomy
from bot.webhook import Fields
from pipeline.config import RepoConfig
from pipeline.taxonomy.discover import is_candidate, is_qna_path
from pipeline.taxonomy.validate import PROFILES, validate_bytes

#: Repository paths (``/``-separated, as git and GitHub write them) meant to be a qna.yaml.
QNA = [
    "qna.yaml",
    "qna.yml",
    "QNA.yaml",
    "Qna.YML",
    "knowledge/a b/qna.yaml",
    "knowledge/a%20b/qna.yaml",
    "knowledge/a%2Fb/qna.yaml",
    "knowledge/a?x=1/qna.yaml",
    "knowledge/a#frag/QNA.yml",
    "knowledge/a&b;c=d/qna.yaml",
    "knowledge/a+b/qna.yaml",
    "knowledge/ünï/qna.yaml",
    "knowledge/qna.yaml.d/qna.yaml",
]
#: Paths that are not: other names, suffixes, prefixes, and URL syntax around the name.
NOT_QNA = [
    "qna.yaml.bak",
    "qna.yml.orig",
    "qna.yaml~",
    "notqna.yaml",
    "my-qna.yml",
    ".qna.yaml",
    "qna.json",
    "qna.yaml ",
    " qna.yaml",
    "qna.yaml?raw=1",
    "qna.yaml#L1",
    "qna%2Eyaml",
    "knowledge/a/qna%2Eyaml",
    "knowledge/qna.yaml/notes.txt",
    "knowledge/a\\qna.yaml",
    "",
]
CASES = [(p, True) for p in QNA] + [(p, False) for p in NOT_QNA]


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_the_one_decision(path: str, expected: bool) -> None:
    assert is_qna_path(path) is expected
    if "/" not in path:
        assert is_candidate(path) is expected


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_the_app_filters_pull_request_files_by_it(path: str, expected: bool) -> None:
    assert in_taxonomy(path, RepoConfig()) is expected


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_a_push_touches_the_taxonomy_by_it(path: str, expected: bool) -> None:
    commits = [Fields({"added": [], "modified": [path], "removed": []})]
    assert _touches_taxonomy(commits) is expected


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_validation_checks_the_content_of_exactly_those_files(path: str, expected: bool) -> None:
    result = validate_bytes(b"a: [1\n", path, PROFILES["tree"], RepoConfig())
    rules = {f.rule for f in result.findings}
    assert ("yaml.syntax" in rules) is expected
    # Any other name than qna.yaml itself is reported, with a rename hint.
    assert ("file.name" in rules) is (path.rsplit("/", 1)[-1] != "qna.yaml")


def test_attribution_files_still_count_as_taxonomy_changes() -> None:
    for path in ("knowledge/a/attribution.txt", "attribution.txt"):
        assert _touches_taxonomy([Fields({"modified": [path]})])
    assert not _touches_taxonomy([Fields({"modified": ["knowledge/a/my-attribution.txt"]})])
