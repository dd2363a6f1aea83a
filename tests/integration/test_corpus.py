"""Conformance with InstructLab's own checker on 1,449 real contributor submissions.

Skipped when ../shared/taxonomy-corpus is absent. Prints the agreement figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import RepoConfig
from pipeline.taxonomy.validate import PROFILES, validate_path

#: In the tree profile, labbot may reject an upstream-accepted file only for these rules.
EXEMPT = {"file", "document", "attribution"}
#: Compare every finding: no per-rule cap (the capped verdicts are checked to be the same).
ALL = 10**9


def test_tree_profile_agrees_with_upstream_cli(corpus: Path) -> None:
    rows = [json.loads(line) for line in (corpus / "verdicts.jsonl").read_text().splitlines()]
    config = RepoConfig()
    results = [
        validate_path(str(corpus / r["file"]), PROFILES["tree"], config, per_rule=ALL) for r in rows
    ]
    assert len(results) == len(rows), "every file gets exactly one result"
    capped = [validate_path(str(corpus / r["file"]), PROFILES["tree"], config) for r in rows]
    assert [r.valid for r in capped] == [r.valid for r in results]
    assert [r.errors for r in capped] == [r.errors for r in results]

    agree = stricter = 0
    wrongly_rejected = []
    wrongly_accepted = []
    for row, res in zip(rows, results, strict=True):
        upstream_ok = row["profiles"]["cli"]["status"] in ("accept", "warn")
        agree += upstream_ok == res.valid
        if upstream_ok and not res.valid:
            blocking = [f for f in res.findings if f.severity == "error"]
            if all(f.category in EXEMPT for f in blocking):
                stricter += 1
            else:
                wrongly_rejected.append((row["file"], blocking[:3]))
        if not upstream_ok and res.valid:
            wrongly_accepted.append(row["file"])

    # Upstream's crashes: each must be a located yaml./lint. finding here.
    crashes = [
        (r, res)
        for r, res in zip(rows, results, strict=True)
        if r["profiles"]["cli"]["status"] == "crash"
    ]
    crash_located = sum(
        1 for _, res in crashes if any(f.category in ("yaml", "lint") for f in res.findings)
    )

    # Schema findings: upstream reports line 1; the node line (line_yq) is what a user needs.
    exact = inside = missed = 0
    for row, res in zip(rows, results, strict=True):
        ours = [f for f in res.findings if f.category == "schema"]
        for msg in row["profiles"]["cli"]["messages"]:
            if msg["source"] != "schema" or not msg.get("line_yq"):
                continue
            if any(f.line == msg["line_yq"] for f in ours):
                exact += 1
            elif any(
                f.path
                and f.path.startswith(msg["yaml_path"].rstrip("."))
                and f.line >= msg["line_yq"]
                for f in ours
            ):
                inside += 1  # an unexpected key or duplicate item, pointed at precisely
            else:
                missed += 1

    print(
        f"\ncorpus: {len(rows)} files; accept/reject agreement with upstream cli "
        f"{agree}/{len(rows)} ({100 * agree / len(rows):.1f}%); stricter only by file/document/"
        f"attribution rules: {stricter}; upstream crashes reported as located findings: "
        f"{crash_located}/{len(crashes)}; schema findings at upstream's node line (line_yq): "
        f"{exact}, at the offending key or item inside that node: {inside}, missed: {missed}"
    )
    assert wrongly_rejected == []
    assert wrongly_accepted == []
    assert crash_located == len(crashes)
    assert missed == 0


def test_lint_findings_match_yamllint_positions(corpus: Path) -> None:
    rows = [json.loads(line) for line in (corpus / "verdicts.jsonl").read_text().splitlines()]
    config = RepoConfig()
    total = exact = 0
    for row in rows:
        msgs = [m for m in row["profiles"]["cli"]["messages"] if m["source"] == "yamllint"]
        if not msgs:
            continue
        res = validate_path(str(corpus / row["file"]), PROFILES["tree"], config, per_rule=ALL)
        positions = {(f.line, f.column) for f in res.findings if f.category == "lint"}
        for m in msgs:
            total += 1
            exact += (m["line"], m["col"]) in positions
    print(f"\nyamllint findings reproduced at the same line and column: {exact}/{total}")
    assert total > 50 and exact == total


TOKEN_RULES = {"colons", "hyphens", "brackets", "braces"}


def test_token_rules_match_yamllint_in_the_ci_profile(corpus: Path) -> None:
    """colons, hyphens, brackets and braces: upstream's CI lints every file (version 3 forced),
    so its messages list every problem yamllint finds; ours must be the same set."""
    rows = [json.loads(line) for line in (corpus / "verdicts.jsonl").read_text().splitlines()]
    config = RepoConfig()
    theirs_total = same = extra = 0
    for row in rows:
        ci = row["profiles"]["ci"]
        if ci["status"] == "crash":
            continue
        theirs = {
            (m["line"], m["col"])
            for m in ci["messages"]
            if m["source"] == "yamllint" and m["message"].rsplit("(", 1)[-1][:-1] in TOKEN_RULES
        }
        res = validate_path(str(corpus / row["file"]), PROFILES["pr"], config, per_rule=ALL)
        if res.version is None:  # not parsed here (libyaml refuses a tab PyYAML lets pass)
            continue
        ours = {
            (f.line, f.column)
            for f in res.findings
            if f.rule.startswith("lint.") and f.rule[5:] in TOKEN_RULES
        }
        theirs_total += len(theirs)
        same += len(theirs & ours)
        extra += len(ours - theirs)
    print(f"\nyamllint token rules (ci profile): {same}/{theirs_total} reproduced, {extra} extra")
    assert theirs_total >= 10 and same == theirs_total and extra == 0
