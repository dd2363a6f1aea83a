"""Overlap detection: does a contribution repeat what the tree already holds? (issue 15)

Pure: leaves, bytes and an index in; findings out. The engine (normalisation, shingles,
MinHash, the LSH index and its file format) is :mod:`pipeline.taxonomy.overlap_index`.

Units
    A leaf is compared as a set of *seed texts* (:class:`~pipeline.taxonomy.overlap_index.Unit`): for a
    skill, each seed example's question with its answer, and its context (if any) on its own;
    for knowledge, each question-answer pair and each context passage. Contexts stand alone so
    that two skills asking different things about one e-mail are not near-copies (their
    contexts still match, as ``overlap.seed``), and a leaf that repeats another's questions
    over a different passage is still caught.

Rules (warnings unless ``OverlapSettings.as_errors``)
    ``overlap.leaf``
        a changed leaf is a near-copy of another leaf: the Jaccard similarity of the two seed
        sets, counting seeds that near-match (estimated shingle Jaccard >= ``leaf_seed_threshold``)
        as equal, is >= ``leaf_threshold``. Points at ``seed_examples``; names the other leaf.
    ``overlap.seed``
        one seed text near-matches a seed text of another leaf (not already reported through
        ``overlap.leaf``). Points at the seed; names the other leaf's path and line.
    ``overlap.within``
        two seed texts of the same leaf near-match (exact duplicates are left to the schema's
        ``schema.duplicate``).
    Every finding is an :class:`OverlapFinding`: a :class:`~pipeline.taxonomy.findings.Finding` plus
    ``other_file``, ``other_line``, ``other_column``, ``other_path`` and ``similarity``
    (``as_dict()`` adds them as ``related``), so a comment can link the other side.

How the three callers use it (wiring is done elsewhere)
    ``labbot check --overlap [--tree DIR]``: read every leaf of the tree with
    :func:`read_leaf` (``rel_path``, file bytes), ``build_index(leaves, key=tree_sha)``, then
    ``check(index, changed_leaves, settings)`` and add each list of findings to that file's
    ``FileResult``.
    The App: keep ``index.to_bytes()`` in the data directory under the default branch's tree
    SHA; load it with ``OverlapIndex.from_bytes(data, key=tree_sha)`` (``None``: rebuild);
    after a merge, ``update_index(index, changed_leaves, removed_paths, new_key)`` instead of a
    rebuild. For a PR, ``check(index, pr_leaves, settings, removed=deleted_paths)``: each PR
    leaf is compared with the tree minus the paths the PR changes or deletes, and with the
    PR's other leaves.
    The build's mixing: ``leaked_samples(held_out_questions, sample_questions)`` lists the
    samples that near-duplicate a held-out question, to drop and count in the report.

Semantic pass
    ``check(..., extra=[matcher])`` takes more :class:`UnitMatcher` objects (sentence
    embeddings: :mod:`pipeline.semantic`, outside this package because it needs torch). Each
    returns :class:`~pipeline.taxonomy.overlap_index.UnitMatch` rows for a query leaf, which are
    merged with the lexical ones before the leaf and seed rules are applied; a seed found both
    ways is reported as the lexical repeat, one found only ``by_meaning`` says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from pipeline.taxonomy.findings import Finding, Severity
from pipeline.taxonomy.leaves import KNOWLEDGE, Leaf, leaf_from_data
from pipeline.taxonomy.overlap_index import (
    U32,
    IndexedLeaf,
    OverlapIndex,
    OverlapLeaf,
    Unit,
    UnitMatch,
    close_pairs,
    leaf_signatures,
    shingles,
)
from pipeline.taxonomy.yamlsource import json_path, load, locate

__all__ = [
    "IndexedLeaf",
    "Leak",
    "OverlapFinding",
    "OverlapIndex",
    "OverlapLeaf",
    "OverlapSettings",
    "SimilarLeaves",
    "Unit",
    "UnitMatch",
    "UnitMatcher",
    "build_index",
    "check",
    "leaf_units",
    "leaked_samples",
    "read_leaf",
    "similar_leaves",
    "update_index",
]

RULE_LEAF = "overlap.leaf"
RULE_SEED = "overlap.seed"
RULE_WITHIN = "overlap.within"


@dataclass(frozen=True, slots=True)
class OverlapSettings:
    """Thresholds and severity; the repository config fills them.

    ``seed_threshold``: estimated Jaccard of two seed texts' 3-word shingle sets at which they
    count as near-copies. 0.6 keeps a seed with a couple of words swapped (a 25-word seed with
    two words changed scores about 0.65) and is far above what distinct seeds on one topic score
    (under 0.2 on the real corpus). ``leaf_threshold``: Jaccard of two leaves' seed sets (near-
    matching seeds counted as equal): 0.5 means, for two 5-seed leaves, 4 shared seeds (0.67)
    is a near-copy and 3 (0.43) is not; one dropped or added seed keeps a copy above it.
    ``leaf_seed_threshold``: the looser seed match (0.4) that counts toward the leaf score:
    a one-word change in a 10-word seed scores about 0.45, and the leaf rule still needs half
    the seed set to agree. On the real corpus these defaults find every planted near-copy
    (reordered, recased, one seed dropped or added, moved, two words reworded) and flag 22 of
    7,028 same-topic pairs of distinct leaves, 19 of them provably the same content
    (``benchmarks/overlap_corpus.py``).
    """

    seed_threshold: float = 0.6
    leaf_seed_threshold: float = 0.4
    leaf_threshold: float = 0.5
    within_threshold: float = 0.6
    as_errors: bool = False
    max_other_leaves: int = 3  # overlap.leaf findings per changed leaf (the most similar first)

    @property
    def severity(self) -> Severity:
        return Severity.ERROR if self.as_errors else Severity.WARNING


@dataclass(frozen=True, slots=True)
class OverlapFinding(Finding):
    """A finding that points at a second place: the leaf or seed this one repeats."""

    other_file: str = ""
    other_line: int = 1
    other_column: int = 1
    other_path: str | None = None
    similarity: float = 0.0
    #: Found by the semantic pass (same meaning, other words), not by shared words.
    by_meaning: bool = False

    def with_severity(self, severity: Severity) -> OverlapFinding:
        return OverlapFinding(
            self.rule,
            severity,
            self.line,
            self.column,
            self.message,
            self.hint,
            self.path,
            self.other_file,
            self.other_line,
            self.other_column,
            self.other_path,
            self.similarity,
            self.by_meaning,
        )

    def as_dict(self) -> dict[str, object]:
        out = Finding.as_dict(self)
        related: dict[str, object] = {
            "file": self.other_file,
            "line": self.other_line,
            "column": self.other_column,
            "similarity": round(self.similarity, 3),
        }
        if self.other_path is not None:
            related["path"] = self.other_path
        if self.by_meaning:
            related["by_meaning"] = True
        out["related"] = related
        return out


class UnitMatcher(Protocol):
    """A source of seed matches beside the lexical index (the semantic pass's extension point)."""

    def matches(self, leaf: OverlapLeaf, exclude: frozenset[str]) -> list[UnitMatch]:
        """Matches of ``leaf``'s units (``UnitMatch.query`` indexes ``leaf.units``) with leaves
        not at the ``exclude`` paths."""
        ...


# --- reading leaves ---------------------------------------------------------------------------


def _place(root: Node | None, path: list[str | int]) -> tuple[int, int]:
    if root is None:
        return 1, 1
    node, key = locate(root, path)
    mark = (key or node).start_mark
    return mark.line + 1, mark.column + 1


def _mapping_positions(node: Node | None) -> list[int]:
    """Positions of the mapping items of a sequence node (``leaf_from_data`` keeps only dicts)."""
    if not isinstance(node, SequenceNode):
        return []
    return [i for i, item in enumerate(node.value) if isinstance(item, MappingNode)]


def leaf_units(leaf: Leaf, root: Node | None = None, fingerprint: str = "") -> OverlapLeaf:
    """The seed texts of a leaf, placed with the composed YAML ``root`` when given (else 1:1)."""
    seeds_node = locate(root, ["seed_examples"])[0] if root is not None else None
    seed_pos = _mapping_positions(seeds_node)
    units: list[Unit] = []
    for i, seed in enumerate(leaf.seeds):
        si = seed_pos[i] if i < len(seed_pos) else i
        base: list[str | int] = ["seed_examples", si]
        if leaf.kind == KNOWLEDGE:
            if seed.context:
                where = [*base, "context"]
                units.append(Unit(json_path(where), *_place(root, where), seed.context))
            qa_node = locate(root, [*base, "questions_and_answers"])[0] if root else None
            qa_pos = _mapping_positions(qa_node)
            for j, qa in enumerate(seed.qas):
                where = [*base, "questions_and_answers", qa_pos[j] if j < len(qa_pos) else j]
                text = f"{qa.question}\n{qa.answer}"
                units.append(Unit(json_path(where), *_place(root, where), text))
        else:
            if seed.context:
                where = [*base, "context"]
                units.append(Unit(json_path(where), *_place(root, where), seed.context))
            text = f"{seed.question}\n{seed.answer}"
            units.append(Unit(json_path(base), *_place(root, base), text))
    line, column = _place(root, ["seed_examples"])
    return OverlapLeaf(leaf.path, tuple(units), line, column, fingerprint)


def read_leaf(rel_path: str, raw: bytes, fingerprint: str = "") -> OverlapLeaf | None:
    """A leaf's seed texts from its file bytes, or ``None`` when the file is not a readable
    qna.yaml mapping (validation reports why; overlap has nothing to add)."""
    data, root, _ = load(raw)
    if root is None or not isinstance(data, dict):
        return None
    try:
        leaf = leaf_from_data(rel_path, data)
    except (AttributeError, TypeError, ValueError):  # unvalidated data of odd shapes
        return None
    return leaf_units(leaf, root, fingerprint)


# --- the index --------------------------------------------------------------------------------


def build_index(leaves: Iterable[OverlapLeaf], key: str) -> OverlapIndex:
    """An index of a tree's leaves, named by ``key`` (the tree SHA)."""
    index = OverlapIndex(key)
    for leaf in leaves:
        index.add(leaf)
    index.prepare()
    return index


def update_index(
    index: OverlapIndex, changed: Iterable[OverlapLeaf], removed: Iterable[str], key: str
) -> None:
    """Bring an index to a new tree: re-index changed leaves (skipping those whose non-empty
    fingerprint is unchanged), forget removed paths, take the new key."""
    for leaf in changed:
        known = index.get(leaf.path)
        if known is not None and leaf.fingerprint and known.fingerprint == leaf.fingerprint:
            continue
        index.add(leaf)
    for path in removed:
        index.remove(path)
    index.key = key


# --- findings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimilarLeaves:
    """Leaf ``path`` near-copies ``other``: ``matched`` of its ``size`` seed texts near-match
    ``other_matched`` of the other's ``other_size``; ``similarity`` is the seed-set Jaccard."""

    path: str
    other: IndexedLeaf
    matched: int
    size: int
    other_matched: int
    other_size: int
    similarity: float


def _leaf_scores(
    size: int, matches: Sequence[UnitMatch], path: str, settings: OverlapSettings
) -> list[SimilarLeaves]:
    threshold = settings.leaf_threshold
    by_other: dict[str, list[UnitMatch]] = {}
    for m in matches:
        if m.similarity < settings.leaf_seed_threshold:
            continue
        by_other.setdefault(m.leaf.path, []).append(m)
    out = []
    for group in by_other.values():
        other = group[0].leaf
        mine = len({m.query for m in group})
        theirs = len({m.unit.yaml_path for m in group})
        shared = min(mine, theirs)
        jac = shared / (size + len(other.units) - shared)
        if jac >= threshold:
            out.append(SimilarLeaves(path, other, mine, size, theirs, len(other.units), jac))
    out.sort(key=lambda s: (-s.similarity, s.other.path))
    return out


def _is_context(unit: Unit) -> bool:
    return unit.yaml_path.endswith(".context")


def _noun(unit: Unit) -> str:
    return "context" if _is_context(unit) else "seed"


def _pct(x: float) -> str:
    return f"{round(100 * x)}%"


def check(
    index: OverlapIndex,
    changed: Sequence[OverlapLeaf],
    settings: OverlapSettings | None = None,
    removed: Iterable[str] = (),
    extra: Sequence[UnitMatcher] = (),
) -> dict[str, list[OverlapFinding]]:
    """Findings for each changed leaf (by its path): compared with the indexed tree minus the
    changed and ``removed`` paths, with the other changed leaves, and with itself."""
    settings = settings or OverlapSettings()
    sev = settings.severity
    exclude = frozenset({leaf.path for leaf in changed} | set(removed))
    signed = [leaf_signatures(leaf) for leaf in changed]
    batch = OverlapIndex()
    for leaf, (units, sigs) in zip(changed, signed, strict=True):
        batch.add_signed(leaf, units, sigs)
    out: dict[str, list[OverlapFinding]] = {}
    for leaf, (units, sigs) in zip(changed, signed, strict=True):
        floor = min(settings.seed_threshold, settings.leaf_seed_threshold)
        matches = index.query(sigs, floor, exclude)
        matches += batch.query(sigs, floor, {leaf.path})
        if extra:
            positions = {u.yaml_path: i for i, u in enumerate(units)}
            kept = OverlapLeaf(leaf.path, units, leaf.line, leaf.column, leaf.fingerprint)
            for matcher in extra:
                for m in matcher.matches(kept, exclude | {leaf.path}):
                    if 0 <= m.query < len(units) and units[m.query].yaml_path in positions:
                        matches.append(m)
        findings: list[OverlapFinding] = []
        similar = _leaf_scores(len(units), matches, leaf.path, settings)
        shown = similar[: settings.max_other_leaves]
        for s in shown:
            findings.append(
                OverlapFinding(
                    RULE_LEAF,
                    sev,
                    leaf.line,
                    leaf.column,
                    f"this leaf looks like {s.other.path} ({_pct(s.similarity)} of its seeds: "
                    f"{s.matched} of the {s.size} seed texts here near-match {s.other_matched} "
                    f"of the {s.other_size} there)",
                    "Extend that leaf instead of adding a copy, or make this one teach "
                    "something it does not.",
                    ".seed_examples",
                    s.other.path,
                    s.other.line,
                    s.other.column,
                    ".seed_examples",
                    s.similarity,
                )
            )
        covered = {s.other.path for s in similar}
        best: dict[int, UnitMatch] = {}
        for m in matches:
            if m.leaf.path in covered or m.similarity < settings.seed_threshold:
                continue
            old = best.get(m.query)
            key = (m.by_meaning, -m.similarity, m.leaf.path, m.unit.line)  # words first
            if old is None or key < (
                old.by_meaning,
                -old.similarity,
                old.leaf.path,
                old.unit.line,
            ):
                best[m.query] = m
        for q in sorted(best):
            m, unit = best[q], units[q]
            how = (
                f"says the same as one in {m.leaf.path} at line {m.unit.line} in other words "
                f"(a paraphrase found by meaning: {_pct(m.similarity)} similar)"
                if m.by_meaning
                else f"repeats one in {m.leaf.path} at line {m.unit.line} "
                f"({_pct(m.similarity)} similar)"
            )
            findings.append(
                OverlapFinding(
                    RULE_SEED,
                    sev,
                    unit.line,
                    unit.column,
                    f"this {_noun(unit)} {how}",
                    "Replace it with an example the tree does not have yet.",
                    unit.yaml_path,
                    m.leaf.path,
                    m.unit.line,
                    m.unit.column,
                    m.unit.yaml_path,
                    m.similarity,
                    m.by_meaning,
                )
            )
        findings += _within(leaf.path, units, sigs, settings)
        findings.sort(key=lambda f: (f.line, f.column, f.rule, f.message))
        out[leaf.path] = findings
    return out


def _within(
    path: str, units: Sequence[Unit], sigs: U32, settings: OverlapSettings
) -> list[OverlapFinding]:
    """Near-copies inside one leaf: each seed is reported once, against its first near-copy."""
    reported: set[int] = set()
    out = []
    for i, j, sim in close_pairs(sigs, settings.within_threshold):
        if j in reported or units[i].text == units[j].text or _is_context(units[j]):
            continue  # exact duplicates are the schema's; seeds may share one passage
        reported.add(j)
        first, later = units[i], units[j]
        out.append(
            OverlapFinding(
                RULE_WITHIN,
                settings.severity,
                later.line,
                later.column,
                f"this {_noun(later)} nearly repeats the one at line {first.line} of this leaf "
                f"({_pct(sim)} similar)",
                "Make each seed example teach something different; near-copies add no variety.",
                later.yaml_path,
                path,
                first.line,
                first.column,
                first.yaml_path,
                sim,
            )
        )
    return out


def similar_leaves(
    index: OverlapIndex, settings: OverlapSettings | None = None
) -> list[SimilarLeaves]:
    """Every pair of indexed leaves that near-copy each other (each pair once, ``path`` <
    ``other.path``): the whole tree's clusters, for maintainers and the benchmark."""
    settings = settings or OverlapSettings()
    out = []
    for path in index.paths():
        sigs = index.signatures_of(path)
        matches = index.query(sigs, settings.leaf_seed_threshold, {path})
        for s in _leaf_scores(len(sigs), matches, path, settings):
            if path < s.other.path:
                out.append(s)
    return out


# --- held-out leakage -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leak:
    """Training sample ``sample`` near-duplicates held-out question ``held_out`` (indexes into
    the two lists), with exact shingle Jaccard ``similarity``."""

    sample: int
    held_out: int
    similarity: float


def leaked_samples(
    held_out: Sequence[str], samples: Sequence[str], threshold: float = 0.6
) -> list[Leak]:
    """The samples whose text near-duplicates a held-out question (the most similar one each).

    Pass the samples' *questions* (the user turn), not passages: a passage legitimately shares
    phrases with the questions asked about it. Similarity is the exact Jaccard of the 3-word
    shingle sets (no estimate: held-out sets are small), found through an inverted index of the
    held-out shingles, so the cost is linear in the samples' length. The default errs on the
    side of dropping: a short templated question ("Tell me a pun about cheese.") also catches
    its one-word siblings ("...about bread."), which costs a sample, never a leak.
    """
    inverted: dict[int, list[int]] = {}
    sizes = []
    for h, text in enumerate(held_out):
        sh = shingles(text).tolist()
        sizes.append(len(sh))
        for s in sh:
            inverted.setdefault(s, []).append(h)
    out = []
    for i, text in enumerate(samples):
        sh = shingles(text).tolist()
        counts: dict[int, int] = {}
        for s in sh:
            for h in inverted.get(s, ()):
                counts[h] = counts.get(h, 0) + 1
        best: tuple[float, int] | None = None
        for h, inter in counts.items():
            sim = inter / (len(sh) + sizes[h] - inter)
            if sim >= threshold and (best is None or sim > best[0]):
                best = (sim, h)
        if best is not None:
            out.append(Leak(i, best[1], best[0]))
    return out
