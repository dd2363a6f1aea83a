"""Knowledge documents: fetching a repository at a pinned commit and matching its patterns.

Retrieval is opt-in (``labbot check --fetch-documents``) and always uses a cache keyed by
repository and commit. Repositories are cloned with GitPython under a timeout and a size cap,
only over https (and ``file://`` when the config allows it), with symlinks checked out as plain
files. A repository URL listed under ``documents.mirrors`` in ``.github/labbot.yml`` is read
from a local folder instead: a plain folder is turned into a git repository deterministically
(fixed author, dates and message), so the SHA a ``qna.yaml`` pins is the same on every machine.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.config import DocumentRules, RepoConfig
from pipeline.errors import DocumentError
from pipeline.findings import FileResult, Finding, Severity
from pipeline.yamlsource import compose, construct, decode, json_path, locate

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
    args: list[str], cwd: Path | None, timeout: float, extra_env: dict[str, str] | None = None
) -> str:
    import git  # GitPython

    env = _git_env()
    if extra_env:
        env.update(extra_env)
    try:
        out = git.Git(str(cwd) if cwd else None).execute(
            ["git", *args], env=env, kill_after_timeout=timeout, stdout_as_string=True
        )
    except git.GitCommandError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise DocumentError(_redact(detail[-1] if detail else f"git {args[0]} failed")) from exc
    return str(out)


def _redact(text: str) -> str:
    """Remove anything that looks like credentials in a URL from a message."""
    import re

    return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text).strip("'\" ")


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


def checkout(repo: str, commit: str, config: RepoConfig, cache_dir: Path) -> Checkout:
    """The repository at ``commit``, from the cache or fetched into it.

    Raises:
        DocumentError: when the repository cannot be reached, is too large, or lacks the commit.
    """
    rules = config.documents
    dest = cache_dir / _key(repo) / commit
    if (dest / ".git").exists():
        try:
            if _git(["rev-parse", "HEAD"], dest, rules.clone_timeout_seconds).strip() == commit:
                return Checkout(repo, commit, dest)
        except DocumentError:
            pass
        shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)

    source = _source(repo, config, cache_dir)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    allow = ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always"]
    if source.startswith("file://") or os.path.isabs(source):
        allow += ["-c", "protocol.file.allow=always"]
    try:
        _git(
            [*allow, "-c", "core.symlinks=false", "clone", "-q", "--no-checkout", source, str(tmp)],
            None,
            rules.clone_timeout_seconds,
        )
        if _size(tmp) > rules.max_repo_bytes:
            raise DocumentError(
                f"the repository is larger than the {rules.max_repo_bytes:,}-byte limit"
            )
        try:
            _git(["cat-file", "-e", f"{commit}^{{commit}}"], tmp, rules.clone_timeout_seconds)
        except DocumentError:
            _git([*allow, "fetch", "-q", "origin", commit], tmp, rules.clone_timeout_seconds)
        _git(
            ["-c", "core.symlinks=false", "checkout", "-q", "--detach", commit],
            tmp,
            rules.clone_timeout_seconds,
        )
        if _size(tmp) > rules.max_repo_bytes:
            raise DocumentError(
                f"the checkout is larger than the {rules.max_repo_bytes:,}-byte limit"
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(dest)
    return Checkout(repo, commit, dest)


def _source(repo: str, config: RepoConfig, cache_dir: Path) -> str:
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
        snapshot_folder(local, snap, rules.clone_timeout_seconds)
        return str(snap)
    parsed = urlparse(repo)
    if parsed.scheme == "file" and rules.allow_file_repos:
        return repo
    if parsed.scheme == "https" and (parsed.hostname or "").lower() in {
        h.lower() for h in rules.allowed_hosts
    }:
        return repo
    raise DocumentError(f"{repo} is not an allowed document repository")


def match(root: Path, pattern: str) -> list[Path]:
    """Files under ``root`` matching a glob pattern (``**`` crosses folders), never outside."""
    base = root.resolve()
    out = []
    for hit in sorted(glob.glob(pattern, root_dir=base, recursive=True)):
        if hit.startswith(".git" + os.sep) or hit == ".git":
            continue
        full = (base / hit).resolve()
        if full.is_file() and full.is_relative_to(base):
            out.append(full)
    return out


def documents_for(
    document: dict[str, Any], config: RepoConfig, cache_dir: Path
) -> tuple[Checkout, dict[str, list[Path]]]:
    """Check out a ``document`` reference and list each pattern's matches."""
    co = checkout(str(document["repo"]), str(document["commit"]), config, cache_dir)
    return co, {str(p): match(co.path, str(p)) for p in document.get("patterns", [])}


def read_documents(
    repo: str, commit: str, patterns: Sequence[str], config: RepoConfig, cache_dir: Path
) -> list[tuple[str, str]]:
    """``(path in the repository, text)`` of every Markdown document a knowledge leaf cites.

    Raises:
        DocumentError: when the repository cannot be read, a pattern matches nothing, or a
            PDF has no text layer.
    """
    co, matches = documents_for(
        {"repo": repo, "commit": commit, "patterns": list(patterns)}, config, cache_dir
    )
    out: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for pattern, hits in matches.items():
        if not hits:
            raise DocumentError(f"pattern {pattern!r} matches no file at {commit[:12]}")
        for hit in hits:
            if hit in seen:
                continue
            seen.add(hit)
            rel = hit.relative_to(co.path.resolve()).as_posix()
            if hit.suffix == ".pdf":
                out.append((rel, pdf_text(hit, rel)))
            elif hit.suffix == ".md":
                out.append((rel, hit.read_text(encoding="utf-8", errors="replace")))
    return out


def pdf_text(path: Path, name: str, max_pages: int = 500) -> str:
    """The text layer of a PDF (pypdf; no OCR and no model downloads), one paragraph per
    page break. A scanned PDF without a text layer is an error that says so."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:
        raise DocumentError(
            f"{name}: reading PDF documents needs pypdf (pip install pypdf)"
        ) from exc
    try:
        reader = PdfReader(str(path))
        if len(reader.pages) > max_pages:
            raise DocumentError(f"{name}: {len(reader.pages)} pages; the limit is {max_pages}")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise DocumentError(f"{name}: not a readable PDF: {exc}") from exc
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise DocumentError(
            f"{name}: the PDF has no text layer (a scan?); provide a Markdown version"
        )
    return text


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
    text, _ = decode(raw)
    root = compose(text)[0] if text is not None else None
    data = construct(root)[0] if root is not None else None
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
    "DocumentRules",
    "check_documents",
    "checkout",
    "documents_for",
    "match",
    "snapshot_folder",
]
