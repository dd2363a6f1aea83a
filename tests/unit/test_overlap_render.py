"""Overlap findings in the sticky comment: the other leaf linked at the default branch's commit,
whatever its path holds."""

from __future__ import annotations

import re

import pytest

from bot import render
from pipeline.taxonomy.findings import FileResult, Severity
from pipeline.taxonomy.overlap import OverlapFinding

SHA = "a" * 40
LINK = re.compile(r"\[([^\]]|\\\])*\]\((https://github\.com/[^\s()]+)\)")


def finding(other: str, rule: str = "overlap.leaf") -> OverlapFinding:
    return OverlapFinding(
        rule,
        Severity.WARNING,
        4,
        1,
        f"this leaf looks like {other} (92% ...)",
        "Extend it.",
        ".seed_examples",
        other,
        7,
        1,
        ".seed_examples",
        0.92,
    )


@pytest.mark.parametrize(
    "folder",
    [
        "slang (old)",
        "a](https://evil.test)",
        "x#1?y=2",
        "100%",
        "tick`s",
        "@org/team",
        "<b>bold</b>",
        "line\nbreak",
    ],
)
def test_the_other_leaf_is_linked_with_its_path_encoded(folder: str) -> None:
    other = f"taxonomy/compositional_skills/writing/{folder}/qna.yaml"
    result = FileResult("taxonomy/compositional_skills/new/qna.yaml", "compositional_skills")
    result.add([finding(other)])
    body = render.validation_section([result], SHA, render.OverlapLinks("org/taxonomy", SHA))
    links = [m.group(2) for m in LINK.finditer(body)]
    assert len(links) == 1, body
    url = links[0]
    assert url.startswith(f"https://github.com/org/taxonomy/blob/{SHA}/taxonomy/")
    assert url.endswith("/qna.yaml#L7")
    for char in " ()[]#?`<>@\n":
        assert char not in url.split("#L")[0], url
    assert "evil.test)" not in body.replace("evil.test\\)", "")
    assert "(92% of its seeds)" in body


def test_without_a_commit_the_leaf_is_named_not_linked() -> None:
    result = FileResult("taxonomy/compositional_skills/new/qna.yaml", "compositional_skills")
    result.add([finding("taxonomy/compositional_skills/a/b/c/slang/qna.yaml", "overlap.seed")])
    links = render.OverlapLinks("org/taxonomy", "", "Overlap check skipped: GitHub answered 502.")
    body = render.validation_section([result], SHA, links)
    assert "](" not in body
    assert "compositional\\_skills/.../slang, line 7" in body
    assert "Overlap check skipped: GitHub answered 502." in body
