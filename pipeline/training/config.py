"""The build configuration: one file of defaults, one schema, typed sections, overrides.

``configs/default.yaml`` holds every default, once. ``schemas/build-config.json`` says what each
key may be. A user's file (``labbot build --config``) and ``key=value`` overrides from the command
line change some keys; both are checked by that schema, with located messages, and the result is
a frozen :class:`BuildConfig` whose sections ``labbot build``, ``labbot generate`` and the App's
previews read alike, so that equal settings give equal generation cache keys.

    >>> cfg = resolve(overrides=["generate.max_tokens=512", "phase1.epochs=2"])
    >>> cfg.generate.max_tokens, cfg.phase1.epochs, cfg.phase2.epochs
    (512, 2, 3)
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonschema.exceptions import ValidationError

from pipeline.errors import ConfigError
from pipeline.taxonomy.findings import Finding, Severity
from pipeline.taxonomy.schemas import describe, load_schema, validate, validator
from pipeline.taxonomy.yamlsource import load as load_yaml

if TYPE_CHECKING:
    from pipeline.sdg.generate import GenerateConfig

SCHEMA = "build-config.json"
DEFAULTS_NAME = "configs/default.yaml"
#: Where overrides are reported: ``command line:1:COLUMN``, the column counted in the overrides
#: written one after another with a space between them.
COMMAND_LINE = "command line"
#: The keys ``labbot generate`` reads: any other key there is a mistake, not a silent no-op.
GENERATE_KEYS = ("teacher", "teacher_concurrency", "teacher_context_window", "seed", "generate")

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_MAX_OVERRIDE_CHARS = 4096


@dataclass(frozen=True, slots=True)
class GenerateSection:
    """Synthetic data generation; every field is part of a leaf's cache key."""

    samples: int
    critic: bool
    max_tokens: int
    temperature: float

    def engine(self, seed: int, *, samples: int | None = None) -> GenerateConfig:
        """The generator's settings, with ``samples`` replaced when given (a preview's budget)."""
        from pipeline.sdg.generate import GenerateConfig

        return GenerateConfig(
            samples=self.samples if samples is None else samples,
            critic=self.critic,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=seed,
        )


@dataclass(frozen=True, slots=True)
class MixSection:
    """How generated and seed data become the two phases' datasets."""

    replay_fraction: float
    skill_cap: int


@dataclass(frozen=True, slots=True)
class PhaseSection:
    """One training phase (see :class:`pipeline.training.loop.TrainConfig`)."""

    lr: float
    epochs: int
    batch_tokens: int
    micro_batch_tokens: int
    warmup_ratio: float
    min_steps_per_epoch: int
    lora: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    weight_decay: float
    grad_clip: float
    max_seq_len: int
    gradient_checkpointing: bool
    keep_checkpoints: int
    checkpoint_every_steps: int | None
    seed: int | None
    parallel: str

    def train_params(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of ``TrainConfig``; a phase without its own seed takes ``seed``."""
        params = asdict(self)
        params["seed"] = seed if self.seed is None else self.seed
        return params


@dataclass(frozen=True, slots=True)
class EvalSection:
    """Evaluation on held-out seed questions."""

    max_new_tokens: int
    batch_size: int


@dataclass(frozen=True, slots=True)
class BuildConfig:
    """A resolved build configuration: every key has a value."""

    student: str
    teacher: str
    teacher_concurrency: int
    teacher_context_window: int | None
    seed: int
    system_prompt: str
    generate: GenerateSection
    mix: MixSection
    phase1: PhaseSection
    phase2: PhaseSection
    eval: EvalSection

    def as_dict(self) -> dict[str, Any]:
        """Plain data (printed at the start of a build, saved in its run directory)."""
        return asdict(self)

    def phase(self, name: str) -> PhaseSection:
        """``phase1`` or ``phase2``."""
        if name == "phase1":
            return self.phase1
        if name == "phase2":
            return self.phase2
        raise KeyError(name)

    def generate_config(self) -> GenerateConfig:
        """The generator's settings for a build or ``labbot generate``."""
        return self.generate.engine(self.seed)


_SECTIONS: dict[str, type[Any]] = {
    "generate": GenerateSection,
    "mix": MixSection,
    "phase1": PhaseSection,
    "phase2": PhaseSection,
    "eval": EvalSection,
}


# -- the schema's keys ------------------------------------------------------------------------


def _properties(schema: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        node = schema["$defs"][ref.removeprefix("#/$defs/")]
    props: dict[str, Any] = node.get("properties", {})
    return props


@functools.cache
def known_keys() -> tuple[str, ...]:
    """Every settable key, dotted: ``seed``, ``generate.max_tokens``, ``phase1.lr``..."""
    schema = load_schema(SCHEMA)
    out: list[str] = []
    for name, node in schema["properties"].items():
        nested = _properties(schema, node)
        if nested:
            out.extend(f"{name}.{key}" for key in nested)
        else:
            out.append(name)
    return tuple(out)


def closest_key(key: str, among: Sequence[str] | None = None) -> str | None:
    """The known key ``key`` most likely meant (a typo, or a key without its section)."""
    keys = list(among if among is not None else known_keys())
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    if len(same_leaf) == 1 or (same_leaf and "." not in key):
        return same_leaf[0]
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return close[0] if close else None


# -- checking plain data (overrides, dicts from code) -----------------------------------------

_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "null": "null",
}


def _message(error: ValidationError, dotted: str) -> str:
    name = error.validator
    want: Any = error.validator_value
    if name == "type":
        types = want if isinstance(want, list) else [want]
        words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
        return f"'{dotted}' must be {words}, not {describe(error.instance)}"
    if name == "enum":
        choices = ", ".join(map(str, want))
        return f"'{dotted}' must be one of {choices}, not {describe(error.instance)}"
    bounds = {
        "minimum": "at least",
        "maximum": "at most",
        "exclusiveMinimum": "more than",
        "exclusiveMaximum": "less than",
        "minLength": "at least this many characters:",
    }
    if name in bounds:
        return f"'{dotted}' must be {bounds[str(name)]} {want}, not {describe(error.instance)}"
    return f"'{dotted}': {error.message}"


def _unknown(key: str, allowed: Sequence[str] | None = None) -> str:
    guess = closest_key(key, allowed)
    hint = f"; did you mean '{guess}'?" if guess else ""
    return f"unknown key '{key}'{hint} (every key: pipeline/training/configs/default.yaml)"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted in _SECTIONS:
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def _check_plain(data: Mapping[str, Any]) -> list[str]:
    """Problems of data that has no YAML behind it (no lines to point at), one per key."""
    problems: list[str] = []
    for dotted, value in _flatten(data):
        problems.extend(_check_one(dotted, value))
    return problems


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    section, _, key = dotted.partition(".")
    return {section: {key: value}} if key else {section: value}


def _check_one(dotted: str, value: Any) -> list[str]:
    if dotted in _SECTIONS:
        return [f"'{dotted}' is a section: set its keys, e.g. {dotted}.{_first_key(dotted)}=..."]
    if dotted not in known_keys():
        return [_unknown(dotted)]
    return [_message(e, dotted) for e in validator(SCHEMA).iter_errors(_nest(dotted, value))]


def _first_key(section: str) -> str:
    return next(k for k in known_keys() if k.startswith(section + ".")).split(".", 1)[1]


# -- overrides --------------------------------------------------------------------------------


def is_override(token: str) -> bool:
    """Whether a command-line word looks like ``dotted.key=value``."""
    key, sep, _ = token.partition("=")
    return bool(sep) and _KEY.fullmatch(key) is not None


def _scalar(text: str) -> Any:
    """A YAML scalar as YAML 1.2's core schema reads it (``3e-4`` is a number, ``yes`` text)."""
    plain = text.strip()
    if plain in ("", "~", "null", "Null", "NULL"):
        return None
    if plain in ("true", "True", "TRUE"):
        return True
    if plain in ("false", "False", "FALSE"):
        return False
    if re.fullmatch(r"[-+]?[0-9]+", plain):
        return int(plain)
    if re.fullmatch(r"0x[0-9a-fA-F]+", plain):
        return int(plain, 16)
    if _FLOAT.fullmatch(plain):
        return float(plain)
    if len(plain) >= 2 and plain[0] == plain[-1] and plain[0] in "'\"":
        return plain[1:-1]
    return text


def parse_overrides(tokens: Sequence[str], only: Collection[str] | None = None) -> dict[str, Any]:
    """``["generate.max_tokens=256", "phase1.epochs=2"]`` as nested data, each checked by the
    schema. ``only`` limits the top-level keys a command reads.

    Raises:
        ConfigError: at ``command line:1:COLUMN``, one finding per bad override, naming the
            closest known key for an unknown one.
    """
    out: dict[str, Any] = {}
    findings: list[Finding] = []
    column = 1
    for token in tokens:
        for problem in _override_problems(token, only):
            findings.append(
                Finding("config.override", Severity.ERROR, 1, column, f"{token!r}: {problem}")
            )
        if not findings:
            key, _, text = token.partition("=")
            section, _, name = key.partition(".")
            if name:
                out.setdefault(section, {})[name] = _scalar(text)
            else:
                out[section] = _scalar(text)
        column += len(token) + 1
    if findings:
        raise ConfigError(COMMAND_LINE, findings)
    return out


def _override_problems(token: str, only: Collection[str] | None) -> list[str]:
    if len(token) > _MAX_OVERRIDE_CHARS:
        return [f"longer than {_MAX_OVERRIDE_CHARS} characters"]
    key, sep, text = token.partition("=")
    if not sep or _KEY.fullmatch(key) is None:
        return ["expected KEY=VALUE, with a dotted key such as generate.max_tokens=256"]
    if only is not None and key.split(".", 1)[0] not in only:
        allowed = [k for k in known_keys() if k.split(".", 1)[0] in only]
        if key in known_keys():
            return [f"'{key}' does not apply to this command (it reads {', '.join(sorted(only))})"]
        return [_unknown(key, allowed)]
    return _check_one(key, _scalar(text))


# -- resolving --------------------------------------------------------------------------------


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _build(cls: type[Any], data: Mapping[str, Any]) -> Any:
    values = {}
    for f in fields(cls):
        value = data[f.name]
        if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # the schema's "number" takes 1 for 1.0
        values[f.name] = value
    return cls(**values)


def _typed(data: Mapping[str, Any], source: str) -> BuildConfig:
    top = {k: v for k, v in data.items() if k not in _SECTIONS}
    sections = {name: _build(cls, data[name]) for name, cls in _SECTIONS.items()}
    cfg: BuildConfig = _build(BuildConfig, {**top, **sections})
    problems = [
        f"'{name}.micro_batch_tokens' ({p.micro_batch_tokens}) must be at least "
        f"'{name}.max_seq_len' ({p.max_seq_len}): a sample must fit in one packed row"
        for name, p in (("phase1", cfg.phase1), ("phase2", cfg.phase2))
        if p.micro_batch_tokens < p.max_seq_len
    ]
    if problems:
        raise ConfigError(
            source, [Finding("config.invalid", Severity.ERROR, 1, 1, p) for p in problems]
        )
    return cfg


def _read_yaml(raw: bytes, source: str) -> tuple[dict[str, Any], Any]:
    """A YAML mapping and its node tree, or a located ConfigError."""
    loaded = load_yaml(raw)
    if loaded.errors:
        raise ConfigError(source, loaded.errors)
    data, root = loaded.data, loaded.root
    if root is None:
        return {}, None
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [Finding("config.type", Severity.ERROR, 1, 1, "must be a mapping of keys to values")],
        )
    found = validate(data, SCHEMA, root)
    problems = sorted((_worded(f) for f in found), key=lambda f: (f.line, f.column))
    if problems:
        raise ConfigError(source, problems)
    return data, root


def _worded(finding: Finding) -> Finding:
    """A schema finding that names its key, and for an unexpected key the known key it most
    likely meant."""
    if not finding.path:
        return finding
    dotted = finding.path.lstrip(".")
    if finding.rule == "schema.invalid":
        return replace(finding, message=f"'{dotted}': {finding.message}")
    if finding.rule != "schema.unexpected-key":
        return finding
    guess = closest_key(dotted)
    if guess is None:
        return finding
    return replace(finding, message=f"{finding.message}; did you mean '{guess}'?")


@functools.cache
def _default_data() -> dict[str, Any]:
    source = str(Path(__file__).parent / DEFAULTS_NAME)
    raw = resources.files("pipeline.training").joinpath(DEFAULTS_NAME).read_bytes()
    data, _ = _read_yaml(raw, source)
    missing = [k for k in known_keys() if _get(data, k) is _MISSING]
    if missing:
        raise ConfigError(
            source,
            [
                Finding("config.missing-key", Severity.ERROR, 1, 1, f"no default for '{k}'")
                for k in missing
            ],
        )
    return data


_MISSING = object()


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    value = data.get(section, _MISSING)
    if key:
        return value.get(key, _MISSING) if isinstance(value, Mapping) else _MISSING
    return value


def default_data() -> dict[str, Any]:
    """The defaults as plain data (a copy)."""
    return copy.deepcopy(_default_data())


@functools.cache
def defaults() -> BuildConfig:
    """The defaults, typed."""
    return _typed(_default_data(), DEFAULTS_NAME)


def resolve(
    data: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    *,
    only: Collection[str] | None = None,
    source: str = "build config",
) -> BuildConfig:
    """The defaults, then ``data`` (already-read settings: a file's, or flags'), then the
    ``key=value`` ``overrides``.

    Raises:
        ConfigError: naming every unknown key (and the closest known one) and wrong value.
    """
    data = data or {}
    problems = _check_plain(data) if not isinstance(data, _Checked) else []
    if problems:
        raise ConfigError(
            source, [Finding("config.invalid", Severity.ERROR, 1, 1, p) for p in problems]
        )
    over = parse_overrides(overrides, only)
    return _typed(_merge(_merge(_default_data(), data), over), source)


class _Checked(dict[str, Any]):
    """Data a schema already checked with located findings (a file's)."""


def load(path: Path | None = None, overrides: Sequence[str] = ()) -> BuildConfig:
    """A build config file (any subset of the keys; ``None``: none), then ``overrides``.

    Raises:
        ConfigError: located in the file (``path:line:column``) or on the command line.
    """
    if path is None:
        return resolve(None, overrides)
    data, _ = _read_yaml(path.read_bytes(), str(path))
    return resolve(_Checked(data), overrides, source=str(path))
