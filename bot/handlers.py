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

from bot import render
from bot.backend import Ledger, Locks, Queue
from bot.builds import BuildRecord
from bot.errors import GitHubError
from bot.github import GitHubClient
from bot.metrics import Metrics
from bot.queue import Job, JobSpec
from bot.webhook import VALIDATE_CHECK
from pipeline.config import CONFIG_PATH, RepoConfig, parse_config
from pipeline.discover import is_candidate
from pipeline.errors import ConfigError
from pipeline.findings import FileResult
from pipeline.validate import ATTRIBUTION, PROFILES, validate_bytes

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
    for f in files:
        path = str(f["filename"])
        raw = client.file_at(inst, repo, path, sha)
        if raw is None:
            continue
        attribution = client.file_at(
            inst, repo, posixpath.join(posixpath.dirname(path), ATTRIBUTION), sha
        )
        results.append(validate_bytes(raw, path, profile, config, attribution))
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
        labels = sorted({LABELS[r.kind] for r in results if r.kind in LABELS})
        client.add_labels(inst, repo, number, labels)
        if out.conclusion == "success" and _auto_preview(ctx, inst, repo, number, config):
            ctx.queue.enqueue(JobSpec("preview", repo, number, sha, inst, {"reason": "auto"}))
    return out.conclusion


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
    from pipeline.errors import PipelineError
    from pipeline.generate import GenerateConfig, generate_leaf
    from pipeline.leaves import KNOWLEDGE, leaf_from_data
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
        if raw is None or not validate_bytes(raw, path, PROFILES["pr"], config).valid:
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
        _check_superseded(job, ctx)
        _upsert_sticky(ctx, inst, repo, number, "preview", render.preview_unavailable(str(exc)))
        return "preview-failed"
    _check_superseded(job, ctx)
    _upsert_sticky(
        ctx, inst, repo, number, "preview", render.preview_section(results, sha, teacher.identity)
    )
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
                ctx.client.request(
                    inst,
                    "PATCH",
                    f"/repos/{repo}/check-runs/{run_id}",
                    body={"status": "in_progress"},
                )
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


def command(job: Job, ctx: Context) -> str:
    spec = job.spec
    inst, repo, number = spec.installation_id, spec.repo, int(spec.pr or 0)
    payload: dict[str, Any] = spec.payload
    user = str(payload.get("user", ""))
    word = str(payload.get("command", "help"))
    allowed = ctx.client.permission(inst, repo, user) in WRITE_ROLES
    if not allowed:
        try:
            config = load_config(ctx, inst, repo)
            allowlist = (config.raw.get("commands") or {}).get("allowed_users") or []
            allowed = user in allowlist
        except ConfigError:
            allowed = False
    if not allowed:
        _upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "command",
            f"@{user}: `/labbot {word}` needs write access to this repository (or a place on "
            "the `commands.allowed_users` list in `.github/labbot.yml`).",
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
            f"@{user} asked for `/labbot check`: checking {head[:7]} again.",
        )
        return validate_pull(job, ctx, head_sha=str(head))
    if word == "preview":
        head = str(ctx.client.pull(inst, repo, number)["head"]["sha"])
        ctx.queue.enqueue(JobSpec("preview", repo, number, head, inst, {"reason": "command"}))
        _upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "command",
            f"@{user} asked for `/labbot preview`: generating samples for {head[:7]}.",
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
                f"of `{sha[:7]}` includes these changes.",
                annotations=[],
            )
    if is_new:
        _, data = client.request(
            inst,
            "POST",
            f"/repos/{repo}/check-runs",
            body={
                "name": BUILD_CHECK,
                "head_sha": sha,
                "status": "queued",
                "output": {
                    "title": f"Build #{build.id} queued",
                    "summary": f"labbot dispatched the model build of `{sha[:7]}`.",
                },
            },
        )
        ledger.update(build.id, check_run_id=int(data["id"]))
        try:
            _dispatch(ctx, inst, repo, sha, settings)
        except GitHubError as exc:
            if exc.retryable:
                raise
            reason = f"could not start the build workflow: {exc}"
            ledger.update(build.id, state="completed", conclusion="failure")
            client.complete_check_run(
                inst,
                repo,
                int(data["id"]),
                conclusion="failure",
                title="Build could not start",
                summary=reason,
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
    ctx: Context, inst: int | None, repo: str, sha: str, settings: dict[str, Any]
) -> None:
    if settings.get("dispatch", "workflow_dispatch") == "repository_dispatch":
        ctx.client.repository_dispatch(
            inst, repo, str(settings.get("event_type", "labbot-build")), {"sha": sha}
        )
        return
    branch = ctx.client.default_branch(inst, repo)
    workflow = str(settings.get("workflow", "build-model.yml")).rsplit("/", 1)[-1]
    ctx.client.dispatch_workflow(inst, repo, workflow, branch, {"sha": sha})


def _run_sha(run: dict[str, Any]) -> str:
    words = str(run.get("display_title") or "").split()
    last = words[-1] if words else ""
    if len(last) == 40 and all(c in "0123456789abcdef" for c in last):
        return last
    return str(run.get("head_sha") or "")


def _is_build_workflow(run: dict[str, Any]) -> bool:
    path = str(run.get("path") or "")
    return "build-model" in path or str(run.get("display_title") or "").startswith("labbot build")


def build_status(job: Job, ctx: Context) -> str:
    """Mirror the build workflow's run on the ``labbot/build`` check run and the PR comments."""
    spec = job.spec
    inst, repo = spec.installation_id, spec.repo
    run: dict[str, Any] = spec.payload.get("run") or {}
    if not _is_build_workflow(run):
        return "not-a-build"
    ledger = _ledger(ctx)
    run_id = int(run.get("id") or 0)
    build = ledger.by_run(repo, run_id) or ledger.by_sha(repo, _run_sha(run))
    if build is None or build.state == "superseded":
        return "unknown-build"
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
                f"/repos/{repo}/check-runs/{build.check_run_id}",
                body={
                    "status": "in_progress",
                    "details_url": url,
                    "output": {
                        "title": f"Build #{build.id} running",
                        "summary": f"[Workflow run]({url})",
                    },
                },
            )
        for number in build.prs:
            _upsert_sticky(
                ctx, inst, repo, number, "build", render.build_running(build.id, build.sha, url)
            )
        return "running"
    conclusion = str(run.get("conclusion") or "failure")
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
            f"{reason}. [Log]({log_url})",
        )
        _tell_prs(ctx, inst, repo, build, render.build_failed(build.id, build.sha, reason, log_url))
        return "failed"
    table, answers, summary = _build_results(ctx, inst, repo, run_id)
    improved = sum(1 for r in table if r.get("improved"))
    _finish_build_check(
        ctx,
        inst,
        repo,
        build,
        "success",
        f"Build #{build.id}: model built",
        f"{improved} of {len(table)} leaves improved. [Workflow run]({url})\n\n{summary}",
    )
    for number, leaves in build.prs.items():
        _upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "build",
            render.build_result(build.id, build.sha, url, leaves, table, answers),
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
    if build.check_run_id:
        ctx.client.complete_check_run(
            inst,
            repo,
            build.check_run_id,
            conclusion=conclusion,
            title=title[:50],
            summary=summary[:60000],
            annotations=[],
        )


def _build_results(
    ctx: Context, inst: int | None, repo: str, run_id: int
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """The evaluation the build uploaded as the ``labbot-eval`` artifact."""
    import io
    import json
    import zipfile

    artifacts = [
        a
        for a in ctx.client.run_artifacts(inst, repo, run_id)
        if a.get("name") == EVAL_ARTIFACT and not a.get("expired")
    ]
    if not artifacts:
        return [], {}, "The build uploaded no evaluation artifact."
    data = ctx.client.download_artifact(inst, repo, int(artifacts[0]["id"]))
    table: list[dict[str, Any]] = []
    answers: dict[str, Any] = {}
    report = ""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.endswith("eval/leaves.json") or name == "leaves.json":
                table = json.loads(archive.read(name))
            elif name.endswith("eval/answers.json") or name == "answers.json":
                answers = json.loads(archive.read(name))
            elif name.endswith("report.md"):
                report = archive.read(name).decode("utf-8", "replace")
    return table, answers, report[:20000]


def build_job(job: Job, ctx: Context) -> str:
    """Remember the failing job of a build, so the failure links to its log (and update the
    comments when the run's completion was handled first)."""
    info: dict[str, Any] = job.spec.payload.get("job") or {}
    ledger = _ledger(ctx)
    repo, inst = job.spec.repo, job.spec.installation_id
    build = ledger.by_run(repo, int(info.get("run_id") or 0)) or ledger.by_sha(
        repo, str(info.get("head_sha") or "")
    )
    if build is None:
        return "unknown-build"
    url = str(info.get("html_url") or "") or None
    ledger.update(build.id, failed_job_url=url, run_id=int(info.get("run_id") or 0) or build.run_id)
    if build.state == "completed" and build.conclusion not in (None, "success"):
        reason = f"the workflow run ended with '{build.conclusion}'"
        _tell_prs(ctx, inst, repo, build, render.build_failed(build.id, build.sha, reason, url))
    return "recorded"
