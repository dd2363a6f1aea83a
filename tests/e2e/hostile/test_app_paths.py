"""Hostile file names and unreadable files through the whole App (uvicorn on loopback, real
SQLite, the contract-checked fake GitHub): every changed taxonomy file gets a verdict on the
right file, and a file the App cannot read fails the check; nothing is ever skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.app import BROKEN, Server, completed, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup, Symlink
from tests.support.samples import SKILL

ROOT = "taxonomy/compositional_skills"
#: Folder names whose characters mean something in a URL (or look like a path trick).
HOSTILE_NAMES = [
    "x#y",
    "x?ref=main",
    "100%",
    "a%2Fb",
    "%41",
    "a b",
    "c++",
    "r&d=1",
    "café-ü",
    "..x",
    "x..",
    "semi;colon",
]


def deliver_opened(github: FakeGitHub, setup: Setup, pr: Any) -> None:
    payload = github.webhook_payload("pull_request", "opened", repo=setup.repo, pr=pr)
    assert github.deliver("pull_request", payload).status_code == 202


def leaf(name: str) -> str:
    return f"{ROOT}/{name}/qna.yaml"


def attribution(name: str) -> str:
    return f"{ROOT}/{name}/attribution.txt"


def test_each_url_special_folder_name_is_validated_at_its_own_path(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    files: dict[str, str | bytes | None] = {}
    for name in HOSTILE_NAMES:
        files[leaf(name)] = BROKEN
        files[attribution(name)] = "Title of work: units\n"
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        # Decoys a wrongly encoded URL would reach instead: valid files at truncated paths.
        scene.repo.commit(
            {f"{ROOT}/x/qna.yaml": SKILL, f"{ROOT}/a/qna.yaml": SKILL}, message="decoys"
        )
        pr = scene.repo.create_pull(head="hostile-names", files=files)
        deliver_opened(fake, scene, pr)
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run")
        assert run.conclusion == "failure"
        spots = {(a.path, a.start_line, a.title) for a in run.annotations}
        for name in HOSTILE_NAMES:
            assert (leaf(name), 2, "schema.type") in spots, name
            assert (leaf(name), 6, "schema.type") in spots, name
        assert {a.path for a in run.annotations} == {leaf(n) for n in HOSTILE_NAMES}
        assert f"{len(HOSTILE_NAMES)} invalid" in run.summary


def test_a_valid_file_under_a_url_special_name_passes_instead_of_being_skipped(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        for i, name in enumerate(["x#y", "q?ref=main", "50%25"]):
            pr = scene.repo.create_pull(
                head=f"valid-{i}",
                files={leaf(name): SKILL, attribution(name): "Title of work: units\n"},
            )
            deliver_opened(fake, scene, pr)
            run = wait_for(lambda pr=pr: completed(scene, pr.head_sha), what="check run")
            assert (run.conclusion, name) == ("success", name)


def test_unreadable_changed_files_fail_the_check_with_a_located_reason(
    fake: FakeGitHub,  # noqa: F811
    scene: Setup,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A symlink to a file of the repository (GitHub serves the target's content), a symlink
    out of it (GitHub serves a ``symlink`` object), a folder named qna.yaml, a file listed as
    changed that is not at the head, and a file over the size limit."""
    scene.repo.commit({f"{ROOT}/real/qna.yaml": SKILL}, message="base")
    big = "# " + "x" * (3 * 1024 * 1024) + "\n"
    files: dict[str, str | bytes | None] = {
        leaf("link-in"): Symlink(b"../real/qna.yaml"),
        leaf("link-out"): Symlink(b"../../../../etc/passwd"),
        f"{ROOT}/folder/qna.yaml/inner.txt": "hi\n",
        leaf("big"): SKILL + big,
    }
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = scene.repo.create_pull(head="unreadable", files=files)
        listed = pr.files
        gone = type(listed[0])(filename=leaf("gone"), status="added", sha="0" * 40)
        folder = type(listed[0])(filename=f"{ROOT}/folder/qna.yaml", status="added", sha="1" * 40)
        pr.files_override = [*listed, gone, folder]
        deliver_opened(fake, scene, pr)
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run")
        assert run.conclusion == "failure"
        for name, words in [
            ("link-in", "symbolic link"),
            ("link-out", "symbolic link"),
            ("gone", "could not be read"),
            ("folder", "not a file"),
            ("big", "limit"),
        ]:
            notes = [a for a in run.annotations if a.path == leaf(name)]
            assert [(a.annotation_level, a.start_line) for a in notes] == [("failure", 1)], name
            assert words in notes[0].message, (name, notes[0].message)
        comment = wait_for(lambda: pr.live_comments, what="sticky comment")[0].body
        assert "symbolic link" in comment and "could not be read" in comment
