"""Merge-triggered builds end to end: dispatch, folding of waiting builds, run mirroring and
results posted back to every included pull request (App, fake GitHub, real SQLite)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.app import LEAF, Server, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.samples import SKILL

WORKFLOW = ".github/workflows/build-model.yml"


def bot_body(pr: Any) -> str:
    bodies = [c.body for c in pr.live_comments if c.user_type == "Bot"]
    return bodies[0] if bodies else ""


def build_checks(scene: Setup, sha: str) -> list[Any]:
    return [r for r in scene.repo.check_runs if r.head_sha == sha and r.name == "labbot/build"]


def merged_pr(scene: Setup, branch: str, leaf: str) -> Any:
    pr = scene.repo.create_pull(
        head=branch, files={leaf: SKILL, leaf.replace("qna.yaml", "attribution.txt"): "x\n"}
    )
    pr.merge()
    return pr


def deliver_run(fake: FakeGitHub, scene: Setup, run: Any, action: str) -> None:
    payload = fake.webhook_payload("workflow_run", action, repo=scene.repo, run=run)
    payload["workflow_run"]["display_title"] = f"labbot build {run.inputs['sha']}"
    fake.deliver("workflow_run", payload)


EVAL_TABLE = [
    {
        "leaf": "compositional_skills/units/qna.yaml",
        "base_rouge_l": 0.2,
        "phase2_rouge_l": 0.6,
        "base_ref_loss": 2.5,
        "phase2_ref_loss": 1.1,
        "improved": True,
    },
    {
        "leaf": "compositional_skills/lengths/qna.yaml",
        "base_rouge_l": 0.3,
        "phase2_rouge_l": 0.25,
        "base_ref_loss": 2.0,
        "phase2_ref_loss": 2.2,
        "improved": False,
    },
]
ANSWERS = {
    "base": [
        {
            "leaf": "compositional_skills/units/qna.yaml",
            "question": "How many feet are in a yard?",
            "reference": "There are 3 feet in a yard.",
            "answer": "A yard is long.",
        }
    ],
    "phase2": [
        {
            "leaf": "compositional_skills/units/qna.yaml",
            "question": "How many feet are in a yard?",
            "reference": "There are 3 feet in a yard.",
            "answer": "There are 3 feet in a yard.",
        }
    ],
}


def test_merges_dispatch_fold_and_report_back(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    scene.repo.add_workflow(WORKFLOW, name="labbot build", inputs={"sha": {"required": True}})
    with Server(settings_for(fake, scene, tmp_path, teacher="")) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        first = merged_pr(scene, "units", LEAF)
        fake.deliver(
            "pull_request",
            fake.webhook_payload("pull_request", "closed", repo=scene.repo, pr=first),
        )
        wait_for(lambda: len(scene.repo.workflow_dispatches) == 1, what="first dispatch")
        sha1 = first.merge_commit_sha
        assert scene.repo.workflow_dispatches[0].inputs == {"sha": sha1}
        assert scene.repo.workflow_dispatches[0].ref in ("main", "refs/heads/main")
        wait_for(
            lambda: build_checks(scene, sha1) and "build #\u20601" in bot_body(first), what="queued"
        )
        assert build_checks(scene, sha1)[0].status == "queued"

        # A second merge before build 1 starts: build 2 of the newer SHA includes both PRs.
        second = merged_pr(scene, "lengths", "taxonomy/compositional_skills/lengths/qna.yaml")
        fake.deliver(
            "pull_request",
            fake.webhook_payload("pull_request", "closed", repo=scene.repo, pr=second),
        )
        wait_for(lambda: len(scene.repo.workflow_dispatches) == 2, what="second dispatch")
        sha2 = second.merge_commit_sha
        wait_for(
            lambda: "build #\u20602" in bot_body(first) and "build #\u20602" in bot_body(second),
            what="folded",
        )
        folded = wait_for(
            lambda: [r for r in build_checks(scene, sha1) if r.status == "completed"], what="fold"
        )
        assert folded[0].conclusion == "neutral"
        # The push for the same merge joins the build instead of dispatching again.
        push = fake.webhook_payload("push", repo=scene.repo)
        push.update(
            ref="refs/heads/main",
            after=sha2,
            deleted=False,
            commits=[
                {
                    "id": sha2,
                    "added": ["taxonomy/compositional_skills/lengths/qna.yaml"],
                    "modified": [],
                    "removed": [],
                }
            ],
        )
        fake.deliver("push", push)

        run = scene.repo.workflow_dispatches[1].run
        run.set_status("in_progress")
        deliver_run(fake, scene, run, "in_progress")
        check = wait_for(
            lambda: [r for r in build_checks(scene, sha2) if r.status == "in_progress"],
            what="running",
        )
        assert check[0].details_url
        wait_for(lambda: "running" in bot_body(second), what="running comment")

        scene.repo.add_artifact(
            run,
            "labbot-eval",
            {
                "eval/leaves.json": json.dumps(EVAL_TABLE),
                "eval/answers.json": json.dumps(ANSWERS),
                "report.md": "# labbot build report\n",
            },
        )
        run.set_status("completed", "success")
        deliver_run(fake, scene, run, "completed")
        done = wait_for(
            lambda: [r for r in build_checks(scene, sha2) if r.status == "completed"], what="done"
        )
        assert done[0].conclusion == "success" and "1 of 2 leaves improved" in done[0].summary
        body = wait_for(
            lambda: "finished" in bot_body(first) and bot_body(first), what="result comment"
        )
        assert (
            "compositional_skills/units/qna.yaml" in body and "There are 3 feet in a yard." in body
        )
        assert "lengths" not in body  # only this PR's own leaves
        assert "lengths/qna.yaml" in wait_for(
            lambda: "finished" in bot_body(second) and bot_body(second), what="2"
        )
        assert len(scene.repo.workflow_dispatches) == 2
        assert len([c for c in first.live_comments if c.user_type == "Bot"]) == 1


def test_failed_build_says_why_with_a_log_link(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    scene.repo.add_workflow(WORKFLOW, name="labbot build", inputs={"sha": {"required": True}})
    with Server(settings_for(fake, scene, tmp_path, teacher="")) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = merged_pr(scene, "units", LEAF)
        fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "closed", repo=scene.repo, pr=pr)
        )
        wait_for(lambda: scene.repo.workflow_dispatches, what="dispatch")
        run = scene.repo.workflow_dispatches[0].run
        job = fake.webhook_payload("workflow_job", "completed", repo=scene.repo, run=run)
        job["workflow_job"]["conclusion"] = "failure"
        job["workflow_job"]["html_url"] = "https://github.com/org/taxonomy/actions/runs/1/job/7"
        fake.deliver("workflow_job", job)
        run.set_status("completed", "failure")
        deliver_run(fake, scene, run, "completed")
        body = wait_for(lambda: "failed" in bot_body(pr) and bot_body(pr), what="failure comment")
        assert "job/7" in body and "'failure'" in body
        check = wait_for(
            lambda: [
                r for r in build_checks(scene, pr.merge_commit_sha) if r.status == "completed"
            ],
            what="check",
        )
        assert check[0].conclusion == "failure"


def test_merge_without_taxonomy_change_builds_nothing(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    scene.repo.add_workflow(WORKFLOW, name="labbot build", inputs={"sha": {"required": True}})
    with Server(settings_for(fake, scene, tmp_path, teacher="")) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = scene.repo.create_pull(head="docs", files={"README.md": "better\n"})
        pr.merge()
        fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "closed", repo=scene.repo, pr=pr)
        )
        wait_for(lambda: srv.app.state.queue.stats().counts["done"] >= 2, what="job done")
        assert (
            scene.repo.workflow_dispatches == [] and build_checks(scene, pr.merge_commit_sha) == []
        )
