"""`labbot build` end to end on the sample taxonomy, sized down: a tiny random-initialised
student with SmolLM2's real tokenizer and chat template (LoRA), a scripted teacher on loopback,
one short epoch per phase. Checks the stages, the run directory, the manifest, the artifacts,
and resume. The full-size build with the real model is `benchmarks/build_sample.py`."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import load_config
from pipeline.training import config as buildconfig
from pipeline.training.build import Build, BuildError, RunDirectoryInUse
from tests.support.builds import TINY
from tests.support.models import EMBEDDED_CACHE, tiny_student
from tests.support.scripted_teacher import scripted
from tests.support.teacher_server import ScriptedTeacherServer

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("build")
    cache = EMBEDDED_CACHE
    student = tiny_student(tmp / "student")
    with ScriptedTeacherServer(scripted, concurrency=4) as server:
        cfg = buildconfig.resolve({**TINY, "teacher": server.url, "student": str(student)})
        run = tmp / "run"
        logs: list[str] = []
        build = Build(
            ROOT / "taxonomy",
            load_config(ROOT / ".github" / "labbot.yml"),
            cfg,
            run,
            cache,
            log=logs.append,
        )
        manifest = build.run_all()
        return {
            "run": run,
            "manifest": manifest,
            "logs": logs,
            "cfg": cfg,
            "cache": cache,
            "url": server.url,
        }


@pytest.mark.slow
def test_build_writes_every_stage_and_the_manifest_last(built: dict[str, Any]) -> None:
    run: Path = built["run"]
    for stage in ("validate", "generate", "mix", "phase1", "phase2", "evaluate", "artifacts"):
        assert (run / stage / "stage.json").is_file(), stage
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["taxonomy"]["sha"] and len(manifest["leaves"]) == 6
    assert set(manifest["data"]["hashes"]) == {"phase1", "phase2", "held_out"}
    assert manifest["packages"]["torch"] != "not installed"
    newest_stage = max((run / s / "stage.json").stat().st_mtime for s in ("artifacts", "evaluate"))
    assert (run / "manifest.json").stat().st_mtime >= newest_stage


@pytest.mark.slow
def test_build_artifacts_model_card_report_and_eval(built: dict[str, Any]) -> None:
    run: Path = built["run"]
    card = (run / "model" / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "/student" in card.splitlines()[1]
    assert "taxonomy_commit:" in card
    assert list((run / "model").glob("*.safetensors"))
    assert (run / "model" / "tokenizer_config.json").is_file()
    report = (run / "report.md").read_text()
    assert "```mermaid\nxychart-beta" in report and "## Per-leaf results" in report
    table = json.loads((run / "eval" / "leaves.json").read_text())
    assert len(table) == 6
    for row in table:
        for name in ("base", "phase1", "phase2"):
            assert row[f"{name}_rouge_l"] is not None and row[f"{name}_ref_loss"] > 0
    mix = json.loads((run / "mix" / "summary.json").read_text())
    assert mix["phase1"] > 0 and mix["phase2"] > 0 and mix["held_out"] >= 6
    held = [json.loads(x) for x in (run / "mix" / "held_out.jsonl").read_text().splitlines()]
    phase1 = (run / "mix" / "phase1.jsonl").read_text()
    phase2 = (run / "mix" / "phase2.jsonl").read_text()
    for h in held:  # held-out answers never leak into training
        assert json.dumps(h["answer"]) not in phase1 and json.dumps(h["answer"]) not in phase2


@pytest.mark.slow
def test_resume_skips_finished_stages_and_rerun_needs_resume(
    built: dict[str, Any], tmp_path: Path
) -> None:
    run: Path = built["run"]
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    (copy / "manifest.json").unlink()
    shutil.rmtree(copy / "artifacts")
    config = load_config(ROOT / ".github" / "labbot.yml")
    logs: list[str] = []
    with ScriptedTeacherServer(scripted, concurrency=4) as server:
        cfg = dataclasses.replace(built["cfg"], teacher=built["url"])
        build = Build(
            ROOT / "taxonomy", config, cfg, copy, built["cache"], resume=True, log=logs.append
        )
        build.run_all()
        assert server.chat_requests() == []  # nothing regenerated
    skipped = [line for line in logs if "skipped" in line]
    assert len(skipped) == 6 and any(line.startswith("artifacts: running") for line in logs)
    assert (copy / "manifest.json").is_file()
    with pytest.raises(RunDirectoryInUse, match="is not empty"):
        Build(ROOT / "taxonomy", config, cfg, copy, built["cache"]).run_all()


def test_invalid_tree_stops_the_build_with_located_errors(tmp_path: Path) -> None:
    tree = tmp_path / "taxonomy" / "compositional_skills" / "x"
    tree.mkdir(parents=True)
    (tree / "qna.yaml").write_text("version: 3\ncreated_by: a\n")
    build = Build(
        tmp_path / "taxonomy",
        load_config(ROOT / ".github" / "labbot.yml"),
        buildconfig.resolve({}),
        tmp_path / "run",
        tmp_path / "cache",
    )
    with pytest.raises(BuildError) as info:
        build.run_all()
    assert info.value.results and info.value.results[0].findings[0].line >= 1


def test_build_config_rejects_unknown_keys_and_types() -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="phase1.epoch"):
        buildconfig.resolve({"phase1": {"epoch": 3}})
    with pytest.raises(ConfigError, match="'generate.samples' must be a whole number"):
        buildconfig.resolve({"generate": {"samples": "many"}})
    assert buildconfig.load(
        ROOT / "pipeline" / "training" / "configs" / "default.yaml"
    ) == buildconfig.resolve({})
