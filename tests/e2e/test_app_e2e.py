"""The App end to end: real uvicorn on loopback, real SQLite, the contract-checked fake GitHub,
real webhook payloads signed with HMAC."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bot.state.sqlite_queue import JobQueue
from tests.support.app import (
    ATTR,
    BROKEN,
    LEAF,
    Server,
    completed,
    free_port,
    is_up,
    settings_for,
    validate_runs,
    wait_for,
)
from tests.support.fakegithub import FakeGitHub, Setup, webhook_headers
from tests.support.samples import SKILL

ROOT = Path(__file__).resolve().parents[2]


def open_pull(scene: Setup, text: str) -> Any:
    return scene.repo.create_pull(
        head="add-units", files={LEAF: text, ATTR: "Title of work: units\n"}
    )


def test_invalid_pr_gets_annotations_and_one_comment_then_fix_turns_green(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = open_pull(scene, BROKEN)
        delivery = fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        )
        assert delivery.status_code == 202
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run")
        assert run.conclusion == "failure"
        spots = {(a.path, a.start_line, a.title) for a in run.annotations}
        assert (LEAF, 2, "schema.type") in spots and (LEAF, 6, "schema.type") in spots
        comments = wait_for(lambda: pr.live_comments, what="sticky comment")
        assert len(comments) == 1 and "labbot:sticky" in comments[0].body
        assert "need changes" in comments[0].body
        wait_for(lambda: "labbot/skill" in pr.labels, what="kind label")

        new_sha = pr.push({LEAF: SKILL}, message="fix")
        fake.deliver(
            "pull_request",
            fake.webhook_payload("pull_request", "synchronize", repo=scene.repo, pr=pr),
        )
        run2 = wait_for(lambda: completed(scene, new_sha), what="second check run")
        assert run2.conclusion == "success" and run2.annotations == []
        wait_for(lambda: "are valid" in pr.live_comments[0].body, what="comment edit")
        assert len(pr.live_comments) == 1


def test_redelivery_has_no_second_effect(fake: FakeGitHub, scene: Setup, tmp_path: Path) -> None:
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = open_pull(scene, BROKEN)
        payload = fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        first = fake.deliver("pull_request", payload)
        wait_for(lambda: completed(scene, pr.head_sha) and pr.live_comments, what="first run")
        time.sleep(0.3)
        writes = len([c for c in fake.calls if c.method != "GET"])
        again = fake.deliver("pull_request", payload, guid=first.guid, redelivery=True)
        assert again.status_code == 202 and "duplicate" in again.response_body
        time.sleep(0.5)
        assert len([c for c in fake.calls if c.method != "GET"]) == writes
        assert len(validate_runs(scene, pr.head_sha)) == 1 and len(pr.live_comments) == 1


def test_502_and_429_from_github_end_in_success_without_duplicates(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = open_pull(scene, BROKEN)
        fake.inject("POST", r"/check-runs$", 502, times=1)
        fake.inject("PATCH", r"/check-runs/", 502, times=2)
        fake.inject("POST", r"/issues/\d+/comments$", 429, times=1, retry_after=1)
        fake.inject("GET", r"/pulls/\d+/files", 503, times=1)
        fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        )
        run = wait_for(lambda: completed(scene, pr.head_sha), timeout=30, what="check run")
        assert run.conclusion == "failure"
        wait_for(lambda: pr.live_comments, timeout=30, what="comment")
        time.sleep(0.5)
        assert len(validate_runs(scene, pr.head_sha)) == 1
        assert len(pr.live_comments) == 1


def test_pr_without_taxonomy_files_gets_a_skipped_check_and_no_comment(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = scene.repo.create_pull(head="docs", files={"README.md": "better docs\n"})
        fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        )
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run")
        assert run.conclusion == "skipped"
        time.sleep(0.3)
        assert pr.live_comments == []


def test_commands_are_authorized_and_answered_in_the_sticky_comment(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = open_pull(scene, SKILL)
        scene.repo.set_permission("maintainer", "write")
        stranger = scene.repo.add_comment(pr.number, "/labbot check", user="stranger")
        fake.deliver(
            "issue_comment",
            fake.webhook_payload(
                "issue_comment", "created", "pull_request", repo=scene.repo, comment=stranger
            ),
        )
        wait_for(
            lambda: any(
                "needs write access" in c.body for c in pr.live_comments if c.user_type == "Bot"
            ),
            what="refusal",
        )
        assert stranger.reactions == []  # refused: no 👀
        asked = scene.repo.add_comment(pr.number, "/labbot check", user="maintainer")
        fake.deliver(
            "issue_comment",
            fake.webhook_payload(
                "issue_comment", "created", "pull_request", repo=scene.repo, comment=asked
            ),
        )
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run from command")
        assert run.conclusion == "success"
        wait_for(lambda: any(r.content == "eyes" for r in asked.reactions), what="eyes reaction")
        helpme = scene.repo.add_comment(pr.number, "/labbot help", user="maintainer")
        fake.deliver(
            "issue_comment",
            fake.webhook_payload(
                "issue_comment", "created", "pull_request", repo=scene.repo, comment=helpme
            ),
        )
        wait_for(
            lambda: any(
                "labbot commands" in c.body for c in pr.live_comments if c.user_type == "Bot"
            ),
            what="help",
        )
        bots = [c for c in pr.live_comments if "labbot:sticky" in c.body]
        assert len(bots) == 1


def test_webhook_refuses_bad_signature_oversize_and_malformed(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    settings = settings_for(fake, scene, tmp_path, max_body_bytes=10_000)
    with Server(settings) as srv:
        body = b'{"zen": "hi", "hook_id": 1}'
        good = webhook_headers("ping", body, scene.app.webhook_secret, delivery_id="d-1")
        assert httpx.post(srv.url + "/webhook", content=body, headers=good).status_code == 202
        bad = dict(good, **{"X-Hub-Signature-256": "sha256=" + "0" * 64})
        assert httpx.post(srv.url + "/webhook", content=body, headers=bad).status_code == 401
        unsigned = {k: v for k, v in good.items() if k != "X-Hub-Signature-256"}
        assert httpx.post(srv.url + "/webhook", content=body, headers=unsigned).status_code == 401
        big = b"x" * 20_000
        big_headers = webhook_headers("ping", big, scene.app.webhook_secret, delivery_id="d-2")
        assert httpx.post(srv.url + "/webhook", content=big, headers=big_headers).status_code == 413
        junk = b"{not json"
        junk_headers = webhook_headers("ping", junk, scene.app.webhook_secret, delivery_id="d-3")
        assert (
            httpx.post(srv.url + "/webhook", content=junk, headers=junk_headers).status_code == 400
        )
        assert httpx.get(srv.url + "/healthz").json()["status"] == "ok"
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'labbot_deliveries_total{event="unverified",outcome="rejected-401"} 2' in metrics
        assert "labbot_queue_depth" in metrics and "labbot_ack_seconds_count" in metrics


def test_a_delivery_the_database_refuses_is_answered_503_not_acknowledged(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    class Full(JobQueue):
        def _record(self, conn: sqlite3.Connection, *args: Any) -> bool:
            raise sqlite3.OperationalError("database or disk is full")

    settings = settings_for(fake, scene, tmp_path)
    settings.data_dir.mkdir(parents=True)
    queue = Full(settings.database)
    with Server(settings, queue=queue, start_workers=False) as srv:
        body = b'{"zen": "hi", "hook_id": 1}'
        headers = webhook_headers("ping", body, scene.app.webhook_secret, delivery_id="d-1")
        answer = httpx.post(srv.url + "/webhook", content=body, headers=headers)
        assert answer.status_code == 503 and "redeliver" in answer.json()["error"]
        assert "disk is full" not in answer.text  # the reason goes to the log, not the sender
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'labbot_deliveries_total{event="ping",outcome="rejected-503"} 1' in metrics
    queue.close()
    with JobQueue(settings.database) as check:
        assert not check.delivery_seen("d-1")


def serve_with(**settings: str) -> subprocess.CompletedProcess[str]:
    """``labbot serve`` with only these LABBOT_* variables; it must refuse to start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABBOT_")}
    env.update(settings)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_serve_refuses_to_start_without_secret_or_key() -> None:
    out = serve_with(LABBOT_APP_ID="1")
    assert out.returncode == 2
    assert "LABBOT_WEBHOOK_SECRET" in out.stderr and "LABBOT_PRIVATE_KEY" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_private_key_it_cannot_read() -> None:
    out = serve_with(
        LABBOT_APP_ID="1",
        LABBOT_WEBHOOK_SECRET="s",
        LABBOT_PRIVATE_KEY="-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY",
    )
    assert out.returncode == 2
    assert "private key cannot be read" in out.stderr and "Traceback" not in out.stderr


def test_kill_9_mid_job_then_restart_completes_the_job_once(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    port = free_port()
    key = tmp_path / "key.pem"
    key.write_text(scene.app.private_key_pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABBOT_")}
    env.update(
        LABBOT_APP_ID=str(scene.app.id),
        LABBOT_PRIVATE_KEY_PATH=str(key),
        LABBOT_WEBHOOK_SECRET=scene.app.webhook_secret,
        LABBOT_GITHUB_API_URL=fake.url,
        LABBOT_DATA_DIR=str(tmp_path / "data"),
        LABBOT_WORKERS="1",
        LABBOT_JOB_LEASE_SECONDS="1.5",
        LABBOT_WRITE_INTERVAL_SECONDS="0",
    )
    cmd = [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: is_up(port), what="labbot serve")
        return proc

    proc = start()
    try:
        fake.set_webhook_target(f"http://127.0.0.1:{port}/webhook")
        pr = open_pull(scene, BROKEN)
        # Hold the job mid-run: reading the PR's files takes 30 s on the first try.
        fake.inject("GET", r"/pulls/\d+/files", 200, times=1, delay=30, body=[])
        fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        )
        wait_for(lambda: validate_runs(scene, pr.head_sha), what="job to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        fake.clear_faults()
        proc = start()
        run = wait_for(lambda: completed(scene, pr.head_sha), timeout=40, what="job after restart")
        assert run.conclusion == "failure"
        wait_for(lambda: pr.live_comments, what="comment")
        time.sleep(1.0)
        assert len(validate_runs(scene, pr.head_sha)) == 1
        assert len(pr.live_comments) == 1
    finally:
        proc.kill()
        proc.wait(10)
