"""A validation that misbehaves (dies of a signal, hangs, eats memory, exits) costs one job, not
the App: the check run completes as ``failure`` with an honest reason, the job is not retried,
and the next pull request is validated normally. The misbehaving validator is injected through
the App's validator seam (tests/support/misbehaving_validator.py), in a real child process."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bot.isolation import IsolatedValidator
from pipeline.config import RepoConfig
from pipeline.taxonomy.validate import PROFILES
from tests.support.app import Server, completed, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.samples import SKILL

SEAM = "tests.support.misbehaving_validator:validate"
LEAF = "taxonomy/compositional_skills/units/qna.yaml"
ATTR = "taxonomy/compositional_skills/units/attribution.txt"


def open_and_deliver(github: FakeGitHub, setup: Setup, head: str, text: str) -> Any:
    pr = setup.repo.create_pull(head=head, files={LEAF: text, ATTR: "Title of work: units\n"})
    payload = github.webhook_payload("pull_request", "opened", repo=setup.repo, pr=pr)
    assert github.deliver("pull_request", payload).status_code == 202
    return pr


def test_crash_hang_memory_and_exit_each_fail_one_check_and_the_app_carries_on(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    validator = IsolatedValidator(SEAM, seconds=2.0, memory_bytes=512 << 20)
    settings = replace(settings_for(fake, scene, tmp_path), workers=1, validate_seconds=2.0)
    with Server(settings, validator=validator) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        cases = [
            ("crash", "the validator stopped (signal 11, SIGSEGV)"),
            ("hang", "timed out after 2 s"),
            ("hog", "ran out of memory"),
            ("exit", "the validator stopped (exit status 3)"),
        ]
        for word, reason in cases:
            pr = open_and_deliver(fake, scene, word, SKILL + f"#{word}\n")
            run = wait_for(lambda pr=pr: completed(scene, pr.head_sha), what=f"{word} check")
            assert run.conclusion == "failure", word
            assert "could not be validated" in run.summary and reason in run.summary, run.summary
            (note,) = run.annotations
            assert note.path == LEAF and reason in note.message
            assert httpx.get(srv.url + "/healthz").json()["status"] == "ok"
            good = open_and_deliver(fake, scene, f"after-{word}", SKILL)
            ok = wait_for(lambda good=good: completed(scene, good.head_sha), what="next check")
            assert ok.conclusion == "success", word
        queue = srv.app.state.queue
        time.sleep(0.3)
        stats = queue.stats()
        assert stats.counts.get("dead", 0) == 0 and stats.counts.get("pending", 0) == 0
        with queue._connect() as conn:  # every job ran once: nothing was retried
            attempts = [row[0] for row in conn.execute("SELECT attempts FROM jobs")]
        assert attempts and set(attempts) == {1}
    validator.close()


def test_isolated_validation_matches_in_process_validation_and_bounds_its_output() -> None:
    """The child gives the same verdict as validate_bytes; a file with 60,000 findings comes
    back with a bounded number of them and exact counts of the rest."""
    validator = IsolatedValidator(seconds=20.0)
    try:
        from pipeline.taxonomy.validate import validate_bytes

        config = RepoConfig()
        for text in (SKILL, SKILL.replace("version: 3", "version: x")):
            want = validate_bytes(text.encode(), LEAF, PROFILES["pr"], config, b"t")
            got = validator.validate(text.encode(), LEAF, PROFILES["pr"], config, b"t")
            assert got.as_dict() == want.as_dict()
        flood = (SKILL + "# x \n" * 60_000).encode()
        checked = validator.validate(flood, LEAF, PROFILES["pr"], config, b"t")
        assert len(checked.findings) <= 1000
        assert checked.warnings + checked.errors == 60_000
        assert sum(checked.omitted.values()) == 60_000 - len(checked.findings)
        assert set(checked.omitted) == {"lint.trailing-spaces"} and not checked.valid
    finally:
        validator.close()
