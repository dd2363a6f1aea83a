"""What each job does: validate a pull request, answer a command, recover missed work.

Handlers talk to GitHub only through :class:`bot.github.GitHubClient` and never check out or
run anything from a pull request: files are read through the contents API at the head SHA.
Every write is idempotent, so a job retried after a failure leaves one check run and one
comment, not two.
"""

from __future__ import annotations

import logging
import posixpath
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import markup, render
from bot.backend import Ledger, Limits, Locks, Queue
from bot.builds import BuildRecord, run_mismatch
from bot.errors import GitHubError
from bot.github import GitHubClient, Unreadable, repo_path, seg
from bot.isolation import (
    STOPPED_RULE,
    UNREADABLE_RULE,
    IsolatedValidator,
    ValidatorFailed,
    failed,
)
from bot.limits import PreviewLimits, minutes
from bot.metrics import Metrics
from bot.queue import Job, JobSpec
from bot.webhook import VALIDATE_CHECK
from pipeline.config import CONFIG_PATH, RepoConfig, parse_config
from pipeline.discover import is_candidate
from pipeline.errors import ConfigError
from pipeline.findings import FileResult
from pipeline.validate import (
    ATTRIBUTION,
    NOT_LOOKED_UP,
    PROFILES,
    Profile,
    _Missing,
    kind_from_path,
    validate_bytes,
)

if TYPE_CHECKING:
    from pipeline.teacher import Teacher

log = logging.getLogger("labbot.handlers")

WRITE_ROLES = {"admin", "maintain", "write"}
LABELS = {
    "knowledge": "labbot/knowledge",
    "compositional_skills": "labbot/skill",
    "foundational_skills": "labbot/skill",
}


class KeyedLocks:
    """One lock per key (a PR's summary comment, say), for the worker threads of a process."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def hold(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    @contextmanager
    def try_hold(self, key: str) -> Iterator[bool]:
        """The lock on ``key`` if it is free: the block gets False when another thread holds it."""
        lock = self.hold(key)
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()


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
    #: Cached permissions, answered refusals, preview counts; None: no caching, no limits.
    limits: Limits | None = None
    preview_limits: PreviewLimits = field(default_factory=PreviewLimits)


class Superseded(Exception):
    """A newer push replaced this job's head SHA; its result must not be posted."""


def run(job: Job, ctx: Context) -> str:
    """Run one leased job; returns its outcome. GitHub errors propagate for the retry policy."""
    kind = job.spec.kind
    if kind == "validate":
        return validate_pull(job, ctx)
    if kind.startswith("command"):
        return command(job, ctx)
    if kind == "recover":
        return recover(job, ctx)
    if kind == "preview":
        return preview(job, ctx)
    if kind == "build-request":
        return build_request(job, ctx)
    if kind.startswith("build-status"):
        return build_status(job, ctx)
    if kind.startswith("build-job"):
        return build_job(job, ctx)
    log.warning("unknown job kind %s", kind)
    return "ignored"


def load_config(ctx: Context, inst: int | None, repo: str) -> RepoConfig:
    """The repository's config from its default branch (defaults when there is none).

    Raises:
        ConfigError: when the file exists and is invalid.
    """
    branch = ctx.client.default_branch(inst, repo)
    raw = ctx.client.file_at(inst, repo, CONFIG_PATH, branch)
    return RepoConfig() if raw is None else parse_config(raw, CONFIG_PATH)


def _in_taxonomy(path: str, config: RepoConfig) -> bool:
    if not is_candidate(posixpath.basename(path)):
        return False
    root = (config.taxonomy_root or "").strip("/")
    return not root or root == "." or path.startswith(root + "/")


def _check_superseded(job: Job, ctx: Context) -> None:
    if ctx.queue.is_superseded(job.id):
        raise Superseded(job.spec.head_sha)


def validate_pull(job: Job, ctx: Context, head_sha: str | None = None) -> str:
    spec = job.spec
    inst, repo, number = spec.installation_id, spec.repo, int(spec.pr or 0)
    sha = head_sha or spec.head_sha
    client = ctx.client
    run_id = _check_run(ctx, inst, repo, sha)
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
        _upsert_sticky(ctx, inst, repo, number, "validate", "### ❌ " + out.summary)
        return "config-error"

    files = [
        f
        for f in client.pull_files(inst, repo, number)
        if f.get("status") != "removed" and _in_taxonomy(str(f.get("filename", "")), config)
    ]
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
        attribution = client.file_at(
            inst, repo, posixpath.join(posixpath.dirname(path), ATTRIBUTION), sha
        )
        results.append(_validate(ctx, found, path, kind, profile, config, attribution, deadline))
    _check_superseded(job, ctx)

    out = render.check_output(results, {})
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
        _upsert_sticky(
            ctx, inst, repo, number, "validate", render.validation_section(results, {}, sha)
        )
        labels = sorted({LABELS[k] for r in results if (k := r.kind) in LABELS})
        client.add_labels(inst, repo, number, labels)
        if out.conclusion == "success" and _auto_preview(ctx, inst, repo, number, config):
            refused = preview_wait(ctx, inst, repo, number)
            if refused is None:
                ctx.queue.enqueue(JobSpec("preview", repo, number, sha, inst, {"reason": "auto"}))
            else:
                _upsert_sticky(
                    ctx, inst, repo, number, "preview", render.preview_unavailable(refused)
                )
    return out.conclusion


def _validate(
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


def _preview_settings(config: RepoConfig) -> dict[str, Any]:
    raw = config.raw.get("preview")
    return raw if isinstance(raw, dict) else {}


def _auto_preview(
    ctx: Context, inst: int | None, repo: str, number: int, config: RepoConfig
) -> bool:
    """Previews start by themselves for authors with write access, or for everyone when the
    repository's config says ``preview: {everyone: true}``."""
    settings = _preview_settings(config)
    if ctx.teacher is None or settings.get("enabled") is False:
        return False
    if settings.get("everyone"):
        return True
    author = str(ctx.client.pull(inst, repo, number).get("user", {}).get("login", ""))
    return ctx.client.permission(inst, repo, author) in WRITE_ROLES


def preview(job: Job, ctx: Context) -> str:
    """Generate a small sample budget from the PR's changed leaves and show it in the sticky
    comment. A teacher failure is reported there, never swallowed."""
    from pipeline.documents import read_documents
    from pipeline.errors import DocumentError, PipelineError
    from pipeline.generate import GenerateConfig, generate_leaf
    from pipeline.leaves import KNOWLEDGE, leaf_from_data
    from pipeline.redact import redact
    from pipeline.teacher import TeacherError
    from pipeline.yamlsource import compose, construct, decode

    spec = job.spec
    inst, repo, number, sha = spec.installation_id, spec.repo, int(spec.pr or 0), spec.head_sha
    client = ctx.client
    if ctx.teacher is None:
        _upsert_sticky(
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
        _upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "preview",
            render.preview_unavailable(f"invalid .github/labbot.yml: {exc}"),
        )
        return "config-error"
    settings = _preview_settings(config)
    samples = int(settings.get("samples", 6))
    seconds = float(settings.get("time_limit_seconds", ctx.preview_seconds))
    leaves = []
    root = (config.taxonomy_root or "").strip("/")
    for f in client.pull_files(inst, repo, number):
        path = str(f.get("filename", ""))
        if f.get("status") == "removed" or not _in_taxonomy(path, config):
            continue
        raw = client.file_at(inst, repo, path, sha)
        # Parsed here only once the isolated validator found it valid (see _validate).
        if (
            raw is None
            or not _validate(
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
        _check_superseded(job, ctx)
        _upsert_sticky(ctx, inst, repo, number, "preview", render.preview_unavailable(reason))
        return "preview-failed"
    _check_superseded(job, ctx)
    body = render.preview_section(results, sha, teacher.public_name)
    _upsert_sticky(ctx, inst, repo, number, "preview", body)
    return f"previewed {len(results)} leaves"


def _check_run(ctx: Context, inst: int | None, repo: str, sha: str) -> int:
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


def _upsert_sticky(
    ctx: Context, inst: int | None, repo: str, number: int, section: str, text: str
) -> None:
    """Set one section of the PR's single summary comment.

    Jobs of one PR run on several workers (a validation and a command, say): without the lock
    two of them could both find no comment and both create one, or overwrite each other's
    section. Duplicates that still appear (two App processes) are merged into the oldest
    comment, newer sections winning, and deleted."""
    with ctx.locks.hold(f"sticky:{repo}#{number}"):
        found = ctx.client.find_stickies(inst, repo, number, render.STICKY_MARKER)
        sections: dict[str, str] = {}
        for comment in found:
            sections.update(render.sections_of(comment.get("body") or ""))
        sections[section] = text
        body = render.sticky_body(sections)
        if not found:
            ctx.client.create_comment(inst, repo, number, body)
            return
        if found[0].get("body") != body:
            ctx.client.edit_comment(inst, repo, int(found[0]["id"]), body)
        for extra in found[1:]:
            ctx.client.delete_comment(inst, repo, int(extra["id"]))


def _may_command(ctx: Context, inst: int | None, repo: str, user: str) -> bool:
    """Whether ``user`` may run commands: write access, or the config's allowlist. The answer
    is cached (``ctx.limits``) so that repeated commands cost no API call."""
    cached = ctx.limits.permission(repo, user) if ctx.limits is not None else None
    if cached is not None:
        return cached
    allowed = ctx.client.permission(inst, repo, user) in WRITE_ROLES
    if not allowed:
        try:
            config = load_config(ctx, inst, repo)
            commands = config.raw.get("commands")
            allowlist = commands.get("allowed_users") if isinstance(commands, dict) else None
            allowed = isinstance(allowlist, list) and any(
                isinstance(u, str) and u.lower() == user.lower() for u in allowlist
            )
        except ConfigError:
            allowed = False
    if ctx.limits is not None:
        ctx.limits.remember_permission(repo, user, allowed)
    return allowed


def preview_wait(ctx: Context, inst: int | None, repo: str, number: int) -> str | None:
    """Count one preview of this pull request against the rate limits; ``None`` when it may
    run, else why not and for how long (for the reply)."""
    if ctx.limits is None:
        return None
    limits = ctx.preview_limits
    wait = ctx.limits.take_preview(inst, repo, number, limits)
    if wait is None:
        return None
    hours = limits.window_seconds / 3600
    return (
        f"previews are limited to {limits.per_pr} per pull request and "
        f"{limits.per_installation} for this installation every {hours:g} hour(s); "
        f"try again in {minutes(wait)} minutes"
    )


def command(job: Job, ctx: Context) -> str:
    """Answer a ``/labbot`` command. Users without access get no work done and one answer per
    pull request; previews are rate-limited per pull request and per installation."""
    spec = job.spec
    inst, repo, number = spec.installation_id, spec.repo, int(spec.pr or 0)
    payload: dict[str, Any] = spec.payload
    user = str(payload.get("user", ""))
    word = str(payload.get("command", "help"))
    if not _may_command(ctx, inst, repo, user):
        if ctx.limits is not None and not ctx.limits.first_refusal(repo, number, user):
            return "unauthorized-again"
        _upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "command",
            f"@{user}: {markup.code('/labbot ' + word)} needs write access to this repository "
            "(or a place on the `commands.allowed_users` list in `.github/labbot.yml`).",
        )
        return "unauthorized"
    comment_id = payload.get("comment_id")
    if isinstance(comment_id, int):
        ctx.client.react(inst, repo, comment_id, "eyes")
    if word == "check":
        head = ctx.client.pull(inst, repo, number)["head"]["sha"]
        _upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "command",
            f"@{user} asked for `/labbot check`: checking {markup.code(str(head)[:7])} again.",
        )
        return validate_pull(job, ctx, head_sha=str(head))
    if word == "preview":
        refused = preview_wait(ctx, inst, repo, number)
        if refused is not None:
            _upsert_sticky(
                ctx,
                inst,
                repo,
                number,
                "command",
                f"@{user} asked for `/labbot preview`: not now, {refused}.",
            )
            return "preview-rate-limited"
        head = str(ctx.client.pull(inst, repo, number)["head"]["sha"])
        ctx.queue.enqueue(JobSpec("preview", repo, number, head, inst, {"reason": "command"}))
        _upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "command",
            f"@{user} asked for `/labbot preview`: generating samples for {markup.code(head[:7])}.",
        )
        return "preview-queued"
    _upsert_sticky(ctx, inst, repo, number, "command", render.HELP)
    return "help"


def recover(job: Job, ctx: Context) -> str:
    """Ask GitHub to redeliver deliveries we never received, and re-check open pull requests
    whose head has no ``labbot/validate`` check run. One replica at a time: the others skip."""
    with ctx.locks.try_hold("labbot:recovery") as mine:
        if not mine:
            log.info("recovery is already running elsewhere; skipped")
            return "recovery-running-elsewhere"
        return _recover(ctx)


def _recover(ctx: Context) -> str:
    client = ctx.client
    redelivered = 0
    by_guid: dict[str, list[dict[str, Any]]] = {}
    for d in client.deliveries():
        by_guid.setdefault(str(d.get("guid")), []).append(d)
    for guid, attempts in by_guid.items():
        ok = any(200 <= int(a.get("status_code") or 0) < 300 for a in attempts)
        if ok or ctx.queue.delivery_seen(guid):
            continue
        latest = max(attempts, key=lambda a: str(a.get("delivered_at", "")))
        try:
            client.redeliver(int(latest["id"]))
            redelivered += 1
        except GitHubError as exc:
            log.warning("redelivery of %s failed: %s", guid, exc)
    rechecked = 0
    for installation in client.installations():
        inst = int(installation["id"])
        for repo_data in client.installation_repos(inst):
            repo = str(repo_data["full_name"])
            for pr in client.open_pulls(inst, repo):
                sha = str(pr["head"]["sha"])
                if not client.check_runs_for(inst, repo, sha, VALIDATE_CHECK):
                    ctx.queue.enqueue(
                        JobSpec(
                            "validate", repo, int(pr["number"]), sha, inst, {"reason": "recovery"}
                        )
                    )
                    rechecked += 1
    log.info("recovery: %d redelivered, %d pull requests queued", redelivered, rechecked)
    return f"redelivered={redelivered} rechecked={rechecked}"


# -- model builds after a merge -----------------------------------------------------------------

BUILD_CHECK = "labbot/build"
EVAL_ARTIFACT = "labbot-eval"
#: Bounds on what a build's artifact may make labbot read.
MAX_ARTIFACT_BYTES = 16 << 20
MAX_JSON_BYTES = 4 << 20
MAX_REPORT_CHARS = 20_000
MAX_ROWS = 2_000
MAX_FIELD_CHARS = 5_000


def _build_settings(config: RepoConfig) -> dict[str, Any]:
    raw = config.raw.get("build")
    return raw if isinstance(raw, dict) else {}


def _ledger(ctx: Context) -> Ledger:
    if ctx.builds is None:
        raise RuntimeError("the App runs without a build ledger")
    return ctx.builds


def build_request(job: Job, ctx: Context) -> str:
    """A merge (or push) to the default branch: dispatch a build, or fold it into a waiting one."""
    spec = job.spec
    inst, repo, sha = spec.installation_id, spec.repo, spec.head_sha
    client = ctx.client
    try:
        config = load_config(ctx, inst, repo)
    except ConfigError as exc:
        log.warning("build for %s skipped: invalid config: %s", repo, exc)
        return "config-error"
    settings = _build_settings(config)
    if settings.get("enabled") is False:
        return "builds-disabled"
    prs: dict[int, list[str]] = {}
    if spec.pr is not None:
        files = client.pull_files(inst, repo, spec.pr)
        touched = [
            str(f["filename"]) for f in files if _in_taxonomy(str(f.get("filename", "")), config)
        ]
        if not touched:
            return "no-taxonomy-change"
        prs[spec.pr] = touched
    ledger = _ledger(ctx)
    build, is_new, folded = ledger.request(repo, sha, inst, prs)
    for old in folded:
        if old.check_run_id:
            client.complete_check_run(
                inst,
                repo,
                old.check_run_id,
                conclusion="neutral",
                title=f"Folded into build #{build.id}",
                summary=f"A newer merge arrived before this build started; build #{build.id} "
                f"of {markup.code(sha[:7])} includes these changes.",
                annotations=[],
            )
    # A retried job (the dispatch failed on a transient error) dispatches what is still undone.
    if is_new or (build.state == "requested" and build.dispatched_at is None):
        check_run_id = build.check_run_id
        if check_run_id is None:
            _, data = client.request(
                inst,
                "POST",
                f"{repo_path(repo)}/check-runs",
                body={
                    "name": BUILD_CHECK,
                    "head_sha": sha,
                    "status": "queued",
                    "output": {
                        "title": f"Build #{build.id} queued",
                        "summary": f"labbot dispatched the model build of {markup.code(sha[:7])}.",
                    },
                },
            )
            check_run_id = int(data["id"])
            ledger.update(build.id, check_run_id=check_run_id)
        try:
            _dispatch(ctx, inst, repo, build, settings)
        except GitHubError as exc:
            if exc.retryable:
                raise
            reason = f"could not start the build workflow: {exc}"
            ledger.update(build.id, state="completed", conclusion="failure")
            client.complete_check_run(
                inst,
                repo,
                check_run_id,
                conclusion="failure",
                title="Build could not start",
                summary=markup.truncate(markup.text(reason), markup.CHECK_SUMMARY_MAX),
                annotations=[],
            )
            _tell_prs(ctx, inst, repo, build, render.build_failed(build.id, sha, reason, None))
            return "dispatch-failed"
    _tell_prs(ctx, inst, repo, build, render.build_queued(build.id, build.sha, build.run_url))
    return f"build {build.id} {'dispatched' if is_new else 'joined'}"


def _tell_prs(ctx: Context, inst: int | None, repo: str, build: BuildRecord, text: str) -> None:
    """Put ``text`` in the build section of every pull request the build includes."""
    for number in build.prs:
        _upsert_sticky(ctx, inst, repo, number, "build", text)


def _dispatch(
    ctx: Context, inst: int | None, repo: str, build: BuildRecord, settings: dict[str, Any]
) -> None:
    """Start the build workflow, recording first what a run must match to count as this build.

    The workflow is resolved through the API (its id and path); ``workflow_dispatch`` asks
    GitHub for the new run's id as well. The record is written before the request, so that a
    run whose events arrive before the request returns is still recognised.

    Raises:
        GitHubError: the workflow does not exist or the dispatch failed.
    """
    client, ledger = ctx.client, _ledger(ctx)
    file = str(settings.get("workflow", "build-model.yml")).rsplit("/", 1)[-1]
    event = (
        "repository_dispatch"
        if settings.get("dispatch") == "repository_dispatch"
        else "workflow_dispatch"
    )
    branch = client.default_branch(inst, repo)
    _, workflow = client.request(inst, "GET", f"{repo_path(repo)}/actions/workflows/{seg(file)}")
    path = str(workflow.get("path") or "")
    if path != f".github/workflows/{file}":
        raise GitHubError(404, f"workflow {file!r} is at {path!r}, not .github/workflows/")
    ledger.update(
        build.id,
        dispatch_event=event,
        workflow_id=int(workflow["id"]),
        workflow_path=path,
        dispatch_branch=branch,
        dispatched_at=time.time(),
        dispatch_run_id=None,
    )
    try:
        if event == "repository_dispatch":
            client.repository_dispatch(
                inst, repo, str(settings.get("event_type", "labbot-build")), {"sha": build.sha}
            )
            return
        _, data = client.request(
            inst,
            "POST",
            f"{repo_path(repo)}/actions/workflows/{int(workflow['id'])}/dispatches",
            body={"ref": branch, "inputs": {"sha": build.sha}, "return_run_details": True},
        )
    except GitHubError as exc:
        if exc.retryable:  # not dispatched: the retried job dispatches again
            ledger.update(build.id, dispatched_at=None)
        raise
    run_id = data.get("workflow_run_id") if isinstance(data, dict) else None
    if isinstance(run_id, int) and not isinstance(run_id, bool):
        ledger.update(build.id, dispatch_run_id=run_id)


def _is_build_workflow(run: dict[str, Any], build: BuildRecord) -> bool:
    """A cheap first look at a webhook's run (no API call): could it be ``build``'s run?
    A run passing it is verified in full against GitHub's API by :func:`_verified_run`."""
    path = run.get("path")
    return path is None or str(path).partition("@")[0] == build.workflow_path


def _verified_run(
    ctx: Context, inst: int | None, repo: str, run_id: int, hint: dict[str, Any] | None
) -> tuple[BuildRecord, dict[str, Any]] | None:
    """The build a workflow run belongs to, and the run as GitHub's API describes it; ``None``
    (logged) when the run is not one the App dispatched. ``hint`` is the webhook's view of the
    run, used only to skip the API call for runs of other workflows."""
    ledger = _ledger(ctx)
    bound = ledger.by_run(repo, run_id) if run_id else None
    candidates = [bound] if bound is not None else ledger.awaiting(repo)
    if hint is not None:
        candidates = [b for b in candidates if _is_build_workflow(hint, b)]
    if not run_id or not candidates:
        log.info("workflow run %s of %s ignored: no build of the App awaits it", run_id, repo)
        return None
    _, run = ctx.client.request(inst, "GET", f"{repo_path(repo)}/actions/runs/{seg(run_id)}")
    reasons = []
    for build in candidates:
        if build.state == "superseded":
            reasons.append(f"build #{build.id} was folded into a newer one")
            continue
        why = run_mismatch(build, run, repo)
        if why is None:
            return build, run
        reasons.append(f"build #{build.id}: {why}")
    log.warning(
        "workflow run %s of %s is not a build the App dispatched; ignored (%s)",
        run_id,
        repo,
        "; ".join(reasons),
    )
    return None


def build_status(job: Job, ctx: Context) -> str:
    """Mirror the build workflow's run on the ``labbot/build`` check run and the PR comments,
    once the run is proven to be the one the App dispatched."""
    spec = job.spec
    inst, repo = spec.installation_id, spec.repo
    hint: dict[str, Any] = spec.payload.get("run") or {}
    raw_id = hint.get("id")
    run_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else 0
    found = _verified_run(ctx, inst, repo, run_id, hint)
    if found is None:
        return "not-a-build"
    build, run = found
    ledger = _ledger(ctx)
    url = str(run.get("html_url") or "") or None
    client = ctx.client
    if run.get("status") != "completed":
        if build.state == "completed":
            return "stale-event"
        ledger.update(build.id, state="running", run_id=run_id, run_url=url)
        if build.check_run_id:
            client.request(
                inst,
                "PATCH",
                f"{repo_path(repo)}/check-runs/{seg(build.check_run_id)}",
                body={
                    "status": "in_progress",
                    "details_url": url,
                    "output": {
                        "title": f"Build #{build.id} running",
                        "summary": markup.inline_link("Workflow run", url),
                    },
                },
            )
        for number in build.prs:
            _upsert_sticky(
                ctx, inst, repo, number, "build", render.build_running(build.id, build.sha, url)
            )
        return "running"
    conclusion = str(run.get("conclusion") or "failure")
    if build.state == "completed" and build.conclusion == conclusion and build.run_id == run_id:
        return "already-recorded"
    ledger.update(build.id, state="completed", run_id=run_id, run_url=url, conclusion=conclusion)
    if conclusion != "success":
        fresh = ledger.get(build.id)
        log_url = (fresh.failed_job_url if fresh else None) or url
        reason = f"the workflow run ended with '{conclusion}'"
        _finish_build_check(
            ctx,
            inst,
            repo,
            build,
            "failure",
            f"Build #{build.id} failed",
            f"{markup.text(reason)}. {markup.inline_link('Log', log_url)}",
        )
        _tell_prs(ctx, inst, repo, build, render.build_failed(build.id, build.sha, reason, log_url))
        return "failed"
    results = _build_results(ctx, inst, repo, run_id)
    improved = sum(1 for r in results.table if r.get("improved") is True)
    summary = [
        f"{improved} of {len(results.table)} leaves improved. "
        f"{markup.inline_link('Workflow run', url)}"
    ]
    summary += [f"- {markup.text(note)}" for note in results.notes]
    if results.report:
        summary += [
            "",
            "<details><summary>The build's report</summary>",
            "",
            markup.fenced(results.report, "markdown"),
            "",
            "</details>",
        ]
    _finish_build_check(
        ctx,
        inst,
        repo,
        build,
        "success",
        f"Build #{build.id}: model built",
        "\n".join(summary),
    )
    for number, leaves in build.prs.items():
        _upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "build",
            render.build_result(build.id, build.sha, url, leaves, results.table, results.answers),
        )
    return "completed"


def _finish_build_check(
    ctx: Context,
    inst: int | None,
    repo: str,
    build: BuildRecord,
    conclusion: str,
    title: str,
    summary: str,
) -> None:
    """Complete the build's check run; ``summary`` is Markdown labbot wrote (escaped)."""
    if build.check_run_id:
        ctx.client.complete_check_run(
            inst,
            repo,
            build.check_run_id,
            conclusion=conclusion,
            title=title[:50],
            summary=markup.truncate(summary, markup.CHECK_SUMMARY_MAX),
            annotations=[],
        )


@dataclass
class BuildResults:
    """What labbot takes from a build's evaluation artifact, checked and bounded."""

    table: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    report: str = ""
    notes: list[str] = field(default_factory=list)  # what was ignored, and why


_NUMBERS = ("base_rouge_l", "phase2_rouge_l", "base_ref_loss", "phase2_ref_loss")
_TEXTS = ("leaf", "question", "reference", "answer")


def _clean_row(row: Any) -> dict[str, Any] | None:
    """A row of ``leaves.json`` with the expected types, else ``None``."""
    if not isinstance(row, dict) or not isinstance(row.get("leaf"), str):
        return None
    out: dict[str, Any] = {"leaf": row["leaf"][:MAX_FIELD_CHARS]}
    for key in _NUMBERS:
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return None
        out[key] = value
    if not isinstance(row.get("improved", False), bool):
        return None
    out["improved"] = bool(row.get("improved", False))
    return out


def _clean_answer(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    if any(k in item and not isinstance(item[k], str) for k in _TEXTS):
        return None
    return {k: str(item.get(k, ""))[:MAX_FIELD_CHARS] for k in _TEXTS}


def parse_results(files: dict[str, bytes]) -> BuildResults:
    """Check the artifact's ``leaves.json``, ``answers.json`` and ``report.md`` (hostile:
    anything that runs in the build can write them). Wrong shapes are dropped with a note."""
    import json

    out = BuildResults()

    def load(name: str, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            out.notes.append(f"{name} ignored: not JSON ({type(exc).__name__})")
            return None

    if "leaves.json" in files:
        data = load("leaves.json", files["leaves.json"])
        if data is not None and not isinstance(data, list):
            out.notes.append("leaves.json ignored: not a list of rows")
        elif isinstance(data, list):
            rows = [_clean_row(r) for r in data[:MAX_ROWS]]
            out.table = [r for r in rows if r is not None]
            dropped = len(rows) - len(out.table) + max(0, len(data) - MAX_ROWS)
            if dropped:
                out.notes.append(f"leaves.json: {dropped} row(s) ignored (wrong types or too many)")
    if "answers.json" in files:
        data = load("answers.json", files["answers.json"])
        if data is not None and not isinstance(data, dict):
            out.notes.append("answers.json ignored: not an object")
        elif isinstance(data, dict):
            for phase in ("base", "phase2"):
                items = data.get(phase, [])
                if not isinstance(items, list):
                    out.notes.append(f"answers.json: {phase!r} ignored: not a list")
                    continue
                cleaned = [_clean_answer(a) for a in items[:MAX_ROWS]]
                out.answers[phase] = [a for a in cleaned if a is not None]
                dropped = len(cleaned) - len(out.answers[phase]) + max(0, len(items) - MAX_ROWS)
                if dropped:
                    out.notes.append(f"answers.json: {dropped} {phase} answer(s) ignored")
    if "report.md" in files:
        out.report = files["report.md"].decode("utf-8", "replace")[:MAX_REPORT_CHARS]
    return out


def _build_results(ctx: Context, inst: int | None, repo: str, run_id: int) -> BuildResults:
    """The evaluation the build uploaded as the ``labbot-eval`` artifact (bounded reads)."""
    import io
    import zipfile

    artifacts = [
        a
        for a in ctx.client.run_artifacts(inst, repo, run_id)
        if a.get("name") == EVAL_ARTIFACT and not a.get("expired")
    ]
    if not artifacts:
        return BuildResults(notes=["The build uploaded no evaluation artifact."])
    try:
        data = ctx.client.download_artifact(
            inst, repo, int(artifacts[0]["id"]), max_bytes=MAX_ARTIFACT_BYTES
        )
    except GitHubError as exc:
        if exc.retryable:
            raise
        return BuildResults(notes=[f"The evaluation artifact could not be read: {exc}"])
    wanted = {"leaves.json": MAX_JSON_BYTES, "answers.json": MAX_JSON_BYTES}
    files: dict[str, bytes] = {}
    notes: list[str] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist()[:1000]:
                name = info.filename
                base = name.rsplit("/", 1)[-1]
                key = base if base in wanted and name in (base, f"eval/{base}") else None
                if key is None and base == "report.md":
                    key = "report.md"
                if key is None or key in files:
                    continue
                limit = wanted.get(key, MAX_REPORT_CHARS * 4)
                with archive.open(info) as member:
                    raw = member.read(limit + 1)  # never more, whatever the header claims
                if len(raw) > limit:
                    notes.append(f"{key} ignored: larger than {limit} bytes")
                    continue
                files[key] = raw
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, NotImplementedError) as exc:
        return BuildResults(notes=[f"The evaluation artifact is not a readable zip: {exc}"])
    results = parse_results(files)
    results.notes[:0] = notes
    return results


def build_job(job: Job, ctx: Context) -> str:
    """Remember the failing job of a build, so the failure links to its log (and update the
    comments when the run's completion was handled first). Only jobs of a verified run count."""
    info: dict[str, Any] = job.spec.payload.get("job") or {}
    repo, inst = job.spec.repo, job.spec.installation_id
    raw_id = info.get("run_id")
    run_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else 0
    found = _verified_run(ctx, inst, repo, run_id, None)
    if found is None:
        return "not-a-build"
    build, _ = found
    ledger = _ledger(ctx)
    url = str(info.get("html_url") or "") or None
    ledger.update(build.id, failed_job_url=url, run_id=run_id)
    if build.state == "completed" and build.conclusion not in (None, "success"):
        reason = f"the workflow run ended with '{build.conclusion}'"
        _tell_prs(ctx, inst, repo, build, render.build_failed(build.id, build.sha, reason, url))
    return "recorded"
