"""Jobs and deliveries as both queue engines (SQLite and PostgreSQL) store them: the job
states, what a job is, and the rows they are read from."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PENDING = "pending"


LEASED = "leased"


DONE = "done"


DEAD = "dead"


SUPERSEDED = "superseded"


STATES: tuple[str, ...] = (PENDING, LEASED, DONE, DEAD, SUPERSEDED)


#: What :meth:`JobQueue.fail` returns when the worker no longer holds the lease (nothing changed).
LOST = "lost"


@dataclass(frozen=True)
class JobSpec:
    """What to run. Coalescing key ``(repo, pr, head_sha, kind)``; supersede group
    ``(repo, pr, kind)``."""

    kind: str  # "validate", "preview", "build", "recover", ...
    repo: str  # "owner/name" ("" for app-wide jobs)
    pr: int | None  # pull request number, or None
    head_sha: str  # "" when not applicable
    installation_id: int | None
    payload: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError("JobSpec.kind must be a non-empty string")
        if not isinstance(self.repo, str) or not isinstance(self.head_sha, str):
            raise TypeError("JobSpec.repo and JobSpec.head_sha must be strings")
        for name in ("pr", "installation_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"JobSpec.{name} must be an int or None")
        if self.pr is not None and self.pr < 0:
            raise ValueError("JobSpec.pr must not be negative")
        if not isinstance(self.payload, dict):
            raise TypeError("JobSpec.payload must be a dict")

    @property
    def key(self) -> tuple[str, int | None, str, str]:
        """The coalescing key ``(repo, pr, head_sha, kind)``."""
        return (self.repo, self.pr, self.head_sha, self.kind)


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


def row_to_spec(row: Sequence[Any]) -> JobSpec:
    kind, repo, pr, head_sha, installation_id, payload = row
    return JobSpec(
        kind=str(kind),
        repo=str(repo),
        pr=None if pr is None else int(pr),
        head_sha=str(head_sha),
        installation_id=None if installation_id is None else int(installation_id),
        payload=json.loads(payload),
    )


def row_to_job(row: Sequence[Any]) -> Job:
    return Job(
        id=int(row[0]),
        spec=row_to_spec(row[1:7]),
        delivery_id=None if row[7] is None else str(row[7]),
        attempts=int(row[8]),
        lease_owner=str(row[9]),
        lease_expires_at=float(row[10]),
    )
