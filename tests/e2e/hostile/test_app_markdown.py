"""Contributor text through the whole validation path (uvicorn on loopback, real SQLite, the
contract-checked fake GitHub): folder names, YAML keys, values and parser messages that try to
mention a team, close a code span, open HTML or make a link reach the check run and the sticky
comment only as inert text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot import render
from tests.support.app import Server, completed, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.markdown_safety import assert_balanced, assert_safe
from tests.support.samples import SKILL

ROOT = "taxonomy/compositional_skills"
#: Folder names a contributor chooses; "@org/team" spans two folders, as a path can.
FOLDERS = [
    "@org/team",
    "`x` @maintainers",
    "<img src=x onerror=alert(1)>",
    "[fixed model](https:--evil.test)",
    "#12 GH-34 www.evil.test",
    "``` ~~~ <details>",
]
#: Contents whose keys and values the validator echoes in its messages.
KEY = "@org/owners see http://evil.test/`x` <b>bold</b>"
CONTENTS = [
    # An unexpected key, echoed in "unexpected key '...'" and in the hint.
    SKILL + f'"{KEY}": 1\n',
    # A parser error whose message quotes the offending text.
    SKILL.replace("created_by: alice", 'created_by: "@org/team [x](javascript:alert(1))'),
    # A value of the wrong type, described in the message.
    SKILL.replace("created_by: alice", "created_by: [ '@org/team', '<script>x</script>' ]"),
    # A duplicate seed example, named in the message.
    SKILL.replace(
        "  - question: How many feet are in a yard?\n    answer: There are 3 feet in a yard.",
        "  - question: How many centimetres are in a metre?\n"
        "    answer: There are 100 centimetres in a metre.",
    ),
]
HOSTILE = [*FOLDERS, KEY, "@org/team [x](javascript:alert(1))", "<script>x</script>"]


def bot_bodies(pr: Any) -> list[str]:
    return [c.body for c in pr.live_comments if c.user_type == "Bot"]


def test_hostile_names_keys_and_values_stay_inert_in_the_check_run_and_the_comment(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    assert "How many feet are in a yard?" in SKILL  # the duplicate case above edits this seed
    files: dict[str, str | bytes | None] = {}
    for i, folder in enumerate(FOLDERS):
        text = CONTENTS[i % len(CONTENTS)]
        files[f"{ROOT}/{folder}/qna.yaml"] = text
        files[f"{ROOT}/{folder}/attribution.txt"] = "Title of work: units\n"
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = scene.repo.create_pull(head="hostile-markdown", files=files)
        payload = fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        assert fake.deliver("pull_request", payload).status_code == 202
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run")
        bodies = wait_for(lambda: bot_bodies(pr), what="sticky comment")
    assert run.conclusion == "failure"
    # Every file got its verdict, at its own path.
    assert {a.path for a in run.annotations} == {f"{ROOT}/{f}/qna.yaml" for f in FOLDERS}
    rules = {a.title for a in run.annotations}
    assert {"schema.unexpected-key", "yaml.syntax", "schema.type", "schema.duplicate"} <= rules
    assert len(bodies) == 1
    # The leaves are near-copies of each other: the overlap rows link them, at the pull
    # request's head (the default branch does not have them), with every segment encoded.
    own = [
        render.blob_url(scene.repo.full_name, pr.head_sha, f"{ROOT}/{folder}/qna.yaml", line)
        for folder in FOLDERS
        for line in range(1, 40)
    ]
    assert "(100% of its seeds)" in bodies[0]
    for markdown in (run.summary or "", run.title or "", bodies[0]):
        assert_safe(markdown, HOSTILE, allowed_links=[render.DOCS_URL, *own])
        assert_balanced(markdown)
    # The hostile key is still shown to the contributor, only inert.
    assert "owners" in bodies[0] and "evil" in bodies[0]
