"""What each job does: validate a pull request, answer a command, recover missed work.

Handlers talk to GitHub only through :class:`bot.github.GitHubClient` and never check out or
run anything from a pull request: files are read through the contents API at the head SHA.
Every write is idempotent, so a job retried after a failure leaves one check run and one
comment, not two.

One module per concern: :mod:`.validate`, :mod:`.preview`, :mod:`.commands`, :mod:`.builds`,
:mod:`.recovery`, the summary comment in :mod:`.sticky`, who may do what in :mod:`.access`,
and the :class:`Context` every job runs in in :mod:`.common`.
"""

from __future__ import annotations

import logging

from bot.handlers.builds import build_job, build_request, build_status
from bot.handlers.commands import command
from bot.handlers.common import Context, Superseded
from bot.handlers.preview import preview
from bot.handlers.recovery import recover
from bot.handlers.sticky import KeyedLocks
from bot.handlers.validate import validate_pull
from bot.state.jobs import Job

__all__ = ["Context", "KeyedLocks", "Superseded", "run"]

log = logging.getLogger("labbot.handlers")


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
