"""The repository's ``overlap.semantic`` switch turns the semantic pass on for
``labbot check --overlap``; without the extra it warns once and runs the lexical pass (a
repository setting never breaks a contributor's local check), while the explicit ``--semantic``
flag still fails with the install hint."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from pipeline import semantic
from pipeline.cli import main
from tests.integration.test_overlap_semantic import COPY, ORIGINAL, PR, SKILL

ARGS = ["check", "--no-attribution", "--overlap", "--format", "json", COPY]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / ORIGINAL).parent.mkdir(parents=True)
    (root / ORIGINAL).write_text(SKILL)
    (root / ".github").mkdir()
    (root / ".github" / "labbot.yml").write_text("overlap:\n  semantic: true\n")
    r = git.Repo.init(root)
    r.index.add([ORIGINAL, ".github/labbot.yml"])
    r.index.commit("one leaf")
    (root / COPY).parent.mkdir(parents=True)
    (root / COPY).write_text(PR)
    monkeypatch.chdir(root)
    monkeypatch.setenv("LABBOT_CACHE_DIR", str(tmp_path / "cache"))
    return root


def overlap_rules(out: str) -> list[dict[str, object]]:
    (result,) = json.loads(out)["files"]
    return [f for f in result["findings"] if str(f["rule"]).startswith("overlap.")]


def test_switch_without_the_extra_warns_once_and_runs_the_lexical_pass(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABBOT_SEMANTIC_DISABLE", "1")
    # A lexical near-copy of the tree's first seed, beside the paraphrase: the lexical pass ran.
    text = PR.replace(
        "What is the number of cm in one meter?\n    answer: There are 100 cm in one meter.",
        "how many centimetres make up a metre ?\n    answer: One hundred centimetres make up "
        "a metre.",
    )
    assert text != PR
    (repo / COPY).write_text(text)
    assert main(ARGS) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if "overlap.semantic" in line]
    assert len(warnings) == 1, err
    assert "pip install 'labbot[semantic]'" in warnings[0] and "lexical pass only" in warnings[0]
    assert "Traceback" not in err and "semantic:" not in err.replace("overlap.semantic", "")
    (seed,) = [f for f in overlap_rules(out) if f["rule"] == "overlap.seed"]
    assert "repeats one in" in str(seed["message"]) and "meaning" not in str(seed["message"])
    assert not (repo.parent / "cache" / "semantic").exists()


def test_explicit_flag_without_the_extra_still_fails_even_with_the_switch_on(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABBOT_SEMANTIC_DISABLE", "1")
    assert main([*ARGS[:3], "--semantic", *ARGS[3:]]) == 2
    out, err = capsys.readouterr()
    assert "pip install 'labbot[semantic]'" in err and "Traceback" not in err + out


def test_switch_off_by_default_runs_no_semantic_pass(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / ".github" / "labbot.yml").write_text("overlap:\n  semantic: false\n")
    assert main(ARGS) == 0
    out, err = capsys.readouterr()
    assert overlap_rules(out) == [] and "semantic" not in err


@pytest.mark.skipif(not semantic.available(), reason="the semantic extra is not installed")
def test_switch_with_the_extra_finds_the_paraphrase(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    semantic.load_embedder()  # loaded once per process (shared with the other module)
    assert main(ARGS) == 0
    out, err = capsys.readouterr()
    (seed,) = [f for f in overlap_rules(out) if f["rule"] == "overlap.seed"]
    assert seed["line"] == 5 and "found by meaning" in str(seed["message"])
    related = seed["related"]
    assert isinstance(related, dict) and related["file"] == ORIGINAL
    assert related["by_meaning"] is True
    assert "semantic:" in err and "not installed" not in err
