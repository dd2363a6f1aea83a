"""The App's settings, read from the environment once, at start-up (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``LABBOT_*`` variables.

    Raises:
        SettingsError: naming every missing or invalid variable.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    secret = env.get("LABBOT_WEBHOOK_SECRET", "")
    if not secret:
        problems.append(
            "LABBOT_WEBHOOK_SECRET is not set: the App refuses unsigned webhooks, so it needs "
            "the secret you entered when registering the App"
        )
    key = env.get("LABBOT_PRIVATE_KEY", "")
    key_path = env.get("LABBOT_PRIVATE_KEY_PATH", "")
    if not key and key_path:
        try:
            key = Path(key_path).read_text()
        except OSError as exc:
            problems.append(f"LABBOT_PRIVATE_KEY_PATH={key_path} cannot be read: {exc.strerror}")
    if not key and not key_path:
        problems.append(
            "no private key: set LABBOT_PRIVATE_KEY (the PEM text) or LABBOT_PRIVATE_KEY_PATH "
            "(a file holding it), as downloaded from the App's settings page"
        )
    elif key and "PRIVATE KEY" not in key:
        problems.append(
            "the private key is not a PEM private key (-----BEGIN ... PRIVATE KEY-----)"
        )
    elif key:
        from bot.github import load_private_key

        try:
            load_private_key(key)
        except ValueError as exc:
            problems.append(f"{exc}; download a new one from the App's settings page")
    app_id_text = env.get("LABBOT_APP_ID", "")
    app_id = 0
    if not app_id_text:
        problems.append("LABBOT_APP_ID is not set (the App ID from the App's settings page)")
    else:
        try:
            app_id = int(app_id_text)
        except ValueError:
            problems.append(f"LABBOT_APP_ID must be a number, not {app_id_text!r}")
    workers_text = env.get("LABBOT_WORKERS", "2")
    try:
        workers = int(workers_text)
        if not 1 <= workers <= 64:
            raise ValueError
    except ValueError:
        problems.append(f"LABBOT_WORKERS must be a number from 1 to 64, not {workers_text!r}")
        workers = 2
    lease_text = env.get("LABBOT_JOB_LEASE_SECONDS", "60")
    try:
        lease = float(lease_text)
        if lease <= 0:
            raise ValueError
    except ValueError:
        problems.append(f"LABBOT_JOB_LEASE_SECONDS must be a positive number, not {lease_text!r}")
        lease = 60.0
    teacher_timeout = _positive(env, "LABBOT_TEACHER_TIMEOUT_SECONDS", 120.0, problems)
    retention_days = _positive(env, "LABBOT_RETENTION_DAYS", 30.0, problems)
    if retention_days < MIN_RETENTION_DAYS:
        problems.append(
            f"LABBOT_RETENTION_DAYS must be at least {MIN_RETENTION_DAYS:g}: recovery compares "
            "GitHub's delivery log (3 days) with the deliveries labbot recorded"
        )
    validate_seconds = _positive(env, "LABBOT_VALIDATE_SECONDS", 30.0, problems)
    validate_memory = _positive(env, "LABBOT_VALIDATE_MEMORY_MB", 1024, problems)
    body_timeout = _positive(env, "LABBOT_BODY_TIMEOUT_SECONDS", 10.0, problems)
    permission_cache = _positive(env, "LABBOT_PERMISSION_CACHE_SECONDS", 300.0, problems)
    per_pr = _positive(env, "LABBOT_PREVIEW_LIMIT_PER_PR", 3, problems)
    per_installation = _positive(env, "LABBOT_PREVIEW_LIMIT_PER_INSTALLATION", 30, problems)
    preview_window = _positive(env, "LABBOT_PREVIEW_LIMIT_WINDOW_SECONDS", 3600.0, problems)
    database_url = env.get("LABBOT_DATABASE_URL", "").strip() or None
    if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
        problems.append(
            "LABBOT_DATABASE_URL must be a PostgreSQL URL (postgresql://user:password@host:5432"
            "/labbot), or unset to keep the SQLite file in LABBOT_DATA_DIR"
        )
    if problems:
        raise SettingsError("labbot cannot start:\n  - " + "\n  - ".join(problems))
    return Settings(
        app_id=app_id,
        private_key=key,
        webhook_secret=secret,
        github_api_url=env.get("LABBOT_GITHUB_API_URL", DEFAULT_API_URL).rstrip("/"),
        data_dir=Path(env.get("LABBOT_DATA_DIR", "./labbot-data")),
        workers=workers,
        lease_seconds=lease,
        teacher=env.get("LABBOT_TEACHER", "embedded"),
        teacher_concurrency=int(env.get("LABBOT_TEACHER_CONCURRENCY", "4") or 4),
        preview_seconds=float(env.get("LABBOT_PREVIEW_SECONDS", "300") or 300),
        write_interval_seconds=float(env.get("LABBOT_WRITE_INTERVAL_SECONDS", "1.0")),
        teacher_api_key=env.get("LABBOT_TEACHER_API_KEY", ""),
        teacher_timeout_seconds=teacher_timeout,
        retention_days=retention_days,
        validate_seconds=validate_seconds,
        validate_memory_mb=int(validate_memory),
        body_timeout_seconds=body_timeout,
        metrics_token=env.get("LABBOT_METRICS_TOKEN", ""),
        permission_cache_seconds=permission_cache,
        preview_limit_per_pr=int(per_pr),
        preview_limit_per_installation=int(per_installation),
        preview_limit_window_seconds=preview_window,
        database_url=database_url,
    )


def _positive(env: Mapping[str, str], name: str, default: float, problems: list[str]) -> float:
    """A positive number from ``env[name]``; a bad value is added to ``problems``."""
    text = env.get(name, "") or str(default)
    try:
        value = float(text)
        if not 0 < value < float("inf"):
            raise ValueError
    except ValueError:
        problems.append(f"{name} must be a positive number, not {text!r}")
        return default
    return value
