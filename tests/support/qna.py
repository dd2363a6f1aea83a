"""Building and checking qna.yaml texts in tests: validate one text, replace a line, a YAML
alias bomb."""

from __future__ import annotations

from pipeline.config import RepoConfig
from pipeline.taxonomy.findings import FileResult
from pipeline.taxonomy.validate import PROFILES, validate_bytes
from tests.support.samples import SKILL_PATH

CONFIG = RepoConfig()


def check(
    text: str | bytes,
    path: str = SKILL_PATH,
    profile: str = "pr",
    config: RepoConfig = CONFIG,
    attribution: bytes | None | object = b"Title of work: test\n",
) -> FileResult:
    raw = text.encode() if isinstance(text, str) else text
    return validate_bytes(raw, path, PROFILES[profile], config, attribution)  # type: ignore[arg-type]


def replace_line(text: str, number: int, new: str) -> str:
    lines = text.split("\n")
    lines[number - 1] = new
    return "\n".join(lines)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)
