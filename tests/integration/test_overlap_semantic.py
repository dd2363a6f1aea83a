"""The optional semantic overlap pass (issue 15): paraphrases that share few words are found by
sentence embeddings from the model shipped in the ``semantic`` extra; the lexical pass misses
them, and distinct questions on one topic stay unflagged at the default threshold."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from pipeline import semantic
from pipeline.cli import main
from pipeline.taxonomy.overlap import OverlapLeaf, Unit, build_index, check

pytestmark = pytest.mark.skipif(
    not semantic.available(), reason="the semantic extra is not installed"
)

#: (tree seed, paraphrase with few shared words)
PARAPHRASES = [
    (
        "How many centimetres make up a metre?\nOne hundred centimetres make up a metre.",
        "What is the number of cm in one meter?\nThere are 100 cm in one meter.",
    ),
    (
        "What is the capital of France?\nParis is the capital of France.",
        "Which city is France's seat of government?\nThe French government sits in Paris.",
    ),
    (
        "Tell me a pun about cheese.\nWhat cheese is not yours? Nacho cheese!",
        "Give me a wordplay joke involving cheese.\nWhich cheese belongs to nobody? Nacho cheese.",
    ),
]
#: (tree seed, a different question on the same topic)
DISTINCT = [
    (
        "How many centimetres make up a metre?\nOne hundred centimetres make up a metre.",
        "How many millimetres make up a centimetre?\nTen millimetres make up a centimetre.",
    ),
    (
        "What is the capital of France?\nParis is the capital of France.",
        "What is the capital of Germany?\nBerlin is the capital of Germany.",
    ),
    (
        "Tell me a pun about cheese.\nWhat cheese is not yours? Nacho cheese!",
        "Tell me a pun about bread.\nWhy did the loaf break up? It felt kneaded too little.",
    ),
    (
        "What does 'no cap' mean in slang?\nIt means no lie, for real.",
        "What does 'rizz' mean in slang?\nIt means charm, skill at flirting.",
    ),
]


@pytest.fixture(scope="module")
def embedder() -> semantic.Embedder:
    return semantic.load_embedder()


def leaf(path: str, *texts: str) -> OverlapLeaf:
    units = tuple(Unit(f".seed_examples[{i}]", 5 + 2 * i, 5, t) for i, t in enumerate(texts))
    return OverlapLeaf(path, units, 4, 1, fingerprint=f"fp-{path}")


#: Unrelated seeds around the compared one, so that one shared seed is an overlap.seed, not a
#: whole-leaf copy.
TREE_OTHERS = (
    "Why is the sky blue?\nAir scatters blue light more than red light.",
    "What do bees make?\nBees make honey from nectar.",
    "Name a prime number.\nSeven is a prime number.",
)
PR_OTHERS = (
    "What colour is a ripe banana?\nA ripe banana is yellow.",
    "What is frozen water called?\nFrozen water is called ice.",
    "Who wrote Hamlet?\nWilliam Shakespeare wrote Hamlet.",
)


def findings_for(
    embedder: semantic.Embedder, tree_text: str, pr_text: str, with_meaning: bool
) -> list[dict[str, object]]:
    tree = leaf("skills/a/qna.yaml", tree_text, *TREE_OTHERS)
    index = build_index([tree], key="t")
    store = semantic.EmbeddingStore("t")
    semantic.fill_store(store, index, lambda _: tree, embedder)
    extra = [semantic.SemanticMatcher(index, store, embedder)] if with_meaning else []
    pr = leaf("skills/b/qna.yaml", pr_text, *PR_OTHERS)
    return [f.as_dict() for f in check(index, [pr], extra=extra)[pr.path]]


@pytest.mark.parametrize(("tree_text", "pr_text"), PARAPHRASES)
def test_a_paraphrase_is_found_by_meaning_and_not_by_words(
    embedder: semantic.Embedder, tree_text: str, pr_text: str
) -> None:
    assert findings_for(embedder, tree_text, pr_text, with_meaning=False) == []
    found = findings_for(embedder, tree_text, pr_text, with_meaning=True)
    seeds = [f for f in found if f["rule"] == "overlap.seed"]
    assert len(seeds) == 1, found
    assert "found by meaning" in str(seeds[0]["message"])
    related = seeds[0]["related"]
    assert isinstance(related, dict) and related["file"] == "skills/a/qna.yaml"
    assert related["line"] == 5 and related["similarity"] >= semantic.DEFAULT_THRESHOLD


@pytest.mark.parametrize(("tree_text", "pr_text"), DISTINCT)
def test_distinct_questions_on_one_topic_are_not_flagged(
    embedder: semantic.Embedder, tree_text: str, pr_text: str
) -> None:
    assert findings_for(embedder, tree_text, pr_text, with_meaning=True) == []


def test_a_lexical_copy_is_reported_as_a_repeat_not_as_a_paraphrase(
    embedder: semantic.Embedder,
) -> None:
    text = PARAPHRASES[0][0]
    found = findings_for(embedder, text, text.upper() + "!", with_meaning=True)
    (seed,) = [f for f in found if f["rule"] == "overlap.seed"]
    assert "repeats one in" in str(seed["message"]) and "meaning" not in str(seed["message"])


def test_query_units_over_the_cap_are_not_embedded(embedder: semantic.Embedder) -> None:
    tree = leaf("skills/a/qna.yaml", PARAPHRASES[0][0])
    index = build_index([tree], key="t")
    store = semantic.EmbeddingStore("t")
    semantic.fill_store(store, index, lambda _: tree, embedder)
    matcher = semantic.SemanticMatcher(index, store, embedder, max_units=2)
    pr = leaf("skills/b/qna.yaml", "Hello there.", "Good morning.", PARAPHRASES[0][1])
    assert matcher.matches(pr, frozenset()) == []  # the paraphrase is the third unit
    assert matcher.skipped == 1


SKILL = """\
version: 3
created_by: alice
task_description: Convert between units of length.
seed_examples:
  - question: How many centimetres make up a metre?
    answer: One hundred centimetres make up a metre.
  - question: What is the capital of France?
    answer: Paris is the capital of France.
  - question: How many days are in a leap year?
    answer: A leap year has 366 days.
  - question: How many weeks are in a year?
    answer: A year has about 52 weeks.
  - question: How many minutes are in an hour?
    answer: An hour has 60 minutes.
"""
PR = """\
version: 3
created_by: mallory
task_description: Lengths.
seed_examples:
  - question: What is the number of cm in one meter?
    answer: There are 100 cm in one meter.
  - question: Why is the sky blue?
    answer: Air scatters blue light more than red light.
  - question: What colour is a ripe banana?
    answer: A ripe banana is yellow.
  - question: What do bees make?
    answer: Bees make honey.
  - question: What is frozen water called?
    answer: Frozen water is called ice.
"""
ORIGINAL = "taxonomy/compositional_skills/units/qna.yaml"
COPY = "taxonomy/compositional_skills/mine/qna.yaml"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / ORIGINAL).parent.mkdir(parents=True)
    (root / ORIGINAL).write_text(SKILL)
    r = git.Repo.init(root)
    r.index.add([ORIGINAL])
    r.index.commit("one leaf")
    (root / COPY).parent.mkdir(parents=True)
    (root / COPY).write_text(PR)
    monkeypatch.chdir(root)
    monkeypatch.setenv("LABBOT_CACHE_DIR", str(tmp_path / "cache"))
    return root


def test_cli_semantic_flag_end_to_end(
    repo: Path,
    tmp_path: Path,
    embedder: semantic.Embedder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["check", "--no-attribution", "--overlap", "--format", "json", COPY]
    assert main(args) == 0
    out, _ = capsys.readouterr()
    (plain,) = json.loads(out)["files"]
    assert not [f for f in plain["findings"] if f["rule"].startswith("overlap.")]

    assert main([*args[:3], "--semantic", *args[3:]]) == 0  # a warning
    out, err = capsys.readouterr()
    (result,) = json.loads(out)["files"]
    (seed,) = [f for f in result["findings"] if f["rule"] == "overlap.seed"]
    assert seed["line"] == 5 and "found by meaning" in seed["message"]
    assert seed["related"]["file"] == ORIGINAL and seed["related"]["line"] == 5
    assert "semantic:" in err
    stored = list((tmp_path / "cache" / "semantic").glob("*.npz"))
    assert len(stored) == 1
    tree = git.Repo(repo).head.commit.tree["taxonomy"].hexsha
    assert stored[0].name == f"{tree}.npz"

    # A second run takes the tree's vectors from the cache (the file is not rewritten).
    stamp = stored[0].stat().st_mtime_ns
    assert main([*args[:3], "--semantic", *args[3:]]) == 0
    out, _ = capsys.readouterr()
    assert "found by meaning" in out and stored[0].stat().st_mtime_ns == stamp


def test_cli_without_the_extra_says_how_to_install_it(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABBOT_SEMANTIC_DISABLE", "1")
    code = main(["check", "--no-attribution", "--overlap", "--semantic", COPY])
    out, err = capsys.readouterr()
    assert code == 2
    assert "pip install 'labbot[semantic]'" in err and "Traceback" not in err + out


def test_semantic_without_overlap_is_a_usage_error(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--no-attribution", "--semantic", COPY]) == 2
    assert "--overlap" in capsys.readouterr().err
