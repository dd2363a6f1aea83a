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
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import GitHubError
from bot.github import GitHubClient
from pipeline.config import RepoConfig
from pipeline.taxonomy.findings import FileResult
from pipeline.taxonomy.overlap import OverlapIndex, OverlapLeaf, check, read_leaf, update_index
from pipeline.taxonomy.overlap_tree import settings_from

log = logging.getLogger("labbot.overlap")

#: Blob downloads one job may make to bring the index up to date.
MAX_BLOB_FETCHES = 2000
#: Stored indexes kept per repository (the newest ones).
KEEP = 2
_SHA = re.compile(r"[0-9a-f]{40}")
#: Findings of these rules mean the file was not read as YAML; overlap has nothing to add.
_UNREAD = ("yaml.", "file.", "labbot.")


class IndexStore:
    """Overlap indexes on disk, ``<folder>/<repo digest>/<key>.npz`` (``folder=None``: none)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _dir(self, repo: str) -> Path | None:
        if self.folder is None:
            return None
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", repo)[:80].lstrip(".")
        digest = hashlib.sha256(repo.encode()).hexdigest()[:12]
        return self.folder / f"{name}-{digest}"

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
) -> BaseTree:
    """The overlap index of the default branch's tree, from the store or brought up to date
    through the API (see the module's docstring). Raises :class:`GitHubError` when GitHub does
    not answer."""
    branch = client.default_branch(inst, repo)
    commit, tree_sha = client.commit_tree(inst, repo, branch)
    stored = store.load(repo, tree_sha)
    if stored is not None:
        return BaseTree(stored, commit)
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
    return BaseTree(index, commit, len(fetch), left, truncated, max_blobs)


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
    found = check(base.index, pull_leaves(results, raws), settings_from(config.overlap), removed)
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
    return ("Overlap check incomplete: " + "; ".join(parts) + ".") if parts else ""


__all__ = [
    "MAX_BLOB_FETCHES",
    "BaseTree",
    "GitHubError",
    "IndexStore",
    "base_tree",
    "check_pull",
    "note",
    "pull_leaves",
]
