"""Profiles, versions, kinds, and the promise that no input makes validation raise."""

from __future__ import annotations

import random
import time
import tracemalloc

import pytest

from pipeline.config import RepoConfig
from pipeline.taxonomy.validate import PROFILES, kind_from_path, validate_bytes, validate_path
from tests.support.qna import BOMB, check, replace_line
from tests.support.samples import KNOWLEDGE, KNOWLEDGE_PATH, SKILL, SKILL_PATH

CONFIG = RepoConfig()


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("taxonomy/knowledge/a/qna.yaml", "knowledge"),
        ("compositional_skills/x/qna.yaml", "compositional_skills"),
        ("foundational_skills/reasoning/qna.yaml", "foundational_skills"),
        ("knowledge/a/compositional_skills/b/qna.yaml", "compositional_skills"),
        ("/home/knowledge_base/misc/qna.yaml", None),
    ],
)
def test_kind_comes_from_the_last_kind_folder(path: str, kind: str | None) -> None:
    assert kind_from_path(path) == kind


def test_foundational_skills_are_validated_as_skills() -> None:
    bad = replace_line(SKILL, 2, "# no author")
    result = check(bad, "taxonomy/foundational_skills/x/qna.yaml")
    assert result.kind == "foundational_skills"
    assert [f.rule for f in result.findings] == ["schema.missing-key"]


def test_pr_profile_requires_version_3() -> None:
    legacy = SKILL.replace("version: 3\n", "")
    pr = check(legacy)
    assert not pr.valid
    assert any(f.rule == "schema.missing-key" and "version" in f.message for f in pr.findings)


def test_tree_profile_accepts_legacy_skills_with_a_warning() -> None:
    legacy = SKILL.replace("version: 3\n", "")
    tree = check(legacy, profile="tree")
    assert tree.valid and tree.version == 1
    assert [f.rule for f in tree.findings] == ["schema.deprecated-version"]
    assert tree.findings[0].severity == "warning"


def test_tree_profile_downgrades_lint_on_version_1_skills_only() -> None:
    v1 = SKILL.replace("version: 3\n", "").replace("created_by: alice", "created_by: alice ")
    assert check(v1, profile="tree").valid
    v3 = SKILL.replace("created_by: alice", "created_by: alice ")
    assert not check(v3, profile="tree").valid


def test_tree_rejects_old_knowledge_with_one_error() -> None:
    old = replace_line(KNOWLEDGE, 1, "version: 1")
    result = check(old, KNOWLEDGE_PATH, profile="tree")
    errors = [f for f in result.findings if f.severity == "error"]
    assert [f.rule for f in errors] == ["schema.deprecated-version"]


@pytest.mark.parametrize(
    ("value", "valid"),
    [("3", True), ("3.0", True), ('"3"', False), ("true", False), ("4", False), ("0", False)],
)
def test_version_values_as_upstream_reads_them(value: str, valid: bool) -> None:
    result = check(replace_line(SKILL, 1, f"version: {value}"), profile="tree")
    assert result.valid is valid, result.findings


def test_yaml_11_booleans_and_dates_are_type_errors_with_a_quoting_hint() -> None:
    text = replace_line(SKILL, 6, "    answer: 2024-05-01")
    result = check(text)
    (finding,) = [f for f in result.findings if f.rule == "schema.type"]
    assert "date" in finding.message and "Quote" in finding.hint


def test_every_finding_of_a_broken_file_comes_in_one_pass() -> None:
    text = replace_line(SKILL, 2, "created_by: ")
    text = replace_line(text, 6, "    answer: yes  ")
    text = text + "surprise: 1\n"
    rules = sorted({f.rule for f in check(text).findings})
    assert rules == [
        "lint.trailing-spaces",
        "schema.type",
        "schema.unexpected-key",
    ] or rules == ["lint.trailing-spaces", "schema.type", "schema.type", "schema.unexpected-key"]


def test_alias_bomb_is_refused_fast_without_memory_growth() -> None:
    tracemalloc.start()
    start = time.perf_counter()
    result = check(BOMB)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [f.rule for f in result.findings if f.severity == "error"] == ["yaml.alias-expansion"]
    assert elapsed < 0.5
    assert peak < 20 * 1024 * 1024


def test_legitimate_anchors_and_merge_keys_are_fine() -> None:
    text = SKILL.replace("created_by: alice", "created_by: &who alice").replace(
        "task_description: Answer", "task_description: Answer"
    )
    assert check(text).valid


def test_oversized_file_is_refused_before_it_is_read(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "compositional_skills" / "big" / "qna.yaml"  # type: ignore[operator]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a: [" * 1_000_000)  # unparseable, and 4 MB
    result = validate_path(str(path), PROFILES["pr"], CONFIG)
    assert [f.rule for f in result.findings] == ["file.size"]


def test_missing_file_is_a_finding_not_an_exception() -> None:
    result = validate_path("nowhere/knowledge/qna.yaml", PROFILES["pr"], CONFIG)
    assert [(f.rule, f.line, f.column) for f in result.findings] == [("file.missing", 1, 1)]


def test_random_mutations_never_raise() -> None:
    rng = random.Random(1234)
    alphabet = list(":-[]{}&*!|>'\"#%@`\t\n ?,\x00\xff") + ["é", "\ufeff", "\r"]
    base = (SKILL + KNOWLEDGE).encode()
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            data[pos : pos + rng.randint(0, 3)] = (
                rng.choice(alphabet).encode("utf-8", "surrogatepass")
                if rng.random() < 0.9
                else bytes([rng.randrange(256)])
            )
        for path in (SKILL_PATH, KNOWLEDGE_PATH):
            result = validate_bytes(bytes(data), path, PROFILES["pr"], CONFIG, None)
            for f in result.findings:
                assert f.line >= 1 and f.column >= 1 and f.message
