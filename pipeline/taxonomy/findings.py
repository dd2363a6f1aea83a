"""Findings: one located problem in one file, and the result of checking a file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

#: Findings of one rule kept per file; later ones are only counted (see ``FileResult.omitted``).
MAX_PER_RULE = 20


class Severity(StrEnum):
    """How bad a finding is. Only errors make a file invalid."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem at one place.

    ``line`` and ``column`` are 1-based. ``path`` is the YAML path of the node the finding is
    about (``.seed_examples[2].answer``), or ``None`` when it is about the file or its text.
    """

    rule: str
    severity: Severity
    line: int
    column: int
    message: str
    hint: str = ""
    path: str | None = None

    @property
    def category(self) -> str:
        """The rule's prefix, e.g. ``yaml`` for ``yaml.syntax``."""
        return self.rule.split(".", 1)[0]

    def with_severity(self, severity: Severity) -> Finding:
        """A copy of this finding with another severity."""
        return Finding(
            self.rule, severity, self.line, self.column, self.message, self.hint, self.path
        )

    def as_dict(self) -> dict[str, object]:
        """The JSON form used by ``--format json`` and the App."""
        out: dict[str, object] = {
            "rule": self.rule,
            "severity": str(self.severity),
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "hint": self.hint,
        }
        if self.path is not None:
            out["path"] = self.path
        return out


@dataclass(slots=True)
class FileResult:
    """Everything found in one file.

    ``path`` is the path exactly as the caller gave it. ``kind`` is ``knowledge``,
    ``compositional_skills``, ``foundational_skills`` or ``None`` when unknown; ``version`` is
    the schema version the file was checked against (``None`` when no schema check ran).

    A file can hold tens of thousands of problems of one kind. :meth:`add` keeps the first
    :data:`MAX_PER_RULE` findings of each rule and counts the rest in ``omitted`` (rule to
    number left out); ``omitted_errors`` and ``omitted_warnings`` keep the totals and the
    verdict exact.
    """

    path: str
    kind: str | None = None
    version: int | None = None
    findings: list[Finding] = field(default_factory=list)
    omitted: dict[str, int] = field(default_factory=dict)
    omitted_errors: int = 0
    omitted_warnings: int = 0

    def add(self, findings: Iterable[Finding], cap: int = MAX_PER_RULE) -> None:
        """Keep findings up to ``cap`` per rule (counting those already kept); count the rest."""
        kept: dict[str, int] = {}
        for f in self.findings:
            kept[f.rule] = kept.get(f.rule, 0) + 1
        for f in findings:
            have = kept.get(f.rule, 0)
            if have < cap:
                kept[f.rule] = have + 1
                self.findings.append(f)
                continue
            self.omitted[f.rule] = self.omitted.get(f.rule, 0) + 1
            if f.severity is Severity.ERROR:
                self.omitted_errors += 1
            else:
                self.omitted_warnings += 1

    def count_omitted(self, rule: str, severity: Severity, count: int) -> None:
        """Record ``count`` findings of ``rule`` that a producer counted instead of building."""
        if count <= 0:
            return
        self.omitted[rule] = self.omitted.get(rule, 0) + count
        if severity is Severity.ERROR:
            self.omitted_errors += count
        else:
            self.omitted_warnings += count

    @property
    def valid(self) -> bool:
        """True when the file has no error (warnings do not count)."""
        return self.omitted_errors == 0 and not any(
            f.severity is Severity.ERROR for f in self.findings
        )

    @property
    def errors(self) -> int:
        return self.omitted_errors + sum(1 for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return self.omitted_warnings + sum(
            1 for f in self.findings if f.severity is Severity.WARNING
        )

    def sort(self) -> None:
        """Order findings by position, then rule, so every output is stable."""
        self.findings.sort(key=lambda f: (f.line, f.column, f.rule, f.message))

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "path": self.path,
            "kind": self.kind,
            "version": self.version,
            "valid": self.valid,
            "findings": [f.as_dict() for f in self.findings],
        }
        if self.omitted:
            out["omitted"] = dict(sorted(self.omitted.items()))
        return out
