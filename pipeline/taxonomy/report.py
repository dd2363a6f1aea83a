"""Rendering check results: text for people, JSON for tools, GitHub workflow commands, SARIF."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pipeline import __version__
from pipeline.taxonomy.findings import FileResult, Finding, Severity

FORMATS = ("text", "json", "github", "sarif")


def summary(results: Sequence[FileResult]) -> dict[str, int]:
    return {
        "files": len(results),
        "valid": sum(1 for r in results if r.valid),
        "invalid": sum(1 for r in results if not r.valid),
        "errors": sum(r.errors for r in results),
        "warnings": sum(r.warnings for r in results),
    }


def render(results: Sequence[FileResult], fmt: str, colour: bool = False) -> str:
    if fmt == "json":
        return render_json(results)
    if fmt == "github":
        return render_github(results)
    if fmt == "sarif":
        return render_sarif(results)
    return render_text(results, colour)


def omitted_lines(result: FileResult) -> list[str]:
    """One "… and N more <rule> findings" line per rule whose findings were capped."""
    return [
        f"… and {count:,} more {rule} finding{'s' if count != 1 else ''}"
        for rule, count in sorted(result.omitted.items())
    ]


def related(f: Finding) -> dict[str, object] | None:
    """The second place a finding points at (an overlap finding's other leaf), if any."""
    other = f.as_dict().get("related")
    return other if isinstance(other, dict) else None


def _see(f: Finding) -> str | None:
    other = related(f)
    if other is None:
        return None
    return f"{other.get('file')}:{other.get('line')}:{other.get('column')}"


def render_json(results: Sequence[FileResult]) -> str:
    doc = {"files": [r.as_dict() for r in results], "summary": summary(results)}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


_COLOURS = {Severity.ERROR: "\033[31m", Severity.WARNING: "\033[33m"}
_BOLD, _DIM, _RESET = "\033[1m", "\033[2m", "\033[0m"


def render_text(results: Sequence[FileResult], colour: bool = False) -> str:
    def c(code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if colour else text

    out: list[str] = []
    for r in results:
        if not r.findings and not r.omitted:
            continue
        out.append(c(_BOLD, r.path))
        for f in r.findings:
            sev = c(_COLOURS[f.severity], str(f.severity))
            out.append(f"{r.path}:{f.line}:{f.column}: {sev} {f.rule}: {f.message}")
            if f.hint:
                out.append(c(_DIM, f"    fix: {f.hint}"))
            if (see := _see(f)) is not None:
                out.append(c(_DIM, f"    see: {see}"))
        out.extend(f"{r.path}: {line}" for line in omitted_lines(r))
        out.append("")
    s = summary(results)
    verdict = "all valid" if s["invalid"] == 0 else f"{s['invalid']} invalid"
    out.append(
        f"checked {s['files']} file{'s' if s['files'] != 1 else ''}: {verdict} "
        f"({s['errors']} error{'s' if s['errors'] != 1 else ''}, "
        f"{s['warnings']} warning{'s' if s['warnings'] != 1 else ''})"
    )
    return "\n".join(out) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(results: Sequence[FileResult]) -> str:
    """GitHub Actions workflow commands: one annotation per finding."""
    out = []
    for r in results:
        for f in r.findings:
            level = "error" if f.severity is Severity.ERROR else "warning"
            props = ",".join(
                [
                    f"file={_escape_property(r.path)}",
                    f"line={f.line}",
                    f"col={f.column}",
                    f"title={_escape_property(f.rule)}",
                ]
            )
            text = f.message + (f"\n{f.hint}" if f.hint else "")
            if (see := _see(f)) is not None:
                text += f"\nsee {see}"
            out.append(f"::{level} {props}::{_escape_data(text)}")
        if r.omitted:
            level = "error" if r.omitted_errors else "warning"
            props = f"file={_escape_property(r.path)},line=1,title=labbot"
            out.append(f"::{level} {props}::{_escape_data(chr(10).join(omitted_lines(r)))}")
    s = summary(results)
    out.append(f"labbot: {s['files']} files, {s['invalid']} invalid, {s['errors']} errors")
    return "\n".join(out) + "\n"


def render_sarif(results: Sequence[FileResult]) -> str:
    """SARIF 2.1.0, as GitHub code scanning accepts it."""
    rules: dict[str, dict[str, object]] = {}
    sarif_results = []
    sarif_notes: list[dict[str, object]] = []  # capped findings, as tool notifications
    for r in results:
        for f in r.findings:
            if f.rule not in rules:
                rules[f.rule] = {
                    "id": f.rule,
                    "name": f.rule.replace(".", "/"),
                    "shortDescription": {"text": f.rule},
                    "helpUri": "https://github.com/labbot-dev/labbot#rules",
                }
            other = related(f)
            extra: dict[str, object] = {}
            if other is not None:
                extra["relatedLocations"] = [
                    {
                        "id": 1,
                        "physicalLocation": {
                            "artifactLocation": {"uri": str(other["file"]).replace("\\", "/")},
                            "region": {
                                "startLine": other["line"],
                                "startColumn": other["column"],
                            },
                        },
                        "message": {"text": "the leaf this one repeats"},
                    }
                ]
            sarif_results.append(
                {
                    **extra,
                    "ruleId": f.rule,
                    "ruleIndex": list(rules).index(f.rule),
                    "level": "error" if f.severity is Severity.ERROR else "warning",
                    "message": {"text": f.message + (f" Fix: {f.hint}" if f.hint else "")},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {"uri": r.path.replace("\\", "/")},
                                "region": {"startLine": f.line, "startColumn": f.column},
                            }
                        }
                    ],
                }
            )
        if r.omitted:
            sarif_notes.append(
                {
                    "level": "error" if r.omitted_errors else "warning",
                    "message": {"text": f"{r.path}: " + "; ".join(omitted_lines(r))},
                    "descriptor": {"id": "labbot.omitted"},
                }
            )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "labbot",
                        "version": __version__,
                        "informationUri": "https://github.com/labbot-dev/labbot",
                        "rules": list(rules.values()),
                    }
                },
                "results": sarif_results,
                "invocations": [
                    {"executionSuccessful": True, "toolExecutionNotifications": sarif_notes}
                ],
            }
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
