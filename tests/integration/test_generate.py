"""Generation pipelines against a scripted OpenAI-compatible teacher on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import load_config
from pipeline.sdg.generate import GenerateConfig, generate_leaves, write_outputs
from pipeline.sdg.teacher import OpenAITeacher
from pipeline.taxonomy.leaves import FREEFORM, GROUNDED, KNOWLEDGE, Leaf, load_leaves
from tests.support.scripted_teacher import scripted
from tests.support.teacher_server import ScriptedTeacherServer

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "documents" / "sample-docs" / "pellmoor-island.md").read_text()


@pytest.fixture
def server() -> Any:
    with ScriptedTeacherServer(scripted, n_ctx=1024, concurrency=4) as srv:
        yield srv


@pytest.fixture
def teacher(server: ScriptedTeacherServer) -> Any:
    with OpenAITeacher(server.url, concurrency=4) as t:
        yield t


@pytest.fixture
def leaves() -> dict[str, Leaf]:
    config = load_config(ROOT / ".github" / "labbot.yml")
    found, results = load_leaves(ROOT / "taxonomy", config)
    assert all(r.valid for r in results)
    return {leaf.kind + ":" + leaf.path.split("/")[-2]: leaf for leaf in found}


def pick(leaves: dict[str, Leaf], kind: str) -> Leaf:
    return next(leaf for key, leaf in leaves.items() if key.startswith(kind + ":"))


def test_freeform_pipeline_keeps_filters_and_records_provenance(
    server: ScriptedTeacherServer, teacher: OpenAITeacher, leaves: dict[str, Leaf], tmp_path: Path
) -> None:
    leaf = pick(leaves, FREEFORM)
    (result,) = generate_leaves(
        [(leaf, [])], teacher, GenerateConfig(samples=12), cache_dir=tmp_path
    )
    assert result.kept, result.counts()
    rejected = result.counts()["rejected"]
    assert rejected.get("critic_question", 0) >= 1  # the 'odd' questions
    assert rejected.get("dedupe", 0) >= 1
    for s in result.kept:
        assert s.answer.startswith("Answer to:") and "Request:" not in s.answer  # stop sequence
        assert s.teacher == teacher.identity and s.leaf == leaf.path
        assert {"questions", "answer"} <= set(s.prompt_hashes)
        assert [f["filter"] for f in s.filters] == [
            "dedupe",
            "critic_question",
            "answer",
            "critic_answer",
        ]
    for s in result.samples:
        if not s.kept:
            assert s.rejected_by and any(not f["passed"] and f.get("reason") for f in s.filters)
    assert server.overflows == 0


def test_grounded_pipeline_puts_the_context_in_the_question(
    server: ScriptedTeacherServer, teacher: OpenAITeacher, leaves: dict[str, Leaf], tmp_path: Path
) -> None:
    leaf = pick(leaves, GROUNDED)
    (result,) = generate_leaves(
        [(leaf, [])], teacher, GenerateConfig(samples=6), cache_dir=tmp_path
    )
    assert result.kept
    record = result.kept[0].to_record()
    assert record["messages"][0]["content"].startswith("Minutes of the harbour committee.")


def test_knowledge_pipeline_chunks_to_fit_and_filters(
    server: ScriptedTeacherServer, teacher: OpenAITeacher, leaves: dict[str, Leaf], tmp_path: Path
) -> None:
    leaf = pick(leaves, KNOWLEDGE)
    (result,) = generate_leaves(
        [(leaf, [DOC])], teacher, GenerateConfig(samples=9), cache_dir=tmp_path
    )
    assert result.chunks >= 2
    assert result.kept and all(s.chunk_index is not None and s.context for s in result.kept)
    assert result.counts()["rejected"].get("critic_faithful", 0) >= 1
    kept_filters = [f["filter"] for f in result.kept[0].filters]
    assert kept_filters == [
        "dedupe",
        "answer",
        "critic_faithful",
        "critic_relevant",
        "critic_standalone",
    ]
    assert server.overflows == 0
    # No request ever exceeded the server's window, though the document is far longer.
    assert all(r["prompt_tokens"] + 256 <= server.n_ctx for r in server.chat_requests())


def test_cache_hit_makes_no_teacher_call_and_changes_miss(
    server: ScriptedTeacherServer, teacher: OpenAITeacher, leaves: dict[str, Leaf], tmp_path: Path
) -> None:
    leaf = pick(leaves, FREEFORM)
    cfg = GenerateConfig(samples=4)
    first = generate_leaves([(leaf, [])], teacher, cfg, cache_dir=tmp_path)
    calls = len(server.chat_requests())
    again = generate_leaves([(leaf, [])], teacher, cfg, cache_dir=tmp_path)
    assert again[0].cached and len(server.chat_requests()) == calls
    assert [s.question for s in again[0].samples] == [s.question for s in first[0].samples]
    forced = generate_leaves([(leaf, [])], teacher, cfg, cache_dir=tmp_path, use_cache=False)
    assert not forced[0].cached and len(server.chat_requests()) > calls
    more = generate_leaves([(leaf, [])], teacher, GenerateConfig(samples=5), cache_dir=tmp_path)
    assert not more[0].cached


def test_outputs_are_chat_jsonl_with_a_summary(
    server: ScriptedTeacherServer, teacher: OpenAITeacher, leaves: dict[str, Leaf], tmp_path: Path
) -> None:
    leaf = pick(leaves, FREEFORM)
    results = generate_leaves([(leaf, [])], teacher, GenerateConfig(samples=6), cache_dir=tmp_path)
    summary = write_outputs(results, tmp_path / "out", teacher.identity)
    kept = [
        json.loads(x) for x in (tmp_path / "out" / f"{leaf.slug}.jsonl").read_text().splitlines()
    ]
    assert kept and all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in kept)
    everything = (tmp_path / "out" / f"{leaf.slug}.samples.jsonl").read_text().splitlines()
    assert len(everything) == summary["leaves"][0]["generated"] >= len(kept)
    assert summary["totals"]["kept"] == len(kept)


def test_cli_generate_end_to_end_and_unreachable_teacher(
    server: ScriptedTeacherServer, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("LABBOT_CACHE_DIR", str(tmp_path / "cache"))
    skills = "taxonomy/compositional_skills"
    out = run_cli(
        [
            "generate",
            skills,
            "--teacher",
            server.url,
            "--samples",
            "4",
            "--out",
            str(tmp_path / "gen"),
        ]
    )
    assert out.code == 0, out.err
    assert "generated" in out.out.splitlines()[0] and "teacher calls" in out.out
    summary = json.loads((tmp_path / "gen" / "summary.json").read_text())
    assert len(summary["leaves"]) == 3 and summary["totals"]["teacher_calls"] > 0
    again = run_cli(
        [
            "generate",
            skills,
            "--teacher",
            server.url,
            "--samples",
            "4",
            "--out",
            str(tmp_path / "gen2"),
        ]
    )
    assert (
        json.loads((tmp_path / "gen2" / "summary.json").read_text())["totals"]["teacher_calls"] == 0
    )
    assert "3 leaves from cache" in again.out
    down = run_cli(
        [
            "generate",
            skills,
            "--teacher",
            "http://127.0.0.1:9/v1",
            "--samples",
            "2",
            "--out",
            str(tmp_path / "gen3"),
            "--no-cache",
        ]
    )
    assert down.code == 3 and "127.0.0.1:9" in down.err and "Traceback" not in down.err
