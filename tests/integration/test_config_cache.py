"""A build reuses what a preview generated when their settings agree, and only then.

The preview side is the App's own path (the leaf read from the pull request's bytes, the
preview's generation settings, ``generate_leaf``); the build side is the build's generate stage.
Both talk to one scripted teacher server on loopback and share one cache folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.handlers.preview import generation_settings
from pipeline.config import parse_config
from pipeline.sdg.generate import generate_leaf
from pipeline.sdg.teacher import make_teacher
from pipeline.taxonomy.leaves import leaf_from_bytes
from pipeline.training.build import Build
from pipeline.training.config import BuildConfig, resolve
from tests.support.scripted_teacher import scripted
from tests.support.teacher_server import ScriptedTeacherServer

ROOT = Path(__file__).resolve().parents[2]
LEAF = "compositional_skills/reasoning/unit_conversion_word_problems/qna.yaml"
REPO_CONFIG = b"preview:\n  samples: 3\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A taxonomy of one skill leaf (the sample taxonomy's)."""
    root = tmp_path / "taxonomy"
    (root / LEAF).parent.mkdir(parents=True)
    shutil.copy(ROOT / "taxonomy" / LEAF, root / LEAF)
    return root


def _preview(server: ScriptedTeacherServer, root: Path, cache: Path) -> None:
    config = parse_config(REPO_CONFIG)
    leaf = leaf_from_bytes(LEAF, (root / LEAF).read_bytes())
    assert leaf is not None
    teacher = make_teacher(server.url, cache_dir=cache, concurrency=4)  # as the App builds it
    try:
        result = generate_leaf(leaf, teacher, generation_settings(config), cache_dir=cache)
    finally:
        teacher.close()
    assert not result.cached and result.samples


def _build_generate(cfg: BuildConfig, root: Path, run: Path, cache: Path) -> None:
    Build(root, parse_config(REPO_CONFIG), cfg, run, cache).generate()


def test_a_build_reuses_a_preview_when_the_settings_agree(tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with ScriptedTeacherServer(scripted, concurrency=4) as server:
        _preview(server, tree, cache)
        after_preview = len(server.chat_requests())
        assert after_preview > 0
        # The defaults, with the preview's sample budget: nothing else to line up.
        same = resolve(overrides=["generate.samples=3", f"teacher={server.url}"])
        _build_generate(same, tree, tmp_path / "run", cache)
        assert len(server.chat_requests()) == after_preview  # zero teacher calls


@pytest.mark.parametrize(
    "differs",
    ["generate.max_tokens=160", "generate.temperature=0.5", "seed=7", "generate.samples=4"],
)
def test_a_build_with_other_settings_generates_anew(
    tree: Path, tmp_path: Path, differs: str
) -> None:
    cache = tmp_path / "cache"
    with ScriptedTeacherServer(scripted, concurrency=4) as server:
        _preview(server, tree, cache)
        after_preview = len(server.chat_requests())
        cfg = resolve(overrides=["generate.samples=3", f"teacher={server.url}", differs])
        _build_generate(cfg, tree, tmp_path / "run", cache)
        assert len(server.chat_requests()) > after_preview
