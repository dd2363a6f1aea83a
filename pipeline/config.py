"""The repository configuration file, ``.github/labbot.yml``: typed sections and their defaults.

``schemas/labbot-config.json`` says what each key may be (a bad file gets located findings);
the dataclasses below hold the defaults and give the App and the CLI typed settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.taxonomy.findings import Finding, Severity
from pipeline.taxonomy.schemas import validate
from pipeline.taxonomy.yamlsource import load

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
class OverlapRules:
    """The ``overlap:`` section: whether the App runs the overlap check, its severity and its
    thresholds (see :class:`pipeline.taxonomy.overlap.OverlapSettings` for what they mean)."""

    enabled: bool = True
    as_errors: bool = False
    leaf_threshold: float = 0.5
    leaf_seed_threshold: float = 0.4
    seed_threshold: float = 0.6
    within_threshold: float = 0.6
    # The semantic pass (pipeline/semantic.py, extra labbot[semantic]): cosine similarity of
    # sentence embeddings at which two seeds are paraphrases. Off by default.
    semantic: bool = False
    semantic_threshold: float = 0.72


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """Who may run ``/labbot`` commands besides users with write access."""

    allowed_users: tuple[str, ...] = ()

    def allows(self, user: str) -> bool:
        """Whether ``user`` is on the allowlist (GitHub logins ignore case)."""
        return any(u.lower() == user.lower() for u in self.allowed_users)


@dataclass(frozen=True, slots=True)
class PreviewSettings:
    """Sample previews on pull requests. The generation settings other than ``samples`` are the
    build's defaults (pipeline/training/configs/default.yaml), so that a build reuses them."""

    enabled: bool = True
    everyone: bool = False
    samples: int = 6
    #: ``None``: the App's own limit (``LABBOT_PREVIEW_SECONDS``).
    time_limit_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class BuildSettings:
    """How a build is started after a merge."""

    enabled: bool = True
    workflow: str = "build-model.yml"
    dispatch: str = "workflow_dispatch"
    event_type: str = "labbot-build"

    @property
    def workflow_file(self) -> str:
        """The workflow's file name (a path in the setting is reduced to its last part)."""
        return self.workflow.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class RepoConfig:
    """Settings of one taxonomy repository. Every field has a default."""

    taxonomy_root: str | None = None
    profile: str = "pr"
    require_attribution: bool = True
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    documents: DocumentRules = field(default_factory=DocumentRules)
    content: ContentLimits = field(default_factory=ContentLimits)
    commands: CommandSettings = field(default_factory=CommandSettings)
    preview: PreviewSettings = field(default_factory=PreviewSettings)
    build: BuildSettings = field(default_factory=BuildSettings)
    overlap: OverlapRules = field(default_factory=OverlapRules)
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
    loaded = load(raw)
    if loaded.errors:
        raise ConfigError(path, loaded.errors)
    data, root = loaded.data, loaded.root
    if root is None:
        return RepoConfig(base_dir=base_dir)  # an empty file means all defaults
    if not isinstance(data, dict):
        raise ConfigError(
            path,
            [Finding("config.type", Severity.ERROR, 1, 1, "the config must be a mapping of keys")],
        )
    problems = [_with_hint(f) for f in validate(data, "labbot-config.json", root)]
    if problems:
        raise ConfigError(path, problems)
    return from_dict(data, base_dir)


def _with_hint(finding: Finding) -> Finding:
    """An unexpected key's finding with the allowed keys in its message (the App's comment and
    the CLI show messages)."""
    if finding.rule != "schema.unexpected-key" or not finding.hint:
        return finding
    return replace(finding, message=f"{finding.message}. {finding.hint}")


def _value(kind: Any, value: Any) -> Any:
    """A schema-checked YAML value as the field's type holds it."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return dict(value)
    if kind in ("float", "float | None") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _typed(cls: type[Any], data: Mapping[str, Any]) -> Any:
    """``cls`` from the keys of ``data`` it has; the others keep their defaults."""
    return cls(**{f.name: _value(f.type, data[f.name]) for f in fields(cls) if f.name in data})


def _overlap(data: Mapping[str, Any]) -> OverlapRules:
    """``overlap.thresholds.leaf`` is ``OverlapRules.leaf_threshold``, and so on."""
    flat = {k: v for k, v in data.items() if k != "thresholds"}
    thresholds = data.get("thresholds")
    if isinstance(thresholds, Mapping):
        flat.update({f"{k}_threshold": v for k, v in thresholds.items()})
    rules: OverlapRules = _typed(OverlapRules, flat)
    return rules


#: The config's sections (mappings in the file) and how each becomes its type. A new section is
#: a property in schemas/labbot-config.json, a frozen dataclass with defaults, a field of
#: :class:`RepoConfig` and an entry here.
SECTIONS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "documents": lambda data: _typed(DocumentRules, data),
    "content": lambda data: _typed(ContentLimits, data),
    "commands": lambda data: _typed(CommandSettings, data),
    "preview": lambda data: _typed(PreviewSettings, data),
    "build": lambda data: _typed(BuildSettings, data),
    "overlap": _overlap,
}


def from_dict(data: Mapping[str, Any], base_dir: Path | None = None) -> RepoConfig:
    """Build a config from data the schema has already accepted."""
    top = {k: v for k, v in data.items() if k not in SECTIONS}
    sections = {
        name: build(section)
        for name, build in SECTIONS.items()
        if isinstance(section := data.get(name), Mapping)
    }
    config: RepoConfig = _typed(RepoConfig, {**top, **sections})
    return replace(config, base_dir=base_dir) if base_dir is not None else config


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
