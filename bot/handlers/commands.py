"""``/labbot`` commands in pull request comments."""

from __future__ import annotations

from typing import Any

from bot import markup, render
from bot.handlers.access import may_command, preview_wait
from bot.handlers.common import Context
from bot.handlers.sticky import upsert_sticky
from bot.handlers.validate import validate_pull
from bot.state.jobs import Job, JobSpec


def command(job: Job, ctx: Context) -> str:
    """Answer a ``/labbot`` command. Users without access get no work done and one answer per
    pull request; previews are rate-limited per pull request and per installation."""
    spec = job.spec
    inst, repo, number = spec.installation_id, spec.repo, int(spec.pr or 0)
    payload: dict[str, Any] = spec.payload
    user = str(payload.get("user", ""))
    word = str(payload.get("command", "help"))
    if not may_command(ctx, inst, repo, user):
        if ctx.limits is not None and not ctx.limits.first_refusal(repo, number, user):
            return "unauthorized-again"
        upsert_sticky(
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
        upsert_sticky(
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
            upsert_sticky(
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
        upsert_sticky(
            ctx,
            inst,
            repo,
            number,
            "command",
            f"@{user} asked for `/labbot preview`: generating samples for {markup.code(head[:7])}.",
        )
        return "preview-queued"
    upsert_sticky(ctx, inst, repo, number, "command", render.HELP)
    return "help"
