"""What a sender controls at the webhook cannot make the App answer 5xx, stall it, or grow its
metrics: misshapen signed deliveries are refused with 422 and recorded (so recovery never asks
for them again), slow bodies are dropped, unverified requests share one metrics label, and
``/metrics`` can be closed with a bearer token."""

from __future__ import annotations

import copy
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.state.sqlite_queue import JobQueue
from tests.support.app import Server, settings_for
from tests.support.fakegithub import FakeGitHub, Setup, load_payload, webhook_headers


def _set(payload: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    node: Any = out
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return out


def _drop(payload: dict[str, Any], dotted: str) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    node: Any = out
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    return out


def misshapen() -> list[tuple[str, dict[str, Any]]]:
    pr = load_payload("pull_request", "opened")
    suite = load_payload("check_suite", "requested")
    closed = load_payload("pull_request", "closed", "merged")
    return [
        ("pull_request", _set(pr, "pull_request", "str")),
        ("pull_request", _set(pr, "pull_request.number", "12")),
        ("pull_request", _set(pr, "pull_request.number", True)),
        ("pull_request", _set(pr, "pull_request.head", [])),
        ("pull_request", _set(pr, "pull_request.head.sha", {"x": 1})),
        ("pull_request", _drop(pr, "pull_request.head")),
        ("pull_request", _set(pr, "repository", ["org/taxonomy"])),
        ("pull_request", _set(pr, "repository.full_name", 7)),
        ("pull_request", _set(pr, "installation", {"id": "1"})),
        ("pull_request", _set(closed, "pull_request.number", None)),
        ("check_suite", _set(suite, "check_suite.pull_requests", "all")),
        ("check_suite", _set(suite, "check_suite.pull_requests", [{"number": "one"}])),
        ("check_suite", _set(suite, "check_suite.pull_requests", [[]])),
        ("check_suite", _set(suite, "check_suite", None)),
    ]


def post(srv: Server, event: str, body: bytes, secret: str, delivery: str) -> httpx.Response:
    headers = webhook_headers(event, body, secret, delivery_id=delivery)
    return httpx.post(srv.url + "/webhook", content=body, headers=headers, timeout=10)


def test_misshapen_signed_deliveries_are_refused_422_recorded_and_never_retried(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    secret = scene.app.webhook_secret
    settings = settings_for(fake, scene, tmp_path)
    ids = []
    with Server(settings, start_workers=False) as srv:
        for i, (event, payload) in enumerate(misshapen()):
            delivery = f"bad-{i}"
            answer = post(srv, event, json.dumps(payload).encode(), secret, delivery)
            assert answer.status_code == 422, (i, answer.status_code, answer.text)
            assert answer.json()["error"]
            ids.append(delivery)
        # nested far past any recursion limit, as an object and as an array
        for i, body in enumerate([b'{"a":' * 100_000 + b"1" + b"}" * 100_000, b"[" * 100_000]):
            answer = post(srv, "pull_request", body, secret, f"deep-{i}")
            assert 400 <= answer.status_code < 500, answer.text
        assert httpx.get(srv.url + "/healthz").json()["status"] == "ok"
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'outcome="rejected-422"' in metrics
        assert srv.app.state.queue.stats().depth == 0
    with JobQueue(settings.database) as queue:
        for delivery in ids:
            assert queue.delivery_seen(delivery)  # recovery asks GitHub only for unseen ones
        with queue._connect() as conn:
            outcomes = dict(conn.execute("SELECT delivery_id, outcome FROM deliveries"))
    assert all(outcomes[d].startswith("rejected:") for d in ids), outcomes
    assert "pull_request" in outcomes["bad-0"]


def test_a_body_that_arrives_too_slowly_is_dropped_and_the_app_keeps_answering(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = settings_for(fake, scene, tmp_path, body_timeout_seconds=1.0)
    with Server(settings, start_workers=False) as srv:
        slow = socket.create_connection(("127.0.0.1", srv.port))
        slow.settimeout(10)
        slow.sendall(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-GitHub-Event: ping\r\nContent-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
        answer = slow.recv(4096)
        waited = time.monotonic() - started
        slow.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 0.5 < waited < 8
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'labbot_deliveries_total{event="unverified",outcome="rejected-408"} 1' in metrics


def test_unverified_requests_cannot_choose_metric_labels(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    with Server(settings_for(fake, scene, tmp_path), start_workers=False) as srv:
        with httpx.Client(base_url=srv.url) as client:
            for _ in range(300):
                event = uuid.uuid4().hex * 4
                headers = {"X-GitHub-Event": event, "X-Hub-Signature-256": "sha256=" + "0" * 64}
                assert client.post("/webhook", content=b"{}", headers=headers).status_code == 401
            for i in range(50):  # signed, with events labbot has never heard of
                body = b'{"zen": "hi"}'
                headers = webhook_headers(
                    f"made-up-{i}", body, scene.app.webhook_secret, delivery_id=f"m-{i}"
                )
                assert client.post("/webhook", content=body, headers=headers).status_code == 202
            metrics = client.get("/metrics").text
        assert len(metrics) < 20_000
        assert 'labbot_deliveries_total{event="unverified",outcome="rejected-401"} 300' in metrics
        assert 'labbot_deliveries_total{event="other",outcome="no_jobs"} 50' in metrics
        assert "made-up" not in metrics


@pytest.mark.parametrize("token", ["s3cret-token"])
def test_metrics_can_require_a_bearer_token(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
    token: str,
) -> None:
    settings = settings_for(fake, scene, tmp_path, metrics_token=token)
    with Server(settings, start_workers=False) as srv:
        assert httpx.get(srv.url + "/metrics").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(srv.url + "/metrics", headers=wrong).status_code == 401
        right = {"Authorization": f"Bearer {token}"}
        answer = httpx.get(srv.url + "/metrics", headers=right)
        assert answer.status_code == 200 and "labbot_queue_depth" in answer.text
        assert httpx.get(srv.url + "/healthz").status_code == 200


def test_compose_publishes_ports_on_loopback_only() -> None:
    from ruamel.yaml import YAML

    root = Path(__file__).resolve().parents[3]
    compose = YAML(typ="safe").load((root / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port
