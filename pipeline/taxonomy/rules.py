"""Rules beyond the schema: the knowledge document reference, attribution and word limits.

Rules:
    document.commit        the commit is not a full 40-character SHA
    document.repo          the repository is not an https URL on an allowed host
    document.pattern       a pattern could match files other than .md or .pdf, or has more
                           than one ``**`` (exponential to match)
    attribution.missing    no attribution.txt beside the qna.yaml
    attribution.empty      attribution.txt is empty
    content.context-words  a knowledge context is longer than the guide allows (warning)
    content.qa-words       a question or answer is longer than the guide allows (warning)
    content.skill-words    a skill's examples are longer in total than the guide allows (warning)
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from ruamel.yaml.nodes import Node

from pipeline.config import ContentLimits, DocumentRules
from pipeline.taxonomy.findings import Finding, Severity
from pipeline.taxonomy.yamlsource import json_path, locate

ERROR = Severity.ERROR
WARNING = Severity.WARNING

_SHA = re.compile(r"^[0-9a-f]{40}$")
_DOC_SUFFIXES = (".md", ".pdf")


def _at(
    root: Node, path: list[str | int], rule: str, sev: Severity, msg: str, hint: str
) -> Finding:
    node, _ = locate(root, path)
    mark = node.start_mark
    return Finding(rule, sev, mark.line + 1, mark.column + 1, msg, hint, json_path(path))


def check_document(data: dict[str, Any], root: Node, rules: DocumentRules) -> list[Finding]:
    """Check the ``document`` mapping of a knowledge file (only fields of the right type)."""
    doc = data.get("document")
    if not isinstance(doc, dict):
        return []
    findings: list[Finding] = []
    commit = doc.get("commit")
    if isinstance(commit, str) and commit and not _SHA.match(commit):
        findings.append(
            _at(
                root,
                ["document", "commit"],
                "document.commit",
                ERROR,
                f"commit '{commit[:50]}' is not a full 40-character commit SHA",
                "Pin the document: open the repository, copy the full SHA of the commit "
                "(git rev-parse HEAD) and paste it here. Branch names and short SHAs move.",
            )
        )
    repo = doc.get("repo")
    if isinstance(repo, str) and repo:
        problem = repo_problem(repo, rules)
        if problem:
            findings.append(
                _at(root, ["document", "repo"], "document.repo", ERROR, problem[0], problem[1])
            )
    patterns = doc.get("patterns")
    if isinstance(patterns, list):
        for i, pattern in enumerate(patterns):
            if isinstance(pattern, str) and pattern and not pattern.endswith(_DOC_SUFFIXES):
                findings.append(
                    _at(
                        root,
                        ["document", "patterns", i],
                        "document.pattern",
                        ERROR,
                        f"pattern '{pattern[:60]}' can match files that are not .md or .pdf",
                        "Knowledge documents must be Markdown (.md) or PDF (.pdf): end the "
                        'pattern with .md or .pdf, e.g. "docs/*.md".',
                    )
                )
            unsafe = pattern_problem(pattern) if isinstance(pattern, str) else None
            if unsafe:
                findings.append(
                    _at(
                        root,
                        ["document", "patterns", i],
                        "document.pattern",
                        ERROR,
                        unsafe + ", which makes matching exponential in the folder depth",
                        "Use at most one '**', e.g. \"docs/**/*.md\" rather than "
                        '"docs/**/**/*.md" (one ** already crosses any number of folders).',
                    )
                )
    return findings


def pattern_problem(pattern: str) -> str | None:
    """Why a document pattern cannot be matched safely, or ``None``. Each ``**`` can stand for
    any number of folders, so two of them make matching exponential in the tree's depth."""
    if pattern.count("**") > 1:
        return f"pattern '{pattern[:60]}' has more than one '**'"
    return None


def repo_problem(repo: str, rules: DocumentRules) -> tuple[str, str] | None:
    """Why a document repository URL is not acceptable, as (message, hint), or ``None``."""
    if repo in rules.mirrors:
        return None
    hosts = ", ".join(rules.allowed_hosts) or "(none)"
    parsed = urlparse(repo)
    if parsed.scheme == "file":
        if rules.allow_file_repos:
            return None
        return (
            "file:// repositories are not allowed here",
            "Push the document to a public git host and use its https URL, or set "
            "documents.allow_file_repos in .github/labbot.yml.",
        )
    if parsed.scheme != "https" or not parsed.netloc:
        example = rules.allowed_hosts[0] if rules.allowed_hosts else "github.com"
        return (
            f"repo '{repo[:80]}' is not an https URL",
            f"Use the repository's https address, e.g. https://{example}/owner/name.",
        )
    host = (parsed.hostname or "").lower()
    if host not in {h.lower() for h in rules.allowed_hosts}:
        return (
            f"repo host '{host}' is not allowed (allowed: {hosts})",
            "Move the document to an allowed host, or ask a maintainer to add the host to "
            "documents.allowed_hosts in .github/labbot.yml.",
        )
    if parsed.username or parsed.password:
        return (
            "repo URL contains credentials",
            "Remove the user name and token from the URL; document repositories must be public.",
        )
    return None


def check_attribution(text: bytes | None, severity: Severity) -> list[Finding]:
    """``text`` is the content of attribution.txt, or ``None`` when there is none."""
    if text is None:
        return [
            Finding(
                "attribution.missing",
                severity,
                1,
                1,
                "there is no attribution.txt beside this qna.yaml",
                "Add attribution.txt in the same folder: title of the work, link, revision, "
                "license (SPDX id) and creator names, one per line.",
            )
        ]
    if not text.strip():
        return [
            Finding(
                "attribution.empty",
                severity,
                1,
                1,
                "attribution.txt is empty",
                "Fill in attribution.txt: title of the work, link, revision, license and creators.",
            )
        ]
    return []


def _words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def check_content(
    data: dict[str, Any], kind: str, root: Node, limits: ContentLimits
) -> list[Finding]:
    """Advisory word-count warnings."""
    findings: list[Finding] = []
    seeds = data.get("seed_examples")
    if not isinstance(seeds, list):
        return findings

    def too_long(path: list[str | int], text: Any, limit: int, rule: str, what: str) -> None:
        n = _words(text)
        if n > limit:
            findings.append(
                _at(
                    root,
                    path,
                    rule,
                    WARNING,
                    f"{what} has {n} words; the guide asks for at most {limit}",
                    "Shorten it: long passages overflow the teacher model's context and "
                    "produce worse synthetic data.",
                )
            )

    total = 0
    for i, seed in enumerate(seeds):
        if not isinstance(seed, dict):
            continue
        if kind == "knowledge":
            too_long(
                ["seed_examples", i, "context"],
                seed.get("context"),
                limits.max_context_words,
                "content.context-words",
                "this context",
            )
            qas = seed.get("questions_and_answers")
            for j, qa in enumerate(qas if isinstance(qas, list) else []):
                if isinstance(qa, dict):
                    for key in ("question", "answer"):
                        too_long(
                            ["seed_examples", i, "questions_and_answers", j, key],
                            qa.get(key),
                            limits.max_qa_words,
                            "content.qa-words",
                            f"this {key}",
                        )
        else:
            total += sum(_words(seed.get(k)) for k in ("question", "answer", "context"))
    if kind != "knowledge" and total > limits.max_skill_words:
        findings.append(
            _at(
                root,
                ["seed_examples"],
                "content.skill-words",
                WARNING,
                f"the seed examples have {total} words in all; the guide asks for at most "
                f"{limits.max_skill_words}",
                "Trim the examples; the teacher sees all of them in every prompt.",
            )
        )
    return findings
