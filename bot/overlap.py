"""Overlap on pull requests (issue 15): the default branch's overlap index, kept in the data
folder by tree SHA and brought up to date through the API, and the check of a pull request's
changed leaves against it.

Nothing of the pull request is checked out, and nothing of the default branch either: one
``GET /repos/{o}/{r}/commits/{branch}`` names the branch's commit and root tree; when the data
folder holds the index of that tree, that is all. Otherwise one recursive Git Trees call lists
every ``qna.yaml`` with its blob SHA, the newest stored index of the repository is taken as a
start, and only the blobs whose SHA it does not hold are fetched (each leaf's fingerprint is its
blob SHA): a merge that changes three leaves costs three blob calls. At most
:data:`MAX_BLOB_FETCHES` blobs are fetched per job; an index that could not fetch them all is
stored as ``partial-<tree SHA>``, used as it is, completed by the next jobs, and the comment says
so.

The semantic pass (``overlap.semantic`` in the repository's config, with the ``semantic`` extra
installed) rides on the same step: the blobs fetched for the index are also embedded into an
:class:`~pipeline.semantic.EmbeddingStore` kept next to the index (by blob SHA), and leaves the
index holds but the store lacks are fetched again, under what is left of the same per-job cap,
and embedded within a per-job time budget. A store that misses leaves is used as it is, the
comment says so, and the next jobs complete it. The model is loaded once per process, on first
use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import posixpath
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import GitHubError
from bot.github import GitHubClient
from pipeline import semantic
from pipeline.config import RepoConfig
from pipeline.taxonomy.findings import FileResult
from pipeline.taxonomy.overlap import (
    IndexedLeaf,
    OverlapIndex,
    OverlapLeaf,
    UnitMatcher,
    check,
    read_leaf,
    update_index,
)
from pipeline.taxonomy.overlap_tree import settings_from

log = logging.getLogger("labbot.overlap")

#: Blob downloads one job may make to bring the index up to date.
MAX_BLOB_FETCHES = 2000
#: Seconds one job may spend embedding the default branch's leaves for the semantic pass.
SEMANTIC_SECONDS = 60.0
#: Stored indexes kept per repository (the newest ones).
KEEP = 2
_SHA = re.compile(r"[0-9a-f]{40}")
#: Findings of these rules mean the file was not read as YAML; overlap has nothing to add.
_UNREAD = ("yaml.", "file.", "labbot.")


def repo_folder(folder: Path | None, repo: str) -> Path | None:
    """``repo``'s own folder under ``folder``: a safe name plus a digest of the full name."""
    if folder is None:
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", repo)[:80].lstrip(".")
    digest = hashlib.sha256(repo.encode()).hexdigest()[:12]
    return folder / f"{name}-{digest}"


class IndexStore:
    """Overlap indexes on disk, ``<folder>/<repo digest>/<key>.npz`` (``folder=None``: none)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _dir(self, repo: str) -> Path | None:
        return repo_folder(self.folder, repo)

    def _files(self, repo: str) -> list[Path]:
        folder = self._dir(repo)
        if folder is None or not folder.is_dir():
            return []
        files = [p for p in folder.glob("*.npz") if p.is_file()]
        return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)

    def load(self, repo: str, key: str) -> OverlapIndex | None:
        folder = self._dir(repo)
        if folder is None:
            return None
        try:
            data = (folder / f"{key}.npz").read_bytes()
        except OSError:
            return None
        return OverlapIndex.from_bytes(data, key=key)

    def newest(self, repo: str) -> OverlapIndex | None:
        """The most recently stored index of ``repo``, whatever tree it is of."""
        for path in self._files(repo):
            try:
                index = OverlapIndex.from_bytes(path.read_bytes(), key=path.stem)
            except OSError:
                continue
            if index is not None:
                return index
        return None

    def save(self, repo: str, index: OverlapIndex) -> None:
        folder = self._dir(repo)
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{index.key}.{os.getpid()}.tmp"
            tmp.write_bytes(index.to_bytes())
            os.replace(tmp, folder / f"{index.key}.npz")
            for old in self._files(repo)[KEEP:]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot store the overlap index of %s: %s", repo, exc)


@dataclass(frozen=True, slots=True)
class BaseTree:
    """The default branch's index: ``commit`` (what links point at), blobs ``fetched`` by this
    job, leaves ``left`` out because of the per-job cap, and whether GitHub ``truncated`` the
    tree listing."""

    index: OverlapIndex
    commit: str
    fetched: int = 0
    left: int = 0
    truncated: bool = False
    cap: int = MAX_BLOB_FETCHES
    #: The semantic pass: its matcher (``None``: off) and the leaves it could not embed yet.
    meaning: UnitMatcher | None = None
    meaning_left: int = 0
    #: The switch is on but the extra is not installed here.
    meaning_missing: str = ""


@dataclass(frozen=True, slots=True)
class Meaning:
    """How the semantic pass runs in a job: where its vectors live (``None``: nowhere), the
    similarity threshold, and the job's embedding time budget."""

    folder: Path | None
    threshold: float = semantic.DEFAULT_THRESHOLD
    budget_s: float = SEMANTIC_SECONDS


def _tree_leaves(
    entries: Sequence[Mapping[str, object]], config: RepoConfig
) -> dict[str, tuple[str, int]]:
    """The tree's regular ``qna.yaml`` files under the taxonomy root: path -> (blob SHA, size)."""
    root = (config.taxonomy_root or "").strip("/")
    out = {}
    for e in entries:
        path, sha, size = e.get("path"), e.get("sha"), e.get("size")
        if e.get("type") != "blob" or e.get("mode") != "100644":
            continue
        if not isinstance(path, str) or not isinstance(sha, str) or not _SHA.fullmatch(sha):
            continue
        if posixpath.basename(path) != "qna.yaml":
            continue
        if root and root != "." and not path.startswith(root + "/"):
            continue
        out[path] = (sha, size if isinstance(size, int) else 0)
    return out


def base_tree(
    client: GitHubClient,
    inst: int | None,
    repo: str,
    config: RepoConfig,
    store: IndexStore,
    max_blobs: int = MAX_BLOB_FETCHES,
    meaning: Meaning | None = None,
) -> BaseTree:
    """The overlap index of the default branch's tree, from the store or brought up to date
    through the API (see the module's docstring), and with ``meaning``, the semantic pass's
    matcher over it. Raises :class:`GitHubError` when GitHub does not answer."""
    branch = client.default_branch(inst, repo)
    commit, tree_sha = client.commit_tree(inst, repo, branch)
    stored = store.load(repo, tree_sha)
    if stored is not None:
        base = BaseTree(stored, commit, cap=max_blobs)
        return base if meaning is None else _with_meaning(client, inst, repo, base, meaning, {})
    base, texts = _update(client, inst, repo, (commit, tree_sha), config, store, max_blobs)
    return base if meaning is None else _with_meaning(client, inst, repo, base, meaning, texts)


def _update(
    client: GitHubClient,
    inst: int | None,
    repo: str,
    at: tuple[str, str],
    config: RepoConfig,
    store: IndexStore,
    max_blobs: int,
) -> tuple[BaseTree, dict[str, OverlapLeaf]]:
    """The index of the tree ``at`` (commit, tree SHA) brought up to date from the newest
    stored one; the leaves fetched for it (by blob SHA), so that the semantic pass does not
    fetch them again."""
    commit, tree_sha = at
    index = store.newest(repo) or OverlapIndex()
    entries, truncated = client.git_tree(inst, repo, tree_sha)
    wanted = _tree_leaves(entries, config)
    removed = [p for p in index.paths() if p not in wanted]
    missing = []
    for path, (sha, size) in sorted(wanted.items()):
        known = index.get(path)
        if known is not None and known.fingerprint == sha:
            continue
        if size > config.max_file_bytes:  # never downloaded; an empty leaf remembers the SHA
            index.add(OverlapLeaf(path, (), fingerprint=sha))
            continue
        missing.append((path, sha))
    fetch, left = missing[:max_blobs], len(missing) - min(len(missing), max_blobs)
    leaves = []
    for path, sha in fetch:
        raw = client.blob(inst, repo, sha)
        leaves.append(read_leaf(path, raw, sha) or OverlapLeaf(path, (), fingerprint=sha))
    complete = not left and not truncated
    key = tree_sha if complete else f"partial-{tree_sha}"
    update_index(index, leaves, removed, key)
    index.prepare()
    store.save(repo, index)
    texts = {leaf.fingerprint: leaf for leaf in leaves if leaf.units}
    return BaseTree(index, commit, len(fetch), left, truncated, max_blobs), texts


def _with_meaning(
    client: GitHubClient,
    inst: int | None,
    repo: str,
    base: BaseTree,
    meaning: Meaning,
    texts: dict[str, OverlapLeaf],
) -> BaseTree:
    """``base`` with the semantic matcher: the stored vectors of its tree, completed with the
    leaves fetched by this job and, within what is left of the blob cap and the time budget,
    the indexed leaves the vectors lack. Without the extra, ``base`` says what is missing."""
    try:
        embedder = semantic.load_embedder()
    except semantic.SemanticUnavailable as exc:
        return dataclasses.replace(base, meaning_missing=exc.missing)
    index = base.index
    folder = repo_folder(meaning.folder, repo)
    vectors = semantic.EmbeddingStore.load(folder, index.key)
    before = len(vectors.leaves)
    start = max(0, base.cap - base.fetched)
    allowance = [start]  # blob downloads this job has left

    def texts_of(indexed: IndexedLeaf) -> OverlapLeaf | None:
        known = texts.get(indexed.fingerprint)
        if known is not None:
            return OverlapLeaf(
                indexed.path, known.units, known.line, known.column, known.fingerprint
            )
        if allowance[0] <= 0:
            return None
        allowance[0] -= 1
        raw = client.blob(inst, repo, indexed.fingerprint)
        return read_leaf(indexed.path, raw, indexed.fingerprint)

    started = time.perf_counter()
    semantic.fill_store(vectors, index, texts_of, embedder, meaning.budget_s)
    live = set()
    left = 0
    for path in index.paths():
        leaf = index.get(path)
        if leaf is None:
            continue
        live.add(leaf.fingerprint)
        left += bool(leaf.units) and leaf.fingerprint not in vectors.leaves
    if folder is not None and (
        len(vectors.leaves) != before or not (folder / f"{index.key}.npz").is_file()
    ):
        vectors.save(folder, live)
    fetched = base.fetched + start - allowance[0]
    log.info(
        "semantic vectors of %s: %d leaves embedded, %d left, %.2f s",
        repo,
        len(vectors.leaves) - before,
        left,
        time.perf_counter() - started,
    )
    matcher = semantic.SemanticMatcher(index, vectors, embedder, meaning.threshold)
    return dataclasses.replace(base, fetched=fetched, meaning=matcher, meaning_left=left)


def pull_leaves(results: Sequence[FileResult], raws: Mapping[str, bytes]) -> list[OverlapLeaf]:
    """The pull request's changed leaves that validation could read as YAML (the others' YAML
    findings say why), with their bytes (already read for validation)."""
    out = []
    for r in results:
        raw = raws.get(r.path)
        if raw is None or any(f.rule.startswith(_UNREAD) for f in r.findings):
            continue
        leaf = read_leaf(r.path, raw)
        if leaf is not None:
            out.append(leaf)
    return out


def check_pull(
    base: BaseTree,
    results: Sequence[FileResult],
    raws: Mapping[str, bytes],
    removed: Sequence[str],
    config: RepoConfig,
) -> int:
    """Add overlap findings to the results of a pull request's changed files (compared with
    the default branch's tree minus the files the pull request changes or deletes, and with
    each other). Returns how many were added."""
    by_path = {r.path: r for r in results}
    extra = [base.meaning] if base.meaning is not None else []
    found = check(
        base.index, pull_leaves(results, raws), settings_from(config.overlap), removed, extra
    )
    added = 0
    for path, findings in found.items():
        by_path[path].add(findings)
        by_path[path].sort()
        added += len(findings)
    return added


def note(base: BaseTree | None, error: str | None = None) -> str:
    """What the comment says about the overlap check itself, when there is something to say."""
    if error is not None:
        return f"Overlap check skipped: {error}."
    if base is None:
        return ""
    parts = []
    if base.left:
        parts.append(
            f"{base.left:,} leaves of the default branch are not indexed yet (at most "
            f"{base.cap:,} are fetched per check; later checks fetch the rest)"
        )
    if base.truncated:
        parts.append("GitHub truncated the default branch's file listing")
    if base.meaning_left:
        parts.append(
            f"{base.meaning_left:,} leaves of the default branch are not in the semantic index "
            "yet (the blob cap or the embedding time budget of one check; later checks add them)"
        )
    out = ("Overlap check incomplete: " + "; ".join(parts) + ".") if parts else ""
    if base.meaning_missing:
        off = (
            "The semantic overlap pass is on in this repository's config, but this App does "
            f"not have it installed ({base.meaning_missing} is missing); only the lexical pass "
            "ran."
        )
        out = f"{out} {off}" if out else off
    return out


__all__ = [
    "MAX_BLOB_FETCHES",
    "SEMANTIC_SECONDS",
    "BaseTree",
    "Meaning",
    "GitHubError",
    "IndexStore",
    "base_tree",
    "check_pull",
    "note",
    "pull_leaves",
    "repo_folder",
]
