"""What each job does: validate a pull request, answer a command, recover missed work.

Handlers talk to GitHub only through :class:`bot.github.GitHubClient` and never check out or
run anything from a pull request: files are read through the contents API at the head SHA.
Every write is idempotent, so a job retried after a failure leaves one check run and one
comment, not two.

One module per concern: :mod:`.validate`, :mod:`.preview`, :mod:`.commands`, :mod:`.builds`,
:mod:`.recovery`, the summary comment in :mod:`.sticky`, who may do what in :mod:`.access`,
and the :class:`Context` every job runs in in :mod:`.common`. Each concern's module registers
on its :class:`~.router.Router` the webhook events it turns into jobs and the runner of its
job kinds; :data:`router` joins them.
"""

from __future__ import annotations

from bot.handlers import builds, commands, preview, recovery, validate
from bot.handlers.common import Context, Superseded
from bot.handlers.router import Router
from bot.handlers.sticky import KeyedLocks
from bot.state.jobs import Job, JobSpec
from bot.webhook import Delivery

__all__ = ["Context", "KeyedLocks", "Superseded", "jobs_for", "router", "run"]

#: Every handler module's events and runners.
router = Router(validate.router, preview.router, commands.router, builds.router, recovery.router)


def jobs_for(delivery: Delivery) -> list[JobSpec]:
    """The jobs a delivery implies, from the events the handler modules registered.

    Raises:
        WebhookError: 422 when a field labbot reads for this event is missing or of the wrong
            type; the message names the field.
    """
    return router.jobs_for(delivery)


def run(job: Job, ctx: Context) -> str:
    """Run one leased job; returns its outcome. GitHub errors propagate for the retry policy."""
    return router.run(job, ctx)
