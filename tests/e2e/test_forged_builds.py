"""Forged build results: only the workflow run the App dispatched can set ``labbot/build`` and
speak in merged pull requests (App, fake GitHub, real SQLite).

Anyone who can open a pull request can start *some* workflow run, with any workflow name, path
or ``run-name``; people with write access can dispatch the build workflow on another branch or
for another commit. Each such run, delivered with a hostile artifact, must leave the build's
check run and every comment exactly as they were."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.builds import run_mismatch
from bot.state.ledger import BuildRecord
from tests.support.app import LEAF, Server, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.markdown_safety import assert_safe
from tests.support.samples import SKILL

WORKFLOW = ".github/workflows/build-model.yml"
RUN_NAME = "labbot build ${{ inputs.sha || github.event.client_payload.sha }}"
HOSTILE_REPORT = (
    "# Build report\n\nAll good: download [the fixed model](https://evil.test/model) "
    "@org/maintainers #41 www.evil.test <img src=x onerror=alert(1)>\n```\n</details>\n"
)
HOSTILE_LEAF = "compositional_skills/units/qna.yaml"


def hostile_artifact(scene: Setup, run: Any) -> None:
    table = [
        {
            "leaf": HOSTILE_LEAF,
            "base_rouge_l": 0.1,
            "phase2_rouge_l": 0.9,
            "improved": True,
        }
    ]
    answers = {
        "phase2": [
            {
                "leaf": HOSTILE_LEAF,
                "question": "@org/maintainers please merge #2",
                "reference": "[x](javascript:alert(1))",
                "answer": "see http://evil.test/`x` | <b>bold</b>",
            }
        ]
    }
    scene.repo.add_artifact(
        run,
        "labbot-eval",
        {
            "eval/leaves.json": json.dumps(table),
            "eval/answers.json": json.dumps(answers),
            "report.md": HOSTILE_REPORT,
        },
    )


def snapshot(scene: Setup) -> tuple[Any, ...]:
    checks = tuple(
        (r.id, r.head_sha, r.status, r.conclusion, r.title, r.summary, r.details_url, r.updates)
        for r in scene.repo.check_runs
        if r.name == "labbot/build"
    )
    comments = tuple(
        (pr.number, c.user, c.body) for pr in scene.repo.pulls for c in pr.live_comments
    )
    return checks, comments


def bot_body(pr: Any) -> str:
    bodies = [c.body for c in pr.live_comments if c.user_type == "Bot"]
    return bodies[0] if bodies else ""


def deliver_all(fake: FakeGitHub, scene: Setup, run: Any) -> None:
    """Everything a finished run sends: in_progress, a failed job, completed."""
    run.set_status("in_progress")
    fake.deliver(
        "workflow_run",
        fake.webhook_payload("workflow_run", "in_progress", repo=scene.repo, run=run),
    )
    job = fake.webhook_payload("workflow_job", "completed", repo=scene.repo, run=run)
    job["workflow_job"]["conclusion"] = "failure"
    job["workflow_job"]["html_url"] = "https://evil.test/job"
    fake.deliver("workflow_job", job)
    run.set_status("completed", "success")
    fake.deliver(
        "workflow_run", fake.webhook_payload("workflow_run", "completed", repo=scene.repo, run=run)
    )


Forge = Callable[[Setup, Any, str, str], Any]  # (scene, genuine workflow, event, sha) -> run


def _run(scene: Setup, workflow: Any, event: str, sha: str, **kw: Any) -> Any:
    kw.setdefault("head_branch", "main")
    kw.setdefault("display_title", f"labbot build {sha}")
    return scene.repo.create_workflow_run(workflow, event=event, **kw)


def forged_runs(scene: Setup, genuine: Any, event: str, sha: str, fork: Any) -> dict[str, Any]:
    repo = scene.repo
    other_sha = repo.resolve_ref("main~1") or "0" * 40
    lint = repo.add_workflow(".github/workflows/build-model-lint.yml", name="labbot build")
    named = repo.add_workflow(".github/workflows/not-build-model.yml", name="labbot build")
    twin = repo.add_workflow(WORKFLOW, name="labbot build", run_name=RUN_NAME)
    runs = {
        "pull_request event from a fork": _run(
            scene, lint, "pull_request", sha, head_branch="evil", head_repo=fork
        ),
        "pull_request event of the build workflow": _run(scene, genuine, "pull_request", sha),
        "push event": _run(scene, genuine, "push", sha),
        "workflow_run event": _run(scene, genuine, "workflow_run", sha),
        "other dispatch event": _run(
            scene,
            genuine,
            "repository_dispatch" if event == "workflow_dispatch" else "workflow_dispatch",
            sha,
        ),
        "path build-model-lint.yml": _run(scene, lint, event, sha),
        "path containing build-model": _run(scene, named, event, sha),
        "wrong branch": _run(scene, genuine, event, sha, head_branch="feature"),
        "fork head repository": _run(scene, genuine, event, sha, head_repo=fork),
        "wrong commit": _run(scene, genuine, event, other_sha),
        "wrong workflow id": _run(scene, twin, event, sha),
        "created before the dispatch": _run(scene, genuine, event, sha),
    }
    runs["created before the dispatch"].created_at -= 3600
    return runs


@pytest.mark.parametrize("dispatch", ["workflow_dispatch", "repository_dispatch"])
def test_forged_runs_change_nothing_and_the_genuine_run_still_reports(
    fake: FakeGitHub, scene: Setup, tmp_path: Path, dispatch: str, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="labbot.handlers")
    genuine_wf = scene.repo.add_workflow(
        WORKFLOW, name="labbot build", inputs={"sha": {"required": True}}, run_name=RUN_NAME
    )
    if dispatch == "repository_dispatch":
        scene.repo.commit(
            {".github/labbot.yml": "build:\n  dispatch: repository_dispatch\n"}, branch="main"
        )
    fork = fake.create_repo("evil/taxonomy")
    with Server(settings_for(fake, scene, tmp_path, teacher="")) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        queue = srv.app.state.queue

        # A run that arrives while the App dispatched nothing at all.
        early = _run(scene, genuine_wf, dispatch, scene.repo.resolve_ref("main") or "")
        deliver_all(fake, scene, early)
        wait_for(lambda: queue.stats().depth == 0, what="early run handled")
        assert snapshot(scene) == ((), ())

        pr = scene.repo.create_pull(
            head="units", files={LEAF: SKILL, LEAF.replace("qna.yaml", "attribution.txt"): "x\n"}
        )
        pr.merge()
        sha = pr.merge_commit_sha
        fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "closed", repo=scene.repo, pr=pr)
        )
        if dispatch == "workflow_dispatch":
            wait_for(lambda: scene.repo.workflow_dispatches, what="dispatch")
            genuine = scene.repo.workflow_dispatches[0].run
            assert genuine.display_title == f"labbot build {sha}"
        else:
            wait_for(lambda: scene.repo.dispatch_events, what="dispatch")
            assert scene.repo.dispatch_events[0].client_payload == {"sha": sha}
        wait_for(lambda: "build #\u20601" in bot_body(pr), what="queued comment")
        wait_for(lambda: queue.stats().depth == 0, what="dispatch handled")
        if dispatch == "repository_dispatch":
            genuine = _run(scene, genuine_wf, dispatch, sha)
        before = snapshot(scene)
        assert before[0] and before[0][0][2] == "queued"

        runs = forged_runs(scene, genuine_wf, dispatch, sha, fork)
        for run in runs.values():
            hostile_artifact(scene, run)
            deliver_all(fake, scene, run)
        wait_for(lambda: queue.stats().depth == 0, what="forged runs handled")
        assert snapshot(scene) == before, "a forged run changed the build check or a comment"
        ignored = [r for r in caplog.records if "ignored" in r.getMessage()]
        assert len(ignored) >= 2 * len(runs)

        # The run the App dispatched still works, and its artifact text stays inert.
        hostile_artifact(scene, genuine)
        deliver_all(fake, scene, genuine)
        url = f"https://github.com/{scene.repo.full_name}/actions/runs/{genuine.id}"
        done = wait_for(
            lambda: [
                r
                for r in scene.repo.check_runs
                if r.name == "labbot/build" and r.status == "completed"
            ],
            what="build check completed",
        )
        assert done[0].conclusion == "success" and "1 of 1 leaves improved" in done[0].summary
        hostile = [HOSTILE_REPORT, "@org/maintainers please merge #2", "http://evil.test/`x`"]
        assert_safe(done[0].summary, hostile, allowed_links=[url])
        body = wait_for(lambda: "finished" in bot_body(pr) and bot_body(pr), what="result")
        assert_safe(body, hostile, allowed_links=[url])
        assert "evil.test/job" not in body and "units/qna.yaml" in body


# -- the matching rule, field by field -------------------------------------------------------

SHA = "a" * 40
DISPATCHED_AT = 1_800_000_000.0


def _build(**kw: Any) -> BuildRecord:
    fields: dict[str, Any] = dict(
        id=1,
        repo="org/taxonomy",
        sha=SHA,
        installation_id=1,
        state="requested",
        check_run_id=5,
        run_id=None,
        run_url=None,
        failed_job_url=None,
        conclusion=None,
        dispatch_event="workflow_dispatch",
        workflow_id=77,
        workflow_path=WORKFLOW,
        dispatch_branch="main",
        dispatched_at=DISPATCHED_AT,
        dispatch_run_id=None,
    )
    fields.update(kw)
    return BuildRecord(**fields)


def _api_run(**kw: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "id": 900,
        "event": "workflow_dispatch",
        "workflow_id": 77,
        "path": WORKFLOW,
        "head_branch": "main",
        "head_sha": "b" * 40,
        "display_title": f"labbot build {SHA}",
        "head_repository": {"full_name": "org/taxonomy"},
        "created_at": "2027-01-15T08:00:03Z",  # DISPATCHED_AT + 3 s
    }
    run.update(kw)
    return run


def test_the_dispatched_run_matches() -> None:
    assert run_mismatch(_build(), _api_run(), "org/taxonomy") is None
    assert run_mismatch(_build(), _api_run(path=WORKFLOW + "@main"), "org/taxonomy") is None
    assert run_mismatch(_build(dispatch_run_id=900), _api_run(), "org/taxonomy") is None
    assert run_mismatch(_build(), _api_run(display_title="x", head_sha=SHA), "org/taxonomy") is None


@pytest.mark.parametrize(
    ("build", "run", "why"),
    [
        (_build(dispatched_at=None), _api_run(), "no dispatch"),
        (_build(dispatch_event=None), _api_run(), "no dispatch"),
        (_build(dispatch_run_id=901), _api_run(), "started run 901"),
        (_build(), _api_run(event="pull_request"), "event"),
        (_build(), _api_run(event="push"), "event"),
        (_build(), _api_run(event="workflow_run"), "event"),
        (_build(), _api_run(event="repository_dispatch"), "event"),
        (_build(dispatch_event="repository_dispatch"), _api_run(), "event"),
        (_build(), _api_run(workflow_id=78), "workflow"),
        (_build(), _api_run(workflow_id="77"), "workflow"),
        (_build(), _api_run(path=".github/workflows/build-model-lint.yml"), "path"),
        (_build(), _api_run(path="evil/.github/workflows/build-model.yml"), "path"),
        (_build(), _api_run(path=WORKFLOW + "@feature"), "path"),
        (_build(), _api_run(path=WORKFLOW + "@refs/pull/1/merge"), "path"),
        (_build(), _api_run(path=None), "path"),
        (_build(), _api_run(head_branch="feature"), "branch"),
        (_build(), _api_run(head_branch=None), "branch"),
        (_build(), _api_run(head_repository={"full_name": "evil/taxonomy"}), "head repository"),
        (_build(), _api_run(head_repository=None), "head repository"),
        (_build(), _api_run(created_at="2027-01-15T07:59:00Z"), "created"),
        (_build(), _api_run(created_at="2027-01-15T09:00:00Z"), "created"),
        (_build(), _api_run(created_at="yesterday"), "created"),
        (_build(), _api_run(display_title=f"labbot build {'c' * 40}"), "builds"),
        (_build(), _api_run(display_title="labbot build", head_sha="c" * 40), "builds"),
    ],
)
def test_every_difference_is_refused(build: BuildRecord, run: dict[str, Any], why: str) -> None:
    reason = run_mismatch(build, run, "org/taxonomy")
    assert reason is not None and why in reason
