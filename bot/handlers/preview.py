"""The preview: a small generation budget over the pull request's changed leaves, shown in the
summary comment.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bot import render
from bot.handlers.access import preview_settings
from bot.handlers.common import Context, check_superseded, in_taxonomy, load_config
from bot.handlers.sticky import upsert_sticky
from bot.handlers.validate import validate_file
from bot.state.jobs import Job
from pipeline.errors import ConfigError
from pipeline.taxonomy.validate import (
    NOT_LOOKED_UP,
    PROFILES,
)

log = logging.getLogger("labbot.handlers")


def preview(job: Job, ctx: Context) -> str:
    """Generate a small sample budget from the PR's changed leaves and show it in the sticky
    comment. A teacher failure is reported there, never swallowed."""
    from pipeline.errors import DocumentError, PipelineError
    from pipeline.redact import redact
    from pipeline.sdg.generate import GenerateConfig, generate_leaf
    from pipeline.sdg.teacher import TeacherError
    from pipeline.taxonomy.documents import read_documents
    from pipeline.taxonomy.leaves import KNOWLEDGE, leaf_from_data
    from pipeline.taxonomy.yamlsource import compose, construct, decode

    spec = job.spec
    inst, repo, number, sha = spec.installation_id, spec.repo, int(spec.pr or 0), spec.head_sha
    client = ctx.client
    if ctx.teacher is None:
        upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "preview",
            render.preview_unavailable("no teacher is configured for this App"),
        )
        return "no-teacher"
    try:
        config = load_config(ctx, inst, repo)
    except ConfigError as exc:
        upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "preview",
            render.preview_unavailable(f"invalid .github/labbot.yml: {exc}"),
        )
        return "config-error"
    settings = preview_settings(config)
    samples = int(settings.get("samples", 6))
    seconds = float(settings.get("time_limit_seconds", ctx.preview_seconds))
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
        text, _ = decode(raw)
        node = compose(text)[0] if text is not None else None
        data = construct(node)[0] if node is not None else None
        if isinstance(data, dict):
            rel = path[len(root) + 1 :] if root and path.startswith(root + "/") else path
            leaves.append(leaf_from_data(rel, data))
    deadline = time.monotonic() + seconds
    results = []
    try:
        teacher = ctx.teacher()
        cache = ctx.cache_dir or Path("labbot-cache")
        for leaf in leaves:
            docs: list[str] = []
            if leaf.kind == KNOWLEDGE and leaf.document is not None:
                docs = [
                    t
                    for _, t in read_documents(
                        leaf.document.repo,
                        leaf.document.commit,
                        leaf.document.patterns,
                        config,
                        cache / "documents",
                    )
                ]
            results.append(
                generate_leaf(
                    leaf,
                    teacher,
                    GenerateConfig(samples=samples),
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
        upsert_sticky(ctx, inst, repo, number, "preview", render.preview_unavailable(reason))
        return "preview-failed"
    check_superseded(job, ctx)
    body = render.preview_section(results, sha, teacher.public_name)
    upsert_sticky(ctx, inst, repo, number, "preview", body)
    return f"previewed {len(results)} leaves"
