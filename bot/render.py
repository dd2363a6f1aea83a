"""What people read: check-run output, the sticky comment and its sections, command help.

Pure functions over findings. The sticky comment carries a hidden marker so the App finds its
own comment again, and hidden section markers so each job (validation, preview, build) replaces
only its own part.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.findings import FileResult, Severity

STICKY_MARKER = "<!-- labbot:sticky -->"
MAX_SUMMARY = 65_000  # GitHub's limit is 65,535 characters
MAX_TITLE = 50
DOCS_URL = "https://github.com/labbot-dev/labbot#rules"
SECTION_ORDER = ("validate", "command", "preview", "build")


@dataclass(frozen=True, slots=True)
class CheckOutput:
    conclusion: str  # success, failure, neutral, skipped
    title: str
    summary: str
    annotations: list[dict[str, Any]]


def _title(text: str) -> str:
    return text if len(text) <= MAX_TITLE else text[: MAX_TITLE - 1] + "…"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def check_output(results: Sequence[FileResult], repo_paths: dict[str, str]) -> CheckOutput:
    """The ``labbot/validate`` check run for a set of results.

    ``repo_paths`` maps each result's path to the path in the repository (for annotations).
    """
    if not results:
        return CheckOutput(
            "skipped", "No taxonomy files changed", "This pull request changes no qna.yaml.", []
        )
    errors = sum(r.errors for r in results)
    warnings = sum(r.warnings for r in results)
    invalid = [r for r in results if not r.valid]
    if invalid:
        title = _title(f"{errors} problem{'s' if errors != 1 else ''} in {len(invalid)} file(s)")
        conclusion = "failure"
    else:
        title = _title(
            f"{len(results)} file(s) valid" + (f", {warnings} warning(s)" if warnings else "")
        )
        conclusion = "success"
    lines = [
        f"labbot checked {len(results)} taxonomy file(s): **{len(results) - len(invalid)} valid, "
        f"{len(invalid)} invalid** ({errors} errors, {warnings} warnings).",
        "",
        "| file | kind | result |",
        "|---|---|---|",
    ]
    for r in results:
        verdict = "valid" if r.valid else f"{r.errors} error(s)"
        if r.warnings:
            verdict += f", {r.warnings} warning(s)"
        lines.append(f"| `{_cell(repo_paths.get(r.path, r.path))}` | {r.kind or '?'} | {verdict} |")
    lines += ["", f"Each problem is annotated on its line in *Files changed*. Rules: {DOCS_URL}"]
    summary = "\n".join(lines)
    if len(summary) > MAX_SUMMARY:
        summary = summary[: MAX_SUMMARY - 20] + "\n\n(truncated)"
    annotations = []
    for r in results:
        for f in r.findings:
            annotations.append(
                {
                    "path": repo_paths.get(r.path, r.path),
                    "start_line": f.line,
                    "end_line": f.line,
                    "annotation_level": "failure" if f.severity is Severity.ERROR else "warning",
                    "title": f.rule,
                    "message": f.message[:1000],
                    "raw_details": f.hint[:1000] if f.hint else "",
                }
            )
    return CheckOutput(conclusion, title, summary, annotations)


def config_error_output(message: str) -> CheckOutput:
    return CheckOutput(
        "failure",
        "Invalid .github/labbot.yml",
        "labbot could not read this repository's configuration on the default branch:\n\n"
        f"```\n{message[:6000]}\n```\n\nA maintainer must fix `.github/labbot.yml`.",
        [],
    )


def validation_section(
    results: Sequence[FileResult], repo_paths: dict[str, str], head_sha: str
) -> str:
    """The sticky comment's validation part: one friendly table per file."""
    if not results:
        return ""
    invalid = [r for r in results if not r.valid]
    head = (
        f"### ✅ All {len(results)} taxonomy file(s) are valid"
        if not invalid
        else f"### ❌ {len(invalid)} of {len(results)} taxonomy file(s) need changes"
    )
    out = [head, "", f"Checked at {head_sha[:7]}."]
    for r in results:
        path = repo_paths.get(r.path, r.path)
        kind = (r.kind or "unknown").replace("_", " ")
        if not r.findings:
            out += ["", f"**`{_cell(path)}`** ({kind}): valid."]
            continue
        out += [
            "",
            f"**`{_cell(path)}`** ({kind})",
            "",
            "| line | problem | how to fix |",
            "|---|---|---|",
        ]
        for f in r.findings[:50]:
            icon = "❌" if f.severity is Severity.ERROR else "⚠️"
            out.append(f"| {f.line}:{f.column} | {icon} {_cell(f.message)} | {_cell(f.hint)} |")
        if len(r.findings) > 50:
            out.append(f"| | … and {len(r.findings) - 50} more (see the check run) | |")
    return "\n".join(out)


def preview_section(results: Sequence[Any], head_sha: str, teacher: str, max_shown: int = 5) -> str:
    """The sticky comment's preview part: per leaf, the counts, the kept samples (collapsed)
    and the rejected ones with the reason."""
    out = [
        f"### 🔎 Preview of generated samples ({head_sha[:7]})",
        "",
        f"Teacher: `{_cell(teacher)}`. These are samples the teacher wrote from your seed "
        "examples; weak or off-topic ones point at seeds worth improving.",
        "",
    ]
    for r in results:
        counts = r.counts()
        rejected = ", ".join(f"{k}: {v}" for k, v in counts["rejected"].items()) or "none"
        out += [
            f"**`{_cell(r.leaf)}`** ({r.kind.replace('_', ' ')}): {counts['generated']} generated, "
            f"**{counts['kept']} kept**, rejected by filter: {rejected}."
            + (" (from cache)" if r.cached else ""),
            "",
        ]
        if r.errors:
            out += [f"> {_cell('; '.join(r.errors))}", ""]
        kept = r.kept[:max_shown]
        if kept:
            out += ["<details><summary>Kept samples</summary>", ""]
            for s in kept:
                out += [f"- **Q:** {_cell(s.question)}", f"  **A:** {_cell(s.answer)}"]
            out += ["", "</details>", ""]
        rejected_samples = [s for s in r.samples if not s.kept][:max_shown]
        if rejected_samples:
            out += ["<details><summary>Rejected samples and why</summary>", ""]
            for s in rejected_samples:
                reason = next((f.get("reason", "") for f in s.filters if not f.get("passed")), "")
                out.append(f"- {_cell(s.question)} — *{s.rejected_by}*: {_cell(reason)}")
            out += ["", "</details>", ""]
    if not results:
        out.append("No valid taxonomy leaf to preview.")
    return "\n".join(out)


def preview_unavailable(reason: str) -> str:
    return (
        f"### 🔎 Preview unavailable\n\nPreview unavailable: {_cell(reason)}; retry with "
        "`/labbot preview`."
    )


def build_queued(build_id: int, sha: str, url: str | None) -> str:
    link = f" ([details]({url}))" if url else ""
    return (
        f"### 🏗️ Model build #{build_id}\n\nThis pull request is included in build #{build_id} "
        f"of `{sha[:7]}`: queued{link}. Results will appear here."
    )


def build_running(build_id: int, sha: str, url: str | None) -> str:
    link = f": [workflow run]({url})" if url else ""
    return f"### 🏗️ Model build #{build_id}\n\nBuild #{build_id} of `{sha[:7]}` is running{link}."


def build_failed(build_id: int, sha: str, reason: str, url: str | None) -> str:
    link = f" See the [log]({url})." if url else ""
    return (
        f"### ❌ Model build #{build_id} failed\n\nBuild #{build_id} of `{sha[:7]}` did not "
        f"finish: {_cell(reason)}.{link} Maintainers can re-run the workflow once it is fixed."
    )


def _num(value: Any) -> str:
    return "–" if not isinstance(value, int | float) else f"{value:.3f}"


def build_result(
    build_id: int,
    sha: str,
    url: str | None,
    leaves: Sequence[str],
    table: Sequence[dict[str, Any]],
    answers: dict[str, Sequence[dict[str, Any]]],
) -> str:
    """What a merged pull request's own leaves got from the new model."""

    def mine(leaf: str) -> bool:
        return any(leaf == p or p.endswith("/" + leaf) or leaf.endswith(p) for p in leaves)

    rows = [r for r in table if mine(str(r.get("leaf", "")))]
    link = f" ([workflow run]({url}))" if url else ""
    out = [
        f"### ✅ Model build #{build_id} finished",
        "",
        f"The model built from `{sha[:7]}`{link} includes this pull request.",
    ]
    if not rows:
        out += ["", "No held-out questions of this pull request's leaves were evaluated."]
        return "\n".join(out)
    out += [
        "",
        "| leaf | ROUGE-L before | after | reference loss before | after | better? |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| `{_cell(str(r['leaf']))}` | {_num(r.get('base_rouge_l'))} | "
            f"{_num(r.get('phase2_rouge_l'))} | {_num(r.get('base_ref_loss'))} | "
            f"{_num(r.get('phase2_ref_loss'))} | {'yes' if r.get('improved') else 'no'} |"
        )
    final = [a for a in answers.get("phase2", []) if mine(str(a.get("leaf", "")))]
    base = {a.get("question"): a for a in answers.get("base", [])}
    if final:
        out += [
            "",
            "<details><summary>The new model's answers to your questions</summary>",
            "",
            "| question | expected | before | after |",
            "|---|---|---|---|",
        ]
        for a in final[:20]:
            before = base.get(a.get("question"), {}).get("answer", "")
            out.append(
                f"| {_cell(str(a.get('question')))} | {_cell(str(a.get('reference')))} | "
                f"{_cell(str(before))} | {_cell(str(a.get('answer')))} |"
            )
        out += ["", "</details>"]
    return "\n".join(out)


HELP = """### labbot commands

| command | what it does | who |
|---|---|---|
| `/labbot help` | show this help | anyone with write access or on the allowlist |
| `/labbot check` | validate the pull request's taxonomy files again | same |
| `/labbot preview` | generate a preview of synthetic samples from the seed examples | same |

Run `labbot check --changed` locally to see the same findings before you push."""


_SECTION = re.compile(
    r"<!-- labbot:section:(?P<name>[a-z]+) -->\n(?P<body>.*?)\n<!-- /labbot:section:(?P=name) -->",
    re.DOTALL,
)


def sections_of(body: str) -> dict[str, str]:
    """The named sections of an existing sticky comment."""
    return {m.group("name"): m.group("body") for m in _SECTION.finditer(body or "")}


def sticky_body(sections: dict[str, str]) -> str:
    """The whole sticky comment from its sections (empty sections are left out)."""
    parts = [STICKY_MARKER, "## labbot"]
    names = [n for n in SECTION_ORDER if n in sections] + sorted(
        n for n in sections if n not in SECTION_ORDER
    )
    for name in names:
        if sections[name].strip():
            parts.append(
                f"<!-- labbot:section:{name} -->\n{sections[name]}\n<!-- /labbot:section:{name} -->"
            )
    parts.append("<sub>Updated in place by labbot. Commands: `/labbot help`.</sub>")
    body = "\n\n".join(parts)
    return body if len(body) <= MAX_SUMMARY else body[: MAX_SUMMARY - 20] + "\n\n(truncated)"


def with_section(existing: str | None, name: str, text: str) -> str:
    sections = sections_of(existing or "")
    sections[name] = text
    return sticky_body(sections)
