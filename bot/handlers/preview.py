"""The preview: a small generation budget over the pull request's changed leaves, shown in the
summary comment.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bot import render
from bot.handlers.common import Context, check_superseded, in_taxonomy, load_config
from bot.handlers.router import Router
from bot.handlers.sticky import upsert_sticky
from bot.handlers.validate import validate_file
from bot.state.jobs import Job, JobKind
from pipeline.config import RepoConfig
from pipeline.errors import ConfigError
from pipeline.taxonomy.validate import (
    NOT_LOOKED_UP,
    PROFILES,
)

if TYPE_CHECKING:
    from pipeline.sdg.generate import GenerateConfig

log = logging.getLogger("labbot.handlers")

router = Router()


def generation_settings(config: RepoConfig) -> GenerateConfig:
    """A preview's generation settings: the build's defaults (one file for both,
    pipeline/training/configs/default.yaml) with the repository's sample budget. A build whose
    settings agree finds the preview's generations in the cache."""
    from pipeline.training.config import defaults

    cfg = defaults()
    return cfg.generate.engine(cfg.seed, samples=config.preview.samples)


@router.job(JobKind.PREVIEW)
def preview(job: Job, ctx: Context) -> str:
    """Generate a small sample budget from the PR's changed leaves and show it in the sticky
    comment. A teacher failure is reported there, never swallowed."""
    from pipeline.errors import DocumentError, PipelineError
    from pipeline.redact import redact
    from pipeline.sdg.generate import generate_leaf
    from pipeline.sdg.teacher import TeacherError
    from pipeline.taxonomy.documents import leaf_documents
    from pipeline.taxonomy.leaves import leaf_from_bytes

    spec = job.spec
    inst, repo, number, sha = spec.installation_id, spec.repo, int(spec.pr or 0), spec.commit
    client = ctx.client

    def unavailable(reason: str) -> None:
        upsert_sticky(ctx, inst, repo, number, "preview", render.preview_unavailable(reason))

    if ctx.teacher is None:
        unavailable("no teacher is configured for this App")
        return "no-teacher"
    try:
        config = load_config(ctx, inst, repo)
    except ConfigError as exc:
        unavailable(f"invalid .github/labbot.yml: {exc}")
        return "config-error"
    settings = generation_settings(config)
    seconds = config.preview.time_limit_seconds or ctx.preview_seconds
    leaves = []
    root = (config.taxonomy_root or "").strip("/")
    for f in client.pull_files(inst, repo, number):
        path = str(f.get("filename", ""))
        if f.get("status") == "removed" or not in_taxonomy(path, config):
            continue
        raw = client.file_at(inst, repo, path, sha)
        # Parsed here only once the isolated validator found it valid (see validate_file).
        if (
            raw is None
            or not validate_file(
                ctx,
                raw,
                path,
                None,
                PROFILES["pr"],
                config,
                NOT_LOOKED_UP,
                time.monotonic() + ctx.validate_seconds,
            ).valid
        ):
            continue
        rel = path[len(root) + 1 :] if root and path.startswith(root + "/") else path
        leaf = leaf_from_bytes(rel, raw)
        if leaf is not None:
            leaves.append(leaf)
    deadline = time.monotonic() + seconds
    results = []
    try:
        teacher = ctx.teacher()
        cache = ctx.cache_dir or Path("labbot-cache")
        for leaf in leaves:
            docs = leaf_documents(leaf, config, cache / "documents")
            results.append(
                generate_leaf(
                    leaf,
                    teacher,
                    settings,
                    docs,
                    cache_dir=cache,
                    deadline=deadline,
                )
            )
    except PipelineError as exc:  # TeacherError, DocumentError, a missing embedded model
        # The comment names the teacher's model, never its address, and never quotes the
        # teacher server; the details (credentials masked) go to the App's log.
        log.warning("preview of %s#%d failed: %s", repo, number, redact(str(exc)))
        if isinstance(exc, TeacherError):
            reason = exc.public
        elif isinstance(exc, DocumentError):
            reason = redact(str(exc))  # about the contributor's own document repository
        else:
            reason = "the teacher could not be started (the App's log says why)"
        check_superseded(job, ctx)
        unavailable(reason)
        return "preview-failed"
    check_superseded(job, ctx)
    body = render.preview_section(results, sha, teacher.public_name)
    upsert_sticky(ctx, inst, repo, number, "preview", body)
    return f"previewed {len(results)} leaves"
