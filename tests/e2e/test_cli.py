"""The ``labbot check`` command: selection, formats, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import git
import pytest

from tests.support.qna import replace_line
from tests.support.samples import KNOWLEDGE, SKILL

ROOT = Path(__file__).resolve().parents[2]


def write_leaf(base: Path, rel: str, text: str, attribution: str | None = "Title: x\n") -> Path:
    path = base / rel / "qna.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if attribution is not None:
        (path.parent / "attribution.txt").write_text(attribution)
    return path


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_leaf(tmp_path, "taxonomy/compositional_skills/units", SKILL)
    write_leaf(tmp_path, "taxonomy/knowledge/geo/quillby", KNOWLEDGE)
    write_leaf(
        tmp_path, "taxonomy/compositional_skills/broken", replace_line(SKILL, 2, "created_by: ")
    )
    return tmp_path


def test_sample_taxonomy_is_valid_under_pr(run_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(ROOT)
    result = run_cli(["check", "--profile", "pr", "--format", "json", "taxonomy/"])
    assert result.code == 0, result.out
    doc = result.json()
    kinds = sorted(f["kind"] for f in doc["files"])
    assert kinds.count("knowledge") >= 2
    assert kinds.count("compositional_skills") >= 3
    assert kinds.count("foundational_skills") >= 1
    assert all(f["valid"] and f["version"] == 3 for f in doc["files"])


def test_text_output_is_located_with_hint_and_summary(run_cli, tree) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(["check", "taxonomy"])
    assert result.code == 1
    lines = result.out.splitlines()
    located = [
        ln for ln in lines if ln.startswith("taxonomy/compositional_skills/broken/qna.yaml:2:")
    ]
    assert any(" error schema.type: 'created_by' must be text" in ln for ln in located)
    assert any(ln.strip().startswith("fix: ") for ln in lines)
    assert lines[-1] == "checked 3 files: 1 invalid (2 errors, 0 warnings)"


def test_json_output_shape_and_paths_as_given(run_cli, tree) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        ["check", "--format", "json", "./taxonomy/compositional_skills/broken/qna.yaml"]
    )
    doc = result.json()
    (entry,) = doc["files"]
    assert entry["path"] == "./taxonomy/compositional_skills/broken/qna.yaml"
    assert set(entry) >= {"path", "kind", "version", "valid", "findings"}
    assert set(entry["findings"][0]) >= {"rule", "severity", "line", "column", "message", "hint"}
    assert doc["summary"] == {"files": 1, "valid": 0, "invalid": 1, "errors": 2, "warnings": 0}


def test_github_format_emits_workflow_commands(run_cli, tree) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(["check", "--format", "github", "taxonomy"])
    lines = result.out.splitlines()
    assert any(
        ln.startswith("::error file=taxonomy/compositional_skills/broken/qna.yaml,line=2,col=12,")
        and "title=schema.type::" in ln
        for ln in lines
    )
    assert all("\n" not in ln for ln in lines)


def test_sarif_format_is_sarif_2_1_0(run_cli, tree) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(run_cli(["check", "--format", "sarif", "taxonomy"]).out)
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    for res in run["results"]:
        assert rule_ids[res["ruleIndex"]] == res["ruleId"]
        region = res["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1


def test_thousands_of_paths_each_get_exactly_one_result(run_cli, tree) -> None:  # type: ignore[no-untyped-def]
    good = "taxonomy/compositional_skills/units/qna.yaml"
    paths = [good if i % 2 else f"taxonomy/knowledge/missing{i}/qna.yaml" for i in range(3000)]
    listing = tree / "list.txt"
    listing.write_text("\n".join(paths) + "\n")
    doc = run_cli(["check", "--format", "json", "--files-from", str(listing)]).json()
    got = [f["path"] for f in doc["files"]]
    assert len(got) == len(set(paths)) and set(got) == set(paths)
    missing = [f for f in doc["files"] if f["path"] != good]
    assert all(f["findings"][0]["rule"] == "file.missing" for f in missing)


def test_files_from_stdin(run_cli, tree) -> None:  # type: ignore[no-untyped-def]
    doc = run_cli(
        ["check", "--format", "json", "--files-from", "-"],
        stdin="taxonomy/compositional_skills/units/qna.yaml\n",
    ).json()
    assert [f["valid"] for f in doc["files"]] == [True]


def test_usage_errors_exit_2(run_cli, tree) -> None:  # type: ignore[no-untyped-def]
    assert run_cli(["check", "--format", "xml"]).code == 2
    assert run_cli(["check", "--files-from", "no-such-list"]).code == 2
    (tree / ".github").mkdir()
    (tree / ".github" / "labbot.yml").write_text("profile: loose\n")
    bad = run_cli(["check", "taxonomy"])
    assert bad.code == 2 and ".github/labbot.yml:1:10" in bad.err


def test_changed_selects_added_modified_and_untracked(tmp_path, monkeypatch, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = git.Repo.init(tmp_path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t")
        cw.set_value("user", "email", "t@example.com")
    kept = write_leaf(tmp_path, "taxonomy/compositional_skills/kept", SKILL)
    edited = write_leaf(tmp_path, "taxonomy/compositional_skills/edited", SKILL)
    gone = write_leaf(tmp_path, "taxonomy/compositional_skills/gone", SKILL)
    repo.index.add([str(p.relative_to(tmp_path)) for p in (kept, edited, gone)])
    repo.index.commit("base")
    repo.git.checkout("-b", "contribution")
    edited.write_text(replace_line(SKILL, 3, "task_description: Convert units of length."))
    added = write_leaf(tmp_path, "taxonomy/compositional_skills/added", SKILL)
    repo.index.add([str(p.relative_to(tmp_path)) for p in (edited, added)])
    repo.index.remove([str(gone.relative_to(tmp_path))], working_tree=True)
    repo.index.commit("contribution")
    untracked = write_leaf(tmp_path, "taxonomy/knowledge/new", KNOWLEDGE)
    monkeypatch.chdir(tmp_path)
    doc = run_cli(["check", "--changed", "--format", "json"]).json()
    got = sorted(f["path"] for f in doc["files"])
    want = sorted(str(p.relative_to(tmp_path)) for p in (edited, added, untracked))
    assert got == want
    assert run_cli(["check", "--changed", "--base", "nope"]).code == 2


def test_pre_commit_hook_definition_runs_labbot_check() -> None:
    from ruamel.yaml import YAML

    hooks = YAML(typ="safe").load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "labbot-check")
    assert hook["entry"].startswith("labbot check")
    assert "qna" in hook["files"]


def test_console_script_is_installed() -> None:
    import shutil
    import subprocess
    import sys

    exe = shutil.which("labbot", path=os.path.dirname(sys.executable)) or shutil.which("labbot")
    assert exe, "the labbot console script is not on PATH"
    out = subprocess.run([exe, "check", str(ROOT / "taxonomy")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_symlinked_qna_yaml_is_an_error_and_not_followed(run_cli, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "secret.yaml"
    secret.write_text(SKILL)  # a valid file: following the link would pass the check
    leaf = tmp_path / "taxonomy/compositional_skills/linked"
    leaf.mkdir(parents=True)
    (leaf / "qna.yaml").symlink_to(secret)
    outside = tmp_path / "elsewhere/units"
    outside.mkdir(parents=True)
    (outside / "qna.yaml").write_text(SKILL)
    (tmp_path / "taxonomy/knowledge").mkdir()
    (tmp_path / "taxonomy/knowledge/linked_folder").symlink_to(outside)
    for args in (["taxonomy"], ["taxonomy/compositional_skills/linked/qna.yaml"]):
        run = run_cli(["check", "--format", "json", *args])
        assert run.code == 1, run.out
        files = run.json()["files"]
        assert files and all(not f["valid"] for f in files)
        for f in files:
            assert [(x["rule"], x["line"]) for x in f["findings"]] == [("file.symlink", 1)]
            assert f["findings"][0]["hint"]
    folders = run_cli(["check", "--format", "json", "taxonomy"]).json()["files"]
    assert sorted(f["path"] for f in folders) == [
        "taxonomy/compositional_skills/linked/qna.yaml",
        "taxonomy/knowledge/linked_folder/qna.yaml",
    ]


def test_capped_findings_are_counted_in_every_format(run_cli, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    flood = SKILL + "".join(f"k{i}: v\n" for i in range(500))
    write_leaf(tmp_path, "taxonomy/compositional_skills/flood", flood)
    doc = run_cli(["check", "--format", "json", "taxonomy"]).json()
    (result,) = doc["files"]
    kept = [f for f in result["findings"] if f["rule"] == "schema.unexpected-key"]
    assert len(kept) == 20 and kept[0]["line"] == 15
    assert result["omitted"] == {"schema.unexpected-key": 480}
    assert doc["summary"]["errors"] == 500
    text = run_cli(["check", "taxonomy"]).out
    assert "… and 480 more schema.unexpected-key findings" in text
    assert "(500 errors" in text
    github = run_cli(["check", "--format", "github", "taxonomy"]).out
    assert github.count("::error ") == 21 and "480 more schema.unexpected-key" in github
    sarif = json.loads(run_cli(["check", "--format", "sarif", "taxonomy"]).out)
    run = sarif["runs"][0]
    assert len(run["results"]) == 20
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert "480 more schema.unexpected-key" in notes[0]["message"]["text"]
