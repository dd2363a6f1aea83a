"""The default branch's overlap index through the API: capped blob downloads per job, completed
by later jobs, files over the size limit never downloaded, GitHub failures named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import overlap, render
from bot.github import GitHubClient
from pipeline.config import RepoConfig
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.samples import SKILL


def leaf(i: int) -> str:
    return f"taxonomy/compositional_skills/topic{i}/qna.yaml"


@pytest.fixture
def client(fake: FakeGitHub, scene: Setup) -> GitHubClient:
    return GitHubClient(scene.app.id, scene.app.private_key_pem, fake.url, write_interval=0.0)


def blobs(fake: FakeGitHub) -> int:
    return len(fake.calls_to("GET", r"/git/blobs/"))


def test_blob_downloads_are_capped_and_the_rest_come_with_later_jobs(
    fake: FakeGitHub, scene: Setup, client: GitHubClient, tmp_path: Path
) -> None:
    files = {leaf(i): SKILL.replace("units of length", f"units, part {i}") for i in range(5)}
    files["taxonomy/compositional_skills/big/qna.yaml"] = "x" * 5000
    files["taxonomy/compositional_skills/misnamed/qna.yml"] = SKILL
    scene.repo.commit(files, message="five leaves")
    store = overlap.IndexStore(tmp_path / "overlap")
    inst, config = scene.installation.id, RepoConfig(max_file_bytes=4096)

    first = overlap.base_tree(client, inst, "org/taxonomy", config, store, max_blobs=2)
    assert (first.fetched, first.left) == (2, 3) and blobs(fake) == 2
    assert first.index.key.startswith("partial-")
    assert "3 leaves of the default branch are not indexed yet (at most 2" in overlap.note(first)
    section = render.validation_section([], "0" * 40, render.OverlapLinks("o/r", "s", "x"))
    assert section == ""  # nothing checked: no section

    second = overlap.base_tree(client, inst, "org/taxonomy", config, store, max_blobs=2)
    assert (second.fetched, second.left) == (2, 1) and blobs(fake) == 4
    third = overlap.base_tree(client, inst, "org/taxonomy", config, store, max_blobs=2)
    assert (third.fetched, third.left) == (1, 0) and blobs(fake) == 5
    assert not third.index.key.startswith("partial-") and overlap.note(third) == ""
    # the 5,000-byte file was never downloaded, the qna.yml is no leaf; all five are indexed
    assert len(third.index) == 6 and "taxonomy/compositional_skills/big/qna.yaml" in third.index

    again = overlap.base_tree(client, inst, "org/taxonomy", config, store, max_blobs=2)
    assert again.fetched == 0 and blobs(fake) == 5
    assert len(list((tmp_path / "overlap").rglob("*.npz"))) <= overlap.KEEP


def test_a_github_failure_is_raised_for_the_caller_to_name(
    fake: FakeGitHub, scene: Setup, client: GitHubClient, tmp_path: Path
) -> None:
    scene.repo.commit({leaf(1): SKILL}, message="one")
    fake.inject("GET", r"/git/trees/", 404, times=None)
    with pytest.raises(overlap.GitHubError):
        overlap.base_tree(
            client, scene.installation.id, "org/taxonomy", RepoConfig(), overlap.IndexStore(None)
        )
    assert (
        overlap.note(None, "GitHub answered 404") == "Overlap check skipped: GitHub answered 404."
    )
