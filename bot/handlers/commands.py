"""``/labbot`` commands in pull request comments."""

from __future__ import annotations

import re
from typing import Any

from bot import markup, render
from bot.handlers.access import may_command, preview_wait
from bot.handlers.common import Context
from bot.handlers.router import Event, Router
from bot.handlers.sticky import upsert_sticky
from bot.handlers.validate import validate_pull
from bot.state.jobs import Job, JobKind, JobSpec

router = Router()

COMMANDS = ("help", "check", "preview")
_COMMAND = re.compile(r"^\s*/labbot(?:\s+([A-Za-z-]+))?\s*$", re.MULTILINE)


def parse_command(body: str) -> str | None:
    """The ``/labbot`` command in a comment: ``help``, ``check`` or ``preview``; ``help`` for an
    unknown word or a bare ``/labbot``; ``None`` when the comment holds no command.

    >>> parse_command("looks good\\n/labbot  check\\n"), parse_command("/labbot deploy")
    ('check', 'help')
    >>> print(parse_command("no command here"))
    None
    """
    match = _COMMAND.search(body or "")
    if match is None:
        return None
    word = (match.group(1) or "help").lower()
    return word if word in COMMANDS else "help"


@router.event("issue_comment", "created")
def on_comment(event: Event) -> list[JobSpec]:
    """A ``/labbot`` command in a new comment on a pull request, not written by a bot."""
    issue = event.payload.obj("issue")
    comment = event.payload.obj("comment")
    user = comment.opt_obj("user")
    if not issue.truthy("pull_request") or (user and user.opt_string("type") == "Bot"):
        return []
    word = parse_command(comment.opt_string("body") or "")
    if word is None:
        return []
    comment_id = comment.integer("id")
    return [
        JobSpec(
            JobKind.COMMAND,
            event.repo,
            issue.integer("number"),
            event.installation_id,
            # Each comment is its own group, so a second command never supersedes a first one.
            dedupe_key="",
            group=str(comment_id),
            payload={
                "command": word,
                "comment_id": comment_id,
                "user": (user.opt_string("login") if user else None) or "",
            },
        )
    ]


@router.job(JobKind.COMMAND)
def command(job: Job, ctx: Context) -> str:
    """Answer a ``/labbot`` command. Users without access get no work done and one answer per
    pull request; previews are rate-limited per pull request and per installation."""
    spec = job.spec
    inst, repo, number = spec.installation_id, spec.repo, int(spec.pr or 0)
    payload: dict[str, Any] = spec.payload
    user = str(payload.get("user", ""))
    word = str(payload.get("command", "help"))

    def reply(text: str) -> None:
        upsert_sticky(ctx, inst, repo, number, "command", text)

    if not may_command(ctx, inst, repo, user):
        if ctx.limits is not None and not ctx.limits.first_refusal(repo, number, user):
            return "unauthorized-again"
        reply(
            f"@{user}: {markup.code('/labbot ' + word)} needs write access to this repository "
            "(or a place on the `commands.allowed_users` list in `.github/labbot.yml`)."
        )
        return "unauthorized"
    comment_id = payload.get("comment_id")
    if isinstance(comment_id, int):
        ctx.client.react(inst, repo, comment_id, "eyes")
    if word == "check":
        head = ctx.client.pull(inst, repo, number)["head"]["sha"]
        reply(f"@{user} asked for `/labbot check`: checking {markup.code(str(head)[:7])} again.")
        return validate_pull(job, ctx, head_sha=str(head))
    if word == "preview":
        refused = preview_wait(ctx, inst, repo, number)
        if refused is not None:
            reply(f"@{user} asked for `/labbot preview`: not now, {refused}.")
            return "preview-rate-limited"
        head = str(ctx.client.pull(inst, repo, number)["head"]["sha"])
        ctx.queue.enqueue(
            JobSpec.for_commit(JobKind.PREVIEW, repo, number, head, inst, {"reason": "command"})
        )
        reply(
            f"@{user} asked for `/labbot preview`: generating samples for {markup.code(head[:7])}."
        )
        return "preview-queued"
    reply(render.HELP)
    return "help"
