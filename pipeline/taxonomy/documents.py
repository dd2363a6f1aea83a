"""Knowledge documents: fetching a repository at a pinned commit and matching its patterns.

Retrieval is opt-in (``labbot check --fetch-documents``) and always uses a cache keyed by
repository and commit. Only the pinned commit is fetched (``git fetch --depth 1``), only over
https (and ``file://`` when the config allows it). Every cost is bounded before it is paid: the
fetch is stopped when the folder outgrows ``documents.max_repo_bytes``, the tree's sizes are
summed with ``git ls-tree -r -l`` before anything is checked out, symlinks are checked out as
plain files, patterns with more than one ``**`` are refused, and one deadline
(``documents.deadline_seconds``) covers fetching, matching and reading PDFs (which happens in
a child process, see :mod:`pipeline.taxonomy.pdftext`). A repository URL listed under
``documents.mirrors`` in ``.github/labbot.yml`` is read from a local folder instead: a plain
folder is turned into a git repository deterministically (fixed author, dates and message), so
the SHA a ``qna.yaml`` pins is the same on every machine.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.config import DocumentRules, RepoConfig
from pipeline.errors import DocumentError
from pipeline.redact import redact
from pipeline.taxonomy.findings import FileResult, Finding, Severity
from pipeline.taxonomy.leaves import KNOWLEDGE, Leaf
from pipeline.taxonomy.pdftext import pdf_text
from pipeline.taxonomy.rules import pattern_problem
from pipeline.taxonomy.yamlsource import json_path, load, locate

SNAPSHOT_ENV = {
    "GIT_AUTHOR_NAME": "labbot",
    "GIT_AUTHOR_EMAIL": "labbot@localhost",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "labbot",
    "GIT_COMMITTER_EMAIL": "labbot@localhost",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
}
SNAPSHOT_MESSAGE = "labbot document snapshot"
DOC_SUFFIXES = (".md", ".pdf")
MAX_FILES = 100_000
"""Most files a document repository's tree may hold (bounds listing and matching)."""


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_ASKPASS="true",
    )
    return env


def _git(
    args: list[str],
    cwd: Path | None,
    timeout: float,
    extra_env: dict[str, str] | None = None,
    *,
    watch: Path | None = None,
    max_bytes: int | None = None,
) -> str:
    """Run git and return its output. It is killed after ``timeout`` seconds, and, with
    ``watch``, as soon as that folder holds more than ``max_bytes`` (checked every 20 ms), so
    a hostile repository can neither hang the caller nor fill its disk."""
    env = _git_env()
    if extra_env:
        env.update(extra_env)
    if timeout <= 0:
        raise DocumentError(f"no time was left for git {args[0]}")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            ["git", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        end = time.monotonic() + timeout
        try:
            while True:
                try:
                    proc.wait(0.02)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() > end:
                    raise DocumentError(f"git {_verb(args)} took longer than {timeout:.0f} s")
                if watch is not None and max_bytes is not None and _size(watch) > max_bytes:
                    raise DocumentError(
                        f"the repository is larger than the {max_bytes:,}-byte limit"
                    )
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    if proc.returncode != 0:
        detail = (stderr or stdout).strip().splitlines()
        raise DocumentError(_redact(detail[-1] if detail else f"git {_verb(args)} failed"))
    return stdout


def _verb(args: list[str]) -> str:
    """The git subcommand in ``args`` (after any ``-c key=value`` options)."""
    i = 0
    while i < len(args) and args[i] == "-c":
        i += 2
    return args[i] if i < len(args) else "git"


def _redact(text: str) -> str:
    """Remove anything that looks like credentials in a URL from a message."""
    return redact(text).strip("'\" ")


class Deadline:
    """One time limit shared by every step of reading a document reference."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, step: str) -> float:
        """Seconds left; raises DocumentError naming ``step`` when none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise DocumentError(
                f"fetching and reading the documents took longer than the "
                f"{self.seconds:g}-second limit (stopped while {step})"
            )
        return left


def snapshot_folder(folder: Path, dest: Path, timeout: float = 60.0) -> str:
    """Make ``dest`` a git repository holding exactly ``folder``'s files in one commit, and
    return that commit's SHA. The same files always give the same SHA."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(".git"))
    flags = ["-c", "core.autocrlf=false", "-c", "core.filemode=false"]
    _git(["init", "-q", "-b", "main", "."], dest, timeout)
    _git([*flags, "add", "-A"], dest, timeout)
    _git(
        [*flags, "-c", "commit.gpgsign=false", "commit", "-q", "-m", SNAPSHOT_MESSAGE],
        dest,
        timeout,
        SNAPSHOT_ENV,
    )
    return _git(["rev-parse", "HEAD"], dest, timeout).strip()


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


@dataclass(frozen=True, slots=True)
class Checkout:
    """A repository checked out at one commit in the cache."""

    repo: str
    commit: str
    path: Path


def tree_size(folder: Path, commit: str, timeout: float) -> tuple[int, int]:
    """``(bytes, files)`` of ``commit``'s tree in the repository at ``folder``, read from the
    object database (``git ls-tree -r -l``) without checking anything out."""
    listing = _git(["ls-tree", "-r", "-l", "-z", commit], folder, timeout)
    total = files = 0
    for entry in listing.split("\0"):
        meta, _, _path = entry.partition("\t")
        fields = meta.split()
        if len(fields) != 4 or fields[1] != "blob":
            continue  # submodules (commits) are not checked out
        files += 1
        total += int(fields[3]) if fields[3].isdigit() else 0
    return total, files


def checkout(
    repo: str,
    commit: str,
    config: RepoConfig,
    cache_dir: Path,
    deadline: Deadline | None = None,
) -> Checkout:
    """The repository at ``commit``, from the cache or fetched into it (see :func:`_checkout`).

    Raises:
        DocumentError: with ``repo`` and ``commit`` set, saying why.
    """
    try:
        return _checkout(repo, commit, config, cache_dir, deadline)
    except DocumentError as exc:
        exc.repo = exc.repo or repo
        exc.commit = exc.commit or commit
        raise


def _checkout(
    repo: str,
    commit: str,
    config: RepoConfig,
    cache_dir: Path,
    deadline: Deadline | None = None,
) -> Checkout:
    """The repository at ``commit``, from the cache or fetched into it.

    Only ``commit`` is fetched (``--depth 1``); its size is summed from the tree before anything
    is checked out, and the fetch itself is stopped if the folder outgrows the limit, so a small
    download that would expand into a huge checkout is refused without writing it.

    Raises:
        DocumentError: when the repository cannot be reached, is too large, lacks the commit, or
            the deadline passes.
    """
    rules = config.documents
    deadline = deadline or Deadline(rules.deadline_seconds)
    dest = cache_dir / _key(repo) / commit

    def limit(step: str) -> float:
        return min(rules.clone_timeout_seconds, deadline.left(step))

    if (dest / ".git").exists():
        try:
            if _git(["rev-parse", "HEAD"], dest, limit("reading the cache")).strip() == commit:
                return Checkout(repo, commit, dest)
        except DocumentError:
            pass
        shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)

    source = _source(repo, config, cache_dir, deadline)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    allow = ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always"]
    if source.startswith("file://") or os.path.isabs(source):
        allow += ["-c", "protocol.file.allow=always"]
    cap = rules.max_repo_bytes
    try:
        tmp.mkdir(parents=True)
        _git(["init", "-q", "."], tmp, limit("preparing the fetch"))
        _git(
            [*allow, "fetch", "-q", "--depth=1", "--no-tags", source, commit],
            tmp,
            limit("fetching the repository"),
            watch=tmp,
            max_bytes=cap,
        )
        try:
            _git(["cat-file", "-e", f"{commit}^{{commit}}"], tmp, limit("reading the commit"))
        except DocumentError:
            raise DocumentError(f"the repository has no commit {commit}") from None
        total, files = tree_size(tmp, commit, limit("measuring the tree"))
        if total > cap:
            raise DocumentError(
                f"the files at commit {commit[:12]} add up to {total:,} bytes, more than the "
                f"{cap:,}-byte limit (documents.max_repo_bytes); nothing was checked out"
            )
        if files > MAX_FILES:
            raise DocumentError(
                f"the commit {commit[:12]} has {files:,} files, more than the {MAX_FILES:,} "
                "a document repository may have"
            )
        _git(
            [
                "-c",
                "core.symlinks=false",
                "-c",
                "core.autocrlf=false",
                "checkout",
                "-q",
                "--detach",
                commit,
            ],
            tmp,
            limit("checking out"),
            watch=tmp,
            max_bytes=cap + _size(tmp / ".git"),
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(dest)
    return Checkout(repo, commit, dest)


def _source(repo: str, config: RepoConfig, cache_dir: Path, deadline: Deadline) -> str:
    """What to clone for ``repo``: a mirror, a snapshot of a mirror folder, or the URL."""
    rules = config.documents
    mirror = rules.mirrors.get(repo)
    if mirror is not None:
        local = config.resolve(mirror)
        if (local / ".git").exists():
            return str(local)
        if not local.is_dir():
            raise DocumentError(f"the mirror folder {mirror} for {repo} does not exist")
        snap = cache_dir / _key(repo) / "snapshot"
        snapshot_folder(
            local, snap, min(rules.clone_timeout_seconds, deadline.left("copying the mirror"))
        )
        return str(snap)
    parsed = urlparse(repo)
    if parsed.scheme == "file" and rules.allow_file_repos:
        return repo
    if parsed.scheme == "https" and (parsed.hostname or "").lower() in {
        h.lower() for h in rules.allowed_hosts
    }:
        return repo
    raise DocumentError(f"{repo} is not an allowed document repository")


def match(root: Path, pattern: str, deadline: Deadline | None = None) -> list[Path]:
    """Files under ``root`` matching a glob pattern (``**`` crosses folders), never outside.

    Raises:
        DocumentError: the pattern has more than one ``**``, or the deadline passed.
    """
    problem = pattern_problem(pattern)
    if problem:
        raise DocumentError(problem + "; use at most one")
    base = root.resolve()
    out = set()
    for hit in glob.iglob(pattern, root_dir=base, recursive=True):
        if deadline is not None:
            deadline.left(f"matching {pattern!r}")
        if hit.startswith(".git" + os.sep) or hit == ".git":
            continue
        full = (base / hit).resolve()
        if full.is_file() and full.is_relative_to(base):
            out.add(full)
    return sorted(out)


def documents_for(
    document: dict[str, Any],
    config: RepoConfig,
    cache_dir: Path,
    deadline: Deadline | None = None,
) -> tuple[Checkout, dict[str, list[Path]]]:
    """Check out a ``document`` reference and list each pattern's matches, all within one
    deadline (``documents.deadline_seconds`` unless one is given)."""
    deadline = deadline or Deadline(config.documents.deadline_seconds)
    patterns = [str(p) for p in document.get("patterns", [])]
    for pattern in patterns:  # refuse before any network traffic
        problem = pattern_problem(pattern)
        if problem:
            raise DocumentError(problem + "; use at most one")
    co = checkout(str(document["repo"]), str(document["commit"]), config, cache_dir, deadline)
    return co, {p: match(co.path, p, deadline) for p in patterns}


def read_documents(
    repo: str,
    commit: str,
    patterns: Sequence[str],
    config: RepoConfig,
    cache_dir: Path,
    deadline: Deadline | None = None,
) -> list[tuple[str, str]]:
    """``(path in the repository, text)`` of every document a knowledge leaf cites, each file
    once however many patterns match it. Fetching, matching and reading PDFs share one
    deadline (``documents.deadline_seconds`` unless one is given).

    Raises:
        DocumentError: when the repository cannot be read, a pattern matches nothing, a PDF
            has no text layer, or the deadline passes.
    """
    deadline = deadline or Deadline(config.documents.deadline_seconds)
    co, matches = documents_for(
        {"repo": repo, "commit": commit, "patterns": list(patterns)}, config, cache_dir, deadline
    )
    out: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for pattern, hits in matches.items():
        if not hits:
            raise DocumentError(
                f"pattern {pattern!r} matches no file at {commit[:12]}", repo=repo, commit=commit
            )
        for hit in hits:
            if hit in seen:
                continue
            seen.add(hit)
            rel = hit.relative_to(co.path.resolve()).as_posix()
            if hit.suffix == ".pdf":
                out.append((rel, pdf_text(hit, rel, deadline.left(f"reading {rel}"))))
            elif hit.suffix == ".md":
                deadline.left(f"reading {rel}")
                out.append((rel, hit.read_text(encoding="utf-8", errors="replace")))
    return out


def leaf_documents(
    leaf: Leaf, config: RepoConfig, cache_dir: Path, deadline: Deadline | None = None
) -> list[str]:
    """The texts of the documents a knowledge leaf cites (none for a skill leaf), read by
    :func:`read_documents` into ``cache_dir``; what generation, builds and previews feed the
    teacher.

    Raises:
        DocumentError: as :func:`read_documents` does.
    """
    if leaf.kind != KNOWLEDGE or leaf.document is None:
        return []
    ref = leaf.document
    return [
        text
        for _, text in read_documents(
            ref.repo, ref.commit, ref.patterns, config, cache_dir, deadline
        )
    ]


def check_documents(results: list[FileResult], config: RepoConfig, cache_dir: Path) -> None:
    """Add retrieval findings to every valid knowledge result (in place)."""
    for result in results:
        if result.kind != "knowledge" or not result.valid:
            continue
        result.findings.extend(_check_one(result.path, config, cache_dir))
        result.sort()


def _check_one(path: str, config: RepoConfig, cache_dir: Path) -> list[Finding]:
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return []
    data, root, _ = load(raw)
    if not isinstance(data, dict) or not isinstance(data.get("document"), dict):
        return []
    document = data["document"]

    def at(steps: list[str | int], rule: str, message: str, hint: str) -> Finding:
        assert root is not None
        node, _ = locate(root, steps)
        m = node.start_mark
        return Finding(
            rule, Severity.ERROR, m.line + 1, m.column + 1, message, hint, json_path(steps)
        )

    try:
        _co, matches = documents_for(document, config, cache_dir)
    except DocumentError as exc:
        if any(pattern_problem(str(p)) for p in document.get("patterns", [])):
            return []  # rules.check_document reports it, at the pattern
        return [
            at(
                ["document", "repo"],
                "document.fetch",
                f"could not read the document repository at commit "
                f"{str(document.get('commit'))[:12]}: {exc}",
                "Check that the repository is public, the URL is right, and the commit exists "
                "on it (push it if it is only local).",
            )
        ]
    findings = []
    for i, pattern in enumerate(document.get("patterns", [])):
        hits = matches.get(str(pattern), [])
        if not hits:
            findings.append(
                at(
                    ["document", "patterns", i],
                    "document.not-found",
                    f"pattern '{pattern}' matches no file at commit {str(document['commit'])[:12]}",
                    "Check the file name and folder against the repository at that commit "
                    "(patterns are relative to the repository root).",
                )
            )
            continue
        others = [h.name for h in hits if not h.name.endswith(DOC_SUFFIXES)]
        if others:
            findings.append(
                at(
                    ["document", "patterns", i],
                    "document.format",
                    f"pattern '{pattern}' matches files that are not .md or .pdf: "
                    + ", ".join(others[:5]),
                    "Narrow the pattern so it matches only Markdown or PDF documents.",
                )
            )
    return findings


__all__ = [
    "Checkout",
    "Deadline",
    "DocumentRules",
    "check_documents",
    "checkout",
    "documents_for",
    "leaf_documents",
    "match",
    "pattern_problem",
    "read_documents",
    "snapshot_folder",
    "tree_size",
]
