"""Property-based fuzzing of signed webhook deliveries through the real App (uvicorn on
loopback, real SQLite): real GitHub payloads with values replaced by wrong types, keys removed,
deep nesting and huge strings. Whatever the body, the App answers 2xx or 4xx, never 5xx, and
keeps answering ``/healthz``. Deterministic (derandomized) and bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.app import Server, settings_for
from tests.support.fakegithub import (
    FakeGitHub,
    Setup,
    available_payloads,
    load_payload,
    webhook_headers,
)

STEMS = available_payloads()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The key paths of a JSON document, down to 12 levels."""
    out: list[tuple[Any, ...]] = []
    if len(prefix) >= 12:
        return out
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):
            out.append((*prefix, i))
            out += _paths(value, (*prefix, i))
    return out


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.just("x" * 300_000),
    st.just("0" * 5000),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.builds(_nested, st.integers(min_value=1, max_value=400), st.just(1)),
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    stem = draw(st.sampled_from(STEMS))
    event = stem.split(".")[0]
    payload: Any = load_payload(*stem.split(".")[:3])
    paths = _paths(payload)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not paths:
            payload = draw(HOSTILE)
            break
        path = draw(st.sampled_from(paths))
        parent: Any = payload
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(HOSTILE)
        paths = _paths(payload)
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        event = draw(st.sampled_from([s.split(".")[0] for s in STEMS]))
    body = json.dumps(payload).encode()
    if draw(st.integers(min_value=0, max_value=19)) == 0:  # nesting no parser recursion survives
        depth = draw(st.integers(min_value=1000, max_value=200_000))
        body = b'{"pull_request":' + b"[" * depth + body + b"]" * depth + b"}"
    return event, body


def test_no_signed_body_makes_the_app_answer_5xx(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    secret = scene.app.webhook_secret
    seen: list[int] = []
    with Server(settings_for(fake, scene, tmp_path), start_workers=False) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:

            @settings(
                max_examples=200,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(mutated())
            def deliver(case: tuple[str, bytes]) -> None:
                event, body = case
                headers = webhook_headers(event, body, secret, delivery_id=f"f-{len(seen)}")
                answer = client.post("/webhook", content=body, headers=headers)
                seen.append(answer.status_code)
                assert answer.status_code < 500, (event, answer.status_code, answer.text)

            deliver()
            assert client.get("/healthz").json()["status"] == "ok"
    assert len(seen) >= 100 and any(s == 202 for s in seen) and any(s == 422 for s in seen)
