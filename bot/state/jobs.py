"""Jobs and deliveries as both queue engines (SQLite and PostgreSQL) store them: the job
states, what a job is, and the rows they are read from."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

PENDING = "pending"


LEASED = "leased"


DONE = "done"


DEAD = "dead"


SUPERSEDED = "superseded"


STATES: tuple[str, ...] = (PENDING, LEASED, DONE, DEAD, SUPERSEDED)


#: What :meth:`JobQueue.fail` returns when the worker no longer holds the lease (nothing changed).
LOST = "lost"


class JobKind(StrEnum):
    """What a job does. The values are what the queue stores in its ``kind`` column."""

    VALIDATE = "validate"
    PREVIEW = "preview"
    COMMAND = "command"
    RECOVER = "recover"
    BUILD_REQUEST = "build-request"
    BUILD_STATUS = "build-status"
    BUILD_JOB = "build-job"


#: The kinds whose jobs are about one commit: their ``sha`` is set and is their dedupe key.
COMMIT_KINDS = frozenset({JobKind.VALIDATE, JobKind.PREVIEW, JobKind.BUILD_REQUEST})


class UnknownJobKind(ValueError):
    """A stored job of a kind this version does not know (written by another version)."""

    def __init__(self, stored: str) -> None:
        super().__init__(f"unknown job kind {stored!r}")
        self.stored = stored


@dataclass(frozen=True)
class JobSpec:
    """What to run, and how the queue merges it with other jobs.

    The supersede group is ``(repo, pr, kind, group)``; within a group, jobs with the same
    ``dedupe_key`` coalesce (one active job), and a job with a new key supersedes the others.
    ``sha`` is the commit the job is about, set exactly for :data:`COMMIT_KINDS`, whose
    dedupe key is that commit (a newer push supersedes the older one's job).
    """

    kind: JobKind
    repo: str  # "owner/name" ("" for app-wide jobs)
    pr: int | None  # pull request number, or None
    installation_id: int | None
    dedupe_key: str  # e.g. the head SHA, a workflow run's "completed-2", a workflow job id
    sha: str | None = None  # a commit SHA, and nothing else
    group: str = ""  # narrows the supersede group: a workflow run id, a comment id
    payload: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable

    def __post_init__(self) -> None:
        if not isinstance(self.kind, JobKind):
            try:
                object.__setattr__(self, "kind", JobKind(self.kind))
            except ValueError:
                raise UnknownJobKind(str(self.kind)) from None
        if not isinstance(self.repo, str) or not isinstance(self.dedupe_key, str):
            raise TypeError("JobSpec.repo and JobSpec.dedupe_key must be strings")
        if not isinstance(self.group, str) or ":" in self.group:
            raise ValueError("JobSpec.group must be a string without ':'")
        for name in ("pr", "installation_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"JobSpec.{name} must be an int or None")
        if self.pr is not None and self.pr < 0:
            raise ValueError("JobSpec.pr must not be negative")
        if self.kind in COMMIT_KINDS:
            if not isinstance(self.sha, str) or not self.sha or self.dedupe_key != self.sha:
                raise ValueError(f"a {self.kind} job needs its commit sha as its dedupe key")
        elif self.sha is not None:
            raise ValueError(f"a {self.kind} job is about no commit: its sha must be None")
        if not isinstance(self.payload, dict):
            raise TypeError("JobSpec.payload must be a dict")

    @classmethod
    def for_commit(
        cls,
        kind: JobKind,
        repo: str,
        pr: int | None,
        sha: str,
        installation_id: int | None,
        payload: dict[str, Any] | None = None,
    ) -> JobSpec:
        """A job about commit ``sha`` (one of :data:`COMMIT_KINDS`), deduplicated on it."""
        return cls(kind, repo, pr, installation_id, sha, sha, "", dict(payload or {}))

    @property
    def commit(self) -> str:
        """The commit SHA of a job about a commit.

        Raises:
            ValueError: for a kind that is about no commit.
        """
        if self.sha is None:
            raise ValueError(f"a {self.kind} job is about no commit")
        return self.sha

    @property
    def key(self) -> tuple[str, int | None, JobKind, str, str]:
        """The coalescing key ``(repo, pr, kind, group, dedupe_key)``."""
        return (self.repo, self.pr, self.kind, self.group, self.dedupe_key)

    @property
    def stored_kind(self) -> str:
        """What the queue's ``kind`` column holds: the supersede group below ``(repo, pr)``,
        ``kind`` or ``kind:group`` (the format stored rows have always had)."""
        return f"{self.kind.value}:{self.group}" if self.group else self.kind.value


@dataclass(frozen=True)
class DeliveryRecord:
    """One webhook delivery to record, with the jobs it implies (see
    :meth:`JobQueue.record_delivery`)."""

    delivery_id: str
    event: str
    action: str | None
    jobs: tuple[JobSpec, ...]
    coalesce_done_within: float = 0.0
    #: Recorded as the delivery's outcome instead of ``queued``/``no_jobs`` (a refusal's reason).
    outcome: str | None = None


@dataclass(frozen=True)
class Job:
    """A leased job. ``attempts`` counts leases so far, this one included (1 on the first run)."""

    id: int
    spec: JobSpec
    attempts: int
    lease_owner: str
    lease_expires_at: float
    delivery_id: str | None


@dataclass(frozen=True)
class QueueStats:
    """A consistent snapshot of the queue, for ``/metrics`` and health checks."""

    counts: dict[str, int]  # jobs by state; every state present, zero when none
    depth: int  # pending + leased
    oldest_pending_age: float | None  # seconds since the oldest pending job was created
    expired_leases: int  # leased jobs whose lease has run out (worker presumed dead)
    deliveries: dict[tuple[str, str], int]  # deliveries by (event, outcome)
    duplicate_deliveries: int  # repeated delivery ids acknowledged without processing


def default_worker_id() -> str:
    """``host:pid:thread-id``, unique per thread among processes sharing the database file."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def dump_payload(spec: JobSpec) -> str:
    try:
        return json.dumps(spec.payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload of {spec.kind} job is not JSON-serialisable: {exc}") from exc


def spec_columns(spec: JobSpec) -> tuple[str, str, int | None, str, int | None]:
    """The spec as the queue's columns ``(kind, repo, pr, head_sha, installation_id)``: the
    ``head_sha`` column holds the dedupe key (the commit SHA for :data:`COMMIT_KINDS`)."""
    return (spec.stored_kind, spec.repo, spec.pr, spec.dedupe_key, spec.installation_id)


def row_to_spec(row: Sequence[Any]) -> JobSpec:
    """The spec of a stored row ``(kind, repo, pr, head_sha, installation_id, payload)``.

    Raises:
        UnknownJobKind: when the row's kind is not one this version knows.
    """
    stored, repo, pr, key, installation_id, payload = row
    name, _, group = str(stored).partition(":")
    try:
        kind = JobKind(name)
    except ValueError:
        raise UnknownJobKind(str(stored)) from None
    return JobSpec(
        kind=kind,
        repo=str(repo),
        pr=None if pr is None else int(pr),
        installation_id=None if installation_id is None else int(installation_id),
        dedupe_key=str(key),
        sha=str(key) if kind in COMMIT_KINDS else None,
        group=group,
        payload=json.loads(payload),
    )


def dead_specs(rows: Sequence[Sequence[Any]]) -> list[tuple[int, JobSpec, str]]:
    """Dead jobs from rows ``(id, kind, repo, pr, head_sha, installation_id, payload,
    last_error)``; a job of a kind this version does not know is left out."""
    out = []
    for r in rows:
        try:
            out.append((int(r[0]), row_to_spec(r[1:7]), str(r[7] or "")))
        except UnknownJobKind:
            continue
    return out


def row_to_job(row: Sequence[Any]) -> Job:
    return Job(
        id=int(row[0]),
        spec=row_to_spec(row[1:7]),
        delivery_id=None if row[7] is None else str(row[7]),
        attempts=int(row[8]),
        lease_owner=str(row[9]),
        lease_expires_at=float(row[10]),
    )
