"""What people read: check-run output, the sticky comment and its sections, command help.

Pure functions over findings. The sticky comment carries a hidden marker so the App finds its
own comment again, and hidden section markers so each job (validation, preview, build) replaces
only its own part.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bot import markup
from bot.isolation import UNCHECKED_RULES
from pipeline.taxonomy.findings import FileResult, Finding, Severity
from pipeline.taxonomy.overlap import OverlapFinding
from pipeline.taxonomy.validate import KINDS

STICKY_MARKER = "<!-- labbot:sticky -->"
MAX_SUMMARY = 65_000  # GitHub's limit is 65,535 characters
MAX_TITLE = 50
DOCS_URL = "https://github.com/labbot-dev/labbot#rules"
SECTION_ORDER = ("validate", "command", "preview", "build")
MAX_SECTION = 15_000  # one sticky-comment section; four of them fit in a comment


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


#: Annotations on one check run, in all (GitHub takes 50 per request).
MAX_ANNOTATIONS = 200
#: Annotations, and comment rows, of one rule in one file; the rest are counted.
PER_RULE = 10
#: Comment rows of one file.
ROWS_PER_FILE = 50


def _shown(v: FileResult, limit: int, taken: int = 0, budget: int | None = None) -> list[Finding]:
    """The findings of ``v`` to show: at most ``limit`` per rule, at most ``budget`` in all."""
    seen: Counter[str] = Counter()
    out: list[Finding] = []
    for f in v.findings:
        if budget is not None and taken + len(out) >= budget:
            break
        seen[f.rule] += 1
        if seen[f.rule] <= limit:
            out.append(f)
    return out


def _hidden(v: FileResult, shown: Sequence[Finding]) -> list[tuple[str, int, int]]:
    """Per rule: (rule, findings in all, findings not shown), for rules with hidden ones."""
    total: Counter[str] = Counter(f.rule for f in v.findings)
    total.update(v.omitted)
    seen = Counter(f.rule for f in shown)
    return [(rule, n, n - seen[rule]) for rule, n in sorted(total.items()) if n > seen[rule]]


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def check_output(results: Sequence[FileResult]) -> CheckOutput:
    """The ``labbot/validate`` check run for a set of results.

    At most :data:`PER_RULE` findings of one rule in one file and :data:`MAX_ANNOTATIONS` in
    all are annotated; the summary says how many more there are.
    """
    if not results:
        return CheckOutput(
            "skipped", "No taxonomy files changed", "This pull request changes no qna.yaml.", []
        )
    verdicts = results
    errors = sum(v.errors for v in verdicts)
    warnings = sum(v.warnings for v in verdicts)
    invalid = [v for v in verdicts if not v.valid]
    if invalid:
        title = _title(f"{_count(errors, 'problem')} in {len(invalid)} file(s)")
        conclusion = "failure"
    else:
        title = _title(
            f"{len(verdicts)} file(s) valid" + (f", {warnings:,} warning(s)" if warnings else "")
        )
        conclusion = "success"
    lines = [
        f"labbot checked {len(verdicts)} taxonomy file(s): **{len(verdicts) - len(invalid)} "
        f"valid, {len(invalid)} invalid** ({errors:,} errors, {warnings:,} warnings).",
        "",
        "| file | kind | result |",
        "|---|---|---|",
    ]
    for v in verdicts:
        verdict = "valid" if v.valid else f"{v.errors:,} error(s)"
        if v.warnings:
            verdict += f", {v.warnings:,} warning(s)"
        path = v.path
        lines.append(f"| {markup.cell_code(path)} | {v.kind or '?'} | {verdict} |")
    annotations: list[dict[str, Any]] = []
    notes: list[str] = []
    for v in verdicts:
        path = v.path
        shown = _shown(v, PER_RULE, len(annotations), MAX_ANNOTATIONS)
        for f in v.findings:
            if f.rule in UNCHECKED_RULES:
                notes.append(f"- {markup.code(path)}: {markup.text(f.message)}")
        for rule, total, hidden in _hidden(v, shown):
            notes.append(
                f"- {markup.code(path)}: {markup.code(rule)} found {total:,} times; "
                f"{total - hidden:,} annotated, … and {hidden:,} more."
            )
        for f in shown:
            annotations.append(
                {
                    "path": path,
                    "start_line": f.line,
                    "end_line": f.line,
                    "annotation_level": "failure" if f.severity is Severity.ERROR else "warning",
                    "title": f.rule,
                    "message": f.message[:1000],
                    "raw_details": f.hint[:1000] if f.hint else "",
                }
            )
    if notes:
        lines += ["", *notes]
    lines += ["", f"Each problem is annotated on its line in *Files changed*. Rules: {DOCS_URL}"]
    summary = markup.truncate("\n".join(lines), MAX_SUMMARY)
    return CheckOutput(conclusion, title, summary, annotations)


def config_error_output(message: str) -> CheckOutput:
    return CheckOutput(
        "failure",
        "Invalid .github/labbot.yml",
        "labbot could not read this repository's configuration on the default branch:\n\n"
        f"{markup.fenced(message[:6000])}\n\nA maintainer must fix `.github/labbot.yml`.",
        [],
    )


@dataclass(frozen=True, slots=True)
class OverlapLinks:
    """Where overlap findings link to: ``repo`` at the default branch's commit ``sha`` (empty:
    no links) or, for leaves the pull request changes, at its head; and a ``note`` about the
    check itself (incomplete, skipped), shown under the tables."""

    repo: str
    sha: str
    note: str = ""
    #: The pull request's head commit and the leaves it changes: a finding about one of those
    #: links there, since the default branch does not have them (yet).
    head_sha: str = ""
    changed: frozenset[str] = frozenset()

    def commit_of(self, path: str) -> str:
        """The commit to link ``path`` at ("" for no link)."""
        if path in self.changed:
            return self.head_sha
        return self.sha


def leaf_name(path: str) -> str:
    """A leaf's short name: its folders from the kind folder on, middle folders elided.

    >>> leaf_name("taxonomy/compositional_skills/writing/freeform/jokes/slang/qna.yaml")
    'compositional_skills/.../slang'
    >>> leaf_name("knowledge/history/qna.yaml")
    'knowledge/history'
    """
    folders = posixpath.dirname(path).split("/")
    kinds = [i for i, f in enumerate(folders) if f in KINDS]
    if kinds:
        folders = folders[kinds[-1] :]
    return "/".join(folders) if len(folders) <= 2 else f"{folders[0]}/.../{folders[-1]}"


def blob_url(repo: str, sha: str, path: str, line: int) -> str:
    """``https://github.com/<repo>/blob/<sha>/<path>#L<line>``, each path segment encoded."""
    segments = "/".join(quote(part, safe="") for part in path.split("/"))
    owner, _, name = repo.partition("/")
    return (
        f"https://github.com/{quote(owner, safe='')}/{quote(name, safe='')}/blob/"
        f"{quote(sha, safe='')}/{segments}#L{int(line)}"
    )


def _overlap_cell(f: OverlapFinding, links: OverlapLinks) -> str:
    """An overlap finding's row text, naming (and, at the default branch's commit, linking)
    the leaf it repeats; paths are a contributor's text."""
    pct = f"{round(100 * f.similarity)}%"
    if f.rule == "overlap.within":
        return markup.cell(f.message)
    commit = links.commit_of(f.other_file)
    url = blob_url(links.repo, commit, f.other_file, f.other_line) if commit else None
    name = leaf_name(f.other_file)
    if f.rule == "overlap.leaf":
        return f"looks like {markup.inline_link(name, url)} ({pct} of its seeds)"
    where = markup.inline_link(f"{name}, line {f.other_line}", url)
    noun = "context" if (f.path or "").endswith(".context") else "seed"
    if f.by_meaning:
        return f"this {noun} says the same as one in {where} in other words ({pct} similar)"
    return f"this {noun} repeats one in {where} ({pct} similar)"


def validation_section(
    results: Sequence[FileResult], head_sha: str, overlap: OverlapLinks | None = None
) -> str:
    """The sticky comment's validation part: one friendly table per file, at most
    :data:`PER_RULE` rows of one rule and :data:`ROWS_PER_FILE` in all, then "… and N more".
    Overlap findings link the leaf they repeat (``overlap``)."""
    if not results:
        return ""
    verdicts = results
    invalid = [v for v in verdicts if not v.valid]
    head = (
        f"### ✅ All {len(verdicts)} taxonomy file(s) are valid"
        if not invalid
        else f"### ❌ {len(invalid)} of {len(verdicts)} taxonomy file(s) need changes"
    )
    out = [head, "", f"Checked at {head_sha[:7]}."]
    for v in verdicts:
        path = v.path
        kind = (v.kind or "unknown").replace("_", " ")
        if not v.findings:
            out += ["", f"**{markup.code(path)}** ({kind}): valid."]
            continue
        out += [
            "",
            f"**{markup.code(path)}** ({kind})",
            "",
            "| line | problem | how to fix |",
            "|---|---|---|",
        ]
        shown = _shown(v, PER_RULE, 0, ROWS_PER_FILE)
        for f in shown:
            icon = "❌" if f.severity is Severity.ERROR else "⚠️"
            message = markup.cell(f.message)
            if isinstance(f, OverlapFinding) and overlap is not None:
                message = _overlap_cell(f, overlap)
            out.append(f"| {f.line}:{f.column} | {icon} {message} | {markup.cell(f.hint)} |")
        for rule, _, hidden in _hidden(v, shown):
            out.append(
                f"| | … and {hidden:,} more {markup.cell_code(rule)} (see the check run) | |"
            )
    if overlap is not None and overlap.note:
        out += ["", markup.text(overlap.note)]
    return markup.truncate("\n".join(out), MAX_SECTION)


def preview_section(results: Sequence[Any], head_sha: str, teacher: str, max_shown: int = 5) -> str:
    """The sticky comment's preview part: per leaf, the counts, the kept samples (collapsed)
    and the rejected ones with the reason. Teacher output and paths are hostile text."""
    out = [
        f"### 🔎 Preview of generated samples ({head_sha[:7]})",
        "",
        f"Teacher: {markup.code(teacher)}. These are samples the teacher wrote from your seed "
        "examples; weak or off-topic ones point at seeds worth improving.",
        "",
    ]
    for r in results:
        counts = r.counts()
        rejected = ", ".join(f"{k}: {v}" for k, v in counts["rejected"].items()) or "none"
        out += [
            f"**{markup.code(r.leaf)}** ({markup.text(r.kind.replace('_', ' '))}): "
            f"{counts['generated']} generated, **{counts['kept']} kept**, rejected by filter: "
            f"{markup.text(rejected)}." + (" (from cache)" if r.cached else ""),
            "",
        ]
        if r.errors:
            out += [f"> {markup.text('; '.join(r.errors))}", ""]
        kept = r.kept[:max_shown]
        if kept:
            out += ["<details><summary>Kept samples</summary>", ""]
            for number, s in enumerate(kept, 1):
                out += [
                    f"**Q{number}.** {markup.text(s.question)}",
                    "",
                    markup.fenced(s.answer, "text"),
                    "",
                ]
            out += ["</details>", ""]
        rejected_samples = [s for s in r.samples if not s.kept][:max_shown]
        if rejected_samples:
            out += ["<details><summary>Rejected samples and why</summary>", ""]
            for s in rejected_samples:
                reason = next((f.get("reason", "") for f in s.filters if not f.get("passed")), "")
                out.append(
                    f"- {markup.text(s.question)} — *{markup.text(str(s.rejected_by))}*: "
                    f"{markup.text(str(reason))}"
                )
            out += ["", "</details>", ""]
    if not results:
        out.append("No valid taxonomy leaf to preview.")
    return markup.truncate("\n".join(out), MAX_SECTION)


def preview_unavailable(reason: str) -> str:
    return markup.truncate(
        f"### 🔎 Preview unavailable\n\nPreview unavailable: {markup.text(reason)}; retry with "
        "`/labbot preview`.",
        MAX_SECTION,
    )


def _no(build_id: int) -> str:
    """``#N`` for labbot's own build numbers, which GitHub must not link to issue N."""
    return f"#{markup.JOINER}{build_id}"


def build_queued(build_id: int, sha: str, url: str | None) -> str:
    link = f" ({markup.inline_link('details', url)})" if url else ""
    return (
        f"### 🏗️ Model build {_no(build_id)}\n\n"
        f"This pull request is included in build {_no(build_id)} "
        f"of {markup.code(sha[:7])}: queued{link}. Results will appear here."
    )


def build_running(build_id: int, sha: str, url: str | None) -> str:
    link = f": {markup.inline_link('workflow run', url)}" if url else ""
    return (
        f"### 🏗️ Model build {_no(build_id)}\n\nBuild {_no(build_id)} of {markup.code(sha[:7])} "
        f"is running{link}."
    )


def build_failed(build_id: int, sha: str, reason: str, url: str | None) -> str:
    link = f" See the {markup.inline_link('log', url)}." if url else ""
    return markup.truncate(
        f"### ❌ Model build {_no(build_id)} failed\n\n"
        f"Build {_no(build_id)} of {markup.code(sha[:7])} "
        f"did not finish: {markup.text(reason)}.{link} Maintainers can re-run the workflow once "
        "it is fixed.",
        MAX_SECTION,
    )


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    return f"{value:.3f}"


def build_result(
    build_id: int,
    sha: str,
    url: str | None,
    leaves: Sequence[str],
    table: Sequence[dict[str, Any]],
    answers: Mapping[str, Sequence[dict[str, Any]]],
) -> str:
    """What a merged pull request's own leaves got from the new model. ``table`` and
    ``answers`` come from the build's artifact: hostile text, escaped here."""

    def mine(leaf: str) -> bool:
        return any(leaf == p or p.endswith("/" + leaf) or leaf.endswith(p) for p in leaves)

    rows = [r for r in table if mine(str(r.get("leaf", "")))]
    link = f" ({markup.inline_link('workflow run', url)})" if url else ""
    out = [
        f"### ✅ Model build {_no(build_id)} finished",
        "",
        f"The model built from {markup.code(sha[:7])}{link} includes this pull request.",
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
            f"| {markup.cell_code(str(r['leaf']))} | {_num(r.get('base_rouge_l'))} | "
            f"{_num(r.get('phase2_rouge_l'))} | {_num(r.get('base_ref_loss'))} | "
            f"{_num(r.get('phase2_ref_loss'))} | {'yes' if r.get('improved') is True else 'no'} |"
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
                f"| {markup.cell(str(a.get('question', '')))} | "
                f"{markup.cell(str(a.get('reference', '')))} | {markup.cell(str(before))} | "
                f"{markup.cell(str(a.get('answer', '')))} |"
            )
        out += ["", "</details>"]
    return markup.truncate("\n".join(out), MAX_SECTION)


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
    return markup.truncate("\n\n".join(parts), MAX_SUMMARY)
