"""Webhook deliveries, sans I/O: signature check, parsing, and the jobs each event implies."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import WebhookError
from bot.queue import JobSpec

VALIDATE_CHECK = "labbot/validate"
PR_ACTIONS = {"opened", "synchronize", "reopened", "ready_for_review"}
COMMANDS = ("help", "check", "preview")
_COMMAND = re.compile(r"^\s*/labbot(?:\s+([A-Za-z-]+))?\s*$", re.MULTILINE)


def verify_signature(body: bytes, header: str | None, secret: str) -> None:
    """Check ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body) in constant time.

    Raises:
        WebhookError: 401 when the header is missing or does not match.
    """
    if not secret:
        raise WebhookError(500, "no webhook secret is configured")
    if not header or not header.startswith("sha256="):
        raise WebhookError(401, "missing X-Hub-Signature-256 header")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise WebhookError(401, "signature does not match")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One parsed webhook delivery."""

    id: str
    event: str
    action: str | None
    installation_id: int | None
    payload: dict[str, Any]

    @property
    def repo(self) -> str:
        repo = self.payload.get("repository")
        return str(repo.get("full_name", "")) if isinstance(repo, dict) else ""


def parse(headers: Mapping[str, str], body: bytes, secret: str, max_bytes: int) -> Delivery:
    """Verify and parse a delivery. ``headers`` must be case-insensitive (as Starlette's are).

    Raises:
        WebhookError: 413 too large, 401 bad signature, 400 malformed.
    """
    if len(body) > max_bytes:
        raise WebhookError(413, f"payload larger than {max_bytes} bytes")
    verify_signature(body, headers.get("x-hub-signature-256"), secret)
    event = headers.get("x-github-event", "")
    delivery_id = headers.get("x-github-delivery", "")
    if not event or not delivery_id:
        raise WebhookError(400, "missing X-GitHub-Event or X-GitHub-Delivery header")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise WebhookError(400, "body is not a JSON object")
    action = payload.get("action")
    installation = payload.get("installation")
    inst_id = installation.get("id") if isinstance(installation, dict) else None
    return Delivery(
        id=delivery_id[:200],
        event=event[:100],
        action=str(action) if isinstance(action, str) else None,
        installation_id=int(inst_id) if isinstance(inst_id, int) else None,
        payload=payload,
    )


def parse_command(body: str) -> str | None:
    """The ``/labbot`` command in a comment: ``help``, ``check`` or ``preview``; ``help`` for an
    unknown word or a bare ``/labbot``; ``None`` when the comment holds no command."""
    match = _COMMAND.search(body or "")
    if match is None:
        return None
    word = (match.group(1) or "help").lower()
    return word if word in COMMANDS else "help"


def _touches_taxonomy(commits: list[dict[str, Any]]) -> bool:
    """Whether a push changed a qna.yaml or attribution.txt (from the push payload's lists)."""
    for commit in commits:
        for key in ("added", "modified", "removed"):
            for path in commit.get(key) or []:
                if str(path).endswith(("qna.yaml", "qna.yml", "attribution.txt")):
                    return True
    return False


def _validate_job(repo: str, pr: int, sha: str, inst: int | None, reason: str) -> JobSpec:
    return JobSpec(
        kind="validate",
        repo=repo,
        pr=pr,
        head_sha=sha,
        installation_id=inst,
        payload={"reason": reason},
    )


def jobs_for(delivery: Delivery) -> list[JobSpec]:
    """The jobs a delivery implies (none for events labbot does not act on)."""
    p, repo, inst = delivery.payload, delivery.repo, delivery.installation_id
    if not repo:
        return []
    repository = p.get("repository") or {}
    default_branch = str(repository.get("default_branch") or repository.get("master_branch") or "")
    if delivery.event == "pull_request" and delivery.action == "closed":
        pr = p.get("pull_request") or {}
        base = (pr.get("base") or {}).get("ref")
        if pr.get("merged") and pr.get("merge_commit_sha") and base == default_branch:
            return [
                JobSpec(
                    "build-request",
                    repo,
                    int(pr["number"]),
                    str(pr["merge_commit_sha"]),
                    inst,
                    {"source": "merge"},
                )
            ]
        return []
    if delivery.event == "push":
        after = str(p.get("after") or "")
        if (
            p.get("ref") != f"refs/heads/{default_branch}"
            or p.get("deleted")
            or not after.strip("0")
            or not _touches_taxonomy(p.get("commits") or [])
        ):
            return []
        return [JobSpec("build-request", repo, None, after, inst, {"source": "push"})]
    if delivery.event == "workflow_run" and delivery.action in (
        "requested",
        "in_progress",
        "completed",
    ):
        run = p.get("workflow_run") or {}
        keep = (
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
        return [
            JobSpec(
                f"build-status:{run.get('id')}",
                repo,
                None,
                f"{delivery.action}-{run.get('run_attempt', 1)}",
                inst,
                {"run": {k: run.get(k) for k in keep}},
            )
        ]
    if delivery.event == "workflow_job" and delivery.action == "completed":
        job = p.get("workflow_job") or {}
        if job.get("conclusion") not in ("failure", "timed_out", "cancelled"):
            return []
        job_keys = ("id", "run_id", "name", "html_url", "conclusion", "workflow_name", "head_sha")
        return [
            JobSpec(
                f"build-job:{job.get('run_id')}",
                repo,
                None,
                str(job.get("id")),
                inst,
                {"job": {k: job.get(k) for k in job_keys}},
            )
        ]
    if delivery.event == "pull_request" and delivery.action in PR_ACTIONS:
        pr = p.get("pull_request") or {}
        if pr.get("state") == "closed":
            return []
        return [_validate_job(repo, int(pr["number"]), pr["head"]["sha"], inst, delivery.event)]
    if delivery.event == "check_suite" and delivery.action in ("requested", "rerequested"):
        suite = p.get("check_suite") or {}
        return [
            _validate_job(repo, int(pr["number"]), suite.get("head_sha", ""), inst, "check_suite")
            for pr in suite.get("pull_requests") or []
            if pr.get("head", {}).get("sha", suite.get("head_sha")) == suite.get("head_sha")
        ]
    if delivery.event == "check_run" and delivery.action == "rerequested":
        run = p.get("check_run") or {}
        if run.get("name") != VALIDATE_CHECK:
            return []
        return [
            _validate_job(repo, int(pr["number"]), run.get("head_sha", ""), inst, "check_run")
            for pr in run.get("pull_requests") or []
        ]
    if delivery.event == "issue_comment" and delivery.action == "created":
        issue = p.get("issue") or {}
        comment = p.get("comment") or {}
        user = comment.get("user") or {}
        if not issue.get("pull_request") or user.get("type") == "Bot":
            return []
        command = parse_command(str(comment.get("body") or ""))
        if command is None:
            return []
        return [
            JobSpec(
                # One kind per comment, so a second command never supersedes a first one.
                kind=f"command:{comment.get('id')}",
                repo=repo,
                pr=int(issue["number"]),
                head_sha="",
                installation_id=inst,
                payload={
                    "command": command,
                    "comment_id": comment.get("id"),
                    "user": user.get("login", ""),
                },
            )
        ]
    return []
