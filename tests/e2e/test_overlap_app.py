"""Overlap on pull requests, end to end: the App under uvicorn against the fake GitHub builds the
default branch's index through the Git Trees and Blobs APIs (nothing checked out), annotates a
near-copy, links the leaf it repeats in the sticky comment, and after a merge fetches only the
blobs that changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot import markup
from tests.support.app import Server, completed, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.samples import SKILL

# A merged leaf whose folder name holds characters that mean something in a URL and in Markdown.
ORIGINAL = "taxonomy/compositional_skills/units (metric) [old]#1/qna.yaml"
ORIGINAL_URL = "taxonomy/compositional_skills/units%20%28metric%29%20%5Bold%5D%231/qna.yaml"
OTHER = "taxonomy/compositional_skills/writing/haiku/qna.yaml"
THIRD = "taxonomy/knowledge/geography/rivers/qna.yaml"

HAIKU = """\
version: 3
created_by: carol
task_description: Write haiku about the seasons.
seed_examples:
  - question: Write a haiku about the first snow falling on a quiet village.
    answer: Soft flakes on rooftops, the village holds its breath now, chimneys breathe white smoke.
  - question: Write a haiku about cherry blossoms drifting over a slow river.
    answer: Petals on the stream, pink boats without a captain, drifting toward the sea.
  - question: Write a haiku about a hot summer afternoon in an empty city.
    answer: Asphalt shimmers bright, a lone dog sleeps in shadow, the ice cream truck sings.
  - question: Write a haiku about autumn leaves gathering in a school yard.
    answer: Red and gold piles grow, children leap into the heaps, laughter scatters leaves.
  - question: Write a haiku about the longest night of the winter solstice.
    answer: Candles in windows, the dark stretches its long arms, dawn is far away.
"""


def near_copy(text: str) -> str:
    """What a second contributor sends: recased, re-punctuated, another author."""
    return (
        text.replace("How many", "how many")
        .replace("?", " ?")
        .replace("created_by: alice", "created_by: mallory")
    )


def open_pull(scene: Setup, head: str, leaf: str, text: str) -> Any:
    attribution = leaf.replace("qna.yaml", "attribution.txt")
    return scene.repo.create_pull(head=head, files={leaf: text, attribution: "Title: x\n"})


def deliver(fake: FakeGitHub, scene: Setup, pr: Any, action: str = "opened") -> None:
    fake.deliver(
        "pull_request", fake.webhook_payload("pull_request", action, repo=scene.repo, pr=pr)
    )


def blob_calls(fake: FakeGitHub) -> list[str]:
    return [c.path.rsplit("/", 1)[-1] for c in fake.calls_to("GET", r"/git/blobs/")]


def test_near_copy_is_annotated_and_linked_and_a_merge_costs_one_blob(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    scene.repo.commit({ORIGINAL: SKILL, OTHER: HAIKU}, message="two leaves")
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = open_pull(
            scene, "copy", "taxonomy/compositional_skills/measures/qna.yaml", near_copy(SKILL)
        )
        base_sha = scene.repo.resolve_ref("main")
        deliver(fake, scene, pr)
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run")

        # A warning: the check still passes.
        assert run.conclusion == "success", run.output
        notes = [a for a in run.annotations if a.title == "overlap.leaf"]
        assert len(notes) == 1
        assert notes[0].path == "taxonomy/compositional_skills/measures/qna.yaml"
        assert notes[0].annotation_level == "warning" and notes[0].start_line == 4
        assert ORIGINAL in notes[0].message

        body = wait_for(lambda: pr.live_comments and pr.live_comments[0].body, what="comment")
        link = f"https://github.com/org/taxonomy/blob/{base_sha}/{ORIGINAL_URL}#L4"
        label = markup.text("compositional_skills/units (metric) [old]#1")
        assert f"looks like [{label}]({link}) (100% of its seeds)" in body, body
        # Two leaves on the default branch: two blobs, one tree listing.
        assert sorted(blob_calls(fake)) == sorted(
            _sha(scene, base_sha, p) for p in (ORIGINAL, OTHER)
        )
        assert len(fake.calls_to("GET", r"/git/trees/")) == 1

        # A merge changes one leaf and adds one: the next pull request fetches those two blobs.
        third = HAIKU.replace("haiku", "limerick").replace("carol", "erin")
        scene.repo.commit({OTHER: HAIKU.replace("carol", "dave"), THIRD: third}, message="merge")
        merged = scene.repo.resolve_ref("main")
        before = len(blob_calls(fake))
        pr2 = open_pull(scene, "haiku", "taxonomy/compositional_skills/poems/qna.yaml", HAIKU)
        deliver(fake, scene, pr2)
        run2 = wait_for(lambda: completed(scene, pr2.head_sha), what="second check run")
        assert sorted(blob_calls(fake)[before:]) == sorted(
            _sha(scene, merged, p) for p in (OTHER, THIRD)
        )
        assert any(a.title == "overlap.leaf" and OTHER in a.message for a in run2.annotations)
        body2 = wait_for(lambda: pr2.live_comments and pr2.live_comments[0].body, what="comment")
        assert f"https://github.com/org/taxonomy/blob/{merged}/" in body2

        # The same default branch again: no tree listing, no blob.
        trees = len(fake.calls_to("GET", r"/git/trees/"))
        new_head = pr2.push({"taxonomy/compositional_skills/poems/qna.yaml": near_copy(HAIKU)})
        deliver(fake, scene, pr2, "synchronize")
        wait_for(lambda: completed(scene, new_head), what="third check run")
        assert len(fake.calls_to("GET", r"/git/trees/")) == trees
        assert blob_calls(fake)[before + 2 :] == []


def _sha(scene: Setup, ref: str, path: str) -> str:
    from tests.support.fakegithub.state import blob_sha

    return blob_sha(scene.repo.tree(ref)[path])


def test_overlap_errors_fail_the_check_only_when_the_config_says_so(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    config = "overlap:\n  as_errors: true\n  thresholds:\n    leaf: 0.9\n"
    scene.repo.commit({ORIGINAL: SKILL, ".github/labbot.yml": config}, message="strict")
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        leaf = "taxonomy/compositional_skills/again/qna.yaml"
        pr = open_pull(scene, "copy", leaf, near_copy(SKILL))
        deliver(fake, scene, pr)
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run")
        assert run.conclusion == "failure"
        (note,) = [a for a in run.annotations if a.title == "overlap.leaf"]
        assert note.annotation_level == "failure"
        # One seed dropped: 4 of 5 (0.8) is under this repository's threshold of 0.9.
        dropped = near_copy(SKILL).rsplit("  - question: how many feet", 1)[0]
        head = pr.push({leaf: dropped})
        deliver(fake, scene, pr, "synchronize")
        run2 = wait_for(lambda: completed(scene, head), what="second check run")
        assert not [a for a in run2.annotations if a.title == "overlap.leaf"]
        assert [a for a in run2.annotations if a.title == "overlap.seed"]
        assert run2.conclusion == "failure"  # each repeated seed is an error here
