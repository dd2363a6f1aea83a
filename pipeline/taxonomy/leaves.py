"""Taxonomy leaves as typed data: what generation, mixing and training read.

A leaf is one valid ``qna.yaml``. Its kind is ``knowledge``, ``grounded_skill`` (a skill whose
seed examples carry a ``context``) or ``freeform_skill``; foundational skills are skills.
Every leaf has a content hash over its normalised data, the cache key of everything derived
from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.config import RepoConfig
from pipeline.taxonomy.discover import expand
from pipeline.taxonomy.findings import FileResult
from pipeline.taxonomy.validate import KINDS, PROFILES, validate_path
from pipeline.taxonomy.yamlsource import load

KNOWLEDGE = "knowledge"
GROUNDED = "grounded_skill"
FREEFORM = "freeform_skill"


@dataclass(frozen=True, slots=True)
class QA:
    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class Seed:
    """A skill seed example (``context`` only for grounded skills), or a knowledge seed:
    a ``context`` passage with its question-answer pairs in ``qas``."""

    question: str = ""
    answer: str = ""
    context: str | None = None
    qas: tuple[QA, ...] = ()


@dataclass(frozen=True, slots=True)
class DocumentRef:
    repo: str
    commit: str
    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Leaf:
    """One taxonomy leaf. ``path`` is the qna.yaml path relative to the taxonomy root."""

    path: str
    kind: str
    top: str  # knowledge, compositional_skills or foundational_skills
    seeds: tuple[Seed, ...]
    task_description: str = ""
    domain: str = ""
    document_outline: str = ""
    created_by: str = ""
    document: DocumentRef | None = None
    content_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def folders(self) -> tuple[str, ...]:
        return PurePosixPath(self.path).parts[:-1]

    @property
    def name(self) -> str:
        """``knowledge->history->pellmoor_island``: how InstructLab names a leaf."""
        return "->".join(self.folders)

    @property
    def slug(self) -> str:
        """A file-name-safe id: ``knowledge_history_pellmoor_island``."""
        return "_".join(self.folders).replace(" ", "_")

    def seed_questions(self) -> list[QA]:
        """Every (question, reference answer) pair the contributor wrote."""
        if self.kind == KNOWLEDGE:
            return [qa for s in self.seeds for qa in s.qas]
        return [QA(s.question, s.answer) for s in self.seeds]


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def leaf_from_data(rel_path: str, data: dict[str, Any]) -> Leaf:
    """Build a leaf from validated qna.yaml data (see :func:`load_leaves`)."""
    top = next((p for p in reversed(PurePosixPath(rel_path).parts[:-1]) if p in KINDS), "")
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(f"{rel_path}\n{canonical}".encode()).hexdigest()
    seeds_data = [s for s in data.get("seed_examples") or [] if isinstance(s, dict)]
    if top == KNOWLEDGE:
        seeds = tuple(
            Seed(
                context=_text(s.get("context")),
                qas=tuple(
                    QA(_text(qa.get("question")), _text(qa.get("answer")))
                    for qa in s.get("questions_and_answers") or []
                    if isinstance(qa, dict)
                ),
            )
            for s in seeds_data
        )
        doc = data.get("document") or {}
        return Leaf(
            path=rel_path,
            kind=KNOWLEDGE,
            top=top,
            seeds=seeds,
            domain=_text(data.get("domain")),
            document_outline=_text(data.get("document_outline")),
            created_by=_text(data.get("created_by")),
            document=DocumentRef(
                str(doc.get("repo", "")),
                str(doc.get("commit", "")),
                tuple(str(p) for p in doc.get("patterns") or []),
            ),
            content_hash=digest,
        )
    seeds = tuple(
        Seed(
            question=_text(s.get("question")),
            answer=_text(s.get("answer")),
            context=_text(s.get("context")) or None,
        )
        for s in seeds_data
    )
    kind = GROUNDED if any(s.context for s in seeds) else FREEFORM
    return Leaf(
        path=rel_path,
        kind=kind,
        top=top,
        seeds=seeds,
        task_description=_text(data.get("task_description")),
        created_by=_text(data.get("created_by")),
        content_hash=digest,
    )


def leaf_from_bytes(rel_path: str, raw: bytes) -> Leaf | None:
    """The leaf in a ``qna.yaml``'s bytes, or ``None`` when they hold no mapping. Call it on
    files validation passed: it checks nothing itself."""
    data = load(raw).data
    return leaf_from_data(rel_path, data) if isinstance(data, dict) else None


def relative_to_root(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def load_leaves(
    root: Path,
    config: RepoConfig,
    paths: list[str] | None = None,
    profile: str = "tree",
) -> tuple[list[Leaf], list[FileResult]]:
    """Validate and load the leaves under ``root`` (or just ``paths``).

    Returns the valid leaves (sorted by path) and every file's validation result, so a caller
    can stop on errors with their locations.
    """
    files = expand(paths or [str(root)])
    results = [validate_path(f, PROFILES[profile], config, check_attribution=False) for f in files]
    leaves = []
    for f, result in zip(files, results, strict=True):
        if not result.valid:
            continue
        leaf = leaf_from_bytes(relative_to_root(Path(f), root), Path(f).read_bytes())
        if leaf is not None:
            leaves.append(leaf)
    leaves.sort(key=lambda leaf: leaf.path)
    return leaves, results
