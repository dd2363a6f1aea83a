"""Model builds after a merge: the build request and its dispatch, the workflow run's status
(verified against what the App dispatched), and the evaluation results in the comments.
"""

from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any

from bot import markup, render
from bot.builds import run_mismatch
from bot.errors import GitHubError
from bot.github import repo_path, seg
from bot.handlers.common import Context, in_taxonomy, load_config
from bot.handlers.router import Event, Router
from bot.handlers.sticky import upsert_sticky
from bot.state import Ledger
from bot.state.jobs import Job, JobKind, JobSpec
from bot.state.ledger import BuildRecord
from bot.webhook import Fields
from pipeline.config import BuildSettings
from pipeline.errors import ConfigError
from pipeline.taxonomy.discover import is_qna_path
from pipeline.taxonomy.validate import ATTRIBUTION

log = logging.getLogger("labbot.handlers")

router = Router()

BUILD_CHECK = "labbot/build"


EVAL_ARTIFACT = "labbot-eval"


#: Bounds on what a build's artifact may make labbot read.
MAX_ARTIFACT_BYTES = 16 << 20


MAX_JSON_BYTES = 4 << 20


MAX_REPORT_CHARS = 20_000


MAX_ROWS = 2_000


MAX_FIELD_CHARS = 5_000


def _ledger(ctx: Context) -> Ledger:
    if ctx.builds is None:
        raise RuntimeError("the App runs without a build ledger")
    return ctx.builds


#: The fields of a workflow run and of a workflow job that a build status job carries.
_RUN_KEYS = (
    "id",
    "name",
    "path",
    "display_title",
    "head_sha",
    "status",
    "conclusion",
    "html_url",
    "run_attempt",
)
_JOB_KEYS = ("id", "run_id", "name", "html_url", "conclusion", "workflow_name", "head_sha")


def _touches_taxonomy(commits: list[Fields]) -> bool:
    """Whether a push changed a qna.yaml or attribution.txt (from the push payload's lists)."""
    for commit in commits:
        for key in ("added", "modified", "removed"):
            for path in commit.strings(key):
                if is_qna_path(path) or posixpath.basename(path) == ATTRIBUTION:
                    return True
    return False


@router.event("pull_request", "closed")
def on_merge(event: Event) -> list[JobSpec]:
    """A pull request merged into the default branch: build its merge commit."""
    pr = event.payload.obj("pull_request")
    number = pr.integer("number")
    base = pr.obj("base").string("ref")
    merge_sha = pr.opt_string("merge_commit_sha")
    if not (pr.truthy("merged") and merge_sha and base == event.default_branch):
        return []
    return [
        JobSpec.for_commit(
            JobKind.BUILD_REQUEST,
            event.repo,
            number,
            merge_sha,
            event.installation_id,
            {"source": "merge"},
        )
    ]


@router.event("push")
def on_push(event: Event) -> list[JobSpec]:
    """A push to the default branch that changed the taxonomy: build its head."""
    p = event.payload
    after = p.opt_string("after") or ""
    if (
        p.opt_string("ref") != f"refs/heads/{event.default_branch}"
        or p.truthy("deleted")
        or not after.strip("0")
        or not _touches_taxonomy(p.objs("commits"))
    ):
        return []
    return [
        JobSpec.for_commit(
            JobKind.BUILD_REQUEST,
            event.repo,
            None,
            after,
            event.installation_id,
            {"source": "push"},
        )
    ]


@router.event("workflow_run", "requested", "in_progress", "completed")
def on_workflow_run(event: Event) -> list[JobSpec]:
    """A workflow run changed state: a newer state of the same run supersedes an older one."""
    run = event.payload.obj("workflow_run")
    run_id = run.integer("id")
    attempt = run.opt_integer("run_attempt") or 1
    return [
        JobSpec(
            JobKind.BUILD_STATUS,
            event.repo,
            None,
            event.installation_id,
            dedupe_key=f"{event.action}-{attempt}",
            group=str(run_id),
            payload={"run": run.scalars(_RUN_KEYS)},
        )
    ]


@router.event("workflow_job", "completed")
def on_workflow_job(event: Event) -> list[JobSpec]:
    """A job of a workflow run failed: its log link goes in the build's comment."""
    job = event.payload.obj("workflow_job")
    job_id, run_id = job.integer("id"), job.integer("run_id")
    if job.opt_string("conclusion") not in ("failure", "timed_out", "cancelled"):
        return []
    return [
        JobSpec(
            JobKind.BUILD_JOB,
            event.repo,
            None,
            event.installation_id,
            dedupe_key=str(job_id),
            group=str(run_id),
            payload={"job": job.scalars(_JOB_KEYS)},
        )
    ]


@router.job(JobKind.BUILD_REQUEST)
def build_request(job: Job, ctx: Context) -> str:
    """A merge (or push) to the default branch: dispatch a build, or fold it into a waiting one."""
    spec = job.spec
    inst, repo, sha = spec.installation_id, spec.repo, spec.commit
    client = ctx.client
    try:
        config = load_config(ctx, inst, repo)
    except ConfigError as exc:
        log.warning("build for %s skipped: invalid config: %s", repo, exc)
        return "config-error"
    settings = config.build
    if not settings.enabled:
        return "builds-disabled"
    prs: dict[int, list[str]] = {}
    if spec.pr is not None:
        files = client.pull_files(inst, repo, spec.pr)
        touched = [
            str(f["filename"]) for f in files if in_taxonomy(str(f.get("filename", "")), config)
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
        upsert_sticky(ctx, inst, repo, number, "build", text)


def _dispatch(
    ctx: Context, inst: int | None, repo: str, build: BuildRecord, settings: BuildSettings
) -> None:
    """Start the build workflow, recording first what a run must match to count as this build.

    The workflow is resolved through the API (its id and path); ``workflow_dispatch`` asks
    GitHub for the new run's id as well. The record is written before the request, so that a
    run whose events arrive before the request returns is still recognised.

    Raises:
        GitHubError: the workflow does not exist or the dispatch failed.
    """
    client, ledger = ctx.client, _ledger(ctx)
    file = settings.workflow_file
    event = settings.dispatch
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
            client.repository_dispatch(inst, repo, settings.event_type, {"sha": build.sha})
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


@router.job(JobKind.BUILD_STATUS)
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
            upsert_sticky(
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
        upsert_sticky(
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


@router.job(JobKind.BUILD_JOB)
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
