"""Recovering missed work: redelivering webhook deliveries that failed while the App was down."""

from __future__ import annotations

import logging
from typing import Any

from bot.errors import GitHubError
from bot.handlers.common import Context
from bot.handlers.router import Router
from bot.handlers.validate import VALIDATE_CHECK
from bot.state.jobs import Job, JobKind, JobSpec

log = logging.getLogger("labbot.handlers")

router = Router()


def recovery_job(now: float) -> JobSpec:
    """The App-wide recovery job; each start's (a new ``now``) supersedes a pending older one."""
    return JobSpec(JobKind.RECOVER, "", None, None, dedupe_key=str(int(now)))


@router.job(JobKind.RECOVER)
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
                        JobSpec.for_commit(
                            JobKind.VALIDATE,
                            repo,
                            int(pr["number"]),
                            sha,
                            inst,
                            {"reason": "recovery"},
                        )
                    )
                    rechecked += 1
    log.info("recovery: %d redelivered, %d pull requests queued", redelivered, rechecked)
    return f"redelivered={redelivered} rechecked={rechecked}"
