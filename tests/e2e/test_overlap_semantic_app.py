"""The semantic overlap pass in the App, end to end against the fake GitHub: with
``overlap.semantic`` in the repository's config, a pull request that says one of the default
branch's seeds again in other words gets a comment row linking that seed; the leaves indexed
before the switch was turned on are fetched once more to be embedded, and a later pull request
on the same default branch fetches no blob. Without the extra, the comment says so once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import markup
from pipeline import semantic
from tests.e2e.test_overlap_app import HAIKU, OTHER, _sha, blob_calls, deliver, open_pull
from tests.integration.test_overlap_semantic import PR, SKILL
from tests.support.app import Server, completed, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup

ORIGINAL = "taxonomy/compositional_skills/units/qna.yaml"
CONFIG = ".github/labbot.yml"
SWITCH = "overlap:\n  semantic: true\n"


@pytest.mark.skipif(not semantic.available(), reason="the semantic extra is not installed")
def test_a_paraphrase_is_linked_in_other_words_and_the_base_is_fetched_once(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    semantic.load_embedder()  # once per process, before the App's first job waits on it
    scene.repo.commit({ORIGINAL: SKILL, OTHER: HAIKU}, message="two leaves")
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        # Switch off: the lexical pass alone misses the paraphrase, and indexes both leaves.
        first = open_pull(scene, "words", "taxonomy/compositional_skills/lengths/qna.yaml", PR)
        deliver(fake, scene, first)
        body = wait_for(lambda: first.live_comments and first.live_comments[0].body, what="comment")
        assert "in other words" not in body and "semantic" not in body
        assert len(blob_calls(fake)) == 2

        # Switch on: the indexed leaves lack vectors, so their blobs are fetched to embed them.
        scene.repo.commit({CONFIG: SWITCH}, message="semantic on")
        base = scene.repo.resolve_ref("main")
        pr = open_pull(scene, "meaning", "taxonomy/compositional_skills/sizes/qna.yaml", PR)
        deliver(fake, scene, pr)
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run")
        assert run.conclusion == "success", run.output
        (note,) = [a for a in run.annotations if a.title == "overlap.seed"]
        assert note.start_line == 5 and "in other words" in note.message
        body = wait_for(lambda: pr.live_comments and pr.live_comments[0].body, what="comment")
        link = f"https://github.com/org/taxonomy/blob/{base}/{ORIGINAL}#L5"
        label = markup.text("compositional_skills/units, line 5")
        row = f"this seed says the same as one in [{label}]({link})"
        assert f"{row} in other words (" in body, body
        assert "not in the semantic index" not in body
        assert sorted(blob_calls(fake)[2:]) == sorted(
            _sha(scene, base, p) for p in (ORIGINAL, OTHER)
        )

        # The same default branch again: the vectors are stored, no blob is fetched.
        again = open_pull(scene, "again", "taxonomy/compositional_skills/more/qna.yaml", PR)
        deliver(fake, scene, again)
        body = wait_for(lambda: again.live_comments and again.live_comments[0].body, what="comment")
        assert "in other words" in body
        assert len(blob_calls(fake)) == 4
    stored = list((tmp_path / "data").rglob("semantic/*/*.npz"))
    assert len(stored) == 1, stored


def test_switch_on_without_the_extra_is_said_once_and_fails_nothing(
    fake: FakeGitHub, scene: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABBOT_SEMANTIC_DISABLE", "1")
    scene.repo.commit({ORIGINAL: SKILL, CONFIG: SWITCH}, message="semantic on")
    with Server(settings_for(fake, scene, tmp_path)) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        pr = open_pull(scene, "words", "taxonomy/compositional_skills/lengths/qna.yaml", PR)
        deliver(fake, scene, pr)
        run = wait_for(lambda: completed(scene, pr.head_sha), what="check run")
        assert run.conclusion == "success", run.output
        body = wait_for(lambda: pr.live_comments and pr.live_comments[0].body, what="comment")
        assert body.count("semantic overlap pass is on") == 1, body
        assert "pip install" not in body  # the App's installation is the operator's business
        assert "in other words" not in body and len(blob_calls(fake)) == 1
