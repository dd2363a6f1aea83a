"""Pure parts of the build: mixing determinism and isolation, evaluation scoring."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_config
from pipeline.taxonomy.leaves import KNOWLEDGE, load_leaves
from pipeline.training.evaluate import compare, improved, rouge_l
from pipeline.training.mixing import MixConfig, mix

ROOT = Path(__file__).resolve().parents[2]


def sample_leaves() -> list:  # type: ignore[type-arg]
    leaves, _ = load_leaves(ROOT / "taxonomy", load_config(ROOT / ".github" / "labbot.yml"))
    return leaves


def test_rouge_l() -> None:
    assert rouge_l("There are 3 feet in a yard.", "There are 3 feet in a yard.") == 1.0
    assert rouge_l("", "x") == 0.0 and rouge_l("a b", "c d") == 0.0
    assert 0 < rouge_l("three feet in a yard", "There are 3 feet in a yard") < 1


def test_improved_needs_a_lower_reference_loss_and_no_big_rouge_drop() -> None:
    assert improved(0.2, 0.2, 3.0, 2.9)
    assert not improved(0.2, 0.6, 3.0, 3.0)  # a lucky answer alone is not enough
    assert not improved(0.3, 0.1, 3.0, 2.0)  # answers got clearly worse


def test_compare_reports_deltas_and_retention() -> None:
    scores = {
        "base": {"knowledge/k": {"rouge_l": 0.1, "ref_loss": 4.0}},
        "phase1": {"knowledge/k": {"rouge_l": 0.3, "ref_loss": 2.0}},
        "phase2": {"knowledge/k": {"rouge_l": 0.25, "ref_loss": 2.5}},
    }
    (row,) = compare(scores)
    assert row["improved"] and abs(row["retention"] - 0.75) < 1e-9
    assert abs(row["delta_ref_loss"] + 1.5) < 1e-9


def test_mix_is_deterministic_holds_out_questions_and_replays_knowledge() -> None:
    leaves = sample_leaves()
    a = mix(leaves, {}, MixConfig(seed=7))
    b = mix(leaves, {}, MixConfig(seed=7))
    assert a.phase1 == b.phase1 and a.phase2 == b.phase2
    knowledge = [leaf for leaf in leaves if leaf.kind == KNOWLEDGE]
    assert len(a.held_out) == sum(len(k.seeds) for k in knowledge) + len(leaves) - len(knowledge)
    held = {h["answer"] for h in a.held_out}
    for record in a.phase1 + a.phase2:
        assert record["messages"][-1]["content"] not in held
    assert all(r["metadata"]["kind"] == KNOWLEDGE for r in a.phase1)
    replayed = [r for r in a.phase2 if r["metadata"].get("replay")]
    assert replayed and all(not r["unmask"] for r in replayed)
    assert abs(len(replayed) - round(0.3 * len(a.phase1))) <= 1
    with_context = [r for r in a.phase1 if r["metadata"]["with_context"]]
    assert with_context and all(r["unmask"] for r in with_context)
    assert a.counts and all("held_out" in c for c in a.counts.values())
