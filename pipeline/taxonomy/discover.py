"""Which files to check: folders walked, files listed in a file, or files changed in git."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import UsageError

#: The one name a taxonomy leaf's file has.
LEAF_NAME = "qna.yaml"
_NAMES = (LEAF_NAME, "qna.yml")


def is_candidate(name: str) -> bool:
    """A file name that is, or was clearly meant to be, a qna.yaml: any case of ``qna.yaml``
    or ``qna.yml``, nothing before or after it. Validation checks such a file's content (and
    reports a name other than :data:`LEAF_NAME`); every other file is not a leaf.

    >>> [is_candidate(n) for n in ("qna.yaml", "QNA.yml", "qna.yaml.bak", "my-qna.yaml")]
    [True, True, False, False]
    """
    return name.casefold() in _NAMES


def is_qna_path(path: str) -> bool:
    """Whether a repository path (``/``-separated, as git and GitHub write them; no URL
    decoding) names a :func:`is_candidate` file.

    >>> is_qna_path("knowledge/a%2Fb/QNA.yaml"), is_qna_path("knowledge/qna.yaml/x.txt")
    (True, False)
    """
    return is_candidate(posixpath.basename(path))


def expand(paths: Iterable[str]) -> list[str]:
    """Files stay as given; folders become the qna.yaml files below them (sorted).

    Each path appears once, in first-seen order. Hidden folders (``.git``) are skipped.
    Symbolic links to folders are not walked; a qna.yaml directly below one is listed (the
    check then reports the link).
    """
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    for path in paths:
        if os.path.isdir(path):
            found: list[str] = []
            for dirpath, dirnames, filenames in os.walk(path):  # links are not followed
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(os.path.join(dirpath, f) for f in filenames if is_candidate(f))
                # A linked folder is not walked, but a qna.yaml right below it is listed so
                # that the check reports the link instead of skipping it silently.
                for d in dirnames:
                    linked = os.path.join(dirpath, d)
                    if os.path.islink(linked):
                        found.extend(
                            os.path.join(linked, n)
                            for n in _NAMES
                            if os.path.lexists(os.path.join(linked, n))
                        )
            for f in sorted(found):
                add(f)
        else:
            add(path)
    return out


def read_list(source: str, stdin: Iterable[str] | None = None) -> list[str]:
    """Paths listed one per line in a file (``-`` for standard input); blank lines skipped."""
    if source == "-":
        lines = list(stdin) if stdin is not None else []
    else:
        try:
            with open(source, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            raise UsageError(
                f"cannot read the list of paths {source}: {exc.strerror}", setting="files_from"
            ) from exc
    return [ln.rstrip("\r\n") for ln in lines if ln.strip()]


def changed(start: Path, base: str | None) -> list[str]:
    """qna.yaml files added or modified since the merge base with ``base``, untracked included.

    ``base`` defaults to ``origin/main``, else ``main``. Paths are relative to the current
    folder when they are below it.
    """
    import git  # GitPython; imported here so plain checks never pay for it

    try:
        repo = git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise UsageError(
            f"finding changed files needs a git repository; {start} is not in one",
            setting="changed",
        ) from exc
    candidates = [base] if base else ["origin/main", "main"]
    merge_base = None
    for ref in candidates:
        try:
            bases = repo.merge_base(ref, "HEAD")
        except git.GitCommandError:
            continue
        if bases:
            merge_base = bases[0]
            break
    if merge_base is None:
        wanted = base or "origin/main or main"
        raise UsageError(
            f"cannot find the base branch {wanted} in {repo.working_tree_dir}; "
            "fetch it (git fetch origin main) or name another base",
            setting="base",
        )
    top = Path(str(repo.working_tree_dir))
    rel: list[str] = []
    for diff in merge_base.diff(None):
        if diff.change_type == "D" or diff.b_path is None:
            continue
        rel.append(diff.b_path)
    rel.extend(repo.untracked_files)
    here = Path.cwd().resolve()
    out = []
    for r in sorted(set(rel)):
        if not is_candidate(os.path.basename(r)):
            continue
        full = (top / r).resolve()
        try:
            out.append(str(full.relative_to(here)))
        except ValueError:
            out.append(str(full))
    return out
