"""Worker threads: lease a job, keep its lease alive, run it, record the outcome."""

from __future__ import annotations

import logging
import threading
import time

from bot import handlers
from bot.errors import GitHubError, RateLimited
from bot.state import Queue
from bot.state.jobs import Job, default_worker_id

log = logging.getLogger("labbot.worker")


class Workers:
    """``count`` threads that process jobs until :meth:`stop`."""

    def __init__(self, ctx: handlers.Context, count: int, poll_interval: float = 0.05) -> None:
        self.ctx = ctx
        self.count = count
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def queue(self) -> Queue:
        return self.ctx.queue

    def start(self) -> None:
        for i in range(self.count):
            t = threading.Thread(target=self._loop, name=f"labbot-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def _loop(self) -> None:
        worker = default_worker_id()
        while not self._stop.is_set():
            try:
                job = self.queue.lease(worker)
            except Exception:  # a locked or broken database must not kill the thread
                log.exception("lease failed")
                self._stop.wait(1.0)
                continue
            if job is None:
                self.queue.wait_for_work(self.poll_interval, self._stop)
                continue
            self.run_one(job, worker)

    def run_one(self, job: Job, worker: str) -> None:
        beat = threading.Event()
        interval = max(0.05, self.queue.lease_seconds / 3)

        def heartbeat() -> None:
            while not beat.wait(interval):
                if not self.queue.heartbeat(job.id, worker):
                    return

        hb = threading.Thread(target=heartbeat, name=f"labbot-heartbeat-{job.id}", daemon=True)
        hb.start()
        start = time.monotonic()
        kind = job.spec.kind.value
        extra = {"job_id": job.id, "delivery_id": job.delivery_id, "repo": job.spec.repo}
        try:
            outcome = handlers.run(job, self.ctx)
        except handlers.Superseded:
            self.queue.complete(job.id, worker, "superseded")
            self.ctx.metrics.job(kind, "superseded", time.monotonic() - start)
        except RateLimited as exc:
            log.warning("job %s rate limited for %.0f s", job.id, exc.retry_after, extra=extra)
            state = self.queue.fail(job.id, worker, str(exc), retryable=True)
            self.ctx.metrics.job(kind, f"retry-{state}", time.monotonic() - start)
        except GitHubError as exc:
            log.warning("job %s: %s", job.id, exc, extra=extra)
            state = self.queue.fail(job.id, worker, str(exc), retryable=exc.retryable)
            self.ctx.metrics.job(kind, f"error-{state}", time.monotonic() - start)
        except Exception as exc:  # a bug: keep the reason, retry, dead-letter after N
            log.exception("job %s crashed", job.id, extra=extra)
            state = self.queue.fail(job.id, worker, f"{type(exc).__name__}: {exc}", retryable=True)
            self.ctx.metrics.job(kind, f"crash-{state}", time.monotonic() - start)
        else:
            self.queue.complete(job.id, worker, outcome)
            self.ctx.metrics.job(kind, "success", time.monotonic() - start)
            log.info("job %s %s: %s", job.id, job.spec.kind, outcome, extra=extra)
        finally:
            beat.set()
            hb.join(1.0)
