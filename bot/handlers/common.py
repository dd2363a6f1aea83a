"""What every handler shares: the :class:`Context` a job runs in, the repository's config, and
the check that a newer push has not replaced the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import Superseded as Superseded  # re-exported: handlers raise it here
from bot.github import GitHubClient
from bot.handlers.sticky import KeyedLocks
from bot.isolation import IsolatedValidator
from bot.metrics import Metrics
from bot.state import Ledger, Limits, Locks, Queue
from bot.state.jobs import Job
from bot.state.limits import PreviewLimits
from pipeline.config import CONFIG_PATH, RepoConfig, parse_config
from pipeline.taxonomy.discover import is_qna_path

if TYPE_CHECKING:
    from pipeline.sdg.teacher import Teacher


log = logging.getLogger("labbot.handlers")


@dataclass
class Context:
    client: GitHubClient
    queue: Queue
    metrics: Metrics
    teacher: Callable[[], Teacher] | None = None  # None: previews are off
    builds: Ledger | None = None
    cache_dir: Path | None = None
    preview_seconds: float = 300.0
    locks: Locks = field(default_factory=KeyedLocks)
    #: Validates contributors' files in child processes; None validates in this process.
    validator: IsolatedValidator | None = None
    validate_seconds: float = 30.0
    #: Blobs one validation may download to bring the default branch's overlap index up to date.
    overlap_max_blobs: int = 2000
    #: Seconds one validation may spend embedding the default branch for the semantic pass.
    semantic_seconds: float = 60.0
    #: Cached permissions, answered refusals, preview counts; None: no caching, no limits.
    limits: Limits | None = None
    preview_limits: PreviewLimits = field(default_factory=PreviewLimits)


def load_config(ctx: Context, inst: int | None, repo: str) -> RepoConfig:
    """The repository's config from its default branch (defaults when there is none).

    Raises:
        ConfigError: when the file exists and is invalid.
    """
    branch = ctx.client.default_branch(inst, repo)
    raw = ctx.client.file_at(inst, repo, CONFIG_PATH, branch)
    return RepoConfig() if raw is None else parse_config(raw, CONFIG_PATH)


def in_taxonomy(path: str, config: RepoConfig) -> bool:
    if not is_qna_path(path):
        return False
    root = (config.taxonomy_root or "").strip("/")
    return not root or root == "." or path.startswith(root + "/")


def check_superseded(job: Job, ctx: Context) -> None:
    if ctx.queue.is_superseded(job.id):
        raise Superseded(job.spec.dedupe_key)
