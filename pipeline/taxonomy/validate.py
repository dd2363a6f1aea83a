"""Validating one qna.yaml: every rule, all findings in one pass, never an exception.

Two profiles:

``pr``   for files a pull request adds or changes: version 3 required, attribution as the
         repository config says (required by default), every rule an error.
``tree`` for a whole existing tree: legacy skills (version 1 and 2) pass with a deprecation
         warning, knowledge below version 3 is an error, and only the problems InstructLab's own
         checker reports (plus file, document and attribution rules) fail a file.

The pure entry point is :func:`validate_bytes`; :func:`validate_path` reads the disk.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ruamel.yaml.nodes import MappingNode, Node

from pipeline.config import RepoConfig
from pipeline.taxonomy.discover import LEAF_NAME, is_candidate
from pipeline.taxonomy.findings import MAX_PER_RULE, FileResult, Finding, Severity
from pipeline.taxonomy.lint import lint_nodes, lint_text, lint_tokens
from pipeline.taxonomy.rules import check_attribution, check_content, check_document
from pipeline.taxonomy.schemas import schema_name, validate
from pipeline.taxonomy.yamlsource import compose, construct, decode, locate

ERROR = Severity.ERROR
WARNING = Severity.WARNING

KINDS = ("knowledge", "compositional_skills", "foundational_skills")
FILE_NAME = LEAF_NAME
ATTRIBUTION = "attribution.txt"


@dataclass(frozen=True, slots=True)
class Profile:
    """What a profile demands. See the module docstring."""

    name: str
    version_3_only: bool
    strict_legacy: bool  # False: lint findings in version-1 skills are only warnings

    @property
    def is_pr(self) -> bool:
        return self.name == "pr"


PROFILES = {
    "pr": Profile("pr", version_3_only=True, strict_legacy=True),
    "tree": Profile("tree", version_3_only=False, strict_legacy=False),
}


def kind_from_path(path: str) -> str | None:
    """The kind named by the last folder called knowledge, compositional_skills or
    foundational_skills in ``path``, or ``None``.

    >>> kind_from_path("taxonomy/knowledge/a/compositional_skills/b/qna.yaml")
    'compositional_skills'
    """
    parts = PurePath(path).parts[:-1]
    for part in reversed(parts):
        if part in KINDS:
            return part
    return None


class _Missing:
    """Marker: the caller did not say whether an attribution.txt exists."""


NOT_LOOKED_UP = _Missing()


def validate_bytes(
    raw: bytes,
    path: str,
    profile: Profile,
    config: RepoConfig,
    attribution: bytes | None | _Missing = NOT_LOOKED_UP,
    *,
    per_rule: int = MAX_PER_RULE,
) -> FileResult:
    """Check one file's bytes. ``path`` picks the kind and is reported as given.

    ``attribution`` is the content of the sibling attribution.txt, ``None`` when it does not
    exist, or :data:`NOT_LOOKED_UP` to skip the attribution rule.

    Time and memory are linear in ``len(raw)``, whatever its shape. Each rule keeps at most
    ``per_rule`` findings; the rest are counted in ``FileResult.omitted``.
    """
    with _collector_paused():
        return _validate_bytes(raw, path, profile, config, attribution, per_rule)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a file's node tree is built.

    A large file allocates hundreds of thousands of nodes and marks; each allocation burst
    would start a collection that walks all of them again, doubling the cost. Nothing made
    here needs the collector to be freed, and it runs again (if it was on) as soon as the file
    is done.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _validate_bytes(
    raw: bytes,
    path: str,
    profile: Profile,
    config: RepoConfig,
    attribution: bytes | None | _Missing,
    per_rule: int,
) -> FileResult:
    result = FileResult(path=path, kind=kind_from_path(path))

    def add(findings: Iterable[Finding]) -> None:
        result.add(findings, per_rule)

    name = PurePath(path).name
    if name != FILE_NAME:
        close = is_candidate(name)
        add(
            [
                Finding(
                    "file.name",
                    ERROR,
                    1,
                    1,
                    f"taxonomy files must be named qna.yaml, not {name}",
                    f"Rename the file to qna.yaml (git mv {name} qna.yaml).",
                )
            ]
        )
        if not close:
            return result
    if len(raw) > config.max_file_bytes:
        add([_too_big(len(raw), config.max_file_bytes)])
        return _done(result)

    text, found = decode(raw)
    add(found)
    if text is None:
        return _done(result)
    had_cr = b"\r" in raw
    text_lint = lint_text(text, had_cr)

    root, found = compose(text)
    add(found)
    if root is None:
        if found:  # syntax error: the line checks still help
            add(text_lint)
            return _done(result)
        _empty(result, profile)  # nothing but blank lines and comments: InstructLab lints none
        return _done(result)

    data, construct_findings = construct(root)
    if data is None and any(f.rule == "yaml.alias-expansion" for f in construct_findings):
        add(construct_findings)  # the data must not be used
        return _done(result)
    if not data:
        add(construct_findings)
        _empty(result, profile)
        return _done(result)
    if not isinstance(data, dict):
        add(construct_findings + text_lint)
        add(
            [
                Finding(
                    "schema.top-level",
                    ERROR,
                    root.start_mark.line + 1,
                    root.start_mark.column + 1,
                    "the file must be a mapping of keys (version, created_by, seed_examples, "
                    "...), not a list or a single value",
                    "Start the file with 'version: 3' and put the examples under "
                    "'seed_examples:'. See the taxonomy's README for a template.",
                )
            ]
        )
        return _done(result)

    if result.kind is None:
        if profile.is_pr or kind_from_path(path) is None:
            add(
                [
                    Finding(
                        "file.location",
                        ERROR if profile.is_pr else WARNING,
                        1,
                        1,
                        "the file is not inside knowledge/, compositional_skills/ or "
                        "foundational_skills/",
                        "Move the folder under the taxonomy tree, e.g. "
                        "knowledge/<area>/<topic>/qna.yaml.",
                    )
                ]
            )
        result.kind = "knowledge" if "document" in data else "compositional_skills"
    kind = result.kind

    version, version_findings, check_schema = _pick_version(data, kind, root, profile)
    result.version = version
    add(version_findings)

    style = construct_findings + text_lint + lint_nodes(root, text) + lint_tokens(text)
    legacy = version is not None and version < 2 and kind != "knowledge"
    if legacy and not profile.strict_legacy:
        # Upstream skips lint for version 1; a tag or an unreadable number still crashes it.
        style = [f.with_severity(WARNING) for f in style if f.rule not in _NEVER_RELAXED] + [
            f for f in style if f.rule in _NEVER_RELAXED
        ]
    add(style)

    if check_schema and version is not None:
        schema_omitted: dict[str, int] = {}
        add(validate(data, schema_name(kind, version), root, schema_omitted, per_rule))
        for rule, count in schema_omitted.items():
            result.count_omitted(rule, ERROR, count)
        if kind == "knowledge":
            add(check_document(data, root, config.documents))
        add(check_content(data, kind, root, config.content))

    if not isinstance(attribution, _Missing):
        if profile.is_pr and config.require_attribution:
            add(check_attribution(attribution, ERROR))
        else:
            add(check_attribution(attribution, WARNING))
    return _done(result)


_NEVER_RELAXED = frozenset({"yaml.tag", "schema.type"})


def _too_big(size: int, limit: int) -> Finding:
    return Finding(
        "file.size",
        ERROR,
        1,
        1,
        f"the file is {size:,} bytes; the limit is {limit:,}",
        "Split the contribution or shorten the contexts; no real qna.yaml needs this much.",
    )


def _done(result: FileResult) -> FileResult:
    result.sort()
    return result


def _empty(result: FileResult, profile: Profile) -> None:
    result.findings.append(
        Finding(
            "file.empty",
            ERROR if profile.is_pr else WARNING,
            1,
            1,
            "the file is empty",
            "Fill in the qna.yaml (version, created_by, seed_examples, ...) or delete it.",
        )
    )


def _version_value(data: dict[str, Any]) -> int | None:
    """The version number the way InstructLab reads it: absent means 1."""
    raw = data.get("version", 1)
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw == raw and abs(raw) != float("inf") else None
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            return 1
    return 1


def _pick_version(
    data: dict[str, Any], kind: str, root: Node, profile: Profile
) -> tuple[int | None, list[Finding], bool]:
    """(version to check against, findings about the version, whether to run the schema)."""
    node, _ = locate(root, ["version"]) if "version" in data else (root, None)
    if node is root and isinstance(root, MappingNode) and root.value:
        node = root.value[0][0]
    line, col = node.start_mark.line + 1, node.start_mark.column + 1

    if profile.version_3_only:
        return 3, [], True  # the v3 schema itself reports a missing or wrong version

    version = _version_value(data)
    if version is None or version not in (1, 2, 3):
        shown = data.get("version")
        return (
            None,
            [
                Finding(
                    "schema.version",
                    ERROR,
                    line,
                    col,
                    f"there is no schema version {shown!r}; supported versions are 1, 2 "
                    "and 3 for skills and 3 for knowledge",
                    "Write version: 3 and follow the version 3 format.",
                    ".version",
                )
            ],
            False,
        )
    if kind == "knowledge" and version < 3:
        return (
            version,
            [
                Finding(
                    "schema.deprecated-version",
                    ERROR,
                    line,
                    col,
                    f"knowledge version {version} is no longer supported; the minimum is 3",
                    "Convert the file to version 3: contexts from the document, each with 3 "
                    "questions and answers, plus document_outline. See the taxonomy README.",
                    ".version",
                )
            ],
            False,
        )
    findings = []
    if version < 3:
        findings.append(
            Finding(
                "schema.deprecated-version",
                WARNING,
                line,
                col,
                f"skill version {version} is a legacy format",
                "Upgrade to version 3 (set version: 3, at least 5 distinct seed examples) "
                "before you next change this file; pull requests require it.",
                ".version",
            )
        )
    return version, findings, True


def read_attribution(qna_path: str) -> bytes | None:
    """The sibling attribution.txt's bytes, or ``None`` when it is not a regular file."""
    candidate = os.path.join(os.path.dirname(qna_path), ATTRIBUTION)
    try:
        with open(candidate, "rb") as fh:
            return fh.read(1 << 20)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None


def _symlink_finding(path: str) -> Finding | None:
    """A ``file.symlink`` finding when ``path`` or a folder above it is a link that escapes."""
    hint = (
        "Commit the file itself, not a symbolic link: replace the link with a copy "
        '(cp --remove-destination "$(readlink -f {0})" {0}).'
    )
    try:
        if os.path.islink(path):
            target = os.readlink(path)
            return Finding(
                "file.symlink",
                ERROR,
                1,
                1,
                f"{path} is a symbolic link (to {target}); labbot does not follow links",
                hint.format(path),
            )
        folder = os.path.dirname(path)
        while folder and folder not in (os.sep, "."):
            parent = os.path.dirname(folder)
            if os.path.islink(folder):
                real = os.path.realpath(folder)
                inside = os.path.realpath(parent or ".")
                if os.path.commonpath([real, inside]) != inside:
                    return Finding(
                        "file.symlink",
                        ERROR,
                        1,
                        1,
                        f"the folder {folder} is a symbolic link to {real}, outside "
                        f"{parent or '.'}; labbot does not follow it",
                        "Move the files into the taxonomy tree instead of linking to them.",
                    )
            if parent == folder:
                break
            folder = parent
    except (OSError, ValueError):
        return None
    return None


def validate_path(
    path: str,
    profile: Profile,
    config: RepoConfig,
    *,
    check_attribution: bool = True,
    per_rule: int = MAX_PER_RULE,
) -> FileResult:
    """Read and check one file on disk. Never raises for bad or missing files.

    A symbolic link is never followed: a linked qna.yaml, or one below a linked folder that
    leads out of its parent folder, is a ``file.symlink`` error.
    """
    link = _symlink_finding(path)
    if link is not None:
        return FileResult(path=path, kind=kind_from_path(path), findings=[link])
    try:
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        size = os.path.getsize(path)
        if size > config.max_file_bytes:  # refuse before reading it
            too_big = FileResult(path=path, kind=kind_from_path(path))
            too_big.findings.append(_too_big(size, config.max_file_bytes))
            return too_big
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        reason = "does not exist or is not a file"
        if isinstance(exc, PermissionError):
            reason = "cannot be read (permission denied)"
        return FileResult(
            path=path,
            kind=kind_from_path(path),
            findings=[
                Finding(
                    "file.missing",
                    ERROR,
                    1,
                    1,
                    f"{path} {reason}",
                    "Check the path; folders are searched for qna.yaml files.",
                )
            ],
        )
    attribution: bytes | None | _Missing = NOT_LOOKED_UP
    if check_attribution:
        attribution = read_attribution(path)
    return validate_bytes(raw, path, profile, config, attribution, per_rule=per_rule)
