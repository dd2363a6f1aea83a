"""`labbot check --overlap` on real git repositories and plain folders: findings in every output
format with the other file and line, the index cached by the tree's identity."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from pipeline.cli import main
from tests.support.samples import SKILL

ORIGINAL = "taxonomy/compositional_skills/units/qna.yaml"
COPY = "taxonomy/compositional_skills/other folder/measures/qna.yaml"
DISTINCT = "taxonomy/compositional_skills/units/time/qna.yaml"

TIME = """\
version: 3
created_by: bob
task_description: Answer questions about units of time.
seed_examples:
  - question: How many seconds are in a minute?
    answer: There are 60 seconds in a minute.
  - question: How many hours are in a day?
    answer: A day has 24 hours.
  - question: How many days are in a leap year?
    answer: A leap year has 366 days.
  - question: How many weeks are in a year?
    answer: A year has about 52 weeks.
  - question: How many minutes are in an hour?
    answer: An hour has 60 minutes.
"""


def copy_of(text: str) -> str:
    """Seeds reordered, recased and re-punctuated, another author: still the same leaf."""
    head, *seeds = text.split("  - question: ")
    seeds = [s.replace("How many", "HOW many").replace("?", "??") for s in reversed(seeds)]
    return (head + "".join("  - question: " + s for s in seeds)).replace("alice", "mallory")


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    r = git.Repo.init(root)
    write(root, {ORIGINAL: SKILL, DISTINCT: TIME})
    r.index.add([ORIGINAL, DISTINCT])
    r.index.commit("two leaves")
    monkeypatch.chdir(root)
    monkeypatch.setenv("LABBOT_CACHE_DIR", str(tmp_path / "cache"))
    return root


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", "--no-attribution", "--overlap", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_planted_copy_is_reported_in_every_format_with_the_other_place(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(repo, {COPY: copy_of(SKILL)})  # untracked: the working tree counts
    code, out, err = check(capsys, COPY)
    assert code == 0, out  # a warning
    assert f"{COPY}:4:1: warning overlap.leaf: this leaf looks like {ORIGINAL}" in out
    assert f"    see: {ORIGINAL}:4:1" in out
    assert "built" in err

    code, out, _ = check(capsys, "--format", "json", COPY)
    (result,) = json.loads(out)["files"]
    (leaf,) = [f for f in result["findings"] if f["rule"] == "overlap.leaf"]
    assert leaf["related"]["file"] == ORIGINAL and leaf["related"]["line"] == 4
    assert leaf["related"]["similarity"] == 1.0
    assert not [f for f in result["findings"] if DISTINCT in json.dumps(f)]

    _, out, _ = check(capsys, "--format", "sarif", COPY)
    (sarif,) = [r for r in json.loads(out)["runs"][0]["results"] if r["ruleId"] == "overlap.leaf"]
    (other,) = sarif["relatedLocations"]
    assert other["physicalLocation"]["artifactLocation"]["uri"] == ORIGINAL
    assert other["physicalLocation"]["region"] == {"startLine": 4, "startColumn": 1}

    _, out, _ = check(capsys, "--format", "github", COPY)
    assert f"::warning file={COPY},line=4,col=1,title=overlap.leaf::" in out
    assert f"%0Asee {ORIGINAL}:4:1" in out


def test_the_index_is_cached_by_the_git_tree_and_rebuilt_after_a_commit(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(repo, {COPY: copy_of(SKILL)})
    _, _, err = check(capsys, COPY)
    assert "built" in err
    tree = git.Repo(repo).head.commit.tree["taxonomy"].hexsha
    cached = tmp_path / "cache" / "overlap" / f"{tree}.npz"
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    code, out, err = check(capsys, COPY)
    assert "from the cache" in err and "built" not in err
    assert cached.stat().st_mtime_ns == stamp and "overlap.leaf" in out

    # Committing the copy changes the tree: a new index, in which the copy is still found.
    git.Repo(repo).index.add([COPY])
    git.Repo(repo).index.commit("copy")
    _, out, err = check(capsys, COPY)
    assert "built" in err and "overlap.leaf" in out
    assert len(list((tmp_path / "cache" / "overlap").glob("*.npz"))) == 2


def test_working_tree_edits_and_deletions_are_seen_without_a_rebuild(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check(capsys, DISTINCT)  # builds the index
    # The original is deleted in the working tree: a copy of it is no copy of anything now.
    (repo / ORIGINAL).unlink()
    write(repo, {COPY: copy_of(SKILL)})
    _, out, err = check(capsys, COPY)
    assert "from the cache" in err
    assert "overlap.leaf" not in out


def test_a_plain_folder_and_tree_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABBOT_CACHE_DIR", str(tmp_path / "cache"))
    upstream = tmp_path / "upstream"
    write(upstream, {"compositional_skills/units/qna.yaml": SKILL})
    mine = tmp_path / "mine"
    write(mine, {"compositional_skills/length/qna.yaml": copy_of(SKILL)})
    monkeypatch.chdir(tmp_path)
    leaf = "mine/compositional_skills/length/qna.yaml"
    code, out, err = check(capsys, "--tree", "upstream", "--format", "json", leaf)
    (result,) = json.loads(out)["files"]
    (found,) = [f for f in result["findings"] if f["rule"] == "overlap.leaf"]
    assert found["related"]["file"] == "upstream/compositional_skills/units/qna.yaml"
    assert "built" in err and "files-" in err
    _, _, err = check(capsys, "--tree", "upstream", leaf)
    assert "from the cache" in err
    code, _, err = check(capsys, "--tree", "nowhere", leaf)
    assert code == 2 and "--tree nowhere: no such folder" in err


def test_the_config_can_make_overlaps_errors_and_move_the_threshold(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(repo, {COPY: copy_of(SKILL)})
    config = repo / ".github" / "labbot.yml"
    config.parent.mkdir()
    config.write_text("overlap:\n  as_errors: true\n")
    code, out, _ = check(capsys, COPY)
    assert code == 1 and "error overlap.leaf" in out
    # One seed replaced: 4 of 6 distinct seeds shared (0.67), a copy at the default 0.5 only.
    changed = copy_of(SKILL).rsplit("  - question: ", 1)[0] + (
        "  - question: How many grams are in a kilogram?\n    answer: A kilogram has 1000 grams.\n"
    )
    write(repo, {COPY: changed})
    config.write_text("overlap:\n  thresholds:\n    leaf: 0.5\n")
    code, out, _ = check(capsys, COPY)
    assert code == 0 and "warning overlap.leaf" in out
    config.write_text("overlap:\n  thresholds:\n    leaf: 0.9\n")
    code, out, _ = check(capsys, COPY)
    assert code == 0 and "overlap.leaf" not in out
    assert out.count("warning overlap.seed") == 4
    config.write_text("overlap:\n  thresholds:\n    leaf: 2\n")
    code, _, err = check(capsys, COPY)
    assert code == 2 and "labbot.yml" in err
