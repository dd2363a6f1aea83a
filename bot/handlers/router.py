"""Which webhook events become which jobs, and which function runs each kind of job.

Each handler module keeps a :class:`Router` and registers on it, next to the code concerned,
the events it turns into jobs and the runner of its job kinds::

    router = Router()

    @router.event("pull_request", "opened", "synchronize")
    def on_pull_request(event: Event) -> list[JobSpec]: ...

    @router.job(JobKind.VALIDATE)
    def validate_pull(job: Job, ctx: Context) -> str: ...

:mod:`bot.handlers` joins the modules' routers into one; the App asks it for a delivery's
jobs and the workers ask it to run a job. Both are lookups: there is no list of kinds or
events anywhere else to keep in step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from bot.errors import WebhookError
from bot.state.jobs import Job, JobKind, JobSpec
from bot.webhook import Delivery, Fields

if TYPE_CHECKING:
    from bot.handlers.common import Context

__all__ = ["Event", "EventHandler", "Router", "Runner"]

log = logging.getLogger("labbot.handlers")


@dataclass(frozen=True)
class Event:
    """A delivery of an event some handler registered, with what every handler reads checked:
    ``repository.full_name`` is ``owner/name``, ``installation.id`` (if any) an integer."""

    delivery: Delivery
    payload: Fields
    repo: str
    default_branch: str  # "" when the payload names none

    @property
    def action(self) -> str | None:
        return self.delivery.action

    @property
    def installation_id(self) -> int | None:
        return self.delivery.installation_id

    @classmethod
    def read(cls, delivery: Delivery) -> Event:
        """Raises:
        WebhookError: 422 naming the field that is missing or of the wrong type."""
        p = Fields(delivery.payload)
        if p.opt_obj("installation") is not None:
            p.obj("installation").integer("id")
        repository = p.obj("repository")
        repo = repository.string("full_name")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise WebhookError(422, "repository.full_name must be owner/name")
        branch = (
            repository.opt_string("default_branch") or repository.opt_string("master_branch") or ""
        )
        return cls(delivery, p, repo, branch)


EventHandler = Callable[[Event], list[JobSpec]]
Runner = Callable[[Job, "Context"], str]
_H = TypeVar("_H", bound=EventHandler)
_R = TypeVar("_R", bound=Runner)


class Router:
    """Events to job specs, and job kinds to runners. ``Router(a, b)`` holds the registrations
    of ``a`` and ``b``; a kind registered twice is an error at once, not a surprise later."""

    def __init__(self, *others: Router) -> None:
        # event -> [(actions or None for any action, handler)], in registration order
        self._events: dict[str, list[tuple[frozenset[str] | None, EventHandler]]] = {}
        self._runners: dict[JobKind, Runner] = {}
        for other in others:
            for name, handlers in other._events.items():
                self._events.setdefault(name, []).extend(handlers)
            for kind, runner in other._runners.items():
                self._add_runner(kind, runner)

    def event(self, name: str, *actions: str) -> Callable[[_H], _H]:
        """Register a function that turns deliveries of event ``name`` (with one of
        ``actions``; any action when none is given) into job specs."""

        def register(handler: _H) -> _H:
            self._events.setdefault(name, []).append(
                (frozenset(actions) if actions else None, handler)
            )
            return handler

        return register

    def job(self, kind: JobKind) -> Callable[[_R], _R]:
        """Register the function that runs jobs of ``kind``."""

        def register(runner: _R) -> _R:
            self._add_runner(kind, runner)
            return runner

        return register

    def _add_runner(self, kind: JobKind, runner: Runner) -> None:
        if kind in self._runners:
            raise ValueError(f"job kind {kind} already has a runner")
        self._runners[kind] = runner

    @property
    def events(self) -> frozenset[str]:
        """Every event some handler turns into jobs."""
        return frozenset(self._events)

    def actions(self, name: str) -> frozenset[str] | None:
        """The actions of event ``name`` that handlers act on; None when any action is."""
        found: set[str] = set()
        for actions, _ in self._events.get(name, []):
            if actions is None:
                return None
            found |= actions
        return frozenset(found)

    @property
    def kinds(self) -> frozenset[JobKind]:
        """Every job kind that has a runner."""
        return frozenset(self._runners)

    def runner(self, kind: JobKind) -> Runner | None:
        return self._runners.get(kind)

    def jobs_for(self, delivery: Delivery) -> list[JobSpec]:
        """The jobs a delivery implies (none for events no handler registered).

        Raises:
            WebhookError: 422 when a field labbot reads for this event is missing or of the
                wrong type; the message names the field.
        """
        handlers = self._events.get(delivery.event)
        if not handlers:
            return []
        event = Event.read(delivery)
        jobs: list[JobSpec] = []
        for actions, handler in handlers:
            if actions is None or delivery.action in actions:
                jobs.extend(handler(event))
        return jobs

    def run(self, job: Job, ctx: Context) -> str:
        """Run one leased job; its outcome. A kind without a runner is logged and ignored."""
        runner = self._runners.get(job.spec.kind)
        if runner is None:
            log.warning("no runner for job kind %s; job %s ignored", job.spec.kind, job.id)
            return "ignored"
        return runner(job, ctx)
