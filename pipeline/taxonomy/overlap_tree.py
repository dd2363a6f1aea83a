"""A taxonomy tree on disk as an overlap index, cached by what the tree holds (``labbot check
--overlap``).

The index is named by the tree's identity and kept in ``<cache>/overlap/<key>.npz``:

- in a git repository, the key is the git tree SHA of the taxonomy root at ``HEAD``, and the
  index is built from the committed blobs (``git ls-tree`` + ``git cat-file --batch``); leaves
  that are modified, added, untracked or deleted in the working tree are then brought in with
  :func:`~pipeline.taxonomy.overlap.update_index` in memory, so a second run on a clean or
  lightly edited tree parses only the edited files;
- elsewhere, the key is a SHA-256 over every ``qna.yaml`` path and its git blob SHA (the files
  are read, which is cheap next to parsing them).

Each indexed leaf's fingerprint is its git blob SHA, as in the App's index of a default branch.
Paths in the index are POSIX paths relative to the taxonomy root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.config import OverlapRules
from pipeline.taxonomy.discover import is_candidate
from pipeline.taxonomy.findings import FileResult
from pipeline.taxonomy.overlap import (
    OverlapFinding,
    OverlapIndex,
    OverlapLeaf,
    OverlapSettings,
    UnitMatcher,
    build_index,
    check,
    read_leaf,
    update_index,
)
from pipeline.taxonomy.validate import KINDS

__all__ = [
    "TreeIndex",
    "blob_sha",
    "check_results",
    "load_tree_index",
    "settings_from",
    "taxonomy_root_of",
]


def settings_from(rules: OverlapRules) -> OverlapSettings:
    """The overlap settings a repository config asks for."""
    return OverlapSettings(
        seed_threshold=rules.seed_threshold,
        leaf_seed_threshold=rules.leaf_seed_threshold,
        leaf_threshold=rules.leaf_threshold,
        within_threshold=rules.within_threshold,
        as_errors=rules.as_errors,
    )


def blob_sha(data: bytes) -> str:
    """The git blob SHA-1 of ``data`` (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def taxonomy_root_of(path: str) -> Path | None:
    """The folder holding the last ``knowledge``/``compositional_skills``/``foundational_skills``
    folder of ``path``, or ``None`` when the path names none."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in KINDS:
            return Path(*parts[:i]) if i else Path(".")
    return None


@dataclass
class TreeIndex:
    """The index of a tree, and how it was had: ``source`` is ``cache`` or ``built``;
    ``updated`` counts the working-tree files brought in on top of the cached or built index."""

    index: OverlapIndex
    root: Path
    key: str
    source: str
    updated: int = 0
    seconds: float = 0.0


def _git(args: Sequence[str], cwd: Path, data: bytes | None = None) -> bytes | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, input=data, capture_output=True, check=False, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _git_top(root: Path) -> Path | None:
    out = _git(["rev-parse", "--show-toplevel"], root)
    return Path(out.decode().strip()) if out else None


def _walk(root: Path) -> list[str]:
    """qna.yaml paths under ``root`` (POSIX, relative to it); hidden folders and links skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name == "qna.yaml":
                full = Path(dirpath) / name
                if not full.is_symlink():
                    found.append(full.relative_to(root).as_posix())
    return sorted(found)


def _read_all(root: Path, rels: Iterable[str]) -> dict[str, bytes]:
    out = {}
    for rel in rels:
        try:
            out[rel] = (root / rel).read_bytes()
        except OSError:
            continue
    return out


def _leaves(blobs: dict[str, tuple[str, bytes]]) -> list[OverlapLeaf]:
    out = []
    for rel, (sha, raw) in sorted(blobs.items()):
        leaf = read_leaf(rel, raw, sha)
        if leaf is not None:
            out.append(leaf)
    return out


def _committed(top: Path, prefix: str) -> tuple[str, dict[str, str]] | None:
    """The tree SHA of ``prefix`` at HEAD and its qna.yaml blobs (path below prefix -> SHA)."""
    spec = f"HEAD:{prefix}" if prefix else "HEAD^{tree}"
    sha = _git(["rev-parse", "--verify", "--quiet", spec], top)
    if not sha:
        return None
    listing = _git(["ls-tree", "-r", "-z", "--full-tree", sha.decode().strip()], top)
    if listing is None:
        return None
    blobs = {}
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        mode, kind, obj = meta.split(b" ")
        rel = name.decode("utf-8", "surrogateescape")
        if kind == b"blob" and mode == b"100644" and PurePosixPath(rel).name == "qna.yaml":
            blobs[rel] = obj.decode()
    return sha.decode().strip(), blobs


def _cat_blobs(top: Path, shas: Sequence[str]) -> dict[str, bytes]:
    """Blob contents by SHA in one ``git cat-file --batch`` process."""
    if not shas:
        return {}
    out = _git(["cat-file", "--batch"], top, "".join(s + "\n" for s in shas).encode())
    found: dict[str, bytes] = {}
    pos = 0
    while out is not None and pos < len(out):
        end = out.index(b"\n", pos)
        head = out[pos:end].split(b" ")
        if len(head) != 3:  # "<sha> missing"
            pos = end + 1
            continue
        size = int(head[2])
        found[head[0].decode()] = out[end + 1 : end + 1 + size]
        pos = end + 1 + size + 1
    return found


def _dirty(top: Path, prefix: str) -> tuple[list[str], list[str]]:
    """qna.yaml files (paths below ``prefix``) changed in the working tree since HEAD: those to
    read again, and those deleted."""
    out = _git(
        ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--", "."],
        top / prefix if prefix else top,
    )
    changed: list[str] = []
    removed: list[str] = []
    for entry in (out or b"").split(b"\0"):
        if len(entry) < 4:
            continue
        code, name = entry[:2], entry[3:].decode("utf-8", "surrogateescape")
        if prefix:
            if not name.startswith(prefix + "/"):
                continue
            name = name[len(prefix) + 1 :]
        if PurePosixPath(name).name != "qna.yaml":
            continue
        (removed if b"D" in code else changed).append(name)
    return changed, removed


def _load(cache: Path | None, key: str) -> OverlapIndex | None:
    if cache is None:
        return None
    try:
        data = (cache / f"{key}.npz").read_bytes()
    except OSError:
        return None
    return OverlapIndex.from_bytes(data, key=key)


def _save(cache: Path | None, index: OverlapIndex) -> None:
    if cache is None:
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{index.key}.{os.getpid()}.tmp"
        tmp.write_bytes(index.to_bytes())
        os.replace(tmp, cache / f"{index.key}.npz")
    except OSError:
        pass  # a cache that cannot be written only costs the next run a rebuild


def load_tree_index(root: Path, cache: Path | None) -> TreeIndex:
    """The overlap index of the taxonomy tree at ``root``, from ``cache`` (a folder, or
    ``None`` for no cache) when it holds one for this tree, else built and stored there."""
    import time

    started = time.perf_counter()
    root = root.resolve()
    top = _git_top(root)
    committed = None
    prefix = ""
    if top is not None:
        prefix = root.relative_to(top.resolve()).as_posix() if root != top.resolve() else ""
        prefix = "" if prefix == "." else prefix
        committed = _committed(top, prefix)
    if top is not None and committed is not None:
        key, blobs = committed
        index = _load(cache, key)
        source = "cache"
        if index is None:
            contents = _cat_blobs(top, sorted(set(blobs.values())))
            index = build_index(
                _leaves({p: (s, contents[s]) for p, s in blobs.items() if s in contents}), key
            )
            _save(cache, index)
            source = "built"
        changed, removed = _dirty(top, prefix)
        raw = _read_all(root, changed)
        fresh = _leaves({p: (blob_sha(b), b) for p, b in raw.items()})
        unreadable = [p for p in changed if p not in {leaf.path for leaf in fresh}]
        update_index(index, fresh, [*removed, *unreadable], key)
        updated = len(changed) + len(removed)
    else:
        files = _read_all(root, _walk(root))
        shas = {p: blob_sha(b) for p, b in files.items()}
        digest = hashlib.sha256()
        for p in sorted(shas):
            digest.update(f"{p}\0{shas[p]}\n".encode("utf-8", "surrogateescape"))
        key = "files-" + digest.hexdigest()[:40]
        index = _load(cache, key)
        source = "cache"
        if index is None:
            index = build_index(_leaves({p: (shas[p], files[p]) for p in files}), key)
            _save(cache, index)
            source = "built"
        updated = 0
    index.prepare()
    return TreeIndex(index, root, key, source, updated, time.perf_counter() - started)


def _rel(path: str, root: Path) -> str:
    full = Path(path).resolve()
    try:
        return full.relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _shown(rel: str, root: Path, here: Path) -> str:
    """A path of the index as the user would type it: relative to the current folder when the
    file is below it, else absolute."""
    full = root / rel
    try:
        return full.relative_to(here).as_posix()
    except ValueError:
        return os.path.relpath(full, here) if full.is_absolute() else full.as_posix()


def check_results(
    results: Sequence[FileResult],
    tree: TreeIndex,
    settings: OverlapSettings,
    extra: Sequence[UnitMatcher] = (),
) -> int:
    """Add overlap findings to each checked file's result (files that cannot be read as a leaf
    get none: their validation findings say why); ``extra``: more matchers (the semantic
    pass). Returns how many findings were added."""
    here = Path.cwd().resolve()
    by_rel: dict[str, FileResult] = {}
    leaves = []
    for result in results:
        if not is_candidate(Path(result.path).name):
            continue
        rel = _rel(result.path, tree.root)
        try:
            raw = Path(result.path).read_bytes()
        except OSError:
            continue
        leaf = read_leaf(rel, raw, blob_sha(raw))
        if leaf is not None and rel not in by_rel:
            by_rel[rel] = result
            leaves.append(leaf)
    added = 0
    for rel, findings in check(tree.index, leaves, settings, extra=extra).items():
        result = by_rel[rel]
        shown: list[OverlapFinding] = []
        for f in findings:
            other = result.path if f.other_file == rel else _shown(f.other_file, tree.root, here)
            # name the other leaf as the user would type it, in the message too
            message = f.message.replace(f" {f.other_file} ", f" {other} ", 1)
            shown.append(dataclasses.replace(f, other_file=other, message=message))
        result.add(shown)
        result.sort()
        added += len(shown)
    return added
