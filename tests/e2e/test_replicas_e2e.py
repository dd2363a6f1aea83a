"""Three ``labbot serve`` replicas on one PostgreSQL database, behind a (simulated) load
balancer, against the contract-checked fake GitHub: deliveries spread over them, one replica
killed with SIGKILL while it runs a job, another restarted. Nothing may be lost or done twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.app import free_port, validate_runs, wait_for
from tests.support.app import is_up as _up
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.samples import SKILL

ROOT = Path(__file__).resolve().parents[2]
PULLS = 6


class Replica:
    def __init__(self, env: dict[str, str], name: str) -> None:
        self.env = dict(env, LABBOT_DATA_DIR=env["LABBOT_DATA_DIR"] + "-" + name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhook"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Replica:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--port", str(self.port)],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def wait_up(self) -> None:
        wait_for(lambda: _up(self.port), timeout=60, what="labbot serve")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def replicas(
    fake: FakeGitHub, scene: Setup, pg_url: str, tmp_path: Path
) -> Iterator[list[Replica]]:
    key = tmp_path / "key.pem"
    key.write_text(scene.app.private_key_pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABBOT_")}
    env.update(
        LABBOT_APP_ID=str(scene.app.id),
        LABBOT_PRIVATE_KEY_PATH=str(key),
        LABBOT_WEBHOOK_SECRET=scene.app.webhook_secret,
        LABBOT_GITHUB_API_URL=fake.url,
        LABBOT_DATA_DIR=str(tmp_path / "data"),
        LABBOT_DATABASE_URL=pg_url,
        LABBOT_WORKERS="2",
        LABBOT_JOB_LEASE_SECONDS="1.5",
        LABBOT_WRITE_INTERVAL_SECONDS="0",
        LABBOT_TEACHER="",
    )
    started = [Replica(env, f"r{i}").start() for i in range(3)]
    try:
        for replica in started:
            replica.wait_up()
        yield started
    finally:
        for replica in started:
            replica.stop(signal.SIGKILL)


def leaf(i: int) -> str:
    return f"taxonomy/compositional_skills/replicas/s{i}/qna.yaml"


def test_three_replicas_one_killed_one_restarted_lose_and_duplicate_nothing(
    fake: FakeGitHub, scene: Setup, pg_url: str, replicas: list[Replica]
) -> None:
    scene.repo.set_permission("maintainer", "write")
    pulls = [
        scene.repo.create_pull(
            head=f"replica-{i}",
            files={leaf(i): SKILL, leaf(i).replace("qna.yaml", "attribution.txt"): "x\n"},
        )
        for i in range(PULLS)
    ]
    answers: list[Any] = []

    def send(replica: Replica, event: str, payload: dict[str, Any], **kw: Any) -> Any:
        fake.set_webhook_target(replica.url)
        delivery = fake.deliver(event, payload, **kw)
        answers.append(delivery)
        return delivery

    # Hold the first pull request's job mid-run: its first read of the files takes 30 s.
    fake.inject("GET", r"/pulls/\d+/files", 200, times=1, delay=30, body=[])
    first = send(
        replicas[0],
        "pull_request",
        fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pulls[0]),
    )
    wait_for(lambda: validate_runs(scene, pulls[0].head_sha), what="first job to start")
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT lease_owner FROM jobs WHERE state = 'leased' AND pr = %s", (pulls[0].number,)
        ).fetchone()
    assert row is not None
    owner_pid = int(str(row[0]).split(":")[1])
    victim = next(r for r in replicas if r.proc is not None and r.proc.pid == owner_pid)
    victim.stop(signal.SIGKILL)  # mid-job: its lease must expire and another replica resume it
    fake.clear_faults()
    alive = [r for r in replicas if r is not victim]
    restarted = alive[1]

    for i, pr in enumerate(pulls):
        target = alive[i % 2]
        if i == 3:  # restart one replica while deliveries keep coming to the other
            restarted.stop()
            restarted.start()
            target = alive[0]
        if i == 4:
            restarted.wait_up()
        opened = fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        if i > 0:
            send(target, "pull_request", opened)
        comment = scene.repo.add_comment(pr.number, "/labbot help", user="maintainer")
        send(
            alive[(i + 1) % 2] if i != 3 else alive[0],
            "issue_comment",
            fake.webhook_payload(
                "issue_comment", "created", "pull_request", repo=scene.repo, comment=comment
            ),
        )
    # GitHub redelivers the first delivery to another replica: acknowledged, not re-run.
    again = send(alive[0], "pull_request", first.payload, guid=first.guid, redelivery=True)
    assert again.status_code == 202 and "duplicate" in again.response_body
    assert [a.status_code for a in answers] == [202] * len(answers)

    def finished() -> bool:
        return all(
            any(r.status == "completed" for r in validate_runs(scene, pr.head_sha))
            and any("labbot commands" in c.body and "are valid" in c.body for c in pr.live_comments)
            for pr in pulls
        )

    wait_for(finished, timeout=45, what="every pull request checked and answered")
    with psycopg.connect(pg_url) as conn:
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'leased')"
                ).fetchone()
                == (0,)
            ),
            what="an empty queue",
        )
        recorded = dict(conn.execute("SELECT delivery_id, duplicates FROM deliveries").fetchall())
        states = conn.execute(
            "SELECT state, COUNT(*) FROM jobs WHERE kind <> 'recover' GROUP BY state"
        ).fetchall()
        rescued = conn.execute(
            "SELECT attempts FROM jobs WHERE kind = 'validate' AND pr = %s", (pulls[0].number,)
        ).fetchall()
    for pr in pulls:
        runs = validate_runs(scene, pr.head_sha)
        assert len(runs) == 1 and runs[0].status == "completed", pr.number
        stickies = [c for c in pr.live_comments if "labbot:sticky" in c.body]
        assert len(stickies) == 1, pr.number
    # Every delivery recorded once; the redelivery counted as a duplicate.
    assert {a.guid for a in answers} == set(recorded)
    assert recorded[first.guid] == 1 and sum(recorded.values()) == 1
    assert dict(states).get("dead", 0) == 0
    assert rescued == [(2,)]  # the killed replica's job ran again, once, elsewhere
