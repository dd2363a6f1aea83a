"""The App's settings, read from the environment once, at start-up (never at import).

:class:`Settings` is what the App uses. :func:`from_env` fills it from ``LABBOT_*`` variables
through a pydantic-settings model (:class:`_Variables`), the convention of FastAPI
applications, and turns pydantic's validation errors into one readable line per variable:
``labbot cannot start:`` then ``  - LABBOT_X must be ...``. Secret values are never repeated in
those lines. An empty variable counts as unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from bot.errors import SettingsError

DEFAULT_API_URL = "https://api.github.com"
MIN_RETENTION_DAYS = 4.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``labbot serve`` needs. Secrets are excluded from ``repr``."""

    app_id: int
    private_key: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    github_api_url: str = DEFAULT_API_URL
    data_dir: Path = Path("./labbot-data")
    workers: int = 2
    recovery_interval_seconds: float = 3 * 3600.0
    max_body_bytes: int = 25 * 1024 * 1024
    write_interval_seconds: float = 1.0
    lease_seconds: float = 60.0
    teacher: str = field(default="embedded", repr=False)  # a URL may carry credentials
    teacher_concurrency: int = 4
    preview_seconds: float = 300.0
    teacher_api_key: str = field(default="", repr=False)
    teacher_timeout_seconds: float = 120.0
    retention_days: float = 30.0
    #: Time limit of one pull request's validation, and each validation child's memory.
    validate_seconds: float = 30.0
    validate_memory_mb: int = 1024
    #: A webhook body not received this long after its headers is dropped (408).
    body_timeout_seconds: float = 10.0
    #: When set, ``GET /metrics`` needs ``Authorization: Bearer <token>``.
    metrics_token: str = field(default="", repr=False)
    #: How long a user's permission to run commands is cached.
    permission_cache_seconds: float = 300.0
    #: Previews allowed per pull request and per installation in each window.
    preview_limit_per_pr: int = 3
    preview_limit_per_installation: int = 30
    preview_limit_window_seconds: float = 3600.0
    # postgresql://... : the queue, ledger and locks live in PostgreSQL, shared by replicas.
    # None: one SQLite file in data_dir, for a single process.
    database_url: str | None = field(default=None, repr=False)

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def database(self) -> Path:
        return self.data_dir / "labbot.sqlite3"


PREFIX = "LABBOT_"
#: Variables whose values never appear in an error message.
SECRET = frozenset(
    {"webhook_secret", "private_key", "teacher_api_key", "metrics_token", "database_url", "teacher"}
)
_POSITIVE = "{var} must be a positive number, not {value!r}"
#: What to say when a variable does not validate, by field; ``{var}`` is the variable's name
#: and ``{value}`` what it held (never used for :data:`SECRET` ones).
_MESSAGES = {
    "app_id": "{var} must be a number, not {value!r}",
    "workers": "{var} must be a number from 1 to 64, not {value!r}",
    "teacher_concurrency": "{var} must be a whole number of at least 1, not {value!r}",
    "write_interval_seconds": "{var} must be a number of seconds (0 or more), not {value!r}",
}


def _fail(message: str) -> PydanticCustomError:
    """A validation error whose message :func:`from_env` prints as it is."""
    return PydanticCustomError("labbot", message)


def _positive(default: float) -> Any:
    """A field holding a finite number above zero."""
    return Field(default, gt=0, allow_inf_nan=False)


class _Variables(BaseSettings):
    """The ``LABBOT_*`` variables, validated. Order matters: the private key's validator reads
    ``private_key_path``, so that comes first."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    app_id: int
    webhook_secret: str = Field("", validate_default=True)
    private_key_path: str = ""
    private_key: str = Field("", validate_default=True)
    github_api_url: str = DEFAULT_API_URL
    data_dir: str = "./labbot-data"
    workers: int = Field(2, ge=1, le=64)
    job_lease_seconds: float = _positive(60.0)
    teacher: str = "embedded"
    teacher_concurrency: int = Field(4, ge=1)
    preview_seconds: float = _positive(300.0)
    write_interval_seconds: float = Field(1.0, ge=0, allow_inf_nan=False)
    teacher_api_key: str = ""
    teacher_timeout_seconds: float = _positive(120.0)
    retention_days: float = _positive(30.0)
    validate_seconds: float = _positive(30.0)
    validate_memory_mb: float = _positive(1024)
    body_timeout_seconds: float = _positive(10.0)
    metrics_token: str = ""
    permission_cache_seconds: float = _positive(300.0)
    preview_limit_per_pr: float = _positive(3)
    preview_limit_per_installation: float = _positive(30)
    preview_limit_window_seconds: float = _positive(3600.0)
    database_url: str | None = None

    @field_validator("webhook_secret")
    @classmethod
    def _secret_is_set(cls, value: str) -> str:
        if not value:
            raise _fail(
                "LABBOT_WEBHOOK_SECRET is not set: the App refuses unsigned webhooks, so it "
                "needs the secret you entered when registering the App"
            )
        return value

    @field_validator("private_key")
    @classmethod
    def _key_is_readable(cls, value: str, info: ValidationInfo) -> str:
        path = str(info.data.get("private_key_path") or "")
        if not value and path:
            try:
                value = Path(path).read_text()
            except OSError as exc:
                raise _fail(
                    f"LABBOT_PRIVATE_KEY_PATH={path} cannot be read: {exc.strerror}"
                ) from None
        if not value:
            raise _fail(
                "no private key: set LABBOT_PRIVATE_KEY (the PEM text) or "
                "LABBOT_PRIVATE_KEY_PATH (a file holding it), as downloaded from the App's "
                "settings page"
            )
        if "PRIVATE KEY" not in value:
            raise _fail(
                "the private key is not a PEM private key (-----BEGIN ... PRIVATE KEY-----)"
            )
        from bot.github import load_private_key

        try:
            load_private_key(value)
        except ValueError as exc:
            raise _fail(f"{exc}; download a new one from the App's settings page") from None
        return value

    @field_validator("retention_days")
    @classmethod
    def _retention_covers_the_log(cls, value: float) -> float:
        if value < MIN_RETENTION_DAYS:
            raise _fail(
                f"LABBOT_RETENTION_DAYS must be at least {MIN_RETENTION_DAYS:g}: recovery "
                "compares GitHub's delivery log (3 days) with the deliveries labbot recorded"
            )
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_only(cls, value: object) -> object:
        text = str(value or "").strip()
        if not text:
            return None
        if not text.startswith(("postgresql://", "postgres://")):
            raise _fail(
                "LABBOT_DATABASE_URL must be a PostgreSQL URL (postgresql://user:password@host"
                ":5432/labbot), or unset to keep the SQLite file in LABBOT_DATA_DIR"
            )
        return text


class _Source(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``;
    empty values count as unset."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = {k.lower(): v for k, v in variables.items() if k.startswith(PREFIX) and v}
        super().__init__(_Variables, env_prefix=PREFIX)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._variables


def _problem(error: Any, variables: Mapping[str, str]) -> str:
    """One line for one pydantic error: the variable, what it must be, never a secret."""
    name = str(error["loc"][0]) if error.get("loc") else ""
    var = PREFIX + name.upper()
    if error["type"] == "labbot":
        return str(error["msg"])
    if error["type"] == "missing" and name == "app_id":
        return f"{var} is not set (the App ID from the App's settings page)"
    if name in SECRET:
        return f"{var} is invalid: {error['msg']}"
    value = variables.get(var, "")
    template = _MESSAGES.get(name, _POSITIVE)
    return template.format(var=var, value=value)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``LABBOT_*`` variables (``os.environ`` unless ``env`` is given).

    Raises:
        SettingsError: naming every missing or invalid variable, one line each.
    """
    variables = os.environ if env is None else env
    try:
        # _build_sources: pydantic-settings' hook for given sources (its mypy plugin omits it).
        v = _Variables(_build_sources=((_Source(variables),), {}))  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = [_problem(e, variables) for e in exc.errors(include_url=False)]
        raise SettingsError(problems) from None
    return Settings(
        app_id=v.app_id,
        private_key=v.private_key,
        webhook_secret=v.webhook_secret,
        github_api_url=v.github_api_url.rstrip("/"),
        data_dir=Path(v.data_dir),
        workers=v.workers,
        lease_seconds=v.job_lease_seconds,
        teacher=v.teacher,
        teacher_concurrency=v.teacher_concurrency,
        preview_seconds=v.preview_seconds,
        write_interval_seconds=v.write_interval_seconds,
        teacher_api_key=v.teacher_api_key,
        teacher_timeout_seconds=v.teacher_timeout_seconds,
        retention_days=v.retention_days,
        validate_seconds=v.validate_seconds,
        validate_memory_mb=int(v.validate_memory_mb),
        body_timeout_seconds=v.body_timeout_seconds,
        metrics_token=v.metrics_token,
        permission_cache_seconds=v.permission_cache_seconds,
        preview_limit_per_pr=int(v.preview_limit_per_pr),
        preview_limit_per_installation=int(v.preview_limit_per_installation),
        preview_limit_window_seconds=v.preview_limit_window_seconds,
        database_url=v.database_url,
    )
