"""Overlap detection (issue 15): normalisation, MinHash/LSH recall, findings and their places,
incremental updates, the index file, held-out leakage; and on the real corpus (skipped when
absent) planted near-copies and same-topic false positives."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest

from pipeline.taxonomy.findings import FileResult, Severity
from pipeline.taxonomy.overlap import (
    OverlapFinding,
    OverlapIndex,
    OverlapLeaf,
    OverlapSettings,
    build_index,
    check,
    leaked_samples,
    read_leaf,
    update_index,
)
from pipeline.taxonomy.overlap_index import normalise, shingles, signature, similarity

JOKES = [
    ("Tell me a pun about cheese.", "What do you call cheese that is not yours? Nacho cheese."),
    ("Tell me a pun about bakers.", "Bakers knead the dough because they are always on a roll."),
    ("Tell me a pun about skeletons.", "Skeletons never fight each other: they have no guts."),
    ("Tell me a pun about calendars.", "A calendar's days are numbered, so it keeps a schedule."),
    ("Tell me a pun about bicycles.", "A bicycle cannot stand on its own because it is two tired."),
]
RIDDLES = [
    ("Tell me a riddle about a towel.", "What gets wetter the more it dries? A towel."),
    ("Tell me a riddle about silence.", "What breaks as soon as you say its name? Silence."),
    ("Tell me a riddle about a sponge.", "What is full of holes but still holds water? A sponge."),
    ("Tell me a riddle about an echo.", "What speaks without a mouth and hears without ears?"),
    ("Tell me a riddle about a candle.", "I am tall when young and short when old. A candle."),
]
KNOCK = [
    ("Tell me a knock-knock joke about lettuce.", "Knock knock. Lettuce who? Lettuce in!"),
    ("Tell me a knock-knock joke about a cow.", "Knock knock. Interrupting cow wh- MOO!"),
    ("Tell me a knock-knock joke about Boo.", "Knock knock. Boo who? Don't cry, it's a joke."),
    ("Tell me a knock-knock joke about Olive.", "Knock knock. Olive who? Olive you too."),
    ("Tell me a knock-knock joke about Atch.", "Knock knock. Atch who? Bless you, friend!"),
]
LIMERICKS = [
    ("Tell me a limerick about a cat.", "A cat with a hat sat flat on a mat all day."),
    ("Tell me a limerick about a train.", "A train in the rain ran again down the lane."),
    ("Tell me a limerick about a fish.", "A fish made a wish for a dish full of squish."),
    ("Tell me a limerick about a bee.", "A bee in a tree sipped tea by the sea with glee."),
    ("Tell me a limerick about a king.", "A king liked to sing of a ring and of spring."),
]


def skill_yaml(seeds: list[tuple[str, str]], style: str = "'") -> str:
    """A skill qna.yaml; ``style`` is the scalar style of questions and answers."""
    lines = [
        "version: 3",
        "created_by: tester",
        "task_description: Telling jokes.",
        "seed_examples:",
    ]
    for q, a in seeds:
        for key, text in (("question", q), ("answer", a)):
            lead = "  - " if key == "question" else "    "
            if style in "|>":
                lines.append(f"{lead}{key}: {style}")
                lines.append(f"      {text}")
            else:
                escaped = text.replace("'", "''")
                lines.append(f"{lead}{key}: '{escaped}'")
    return "\n".join(lines) + "\n"


def leaf(path: str, seeds: list[tuple[str, str]], style: str = "'") -> OverlapLeaf:
    got = read_leaf(path, skill_yaml(seeds, style).encode())
    assert got is not None
    return got


def tree() -> list[OverlapLeaf]:
    base = "compositional_skills/writing/freeform/jokes"
    return [
        leaf(f"{base}/puns/qna.yaml", JOKES),
        leaf(f"{base}/riddles/qna.yaml", RIDDLES),
        leaf(f"{base}/knock_knock/qna.yaml", KNOCK),
        leaf(f"{base}/limericks/qna.yaml", LIMERICKS),
    ]


def leaf_findings(fs: list[OverlapFinding]) -> list[OverlapFinding]:
    return [f for f in fs if f.rule == "overlap.leaf"]


# --- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b",
    [
        ("Tell me a PUN, please!", "tell   me a pun please"),
        ("Don\u2019t panic", "Dont PANIC."),
        ("\uff34\uff45\uff4c\uff4c me", "Tell me"),  # full-width letters (NFKC)
        ("\ufb01sh and chips", "fish and chips"),  # the fi ligature (NFKC)
        ("line one\nline two\n", "line one line two"),  # a literal block vs a folded one
        ("\u201cquoted\u201d \u2014 text\u2026", "quoted text"),
        ("snake_case-words", "snake case words"),
    ],
)
def test_normalise_makes_equal(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)
    assert np.array_equal(shingles(a), shingles(b))


@pytest.mark.parametrize("a, b", [("2+2", "2-2"), ("x < y", "x > y"), ("cat", "cut")])
def test_normalise_keeps_what_carries_meaning(a: str, b: str) -> None:
    assert normalise(a) != normalise(b)


def test_short_texts_are_one_shingle_and_empty_texts_none() -> None:
    assert shingles("Yes!").size == 1
    assert shingles("two words").size == 1
    assert not np.array_equal(shingles("two words"), shingles("words two"))
    assert shingles("?! ... --").size == 0
    assert shingles("one two three four").size == 2


@pytest.mark.parametrize("style", ["|", ">", "'"])
def test_block_styles_read_the_same(style: str) -> None:
    plain = leaf("a/b/qna.yaml", JOKES)
    other = leaf("a/c/qna.yaml", JOKES, style)
    assert [normalise(u.text) for u in plain.units] == [normalise(u.text) for u in other.units]


def test_signature_estimates_jaccard() -> None:
    rng = random.Random(3)
    words = [f"w{i}" for i in range(400)]
    a = " ".join(rng.choice(words) for _ in range(300))
    b = a.rsplit(" ", 60)[0] + " " + " ".join(rng.choice(words) for _ in range(60))
    sa, sb = shingles(a), shingles(b)
    exact = len(np.intersect1d(sa, sb)) / len(np.union1d(sa, sb))
    assert abs(similarity(signature(sa), signature(sb)) - exact) < 0.12


# --- planted copies and distinct leaves -------------------------------------------------------


def _reword(seeds: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = list(seeds)
    out[1] = (out[1][0].replace("bakers", "cooks"), out[1][1])
    out[3] = (out[3][0], out[3][1].replace("numbered", "counted"))
    return out


PLANTED = {
    "reordered": lambda s: list(reversed(s)),
    "case and punctuation": lambda s: [(q.upper().rstrip("."), a.lower() + "!!") for q, a in s],
    "one seed dropped": lambda s: s[:2] + s[3:],
    "one seed added": lambda s: [*s, RIDDLES[0]],
    "two words reworded": _reword,
    "moved": lambda s: s,
}


@pytest.mark.parametrize("kind", sorted(PLANTED))
@pytest.mark.parametrize("style", ["'", "|"])
def test_planted_copy_is_flagged_with_both_places(kind: str, style: str) -> None:
    index = build_index(tree(), key="t1")
    path = "foundational_skills/humour/copied/qna.yaml"
    copy = leaf(path, PLANTED[kind](JOKES), style)
    fs = check(index, [copy])[path]
    found = leaf_findings(fs)
    assert [f.other_file for f in found] == [
        "compositional_skills/writing/freeform/jokes/puns/qna.yaml"
    ]
    f = found[0]
    assert (f.line, f.column, f.path) == (4, 1, ".seed_examples")  # this file's seed_examples
    assert (f.other_line, f.other_column, f.other_path) == (4, 1, ".seed_examples")
    assert f.severity is Severity.WARNING
    assert "looks like compositional_skills/writing/freeform/jokes/puns/qna.yaml (" in f.message
    assert f.similarity >= OverlapSettings().leaf_threshold
    # seeds covered by the whole-leaf finding are not repeated one by one
    assert not [x for x in fs if x.rule == "overlap.seed" and x.other_file == f.other_file]


def test_distinct_leaves_on_one_topic_are_not_flagged() -> None:
    leaves = tree()
    index = build_index(leaves, key="t1")
    for one in leaves:
        assert check(index, [one])[one.path] == []  # its own path is left out, nothing else hits
    # nor when all four come in one pull request
    assert all(v == [] for v in check(OverlapIndex(), leaves).values())


def test_two_new_leaves_of_one_pull_request_are_compared() -> None:
    a = leaf("compositional_skills/a/qna.yaml", JOKES)
    b = leaf("compositional_skills/b/qna.yaml", list(reversed(JOKES)))
    out = check(OverlapIndex(), [a, b])
    assert [f.other_file for f in leaf_findings(out[a.path])] == [b.path]
    assert [f.other_file for f in leaf_findings(out[b.path])] == [a.path]


def test_changed_leaf_is_not_compared_with_its_old_version() -> None:
    leaves = tree()
    index = build_index(leaves, key="t1")
    edited = leaf(leaves[0].path, [*JOKES, ("Tell me a pun about owls.", "Owls are hoot.")])
    assert check(index, [edited])[edited.path] == []
    # ...but a leaf the PR deletes is not compared either
    copy = leaf("compositional_skills/x/qna.yaml", RIDDLES)
    assert leaf_findings(check(index, [copy])[copy.path])
    assert check(index, [copy], removed=[leaves[1].path])[copy.path] == []


# --- findings' places -------------------------------------------------------------------------


def test_seed_finding_names_the_other_file_and_line() -> None:
    index = build_index(tree(), key="t1")
    mine = [
        ("Explain the water cycle.", "Water evaporates, condenses into clouds and falls as rain."),
        ("Name three primary colours.", "Red, yellow and blue are the primary colours of paint."),
        ("TELL ME A RIDDLE ABOUT SILENCE", "What breaks as soon as you say its name?? Silence!"),
    ]
    path = "compositional_skills/science/qna.yaml"
    fs = check(index, [leaf(path, mine)])[path]
    assert [f.rule for f in fs] == ["overlap.seed"]
    f = fs[0]
    # seed k (from 0) starts at line 5 + 2k: seed 2 here, seed 1 (RIDDLES[1]) there
    assert (f.line, f.column, f.path) == (9, 5, ".seed_examples[2]")
    assert (f.other_file, f.other_line, f.other_column, f.other_path) == (
        "compositional_skills/writing/freeform/jokes/riddles/qna.yaml",
        7,
        5,
        ".seed_examples[1]",
    )
    assert "riddles/qna.yaml at line 7" in f.message
    related = f.as_dict()["related"]
    assert related == {
        "file": f.other_file,
        "line": 7,
        "column": 5,
        "similarity": round(f.similarity, 3),
        "path": ".seed_examples[1]",
    }
    result = FileResult(path)
    result.add(fs)
    assert result.valid and result.warnings == 1
    errors = check(index, [leaf(path, mine)], OverlapSettings(as_errors=True))[path]
    assert errors[0].severity is Severity.ERROR
    assert isinstance(errors[0].with_severity(Severity.WARNING), OverlapFinding)


def test_within_finds_near_copies_but_leaves_exact_ones_to_the_schema() -> None:
    seeds = [*JOKES[:3], (JOKES[0][0].upper(), JOKES[0][1] + "!"), JOKES[1]]
    got = leaf("compositional_skills/w/qna.yaml", seeds)
    fs = check(OverlapIndex(), [got])[got.path]
    assert [(f.rule, f.line, f.other_line, f.other_file) for f in fs] == [
        ("overlap.within", 11, 5, got.path)  # seed 4 repeats seed 1; seed 5 is an exact copy
    ]


def test_knowledge_questions_over_another_passage_are_caught() -> None:
    def knowledge(context: str, qas: list[tuple[str, str]]) -> bytes:
        body = ["version: 3", "domain: history", "created_by: t", "seed_examples:"]
        body += [f"  - context: '{context}'", "    questions_and_answers:"]
        for q, a in qas:
            body += [f"      - question: '{q}'", f"        answer: '{a}'"]
        body += ["document_outline: x", "document:", "  repo: https://x/y", "  commit: abc"]
        body += ["  patterns:", "    - a.md"]
        return ("\n".join(body) + "\n").encode()

    qas = [
        ("When was the lighthouse of Pellmoor Island built?", "It was built in 1871."),
        ("Who designed the lighthouse of Pellmoor Island?", "The engineer Ada Brennock."),
    ]
    old = read_leaf("knowledge/history/pellmoor/qna.yaml", knowledge("The island is small.", qas))
    new = read_leaf("knowledge/history/island/qna.yaml", knowledge("Another passage here.", qas))
    assert old is not None and new is not None
    assert [u.yaml_path for u in new.units] == [
        ".seed_examples[0].context",
        ".seed_examples[0].questions_and_answers[0]",
        ".seed_examples[0].questions_and_answers[1]",
    ]
    fs = check(build_index([old], "k"), [new])[new.path]
    assert [f.rule for f in fs] == ["overlap.leaf"]  # 2 of 3 seed texts: Jaccard 0.5
    fs = check(build_index([old], "k"), [new], OverlapSettings(leaf_threshold=0.9))[new.path]
    assert [(f.rule, f.path, f.line, f.other_line) for f in fs] == [
        ("overlap.seed", ".seed_examples[0].questions_and_answers[0]", 7, 7),
        ("overlap.seed", ".seed_examples[0].questions_and_answers[1]", 9, 9),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfebad",
        b"a: [1, 2",
        b"- just\n- a list\n",
        b"seed_examples: 5\n",
        b"",
        b"seed_examples:\n  - question: [1]\n    answer: {a: b}\n",
        b"document: text\nseed_examples: []\n",
    ],
)
def test_unreadable_or_odd_files_give_no_leaf_or_no_units(raw: bytes) -> None:
    got = read_leaf("knowledge/x/qna.yaml", raw)
    assert got is None or got.units == ()


def test_cost_is_bounded_for_a_huge_seed() -> None:
    text = " ".join(f"word{i % 5000}" for i in range(200_000))
    huge = leaf("compositional_skills/huge/qna.yaml", [(text, "x"), ("y z", text[:5000])])
    index = build_index(tree(), "k")
    assert check(index, [huge])[huge.path] == []


# --- incremental updates and the file ---------------------------------------------------------


def _leaf_pairs(index: OverlapIndex, probe: list[OverlapLeaf]) -> list[tuple[str, str]]:
    out = check(index, probe, OverlapSettings(max_other_leaves=100))
    return sorted((p, f.other_file) for p, fs in out.items() for f in fs)


def _family(n: int) -> list[OverlapLeaf]:
    """n distinct leaves: made-up seeds, every one different."""
    rng = random.Random(n)
    words = [f"w{i}" for i in range(3000)]
    return [
        leaf(
            f"compositional_skills/gen/l{i}/qna.yaml",
            [(" ".join(rng.sample(words, 8)), " ".join(rng.sample(words, 12))) for _ in range(5)],
        )
        for i in range(n)
    ]


def test_incremental_updates_match_a_fresh_build() -> None:
    family = _family(700)  # 3,500 seed texts: crosses the unsorted tail's re-sort threshold
    index = build_index(family[:300], "k1")
    for x in family[300:]:
        index.add(x)
        if int(x.path.split("/l")[1].split("/")[0]) % 97 == 0:
            check(index, family[:1])  # queries between adds sort the tail in
    for x in family[100:400]:
        assert index.remove(x.path)
    assert not index.remove("no/such/qna.yaml")
    replaced = leaf(family[5].path, JOKES)
    index.add(replaced)
    fresh = build_index([*family[:5], replaced, *family[6:100], *family[400:]], "k1")
    probes = [
        leaf("p/1/qna.yaml", JOKES),
        leaf(
            "p/2/qna.yaml",
            [(u.text.split("\n")[0], u.text.split("\n")[1]) for u in family[650].units],
        ),
        leaf(
            "p/3/qna.yaml",
            [(u.text.split("\n")[0], u.text.split("\n")[1]) for u in family[200].units],
        ),
    ]
    got = _leaf_pairs(index, probes)
    assert got == _leaf_pairs(fresh, probes)
    assert ("p/1/qna.yaml", family[5].path) in got  # the replacement is found...
    assert ("p/2/qna.yaml", family[650].path) in got  # ...a late addition too...
    assert all(p != "p/3/qna.yaml" for p, _ in got)  # ...and a removed leaf is not
    assert len(index) == len(fresh) == 400 and index.unit_count == fresh.unit_count


def test_a_removed_leaf_is_never_matched_again() -> None:
    leaves = tree()
    index = build_index(leaves, "k")
    copy = leaf("compositional_skills/x/qna.yaml", RIDDLES)
    assert leaf_findings(check(index, [copy])[copy.path])
    index.remove(leaves[1].path)  # one small leaf: masked, not compacted away
    assert leaves[1].path not in index and len(index) == 3
    assert check(index, [copy])[copy.path] == []
    index.add(leaves[1])
    assert [f.other_file for f in check(index, [copy])[copy.path]] == [leaves[1].path]


def test_update_index_skips_unchanged_fingerprints_and_takes_the_new_key() -> None:
    a = read_leaf("s/a/qna.yaml", skill_yaml(JOKES).encode(), fingerprint="blob1")
    b = read_leaf("s/b/qna.yaml", skill_yaml(RIDDLES).encode(), fingerprint="blob2")
    assert a is not None and b is not None
    index = build_index([a, b], "tree1")
    stale = OverlapLeaf(a.path, (), fingerprint="blob1")  # same blob: must not be re-read
    update_index(index, [stale], removed=[b.path], key="tree2")
    got = index.get(a.path)
    assert index.key == "tree2" and got is not None and len(got.units) == 5
    assert b.path not in index


def test_the_index_file_round_trips_and_refuses_what_it_must() -> None:
    index = build_index(tree(), "tree-sha-1")
    index.remove(tree()[2].path)  # a removed leaf must not come back
    data = index.to_bytes()
    loaded = OverlapIndex.from_bytes(data, key="tree-sha-1")
    assert loaded is not None and loaded.paths() == index.paths()
    probe = [leaf("p/qna.yaml", JOKES[:4] + KNOCK[:1])]
    assert _leaf_pairs(loaded, probe) == _leaf_pairs(index, probe)
    assert np.array_equal(loaded.signatures_of(tree()[0].path), index.signatures_of(tree()[0].path))
    assert OverlapIndex.from_bytes(data, key="another-tree") is None
    assert OverlapIndex.from_bytes(data[: len(data) // 2]) is None
    assert OverlapIndex.from_bytes(b"not an npz") is None
    # a file with a pickled object is refused, never unpickled
    buf = io.BytesIO()
    np.savez(buf, sig=np.array([{"x": 1}], dtype=object), slot=np.zeros(1), meta=np.zeros(1))
    assert OverlapIndex.from_bytes(buf.getvalue()) is None
    # a file whose counts disagree with its signatures is refused
    with np.load(io.BytesIO(data)) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["leaves"][0][4].append([".seed_examples[9]", 1, 1])
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    assert OverlapIndex.from_bytes(buf.getvalue()) is None


# --- held-out leakage -------------------------------------------------------------------------


def test_leaked_samples_finds_copies_of_held_out_questions() -> None:
    held = [
        "When was the lighthouse of Pellmoor Island built?",
        "Tell me a pun about cheese.",
        "What is rizz?",
    ]
    samples = [
        "Who designed the lighthouse of Pellmoor Island?",  # same topic, another question
        "when was the LIGHTHOUSE of Pellmoor island built",  # leak
        "Give me a pun about bread and butter.",  # same kind of request, other words
        "What is rizz",  # leak (a short text is one shingle)
        "When was the lighthouse of Pellmoor Island first built?",  # one word added: leak
        "What is the capital of France?",
    ]
    got = leaked_samples(held, samples)
    assert [(x.sample, x.held_out) for x in got] == [(1, 0), (3, 2), (4, 0)]
    assert got[0].similarity == 1.0
    assert leaked_samples([], samples) == [] and leaked_samples(held, []) == []


# --- the real corpus --------------------------------------------------------------------------


def test_corpus_planted_copies_found_and_same_topic_pairs_rarely_flagged(corpus: Path) -> None:
    from benchmarks.overlap_corpus import (
        COMBINED,
        load_corpus,
        planted,
        planted_recall,
        topic_false_positives,
    )

    leaves = load_corpus(corpus)
    assert len(leaves) > 500
    index = build_index([c.leaf for c in leaves], "corpus")
    plants = planted(leaves, 40, random.Random(7))
    recall = planted_recall(index, plants)
    missed = {k: v for k, v in recall.items() if k != COMBINED and v[0] != v[1]}
    assert not missed, missed
    total, flagged, proven, others = topic_false_positives(leaves, index)
    assert total > 5000 and flagged >= len(proven) > 0
    assert len(others) / total < 0.01, others
