"""The FastAPI application: ``POST /webhook``, ``GET /healthz``, ``GET /metrics``.

The webhook verifies the signature, has the delivery and its jobs recorded durably
(:mod:`bot.intake` commits the deliveries of one event-loop turn together), and answers 202;
workers do the rest. Nothing here reads the environment:
:func:`create_app` gets its settings and collaborators from the caller.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from bot import handlers
from bot.backend import Queue, open_backend
from bot.errors import WebhookError
from bot.github import GitHubClient
from bot.intake import DeliveryWriter
from bot.metrics import Metrics
from bot.queue import DeliveryRecord, JobSpec
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
    queue: Queue | None = None,
    client: GitHubClient | None = None,
    metrics: Metrics | None = None,
    start_workers: bool = True,
) -> WebhookFastPath:
    """Build the App. Workers and the periodic recovery start with the server."""
    metrics = metrics or Metrics()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    backend = open_backend(settings, queue)  # SQLite, or PostgreSQL for several replicas
    queue = backend.queue
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
        builds=backend.builds,
    )
    if backend.locks is not None:
        ctx.locks = backend.locks
    workers = Workers(ctx, settings.workers)
    writer = DeliveryWriter(queue)
    stop_recovery = threading.Event()

    def schedule_recovery() -> None:
        while True:
            queue.enqueue(JobSpec("recover", "", None, str(int(time.time())), None, {}))
            if stop_recovery.wait(settings.recovery_interval_seconds):
                return

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        queue.open_connection()  # the event loop's, which records deliveries
        # Everything the server needs is imported by now. Moving those objects out of the
        # collector's view makes each full collection scan only what requests create: a full
        # collection held the GIL 40-55 ms otherwise, stalling every acknowledgement in flight.
        gc.collect()
        gc.freeze()
        if start_workers:
            workers.start()
            threading.Thread(target=schedule_recovery, name="labbot-recovery", daemon=True).start()
        yield
        stop_recovery.set()
        workers.stop()
        holder.close()
        backend.close()

    app = FastAPI(title="labbot", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.queue = queue
    app.state.metrics = metrics
    app.state.workers = workers

    async def handle_delivery(
        headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Verify, record and enqueue one delivery; the HTTP status and JSON answer."""
        start = time.perf_counter()
        event = headers.get("x-github-event", "unknown")
        try:
            delivery = parse(headers, body, settings.webhook_secret, settings.max_body_bytes)
        except WebhookError as exc:
            metrics.delivery(event, f"rejected-{exc.status}")
            log.warning("delivery refused (%s): %s", exc.status, exc)
            return exc.status, {"error": str(exc)}
        try:
            jobs = jobs_for(delivery)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("delivery %s: unexpected payload shape: %s", delivery.id, exc)
            jobs = []
        # Recorded in one transaction with the other deliveries read in this turn of the
        # event loop (group commit, see bot/intake.py); answered once it is durable. A push
        # sends pull_request.synchronize and check_suite.requested for the same head:
        # validate it once; an explicit re-run (check_run.rerequested) always runs.
        window = 0.0 if delivery.event == "check_run" else DEDUPE_SECONDS
        record = DeliveryRecord(delivery.id, delivery.event, delivery.action, tuple(jobs), window)
        try:
            new = await writer.record(record)
        except Exception as exc:  # the database refused it: GitHub shows the failure
            metrics.delivery(delivery.event, "rejected-503")
            log.error("delivery %s could not be recorded: %s", delivery.id, exc)
            return 503, {"error": "the delivery could not be recorded; redeliver it later"}
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
        return 202, {"status": outcome, "jobs": len(jobs) if new else 0}

    app.state.handle_delivery = handle_delivery

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        stats = queue.stats()
        return {"status": "ok", "queue_depth": stats.depth}

    @app.get("/metrics")
    def metrics_endpoint() -> PlainTextResponse:
        stats = queue.stats()
        text = metrics.render(stats.depth, stats.oldest_pending_age or 0.0, stats.counts)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return WebhookFastPath(app, handle_delivery, settings.max_body_bytes, metrics)


class WebhookFastPath:
    """ASGI wrapper that answers ``POST /webhook`` directly and passes everything else to the
    FastAPI app. The webhook is the App's hot path: skipping the framework's routing and
    response machinery halves its CPU cost, which is what keeps acknowledgements fast when
    50 deliveries arrive at once."""

    def __init__(
        self,
        app: FastAPI,
        handler: Callable[[Mapping[str, str], bytes], Awaitable[tuple[int, dict[str, Any]]]],
        max_body_bytes: int,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/webhook":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": "use POST"})
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(headers, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(headers, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        status, answer = await self.handler(headers, b"".join(chunks))
        await _answer(send, status, answer)

    async def _too_large(self, headers: Headers, send: Send) -> None:
        self.metrics.delivery(headers.get("x-github-event", "unknown"), "rejected-413")
        await _answer(send, 413, {"error": f"payload larger than {self.max_body_bytes} bytes"})


async def _answer(send: Send, status: int, answer: dict[str, Any]) -> None:
    payload = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
