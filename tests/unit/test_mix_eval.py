"""Pure parts of the build: mixing determinism and isolation, evaluation scoring."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_config
from pipeline.taxonomy.leaves import FREEFORM, GROUNDED, KNOWLEDGE, QA, Leaf, Seed, load_leaves
from pipeline.training.artifacts import report_markdown
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


def _skill(path: str, questions: list[str]) -> Leaf:
    seeds = tuple(Seed(question=q, answer=f"answer {i} to it") for i, q in enumerate(questions))
    return Leaf(path=path, kind=FREEFORM, top="compositional_skills", seeds=seeds)


def _generated(leaf: str, question: str, context: str = "") -> dict[str, object]:
    user = f"{context}\n\n{question}" if context else question
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "ok"}],
        "metadata": {"leaf": leaf, "source": "generated"},
    }


def test_samples_that_repeat_a_held_out_question_are_dropped_and_counted() -> None:
    a = "compositional_skills/a/qna.yaml"
    b = "compositional_skills/b/qna.yaml"
    held_a = "Write a limerick about a cat who learned to play the violin at night."
    leaves = [
        _skill(
            a, ["Name three rivers that flow through Paris.", "Spell banana backwards.", held_a]
        ),
        _skill(
            b,
            [
                # another leaf's seed that is the held-out question, recased and re-punctuated
                "write a limerick about a cat, who learned to play the violin at night",
                "Count the vowels in the word umbrella.",
                "Explain why the sky looks blue on a clear day.",
            ],
        ),
    ]
    generated = {
        a: [
            _generated(a, held_a),  # the exact held-out question, generated again
            _generated(a, "Write a sonnet about the tides of the northern sea."),
        ],
        b: [_generated(b, "Write a limerick about a cat who learned to play the violin at noon.")],
    }
    result = mix(leaves, generated, MixConfig(seed=3, replay_fraction=0.0))
    questions = [r["messages"][-2]["content"] for r in result.phase2]
    assert all("limerick" not in q for q in questions), questions
    assert "Write a sonnet about the tides of the northern sea." in questions
    assert result.counts[a]["dropped_held_out"] == 1
    assert result.counts[b]["dropped_held_out"] == 2
    assert result.counts[a]["generated"] == 1 and result.counts[b]["generated"] == 0
    assert result.counts[b]["seed"] == 1  # its own held-out (the last) plus the copy are out
    summary = result.summary()
    assert summary["dropped_held_out"] == 3
    report = report_markdown(
        taxonomy={"sha": "abc"},
        counts=summary,
        generation={},
        phases={},
        table=[],
        answers={},
        png_name=None,
    )
    assert "Dropped 3 training samples that repeated a held-out question" in report
    assert f"| `{b}` | 1 | 0 | 1 | 2 |" in report


def test_knowledge_and_grounded_samples_are_checked_by_their_question() -> None:
    k = "knowledge/k/qna.yaml"
    passage = "The lighthouse of Pellmoor was built in 1821 and painted red in 1902. " * 3
    leaf = Leaf(
        path=k,
        kind=KNOWLEDGE,
        top="knowledge",
        seeds=(
            Seed(
                context=passage,
                qas=(
                    QA("When was the Pellmoor lighthouse built by the islanders?", "1821"),
                    QA("What colour was the lighthouse of Pellmoor painted in 1902?", "Red"),
                ),
            ),
        ),
    )
    g = "compositional_skills/g/qna.yaml"
    grounded = Leaf(
        path=g,
        kind=GROUNDED,
        top="compositional_skills",
        seeds=(
            Seed("Summarise the email in one line for me.", "A", context="Dear Bob, hi."),
            Seed("List every date mentioned in the email above.", "B", context="Dear Al, hi."),
        ),
    )
    generated = {
        k: [
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "what colour was the lighthouse of Pellmoor painted in 1902",
                    },
                    {"role": "assistant", "content": "Red."},
                ],
                "metadata": {"leaf": k, "source": "generated", "chunk": passage},
            }
        ],
        g: [_generated(g, "List every date mentioned in the email above!", "Meeting at 5.")],
    }
    result = mix([leaf, grounded], generated, MixConfig(seed=1, replay_fraction=0.0))
    assert result.counts[k]["dropped_held_out"] == 2  # with and without its passage
    assert result.counts[g]["dropped_held_out"] == 1
    assert result.counts[k]["seed"] == 2 and result.counts[k]["generated"] == 0
