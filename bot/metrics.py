"""Prometheus metrics in the text exposition format, without a client library.

Counters and histograms live in memory; queue depth and age are read from the queue when
``/metrics`` is scraped.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


def _labels(pairs: dict[str, str]) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in pairs.items()
    )
    return "{" + inner + "}" if inner else ""


#: Most label sets one metric family keeps; later new ones are counted under "other".
MAX_SERIES = 200
OTHER = "other"


def _key(table: dict[tuple[str, str], int], key: tuple[str, str]) -> tuple[str, str]:
    """``key``, or the overflow key once ``table`` holds :data:`MAX_SERIES` label sets: no
    sequence of requests can grow ``/metrics`` without bound."""
    if key in table or len(table) < MAX_SERIES:
        return key
    return (OTHER, OTHER)


class Metrics:
    """Thread-safe counters and histograms for the App. Label values come from the App's own
    vocabulary (event names it knows, job kinds, API routes with names removed), and each
    family is capped at :data:`MAX_SERIES` label sets besides."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.deliveries: dict[tuple[str, str], int] = defaultdict(int)
        self.ack = _Histogram(ACK_BUCKETS)
        self.jobs: dict[tuple[str, str], int] = defaultdict(int)
        self.job_seconds: dict[str, _Histogram] = {}
        self.github_calls: dict[tuple[str, str], int] = defaultdict(int)
        self.rate_limit_remaining: int | None = None

    def delivery(self, event: str, outcome: str, seconds: float | None = None) -> None:
        with self._lock:
            self.deliveries[_key(self.deliveries, (event, outcome))] += 1
            if seconds is not None:
                self.ack.observe(seconds)

    def job(self, kind: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self.jobs[_key(self.jobs, (kind, outcome))] += 1
            if kind not in self.job_seconds and len(self.job_seconds) >= MAX_SERIES:
                kind = OTHER
            self.job_seconds.setdefault(kind, _Histogram(JOB_BUCKETS)).observe(seconds)

    def github_call(self, route: str, status: int) -> None:
        with self._lock:
            self.github_calls[_key(self.github_calls, (route, str(status)))] += 1

    def render(self, queue_depth: int, oldest_age: float, by_state: dict[str, int]) -> str:
        out: list[str] = []

        def hist(name: str, h: _Histogram, labels: dict[str, str]) -> None:
            for bound, count in zip(h.buckets, h.counts, strict=True):
                out.append(f"{name}_bucket{_labels({**labels, 'le': repr(bound)})} {count}")
            out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {h.total}")
            out.append(f"{name}_sum{_labels(labels)} {h.sum:.6f}")
            out.append(f"{name}_count{_labels(labels)} {h.total}")

        with self._lock:
            out += [
                "# HELP labbot_deliveries_total Webhook deliveries by event and outcome.",
                "# TYPE labbot_deliveries_total counter",
            ]
            for (event, outcome), n in sorted(self.deliveries.items()):
                out.append(
                    f"labbot_deliveries_total{_labels({'event': event, 'outcome': outcome})} {n}"
                )
            out += [
                "# HELP labbot_ack_seconds Time from request to webhook acknowledgement.",
                "# TYPE labbot_ack_seconds histogram",
            ]
            hist("labbot_ack_seconds", self.ack, {})
            out += [
                "# HELP labbot_jobs_total Finished jobs by kind and outcome.",
                "# TYPE labbot_jobs_total counter",
            ]
            for (kind, outcome), n in sorted(self.jobs.items()):
                out.append(f"labbot_jobs_total{_labels({'kind': kind, 'outcome': outcome})} {n}")
            out += [
                "# HELP labbot_job_seconds Job duration.",
                "# TYPE labbot_job_seconds histogram",
            ]
            for kind, h in sorted(self.job_seconds.items()):
                hist("labbot_job_seconds", h, {"kind": kind})
            out += [
                "# HELP labbot_github_calls_total GitHub API calls by route and status.",
                "# TYPE labbot_github_calls_total counter",
            ]
            for (route, status), n in sorted(self.github_calls.items()):
                out.append(
                    f"labbot_github_calls_total{_labels({'route': route, 'status': status})} {n}"
                )
            if self.rate_limit_remaining is not None:
                out += [
                    "# HELP labbot_github_rate_limit_remaining Requests left in the window.",
                    "# TYPE labbot_github_rate_limit_remaining gauge",
                    f"labbot_github_rate_limit_remaining {self.rate_limit_remaining}",
                ]
        out += [
            "# HELP labbot_queue_depth Jobs pending or running.",
            "# TYPE labbot_queue_depth gauge",
            f"labbot_queue_depth {queue_depth}",
            "# HELP labbot_queue_oldest_age_seconds Age of the oldest pending job.",
            "# TYPE labbot_queue_oldest_age_seconds gauge",
            f"labbot_queue_oldest_age_seconds {oldest_age:.3f}",
            "# HELP labbot_jobs Jobs by state.",
            "# TYPE labbot_jobs gauge",
        ]
        for state, n in sorted(by_state.items()):
            out.append(f"labbot_jobs{_labels({'state': state})} {n}")
        return "\n".join(out) + "\n"
