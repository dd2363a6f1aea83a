"""The repository configuration file, ``.github/labbot.yml``: loading and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.taxonomy.findings import Finding, Severity
from pipeline.taxonomy.schemas import validate
from pipeline.taxonomy.yamlsource import compose, construct, decode

CONFIG_PATH = ".github/labbot.yml"
DEFAULT_MAX_FILE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DocumentRules:
    """How knowledge ``document`` references are checked and fetched."""

    allowed_hosts: tuple[str, ...] = ("github.com",)
    allow_file_repos: bool = False
    mirrors: dict[str, str] = field(default_factory=dict)
    clone_timeout_seconds: float = 120.0
    max_repo_bytes: int = 512 * 1024 * 1024
    #: One limit around fetching, matching and PDF reading of one document reference.
    deadline_seconds: float = 120.0


@dataclass(frozen=True, slots=True)
class ContentLimits:
    """Advisory word limits from the taxonomy's contribution guide."""

    max_context_words: int = 500
    max_qa_words: int = 250
    max_skill_words: int = 2300


@dataclass(frozen=True, slots=True)
class RepoConfig:
    """Settings of one taxonomy repository. Every field has a default."""

    taxonomy_root: str | None = None
    profile: str = "pr"
    require_attribution: bool = True
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    documents: DocumentRules = field(default_factory=DocumentRules)
    content: ContentLimits = field(default_factory=ContentLimits)
    raw: dict[str, Any] = field(default_factory=dict)
    #: Folder the config's relative paths are relative to (the repository root), if known.
    base_dir: Path | None = None

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the repository root."""
        base = self.base_dir or Path.cwd()
        return (base / relative).resolve()


def parse_config(raw: bytes, path: str = CONFIG_PATH, base_dir: Path | None = None) -> RepoConfig:
    """Parse and check a config file's bytes.

    Raises:
        ConfigError: with every located problem, when the file is not a valid config.
    """
    text, findings = decode(raw)
    if text is None:
        raise ConfigError(path, findings)
    root, findings = compose(text)
    if root is None:
        if findings:
            raise ConfigError(path, findings)
        return RepoConfig(base_dir=base_dir)  # an empty file means all defaults
    data, more = construct(root)
    problems = [f for f in findings + more if f.severity is Severity.ERROR]
    if data is None or problems:
        raise ConfigError(path, problems or more)
    if not isinstance(data, dict):
        raise ConfigError(
            path,
            [Finding("config.type", Severity.ERROR, 1, 1, "the config must be a mapping of keys")],
        )
    problems = validate(data, "labbot-config.json", root)
    if problems:
        raise ConfigError(path, problems)
    return from_dict(data, base_dir)


def from_dict(data: dict[str, Any], base_dir: Path | None = None) -> RepoConfig:
    """Build a config from already-validated data."""
    docs = data.get("documents", {})
    content = data.get("content", {})
    return RepoConfig(
        taxonomy_root=data.get("taxonomy_root"),
        profile=data.get("profile", "pr"),
        require_attribution=data.get("require_attribution", True),
        max_file_bytes=data.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES),
        documents=DocumentRules(
            allowed_hosts=tuple(docs.get("allowed_hosts", ("github.com",))),
            allow_file_repos=docs.get("allow_file_repos", False),
            mirrors=dict(docs.get("mirrors", {})),
            clone_timeout_seconds=float(docs.get("clone_timeout_seconds", 120.0)),
            max_repo_bytes=docs.get("max_repo_bytes", 512 * 1024 * 1024),
            deadline_seconds=float(docs.get("deadline_seconds", 120.0)),
        ),
        content=ContentLimits(
            max_context_words=content.get("max_context_words", 500),
            max_qa_words=content.get("max_qa_words", 250),
            max_skill_words=content.get("max_skill_words", 2300),
        ),
        raw=data,
        base_dir=base_dir,
    )


def load_config(path: Path) -> RepoConfig:
    """Load ``path``; its repository root is the folder above ``.github``."""
    base = path.resolve().parent
    if base.name == ".github":
        base = base.parent
    return parse_config(path.read_bytes(), str(path), base)


def find_config(start: Path) -> Path | None:
    """The nearest ``.github/labbot.yml`` in ``start`` or a folder above it."""
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_PATH
        if candidate.is_file():
            return candidate
        if (folder / ".git").exists():
            return None
    return None
