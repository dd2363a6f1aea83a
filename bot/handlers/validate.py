"""Validating a pull request: every changed taxonomy file, each in an isolated validator under
one time limit, reported as a check run, the summary comment and labels.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import time
from typing import Any

from bot import overlap, render
from bot.errors import GitHubError
from bot.github import Unreadable
from bot.handlers.access import auto_preview, preview_wait
from bot.handlers.common import Context, check_superseded, in_taxonomy, load_config
from bot.handlers.router import Event, Router
from bot.handlers.sticky import upsert_sticky
from bot.isolation import (
    STOPPED_RULE,
    UNREADABLE_RULE,
    ValidatorFailed,
    failed,
)
from bot.state.jobs import Job, JobKind, JobSpec
from pipeline.config import RepoConfig
from pipeline.errors import ConfigError
from pipeline.taxonomy.findings import FileResult
from pipeline.taxonomy.validate import (
    ATTRIBUTION,
    PROFILES,
    Profile,
    _Missing,
    kind_from_path,
    validate_bytes,
)

log = logging.getLogger("labbot.handlers")

router = Router()

#: The name of the check run labbot keeps on a pull request's head.
VALIDATE_CHECK = "labbot/validate"

LABELS = {
    "knowledge": "labbot/knowledge",
    "compositional_skills": "labbot/skill",
    "foundational_skills": "labbot/skill",
}


def _validation(event: Event, number: int, sha: str, reason: str) -> JobSpec:
    return JobSpec.for_commit(
        JobKind.VALIDATE, event.repo, number, sha, event.installation_id, {"reason": reason}
    )


@router.event("pull_request", "opened", "synchronize", "reopened", "ready_for_review")
def on_pull_request(event: Event) -> list[JobSpec]:
    """A pull request's head to validate (unless the pull request is already closed)."""
    pr = event.payload.obj("pull_request")
    number = pr.integer("number")
    sha = pr.obj("head").sha("sha")
    if pr.opt_string("state") == "closed":
        return []
    return [_validation(event, number, sha, "pull_request")]


@router.event("check_suite", "requested", "rerequested")
def on_check_suite(event: Event) -> list[JobSpec]:
    """The suite's head, for each of its pull requests whose head it still is."""
    suite = event.payload.obj("check_suite")
    head = suite.sha("head_sha")
    jobs = []
    for pr in suite.objs("pull_requests"):
        number = pr.integer("number")
        pr_head = pr.opt_obj("head")
        if (pr_head.opt_string("sha") if pr_head else None) in (None, head):
            jobs.append(_validation(event, number, head, "check_suite"))
    return jobs


@router.event("check_run", "rerequested")
def on_check_run(event: Event) -> list[JobSpec]:
    """A re-run of labbot's check run asked for on GitHub."""
    run = event.payload.obj("check_run")
    if run.opt_string("name") != VALIDATE_CHECK:
        return []
    head = run.sha("head_sha")
    return [
        _validation(event, pr.integer("number"), head, "check_run")
        for pr in run.objs("pull_requests")
    ]


@router.job(JobKind.VALIDATE)
def validate_pull(job: Job, ctx: Context, head_sha: str | None = None) -> str:
    """Validate the pull request at ``head_sha`` (the job's commit by default)."""
    spec = job.spec
    inst, repo, number = spec.installation_id, spec.repo, int(spec.pr or 0)
    sha = head_sha or spec.commit
    client = ctx.client
    run_id = check_run(ctx, inst, repo, sha)
    try:
        config = load_config(ctx, inst, repo)
    except ConfigError as exc:
        out = render.config_error_output(str(exc))
        client.complete_check_run(
            inst,
            repo,
            run_id,
            conclusion=out.conclusion,
            title=out.title,
            summary=out.summary,
            annotations=[],
        )
        upsert_sticky(ctx, inst, repo, number, "validate", "### ❌ " + out.summary)
        return "config-error"

    pulled = client.pull_files(inst, repo, number)
    files = [
        f
        for f in pulled
        if f.get("status") != "removed" and in_taxonomy(str(f.get("filename", "")), config)
    ]
    raws: dict[str, bytes] = {}
    results: list[FileResult] = []
    profile = PROFILES[config.profile]
    # One time limit for the whole pull request: a file that hangs the validator, or many
    # slow ones, cannot hold a worker longer than this.
    deadline = time.monotonic() + ctx.validate_seconds
    for f in files:
        path = str(f["filename"])
        kind = kind_from_path(path)
        found = client.read_file(inst, repo, path, sha, max_bytes=config.max_file_bytes)
        if isinstance(found, Unreadable):
            results.append(failed(path, kind, UNREADABLE_RULE, found.reason, found.hint))
            continue
        raws[path] = found
        attribution = client.file_at(
            inst, repo, posixpath.join(posixpath.dirname(path), ATTRIBUTION), sha
        )
        results.append(
            validate_file(ctx, found, path, kind, profile, config, attribution, deadline)
        )
    check_superseded(job, ctx)
    links = check_overlap(ctx, inst, repo, config, results, raws, pulled)
    if links is not None:
        links = dataclasses.replace(links, head_sha=sha, changed=frozenset(raws))

    out = render.check_output(results)
    client.complete_check_run(
        inst,
        repo,
        run_id,
        conclusion=out.conclusion,
        title=out.title,
        summary=out.summary,
        annotations=out.annotations,
    )
    if results:
        section = render.validation_section(results, sha, links)
        upsert_sticky(ctx, inst, repo, number, "validate", section)
        labels = sorted({LABELS[k] for r in results if (k := r.kind) in LABELS})
        client.add_labels(inst, repo, number, labels)
        if out.conclusion == "success" and auto_preview(ctx, inst, repo, number, config):
            refused = preview_wait(ctx, inst, repo, number)
            if refused is None:
                ctx.queue.enqueue(
                    JobSpec.for_commit(JobKind.PREVIEW, repo, number, sha, inst, {"reason": "auto"})
                )
            else:
                upsert_sticky(
                    ctx, inst, repo, number, "preview", render.preview_unavailable(refused)
                )
    return out.conclusion


def validate_file(
    ctx: Context,
    raw: bytes,
    path: str,
    kind: str | None,
    profile: Profile,
    config: RepoConfig,
    attribution: bytes | None | _Missing,
    deadline: float,
) -> FileResult:
    """One file's verdict from the isolated validator; a verdict of failure, with the reason,
    when the validator gives none (it crashed, hung, ran out of memory or time)."""
    left = deadline - time.monotonic()
    if left <= 0:
        reason = (
            f"the time limit of {ctx.validate_seconds:g} s for this pull request ran out "
            "before this file"
        )
    else:
        if ctx.validator is None:
            return validate_bytes(raw, path, profile, config, attribution)
        try:
            return ctx.validator.validate(raw, path, profile, config, attribution, seconds=left)
        except ValidatorFailed as exc:
            log.warning("validation of %r gave no verdict: %s", path, exc.reason)
            reason = exc.reason
            if exc.timed_out:
                reason = (
                    f"timed out after {ctx.validate_seconds:g} s (the limit for one pull request)"
                )
    return failed(
        path,
        kind,
        STOPPED_RULE,
        f"could not be validated: {reason}",
        "This is a limit or a fault of labbot, and may not be your file's; split very large "
        "files, or ask a maintainer to look at the App's log. Push again to retry.",
    )


def check_overlap(
    ctx: Context,
    inst: int | None,
    repo: str,
    config: RepoConfig,
    results: list[FileResult],
    raws: dict[str, bytes],
    pulled: list[dict[str, Any]],
) -> render.OverlapLinks | None:
    """Add overlap findings (against the default branch's tree) to the results; what the
    comment needs to link them. A GitHub failure here costs the overlap check, never the
    validation."""
    if not config.overlap.enabled or not raws:
        return None
    removed = [
        str(f.get("previous_filename") or f.get("filename"))
        for f in pulled
        if f.get("status") in ("removed", "renamed")
    ]
    store = overlap.IndexStore(ctx.cache_dir / "overlap" if ctx.cache_dir else None)
    meaning = None
    if config.overlap.semantic:  # vectors by blob SHA, next to the lexical index
        meaning = overlap.Meaning(
            ctx.cache_dir / "semantic" if ctx.cache_dir else None,
            config.overlap.semantic_threshold,
            ctx.semantic_seconds,
        )
    try:
        with ctx.locks.hold(f"overlap:{repo}"):
            base = overlap.base_tree(
                ctx.client, inst, repo, config, store, ctx.overlap_max_blobs, meaning
            )
    except GitHubError as exc:
        log.warning("overlap check of %s skipped: %s", repo, exc)
        why = f"GitHub answered {exc.status} while the default branch was read"
        return render.OverlapLinks(repo, "", overlap.note(None, why))
    overlap.check_pull(base, results, raws, removed, config)
    return render.OverlapLinks(repo, base.commit, overlap.note(base))


def check_run(ctx: Context, inst: int | None, repo: str, sha: str) -> int:
    """Our check run on ``sha``: the existing one (a retried job) or a new one."""
    for existing in ctx.client.check_runs_for(inst, repo, sha, VALIDATE_CHECK):
        app = existing.get("app") or {}
        if existing.get("name") == VALIDATE_CHECK and (
            not app or f"{app.get('slug')}[bot]" == ctx.client.bot_login()
        ):
            run_id = int(existing["id"])
            if existing.get("status") == "completed":
                ctx.client.reopen_check_run(inst, repo, run_id)
            return run_id
    return ctx.client.create_check_run(inst, repo, sha, VALIDATE_CHECK)
