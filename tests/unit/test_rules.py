"""One valid and one invalid case per rule, asserting the rule id, line and column."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import RepoConfig
from pipeline.taxonomy.findings import Severity
from pipeline.taxonomy.validate import NOT_LOOKED_UP
from tests.support.qna import BOMB, CONFIG, check, replace_line
from tests.support.samples import KNOWLEDGE, KNOWLEDGE_PATH, SKILL, SKILL_PATH


def insert_line(text: str, number: int, new: str) -> str:
    lines = text.split("\n")
    lines.insert(number - 1, new)
    return "\n".join(lines)


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.split("\n"), 1) if needle in ln)


K_COMMIT = line_of(KNOWLEDGE, "commit:")
K_REPO = line_of(KNOWLEDGE, "repo:")
K_PATTERN = line_of(KNOWLEDGE, '"quillby.md"')


@dataclasses.dataclass
class Case:
    rule: str
    invalid: str | bytes
    line: int
    column: int
    valid: str | bytes = SKILL
    path: str = SKILL_PATH
    profile: str = "pr"
    severity: Severity = Severity.ERROR
    config: RepoConfig = CONFIG
    attribution: bytes | None | object = b"Title of work: test\n"


CASES = {
    "file.name": Case("file.name", SKILL, 1, 1, path="taxonomy/compositional_skills/u/qna.yml"),
    "file.location": Case("file.location", SKILL, 1, 1, path="taxonomy/misc/qna.yaml"),
    "file.empty": Case("file.empty", "# nothing here yet\n", 1, 1),
    "file.size": Case(
        "file.size",
        SKILL + "#" * 2000 + "\n",
        1,
        1,
        config=dataclasses.replace(CONFIG, max_file_bytes=1024),
        valid=SKILL,
    ),
    "yaml.encoding": Case("yaml.encoding", SKILL.encode().replace(b"alice", b"al\xffce"), 2, 15),
    "yaml.bom": Case("yaml.bom", b"\xef\xbb\xbf" + SKILL.encode(), 1, 1, severity=Severity.WARNING),
    "yaml.nul": Case("yaml.nul", SKILL.replace("alice", "al\x00ice"), 2, 15),
    "yaml.control-character": Case(
        "yaml.control-character", SKILL.replace("alice", "al\x07ice"), 2, 15
    ),
    "yaml.syntax": Case(
        "yaml.syntax", replace_line(SKILL, 3, 'task_description: "Answer questions'), 15, 1
    ),
    "yaml.duplicate-key": Case(
        "yaml.duplicate-key", insert_line(SKILL, 3, "created_by: bob"), 3, 1
    ),
    "yaml.tag": Case(
        "yaml.tag", SKILL.replace("created_by: alice", "created_by: !me alice"), 2, 13
    ),
    "yaml.multiple-documents": Case("yaml.multiple-documents", SKILL + "---\nversion: 3\n", 15, 1),
    "yaml.undefined-alias": Case(
        "yaml.undefined-alias",
        KNOWLEDGE.replace('"quillby.md"', "*.md"),
        K_PATTERN,
        7,
        valid=KNOWLEDGE,
        path=KNOWLEDGE_PATH,
    ),
    "yaml.alias-expansion": Case("yaml.alias-expansion", BOMB, 1, 1),
    "yaml.complex-key": Case("yaml.complex-key", SKILL + "? [a, b]\n: c\n", 15, 3),
    # The root mapping is level 1, so the 200th bracket (column 203) opens level 201.
    "yaml.nesting": Case("yaml.nesting", SKILL + "x: " + "[" * 300 + "\n", 15, 203),
    "yaml.merge": Case("yaml.merge", SKILL + "<<: 5\n", 15, 5),
    # SKILL holds 34 nodes, x and its list 2 more: item 199,964 (0-based) is node 200,001.
    "yaml.too-many-values": Case(
        "yaml.too-many-values", SKILL + "x: [" + "1," * 200_000 + "1]\n", 15, 5 + 2 * 199_964
    ),
    # yamllint's token rules, at the line and column yamllint 1.38 reports.
    "lint.colons": Case("lint.colons", replace_line(SKILL, 2, "created_by :  alice"), 2, 11),
    "lint.hyphens": Case(
        "lint.hyphens",
        replace_line(replace_line(SKILL, 5, "  -   question: How many?"), 6, "      answer: 100."),
        5,
        6,
    ),
    "lint.brackets": Case("lint.brackets", SKILL + "x: [  a]\n", 15, 6),
    "lint.braces": Case("lint.braces", SKILL + "x: {a: 1  }\n", 15, 10),
    "lint.trailing-spaces": Case(
        "lint.trailing-spaces", replace_line(SKILL, 2, "created_by: alice  "), 2, 18
    ),
    "lint.final-newline": Case("lint.final-newline", SKILL.rstrip("\n"), 14, 40),
    "lint.empty-lines": Case(
        "lint.empty-lines", insert_line(insert_line(insert_line(SKILL, 4, ""), 4, ""), 4, ""), 6, 1
    ),
    "lint.indentation": Case(
        "lint.indentation",
        KNOWLEDGE.replace("  repo:", "    repo:")
        .replace("  commit:", "    commit:")
        .replace("  patterns:", "    patterns:")
        .replace('    - "quillby.md"', '      - "quillby.md"'),
        K_REPO,
        5,
        valid=KNOWLEDGE,
        path=KNOWLEDGE_PATH,
    ),
    "lint.tabs": Case("lint.tabs", replace_line(SKILL, 6, "\t  answer: There are 100."), 6, 1),
    "lint.line-endings": Case(
        "lint.line-endings", SKILL.replace("\n", "\r\n"), 1, 1, severity=Severity.WARNING
    ),
    "schema.missing-key": Case("schema.missing-key", replace_line(SKILL, 2, "# no author"), 1, 1),
    "schema.unexpected-key": Case(
        "schema.unexpected-key", insert_line(SKILL, 4, "tags: [a]"), 4, 1
    ),
    "schema.type": Case("schema.type", replace_line(SKILL, 6, "    answer: yes"), 6, 13),
    "schema.empty": Case("schema.empty", replace_line(SKILL, 2, 'created_by: ""'), 2, 13),
    "schema.too-few": Case("schema.too-few", "\n".join(SKILL.split("\n")[:12]) + "\n", 5, 3),
    "schema.duplicate": Case(
        "schema.duplicate",
        replace_line(
            replace_line(SKILL, 7, "  - question: How many centimetres are in a metre?"),
            8,
            "    answer: There are 100 centimetres in a metre.",
        ),
        7,
        5,
    ),
    "schema.version": Case("schema.version", replace_line(SKILL, 1, "version: 2"), 1, 10),
    "schema.deprecated-version": Case(
        "schema.deprecated-version",
        replace_line(KNOWLEDGE, 1, "version: 2"),
        1,
        10,
        valid=KNOWLEDGE,
        path=KNOWLEDGE_PATH,
        profile="tree",
    ),
    "schema.top-level": Case("schema.top-level", "- question: a\n  answer: b\n", 1, 1),
    "document.commit": Case(
        "document.commit",
        KNOWLEDGE.replace("0123456789abcdef0123456789abcdef01234567", "main"),
        K_COMMIT,
        11,
        valid=KNOWLEDGE,
        path=KNOWLEDGE_PATH,
    ),
    "document.repo": Case(
        "document.repo",
        KNOWLEDGE.replace("https://github.com/example/quillby", "https://gitlab.com/e/q"),
        K_REPO,
        9,
        valid=KNOWLEDGE,
        path=KNOWLEDGE_PATH,
    ),
    "document.pattern": Case(
        "document.pattern",
        KNOWLEDGE.replace('"quillby.md"', '"quillby.txt"'),
        K_PATTERN,
        7,
        valid=KNOWLEDGE,
        path=KNOWLEDGE_PATH,
    ),
    "attribution.missing": Case("attribution.missing", SKILL, 1, 1, attribution=None),
    "attribution.empty": Case("attribution.empty", SKILL, 1, 1, attribution=b" \n"),
    "content.context-words": Case(
        "content.context-words",
        KNOWLEDGE.replace(
            "Quillby has 4,200 inhabitants.",
            "Quillby has 4,200 people. " + " ".join(["word"] * 500),
        ),
        line_of(KNOWLEDGE, "4,200 inhabitants."),
        14,
        valid=KNOWLEDGE,
        path=KNOWLEDGE_PATH,
        severity=Severity.WARNING,
    ),
    "content.qa-words": Case(
        "content.qa-words",
        KNOWLEDGE.replace("answer: Seven.", "answer: Seven " + " ".join(["arches"] * 260)),
        line_of(KNOWLEDGE, "answer: Seven."),
        17,
        valid=KNOWLEDGE,
        path=KNOWLEDGE_PATH,
        severity=Severity.WARNING,
    ),
    "content.skill-words": Case(
        "content.skill-words",
        replace_line(SKILL, 6, "    answer: " + " ".join(["metre"] * 2400)),
        5,
        3,
        severity=Severity.WARNING,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fires_at_its_location(name: str) -> None:
    case = CASES[name]
    result = check(case.invalid, case.path, case.profile, case.config, case.attribution)
    hits = [f for f in result.findings if f.rule == case.rule]
    assert hits, (
        f"{case.rule} not reported; got {[(f.rule, f.line, f.column) for f in result.findings]}"
    )
    assert (hits[0].line, hits[0].column) == (case.line, case.column), hits[0]
    assert hits[0].severity is case.severity
    assert hits[0].message and hits[0].hint, "every finding says what is wrong and how to fix it"
    assert result.valid is (case.severity is not Severity.ERROR)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_is_silent_on_the_valid_twin(name: str) -> None:
    case = CASES[name]
    path = (
        case.path
        if case.rule not in ("file.name", "file.location")
        else (KNOWLEDGE_PATH if case.valid is KNOWLEDGE else SKILL_PATH)
    )
    result = check(case.valid, path, case.profile, case.config, b"Title of work: test\n")
    assert [f for f in result.findings if f.rule == case.rule] == []
    assert result.valid, result.findings


def test_every_rule_in_the_engine_has_a_case() -> None:
    import re
    from pathlib import Path

    source = "".join(
        p.read_text()
        for p in Path(__file__).resolve().parents[2].joinpath("pipeline").rglob("*.py")
    )
    rules = set(
        re.findall(r'"((?:file|yaml|lint|schema|document|attribution|content)\.[a-z-]+)"', source)
    )
    # Retrieval rules need a repository: tests/integration/test_documents.py covers them.
    covered_elsewhere = {
        "document.fetch",
        "document.not-found",
        "document.format",
        "file.missing",
        "file.symlink",  # tests/e2e/test_cli.py (needs a file system)
        "yaml.recursive-alias",
        "schema.invalid",
        "attribution.txt",
    }
    assert rules - covered_elsewhere <= set(CASES), sorted(rules - set(CASES) - covered_elsewhere)


def test_attribution_not_looked_up_is_not_reported() -> None:
    result = check(SKILL, attribution=NOT_LOOKED_UP)
    assert result.valid and not result.findings


@pytest.mark.parametrize("text", ["\n", "\n\n\n", "   \n  \n", " " * 50 + "\n", "\n" * 5000])
def test_blank_files_are_empty_and_nothing_else(text: str) -> None:
    # InstructLab only warns "The file is empty" (no lint); a pull request must not add one.
    for profile, severity in (("pr", Severity.ERROR), ("tree", Severity.WARNING)):
        result = check(text, profile=profile)
        assert [(f.rule, f.line, f.severity) for f in result.findings] == [
            ("file.empty", 1, severity)
        ]


@pytest.mark.parametrize("text", ["null\n", "~\n", "---\n", "{}\n", "[]\n", "false\n", "0\n"])
def test_empty_or_null_documents_fail_a_pull_request(text: str) -> None:
    pr = check(text)
    assert not pr.valid and [f.rule for f in pr.findings] == ["file.empty"]
    tree = check(text, profile="tree")
    assert tree.valid and [f.rule for f in tree.findings] == ["file.empty"]
