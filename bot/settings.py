"""The App's settings, read from the environment once, at start-up (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import SettingsError

DEFAULT_API_URL = "https://api.github.com"


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
    teacher: str = "embedded"
    teacher_concurrency: int = 4
    preview_seconds: float = 300.0
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
        database_url=database_url,
    )
