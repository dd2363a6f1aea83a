"""The App's Prometheus metrics, kept and exposed with prometheus_client.

Each :class:`Metrics` has its own registry (several Apps in one process, as in the tests, never
share counters). Counters and histograms are updated as the App works; queue depth and age are
read from the queue when ``/metrics`` is scraped. Label values come from the App's own
vocabulary and every family is capped at :data:`MAX_SERIES` label sets, so no sequence of
requests can grow ``/metrics`` without bound.

Several worker processes: prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
set before the processes start, a ``MultiProcessCollector`` on the scraping side) sums their
counters and histograms; see the README (The GitHub App).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: Most label sets one metric family keeps; later new ones are counted under "other".
MAX_SERIES = 200
OTHER = "other"


class _Bounded:
    """The label sets one family has seen, at most :data:`MAX_SERIES` of them."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, ...]] = set()

    def admit(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        """``labels``, or all-``other`` once the family is full."""
        if labels in self.seen:
            return labels
        if len(self.seen) >= MAX_SERIES:
            labels = tuple(OTHER for _ in labels)
        self.seen.add(labels)
        return labels


class Metrics:
    """Thread-safe counters and histograms for the App, with the names and labels of its
    ``/metrics`` page."""

    def __init__(self) -> None:
        # No *_created series: the page keeps the samples it always had (process-wide setting).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        r = self.registry
        self._deliveries = Counter(
            "labbot_deliveries",
            "Webhook deliveries by event and outcome.",
            ["event", "outcome"],
            registry=r,
        )
        self._ack = Histogram(
            "labbot_ack_seconds",
            "Time from request to webhook acknowledgement.",
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self._jobs = Counter(
            "labbot_jobs", "Finished jobs by kind and outcome.", ["kind", "outcome"], registry=r
        )
        self._job_seconds = Histogram(
            "labbot_job_seconds", "Job duration.", ["kind"], buckets=JOB_BUCKETS, registry=r
        )
        self._github_calls = Counter(
            "labbot_github_calls",
            "GitHub API calls by route and status.",
            ["route", "status"],
            registry=r,
        )
        self._families = {
            name: _Bounded() for name in ("deliveries", "jobs", "job_seconds", "github_calls")
        }
        #: Set from GitHub's X-RateLimit-Remaining; not exposed until GitHub has said it.
        self.rate_limit_remaining: int | None = None
        # The gauges read at scrape time come from a collector; render() sets what it reads.
        self._queue: tuple[int, float, dict[str, int]] = (0, 0.0, {})
        r.register(_ScrapeTime(self))

    def delivery(self, event: str, outcome: str, seconds: float | None = None) -> None:
        with self._lock:
            labels = self._families["deliveries"].admit((event, outcome))
        self._deliveries.labels(*labels).inc()
        if seconds is not None:
            self._ack.observe(seconds)

    def job(self, kind: str, outcome: str, seconds: float) -> None:
        with self._lock:
            labels = self._families["jobs"].admit((kind, outcome))
            (timed,) = self._families["job_seconds"].admit((kind,))
        self._jobs.labels(*labels).inc()
        self._job_seconds.labels(timed).observe(seconds)

    def github_call(self, route: str, status: int) -> None:
        with self._lock:
            labels = self._families["github_calls"].admit((route, str(status)))
        self._github_calls.labels(*labels).inc()

    def render(self, queue_depth: int, oldest_age: float, by_state: dict[str, int]) -> str:
        """The text exposition of every metric, with the queue figures given."""
        with self._lock:
            self._queue = (queue_depth, oldest_age, dict(by_state))
            return generate_latest(self.registry).decode()


class _ScrapeTime:
    """The gauges whose values are read when ``/metrics`` is scraped: GitHub's rate limit and
    the queue. A collector rather than Gauge objects, so that ``labbot_jobs`` (by state) sits
    beside the ``labbot_jobs_total`` counter as it always has."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        if m.rate_limit_remaining is not None:
            yield GaugeMetricFamily(
                "labbot_github_rate_limit_remaining",
                "Requests left in the window.",
                value=m.rate_limit_remaining,
            )
        depth, oldest, by_state = m._queue
        yield GaugeMetricFamily("labbot_queue_depth", "Jobs pending or running.", value=depth)
        yield GaugeMetricFamily(
            "labbot_queue_oldest_age_seconds", "Age of the oldest pending job.", value=oldest
        )
        jobs = GaugeMetricFamily("labbot_jobs", "Jobs by state.", labels=["state"])
        for state, n in sorted(by_state.items()):
            jobs.add_metric([state], n)
        yield jobs
