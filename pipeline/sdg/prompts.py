"""Prompt templates (``pipeline/sdg/prompts/*.txt``) and the parsers for what the teacher writes.

Templates are plain text with ``$name`` placeholders, so a reviewer reads them as they are sent.
Values are substituted, never evaluated: a ``$`` or ``{`` in a seed example is just text.

>>> parse_lines("Q: one?\\nQ: two?\\nA: no", "Q:")
['one?', 'two?']
>>> verdict("Yes, it is.")
True
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from string import Template

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


@functools.cache
def template(name: str) -> Template:
    return Template((PROMPT_DIR / f"{name}.txt").read_text(encoding="utf-8").strip())


def render(name: str, **values: object) -> list[dict[str, str]]:
    """The chat messages for prompt ``name``: the shared system message plus the filled template."""
    return [
        {"role": "system", "content": template("system").template},
        {
            "role": "user",
            "content": template(name).safe_substitute({k: str(v) for k, v in values.items()}),
        },
    ]


@functools.cache
def prompts_hash() -> str:
    """A hash of every template: part of the generation cache key."""
    digest = hashlib.sha256()
    for path in sorted(PROMPT_DIR.glob("*.txt")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def message_hash(messages: list[dict[str, str]]) -> str:
    digest = hashlib.sha256()
    for m in messages:
        digest.update(m["role"].encode() + b"\0" + m["content"].encode() + b"\0")
    return digest.hexdigest()[:16]


_ENUM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def parse_lines(text: str, prefix: str) -> list[str]:
    """Items written one per line after ``prefix`` (case-insensitive); numbered or bulleted
    lines count too when no line has the prefix."""
    out = []
    lines = text.splitlines()
    marked = [ln for ln in lines if ln.strip().lower().startswith(prefix.lower())]
    source = marked or [ln for ln in lines if _ENUM.match(ln)]
    for ln in source:
        item = ln.strip()
        if item.lower().startswith(prefix.lower()):
            item = item[len(prefix) :]
        item = _ENUM.sub("", item).strip().strip('"').strip()
        if item:
            out.append(item)
    return out


_QA = re.compile(
    r"^\s*(?:\d+[.)]\s*)?Q(?:uestion)?\s*[:.]\s*(?P<q>.+?)\s*\n\s*(?:\d+[.)]\s*)?A(?:nswer)?\s*[:.]\s*"
    r"(?P<a>.+?)(?=\n\s*(?:\d+[.)]\s*)?Q(?:uestion)?\s*[:.]|\Z)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def parse_qa(text: str) -> list[tuple[str, str]]:
    """``Q: ... / A: ...`` pairs; an answer runs until the next question."""
    return [
        (m.group("q").strip(), " ".join(m.group("a").split()))
        for m in _QA.finditer(text)
        if m.group("q").strip() and m.group("a").strip()
    ]


_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def verdict(text: str) -> bool | None:
    """The first YES or NO in a critic's answer; ``None`` when it gave neither."""
    match = _VERDICT.search(text or "")
    if match is None:
        return None
    return match.group(1).lower() == "yes"


def normalise(text: str) -> str:
    """Text reduced for duplicate detection: lower case, letters and digits only."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
