"""The FastAPI application: ``POST /webhook``, ``GET /healthz``, ``GET /metrics``.

The webhook verifies the signature, records the delivery and its jobs in one SQLite
transaction, and answers 202; workers do the rest. Nothing here reads the environment:
:func:`create_app` gets its settings and collaborators from the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from bot import handlers
from bot.builds import BuildLedger
from bot.errors import WebhookError
from bot.github import GitHubClient
from bot.metrics import Metrics
from bot.queue import JobQueue, JobSpec
from bot.settings import Settings
from bot.webhook import jobs_for, parse
from bot.worker import Workers

if TYPE_CHECKING:
    from pipeline.teacher import Teacher

log = logging.getLogger("labbot.app")

#: A finished job for the same (repo, PR, head SHA, kind) this recent absorbs a new delivery.
DEDUPE_SECONDS = 600.0


class TeacherHolder:
    """Builds the teacher once, on first use (loading the embedded model takes seconds), and
    closes it when the App stops."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.teacher: Teacher | None = None
        self.lock = threading.Lock()

    def __call__(self) -> Teacher:
        from pipeline.teacher import make_teacher

        with self.lock:
            if self.teacher is None:
                self.teacher = make_teacher(
                    self.settings.teacher,
                    cache_dir=self.settings.cache_dir,
                    concurrency=self.settings.teacher_concurrency,
                )
            return self.teacher

    def close(self) -> None:
        with self.lock:
            if self.teacher is not None:
                self.teacher.close()
                self.teacher = None


def create_app(
    settings: Settings,
    *,
    queue: JobQueue | None = None,
    client: GitHubClient | None = None,
    metrics: Metrics | None = None,
    start_workers: bool = True,
) -> FastAPI:
    """Build the App. Workers and the periodic recovery start with the server."""
    metrics = metrics or Metrics()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    queue = queue or JobQueue(settings.database, lease_seconds=settings.lease_seconds)
    client = client or GitHubClient(
        settings.app_id,
        settings.private_key,
        settings.github_api_url,
        metrics=metrics,
        write_interval=settings.write_interval_seconds,
    )
    holder = TeacherHolder(settings)
    ctx = handlers.Context(
        client=client,
        queue=queue,
        metrics=metrics,
        teacher=holder if settings.teacher else None,
        cache_dir=settings.cache_dir,
        preview_seconds=settings.preview_seconds,
        builds=BuildLedger(settings.data_dir / "builds.sqlite3"),
    )
    workers = Workers(ctx, settings.workers)
    stop_recovery = threading.Event()

    def schedule_recovery() -> None:
        while True:
            queue.enqueue(JobSpec("recover", "", None, str(int(time.time())), None, {}))
            if stop_recovery.wait(settings.recovery_interval_seconds):
                return

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_workers:
            workers.start()
            threading.Thread(target=schedule_recovery, name="labbot-recovery", daemon=True).start()
        yield
        stop_recovery.set()
        workers.stop()
        holder.close()
        if ctx.builds is not None:
            ctx.builds.close()

    app = FastAPI(title="labbot", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.queue = queue
    app.state.metrics = metrics
    app.state.workers = workers

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        start = time.perf_counter()
        body = await request.body()
        event = request.headers.get("x-github-event", "unknown")
        try:
            delivery = parse(
                request.headers, body, settings.webhook_secret, settings.max_body_bytes
            )
        except WebhookError as exc:
            metrics.delivery(event, f"rejected-{exc.status}")
            log.warning("delivery refused (%s): %s", exc.status, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        try:
            jobs = jobs_for(delivery)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("delivery %s: unexpected payload shape: %s", delivery.id, exc)
            jobs = []
        # One short SQLite transaction (well under a millisecond) right on the event loop: a
        # thread hop would cost more than the write itself.
        # A push sends pull_request.synchronize and check_suite.requested for the same head:
        # validate it once. An explicit re-run (check_run.rerequested) always runs.
        window = 0.0 if delivery.event == "check_run" else DEDUPE_SECONDS
        new = queue.record_delivery(
            delivery.id, delivery.event, delivery.action, jobs, coalesce_done_within=window
        )
        elapsed = time.perf_counter() - start
        outcome = ("queued" if jobs else "no_jobs") if new else "duplicate"
        metrics.delivery(delivery.event, outcome, elapsed)
        log.info(
            "delivery %s %s.%s: %s (%d jobs)",
            delivery.id,
            delivery.event,
            delivery.action,
            outcome,
            len(jobs),
            extra={"delivery_id": delivery.id, "installation_id": delivery.installation_id},
        )
        return JSONResponse({"status": outcome, "jobs": len(jobs) if new else 0}, status_code=202)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        stats = queue.stats()
        return {"status": "ok", "queue_depth": stats.depth}

    @app.get("/metrics")
    def metrics_endpoint() -> PlainTextResponse:
        stats = queue.stats()
        text = metrics.render(stats.depth, stats.oldest_pending_age or 0.0, stats.counts)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return app
