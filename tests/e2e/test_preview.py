"""Sample previews on pull requests: the App, the fake GitHub and a scripted teacher server."""

from __future__ import annotations

from pathlib import Path

from tests.support.app import ATTR, LEAF, Server, completed, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.samples import SKILL
from tests.support.scripted_teacher import scripted
from tests.support.teacher_server import ScriptedTeacherServer


def bot_body(pr: object) -> str:
    bodies = [c.body for c in pr.live_comments if c.user_type == "Bot"]  # type: ignore[attr-defined]
    return bodies[0] if bodies else ""


def test_trusted_author_gets_an_automatic_preview(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    with ScriptedTeacherServer(scripted, concurrency=4) as teacher:
        settings = settings_for(fake, scene, tmp_path, teacher=teacher.url)
        with Server(settings) as srv:
            fake.set_webhook_target(srv.url + "/webhook")
            scene.repo.set_permission("maintainer", "write")
            pr = scene.repo.create_pull(
                head="units", user="maintainer", files={LEAF: SKILL, ATTR: "Title of work: units\n"}
            )
            fake.deliver(
                "pull_request",
                fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr),
            )
            assert (
                wait_for(lambda: completed(scene, pr.head_sha), what="check").conclusion
                == "success"
            )
            body = wait_for(
                lambda: "Preview of generated samples" in bot_body(pr) and bot_body(pr),
                timeout=30,
                what="preview section",
            )
            assert "kept" in body and "<details><summary>Kept samples</summary>" in body
            assert "Rejected samples and why" in body and "critic" in body
            assert "are valid" in body  # the validation section is still there
            assert len([c for c in pr.live_comments if c.user_type == "Bot"]) == 1
            assert teacher.chat_requests()


def test_untrusted_author_gets_no_preview_until_asked(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    with ScriptedTeacherServer(scripted, concurrency=4) as teacher:
        settings = settings_for(fake, scene, tmp_path, teacher=teacher.url)
        with Server(settings) as srv:
            fake.set_webhook_target(srv.url + "/webhook")
            pr = scene.repo.create_pull(head="units", files={LEAF: SKILL, ATTR: "x\n"})
            fake.deliver(
                "pull_request",
                fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr),
            )
            wait_for(lambda: completed(scene, pr.head_sha), what="check")
            wait_for(lambda: "are valid" in bot_body(pr), what="validation comment")
            assert teacher.chat_requests() == [] and "Preview" not in bot_body(pr)
            scene.repo.set_permission("maintainer", "write")
            ask = scene.repo.add_comment(pr.number, "/labbot preview", user="maintainer")
            fake.deliver(
                "issue_comment",
                fake.webhook_payload(
                    "issue_comment", "created", "pull_request", repo=scene.repo, comment=ask
                ),
            )
            wait_for(
                lambda: "Preview of generated samples" in bot_body(pr), timeout=30, what="preview"
            )


def test_teacher_failure_is_reported_not_silent(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    settings = settings_for(fake, scene, tmp_path, teacher="http://127.0.0.1:9/v1")
    with Server(settings) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        scene.repo.set_permission("maintainer", "write")
        pr = scene.repo.create_pull(
            head="units", user="maintainer", files={LEAF: SKILL, ATTR: "x\n"}
        )
        fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        )
        body = wait_for(
            lambda: "Preview unavailable" in bot_body(pr) and bot_body(pr),
            timeout=30,
            what="preview failure",
        )
        # The teacher is named, never addressed: its host and port stay out of the comment.
        assert "cannot be reached" in body and "/labbot preview" in body
        assert "127.0.0.1:9" not in body
