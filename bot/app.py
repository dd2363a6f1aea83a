"""The FastAPI application: ``POST /webhook``, ``GET /healthz``, ``GET /metrics``.

The webhook verifies the signature, has the delivery and its jobs recorded durably
(:mod:`bot.intake` commits the deliveries of one event-loop turn together), and answers 202;
workers do the rest. Nothing here reads the environment:
:func:`create_app` gets its settings and collaborators from the caller.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from bot import handlers
from bot.errors import WebhookError
from bot.github import GitHubClient
from bot.handlers.recovery import recovery_job
from bot.intake import DeliveryWriter
from bot.isolation import IsolatedValidator
from bot.metrics import Metrics
from bot.settings import Settings
from bot.state import Queue, open_backend
from bot.state.jobs import DeliveryRecord
from bot.state.limits import PreviewLimits
from bot.webhook import event_label, parse
from bot.worker import Workers

if TYPE_CHECKING:
    from pipeline.sdg.teacher import Teacher

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
        from pipeline.sdg.teacher import make_teacher

        with self.lock:
            if self.teacher is None:
                self.teacher = make_teacher(
                    self.settings.teacher,
                    cache_dir=self.settings.cache_dir,
                    concurrency=self.settings.teacher_concurrency,
                    api_key=self.settings.teacher_api_key or None,
                    timeout=self.settings.teacher_timeout_seconds,
                )
            return self.teacher

    def close(self) -> None:
        with self.lock:
            if self.teacher is not None:
                self.teacher.close()
                self.teacher = None


def purge_expired(queue: Queue, retention_days: float, now: float | None = None) -> None:
    """Delete finished jobs and deliveries older than ``retention_days`` (run with each
    recovery); a database error is logged, and the next run tries again."""
    before = (time.time() if now is None else now) - retention_days * 86400.0
    try:
        jobs, deliveries = queue.purge(before)
    except sqlite3.Error as exc:
        log.warning("purging old jobs and deliveries failed: %s", exc)
        return
    if jobs or deliveries:
        log.info(
            "purged %d finished jobs and %d deliveries older than %g days",
            jobs,
            deliveries,
            retention_days,
        )


def create_app(
    settings: Settings,
    *,
    queue: Queue | None = None,
    client: GitHubClient | None = None,
    metrics: Metrics | None = None,
    validator: IsolatedValidator | None = None,
    start_workers: bool = True,
) -> WebhookFastPath:
    """Build the App. Workers and the periodic recovery start with the server.

    ``validator`` validates contributors' files in child processes (by default the real
    validator under ``settings.validate_seconds`` and ``settings.validate_memory_mb``).
    """
    metrics = metrics or Metrics()
    validator = validator or IsolatedValidator(
        seconds=settings.validate_seconds, memory_bytes=settings.validate_memory_mb << 20
    )
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
        limits=backend.limits,
        preview_limits=PreviewLimits(
            settings.preview_limit_per_pr,
            settings.preview_limit_per_installation,
            settings.preview_limit_window_seconds,
        ),
        validator=validator,
        validate_seconds=settings.validate_seconds,
    )
    if backend.locks is not None:
        ctx.locks = backend.locks
    workers = Workers(ctx, settings.workers)
    writer = DeliveryWriter(queue)
    stop_recovery = threading.Event()

    def schedule_recovery() -> None:
        while True:
            queue.enqueue(recovery_job(time.time()))
            purge_expired(queue, settings.retention_days)
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
            validator.warm(settings.workers)
            workers.start()
            threading.Thread(target=schedule_recovery, name="labbot-recovery", daemon=True).start()
        yield
        stop_recovery.set()
        workers.stop()
        validator.close()
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
        try:
            delivery = parse(headers, body, settings.webhook_secret, settings.max_body_bytes)
        except WebhookError as exc:
            # Only a verified delivery names its event in the metrics: anyone can send headers.
            label = "invalid" if exc.status in (400, 422) else "unverified"
            metrics.delivery(label, f"rejected-{exc.status}")
            log.warning("delivery refused (%s): %s", exc.status, exc)
            return exc.status, {"error": str(exc)}
        event = event_label(delivery.event)
        try:
            jobs = handlers.jobs_for(delivery)
        except WebhookError as exc:
            return await refuse(delivery.id, delivery.event, delivery.action, event, str(exc))
        except Exception as exc:  # a shape jobs_for did not foresee: still the sender's doing
            log.exception("delivery %s: unreadable payload", delivery.id)
            reason = f"the payload could not be read ({type(exc).__name__})"
            return await refuse(delivery.id, delivery.event, delivery.action, event, reason)
        # Recorded in one transaction with the other deliveries read in this turn of the
        # event loop (group commit, see bot/intake.py); answered once it is durable. A push
        # sends pull_request.synchronize and check_suite.requested for the same head:
        # validate it once; an explicit re-run (check_run.rerequested) always runs.
        window = 0.0 if delivery.event == "check_run" else DEDUPE_SECONDS
        record = DeliveryRecord(delivery.id, delivery.event, delivery.action, tuple(jobs), window)
        try:
            new = await writer.record(record)
        except Exception as exc:  # the database refused it: GitHub shows the failure
            metrics.delivery(event, "rejected-503")
            log.error("delivery %s could not be recorded: %s", delivery.id, exc)
            return 503, {"error": "the delivery could not be recorded; redeliver it later"}
        elapsed = time.perf_counter() - start
        outcome = ("queued" if jobs else "no_jobs") if new else "duplicate"
        metrics.delivery(event, outcome, elapsed)
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

    async def refuse(
        delivery_id: str, name: str, action: str | None, event: str, reason: str
    ) -> tuple[int, dict[str, Any]]:
        """Answer 422 for a signed delivery without the shape its event needs, and record it
        with the reason: recovery only redelivers what was never recorded, so it is asked for
        once, not every few hours."""
        record = DeliveryRecord(delivery_id, name, action, (), 0.0, f"rejected: {reason}"[:500])
        try:
            await writer.record(record)
        except Exception as exc:
            log.error("refused delivery %s could not be recorded: %s", delivery_id, exc)
        metrics.delivery(event, "rejected-422")
        log.warning("delivery %s refused (422): %s", delivery_id, reason)
        return 422, {"error": reason}

    app.state.handle_delivery = handle_delivery

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        stats = queue.stats()
        return {"status": "ok", "queue_depth": stats.depth}

    @app.get("/metrics")
    def metrics_endpoint(request: Request) -> PlainTextResponse:
        if settings.metrics_token:
            given = request.headers.get("authorization", "")
            wanted = f"Bearer {settings.metrics_token}"
            if not hmac.compare_digest(given.encode(), wanted.encode()):
                return PlainTextResponse(
                    "metrics need Authorization: Bearer <LABBOT_METRICS_TOKEN>\n",
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        stats = queue.stats()
        text = metrics.render(stats.depth, stats.oldest_pending_age or 0.0, stats.counts)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return WebhookFastPath(
        app, handle_delivery, settings.max_body_bytes, metrics, settings.body_timeout_seconds
    )


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
        body_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.body_timeout = body_timeout
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
        # The whole body must arrive within body_timeout of the headers: a client that
        # trickles it (or sends nothing) would otherwise hold the request open for ever.
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while more:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                self.metrics.delivery("unverified", "rejected-408")
                await _answer(send, 408, {"error": "the body arrived too slowly"}, close=True)
                return
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
        self.metrics.delivery("unverified", "rejected-413")
        await _answer(send, 413, {"error": f"payload larger than {self.max_body_bytes} bytes"})


async def _answer(send: Send, status: int, answer: dict[str, Any], *, close: bool = False) -> None:
    payload = json.dumps(answer).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
