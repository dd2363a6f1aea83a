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
from bot.state.jobs import JobSpec

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


#: Events whose metrics carry their own label; any other verified event counts as "other".
KNOWN_EVENTS = frozenset(
    {
        "check_run",
        "check_suite",
        "installation",
        "installation_repositories",
        "issue_comment",
        "ping",
        "pull_request",
        "push",
        "workflow_job",
        "workflow_run",
    }
)


def event_label(event: str) -> str:
    """A bounded metrics label for a verified delivery's event."""
    return event if event in KNOWN_EVENTS else "other"


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
        name = repo.get("full_name") if isinstance(repo, dict) else None
        return name if isinstance(name, str) else ""


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
    except RecursionError as exc:
        raise WebhookError(400, "body is not JSON labbot can read: nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, a 5,000-digit number
        raise WebhookError(400, f"body is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(payload, dict):
        raise WebhookError(400, "body is not a JSON object")
    action = payload.get("action")
    installation = payload.get("installation")
    inst_id = installation.get("id") if isinstance(installation, dict) else None
    return Delivery(
        id=delivery_id[:200],
        event=event[:100],
        action=action if isinstance(action, str) else None,
        installation_id=inst_id if isinstance(inst_id, int) else None,
        payload=payload,
    )


Scalar = str | int | float | bool | None


class Fields:
    """Typed reads from a delivery's JSON: a field that is missing or of the wrong type raises
    a 422 :class:`WebhookError` that names it (``pull_request.head.sha must be a string``)."""

    def __init__(self, data: dict[str, Any], where: str = "") -> None:
        self.data = data
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _fail(self, key: str, wanted: str) -> WebhookError:
        got = type(self.data.get(key)).__name__ if key in self.data else "missing"
        return WebhookError(422, f"{self._name(key)} must be {wanted} (got {got})")

    def obj(self, key: str) -> Fields:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return Fields(value, self._name(key))

    def opt_obj(self, key: str) -> Fields | None:
        return None if self.data.get(key) is None else self.obj(key)

    def integer(self, key: str) -> int:
        value = self.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        return None if self.data.get(key) is None else self.integer(key)

    def string(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def opt_string(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.string(key)

    def objs(self, key: str) -> list[Fields]:
        """A list of objects (a missing or null list is empty)."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._fail(key, "a list of objects")
        return [Fields(v, f"{self._name(key)}[{i}]") for i, v in enumerate(value)]

    def strings(self, key: str) -> list[str]:
        """A list of strings (a missing or null list is empty)."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return value

    def scalars(self, keys: tuple[str, ...]) -> dict[str, Scalar]:
        """The named fields, each a string, number, boolean or null (a missing one is null)."""
        out: dict[str, Scalar] = {}
        for key in keys:
            value = self.data.get(key)
            if value is not None and not isinstance(value, str | int | float | bool):
                raise self._fail(key, "a string or a number")
            out[key] = value
        return out

    def truthy(self, key: str) -> bool:
        return bool(self.data.get(key))


def parse_command(body: str) -> str | None:
    """The ``/labbot`` command in a comment: ``help``, ``check`` or ``preview``; ``help`` for an
    unknown word or a bare ``/labbot``; ``None`` when the comment holds no command."""
    match = _COMMAND.search(body or "")
    if match is None:
        return None
    word = (match.group(1) or "help").lower()
    return word if word in COMMANDS else "help"


def _touches_taxonomy(commits: list[Fields]) -> bool:
    """Whether a push changed a qna.yaml or attribution.txt (from the push payload's lists)."""
    for commit in commits:
        for key in ("added", "modified", "removed"):
            for path in commit.strings(key):
                if path.endswith(("qna.yaml", "qna.yml", "attribution.txt")):
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


HANDLED_EVENTS = frozenset(
    {"pull_request", "push", "workflow_run", "workflow_job", "check_suite", "check_run"}
    | {"issue_comment"}
)
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


def jobs_for(delivery: Delivery) -> list[JobSpec]:
    """The jobs a delivery implies (none for events labbot does not act on).

    Raises:
        WebhookError: 422 when a field labbot reads for this event is missing or of the wrong
            type; the message names the field.
    """
    event, action, inst = delivery.event, delivery.action, delivery.installation_id
    if event not in HANDLED_EVENTS:
        return []
    p = Fields(delivery.payload)
    if p.opt_obj("installation") is not None:
        p.obj("installation").integer("id")
    repository = p.obj("repository")
    repo = repository.string("full_name")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise WebhookError(422, "repository.full_name must be owner/name")
    default_branch = (
        repository.opt_string("default_branch") or repository.opt_string("master_branch") or ""
    )
    if event == "pull_request":
        pr = p.obj("pull_request")
        number = pr.integer("number")
        if action == "closed":
            base = pr.obj("base").string("ref")
            merge_sha = pr.opt_string("merge_commit_sha")
            if pr.truthy("merged") and merge_sha and base == default_branch:
                return [
                    JobSpec("build-request", repo, number, merge_sha, inst, {"source": "merge"})
                ]
            return []
        if action not in PR_ACTIONS:
            return []
        sha = pr.obj("head").string("sha")
        if pr.opt_string("state") == "closed":
            return []
        return [_validate_job(repo, number, sha, inst, event)]
    if event == "push":
        after = p.opt_string("after") or ""
        if (
            p.opt_string("ref") != f"refs/heads/{default_branch}"
            or p.truthy("deleted")
            or not after.strip("0")
            or not _touches_taxonomy(p.objs("commits"))
        ):
            return []
        return [JobSpec("build-request", repo, None, after, inst, {"source": "push"})]
    if event == "workflow_run":
        if action not in ("requested", "in_progress", "completed"):
            return []
        run = p.obj("workflow_run")
        run_id = run.integer("id")
        attempt = run.opt_integer("run_attempt") or 1
        return [
            JobSpec(
                f"build-status:{run_id}",
                repo,
                None,
                f"{action}-{attempt}",
                inst,
                {"run": run.scalars(_RUN_KEYS)},
            )
        ]
    if event == "workflow_job":
        if action != "completed":
            return []
        job = p.obj("workflow_job")
        job_id, run_id = job.integer("id"), job.integer("run_id")
        if job.opt_string("conclusion") not in ("failure", "timed_out", "cancelled"):
            return []
        return [
            JobSpec(
                f"build-job:{run_id}",
                repo,
                None,
                str(job_id),
                inst,
                {"job": job.scalars(_JOB_KEYS)},
            )
        ]
    if event == "check_suite":
        if action not in ("requested", "rerequested"):
            return []
        suite = p.obj("check_suite")
        head = suite.string("head_sha")
        jobs = []
        for pr in suite.objs("pull_requests"):
            number = pr.integer("number")
            pr_head = pr.opt_obj("head")
            if (pr_head.opt_string("sha") if pr_head else None) in (None, head):
                jobs.append(_validate_job(repo, number, head, inst, "check_suite"))
        return jobs
    if event == "check_run":
        if action != "rerequested":
            return []
        run = p.obj("check_run")
        if run.opt_string("name") != VALIDATE_CHECK:
            return []
        head = run.string("head_sha")
        return [
            _validate_job(repo, pr.integer("number"), head, inst, "check_run")
            for pr in run.objs("pull_requests")
        ]
    # issue_comment
    if action != "created":
        return []
    issue = p.obj("issue")
    comment = p.obj("comment")
    user = comment.opt_obj("user")
    if not issue.truthy("pull_request") or (user and user.opt_string("type") == "Bot"):
        return []
    command = parse_command(comment.opt_string("body") or "")
    if command is None:
        return []
    comment_id = comment.integer("id")
    return [
        JobSpec(
            # One kind per comment, so a second command never supersedes a first one.
            kind=f"command:{comment_id}",
            repo=repo,
            pr=issue.integer("number"),
            head_sha="",
            installation_id=inst,
            payload={
                "command": command,
                "comment_id": comment_id,
                "user": (user.opt_string("login") if user else None) or "",
            },
        )
    ]
