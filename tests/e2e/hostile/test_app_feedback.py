"""A file full of findings gets a bounded, honest answer: a few hundred annotations at most,
repeated findings shown a few times per rule with an "… and N more" line in the check summary
and the sticky comment, in a handful of API writes."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.app import ATTR, LEAF, Server, completed, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.samples import SKILL

FINDINGS = 60_000


def test_sixty_thousand_findings_complete_quickly_with_few_writes(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    flood = SKILL + "# x \n" * FINDINGS  # one trailing-space finding per line, 300 kB
    second = "taxonomy/compositional_skills/other/qna.yaml"
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = scene.repo.create_pull(
            head="flood",
            files={
                LEAF: flood,
                ATTR: "Title of work: units\n",
                second: SKILL.replace("version: 3", "version: x") + "# y \n" * 500,
                second.replace("qna.yaml", "attribution.txt"): "Title of work: other\n",
            },
        )
        fake.reset_calls()
        started = time.monotonic()
        payload = fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        assert fake.deliver("pull_request", payload).status_code == 202
        run = wait_for(lambda: completed(scene, pr.head_sha), timeout=60, what="check run")
        comment = wait_for(lambda: pr.live_comments, what="sticky comment")[0].body
        elapsed = time.monotonic() - started
        time.sleep(0.3)
        writes = [c for c in fake.calls if c.method != "GET"]
        check_writes = [c for c in writes if "/check-runs" in c.path]

        assert run.conclusion == "failure"
        assert 0 < len(run.annotations) <= 200
        per_rule = [a for a in run.annotations if a.title == "lint.trailing-spaces"]
        assert {a.path for a in per_rule} == {LEAF, second}
        assert len([a for a in per_rule if a.path == LEAF]) <= 20
        assert any(a.title == "schema.type" and a.path == second for a in run.annotations)
        assert "and 59,9" in run.summary and "more" in run.summary  # "… and 59,9xx more"
        assert "lint.trailing-spaces" in run.summary and f"{FINDINGS:,}" in run.summary
        assert "and 59,9" in comment and len(comment) < 65_536
        assert len(check_writes) <= 6, [(c.method, c.path) for c in check_writes]
        assert len(writes) <= 10, [(c.method, c.path) for c in writes]
        assert elapsed < 30  # measured ~1-2 s; generous for a loaded 2-core machine
