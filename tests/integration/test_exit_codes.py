"""Every branch of the error tree exits with its status from the one table (pipeline.errors
.ExitCode), through the real ``labbot`` entry point called in process, and the words on
stderr name the flag that helps while the library's message does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import cli as bot_cli
from pipeline import errors
from pipeline.errors import ExitCode
from tests.support.samples import KNOWLEDGE, KNOWLEDGE_PATH, SKILL, SKILL_PATH
from tests.support.teacher_server import ScriptedTeacherServer


def echo(messages: list[dict[str, str]], body: dict[str, object]) -> str:
    return "yes"


def labbot(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = bot_cli.main(list(argv))
    return int(code), capsys.readouterr().err


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with one valid skill and one knowledge leaf whose documents come from a
    mirror folder that does not exist; the current folder is its root."""
    for rel, text in ((SKILL_PATH, SKILL), (KNOWLEDGE_PATH, KNOWLEDGE)):
        path = tmp_path / rel
        path.parent.mkdir(parents=True)
        path.write_text(text)
        (path.parent / "attribution.txt").write_text("Title of work: test\n")
    (tmp_path / ".github").mkdir()
    (tmp_path / ".github" / "labbot.yml").write_text(
        "taxonomy_root: taxonomy\ndocuments:\n  mirrors:\n"
        "    https://github.com/example/quillby: no-such-folder\n"
    )
    monkeypatch.chdir(tmp_path)
    for name in ("LABBOT_TEACHER_API_KEY", "OPENAI_API_KEY", "LABBOT_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_table_is_the_documented_one() -> None:
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0),
        ("FINDINGS", 1),
        ("USAGE", 2),
        ("SERVICE", 3),
        ("BUILD", 4),
        ("INTERRUPTED", 130),
    ]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} |" in readme, f"README's exit status table lacks {code!r}"


def test_every_error_class_has_a_status_from_the_table() -> None:
    from bot.errors import BotError, GitHubError, SettingsError, Superseded
    from pipeline.embedded import EmbeddedModelMissing
    from pipeline.sdg.teacher import TeacherError
    from pipeline.training.distributed import RankFailed
    from pipeline.training.packing import ChatTemplateError

    expected = {
        errors.UsageError("x"): ExitCode.USAGE,
        errors.ConfigError("f", []): ExitCode.USAGE,
        EmbeddedModelMissing("x"): ExitCode.USAGE,
        SettingsError(["x"]): ExitCode.USAGE,
        TeacherError("x"): ExitCode.SERVICE,
        errors.DocumentError("x"): ExitCode.SERVICE,
        errors.BuildError("x"): ExitCode.BUILD,
        ChatTemplateError("x"): ExitCode.BUILD,
        RankFailed("x"): ExitCode.BUILD,
        errors.RunDirectoryInUse(Path("r")): ExitCode.USAGE,
    }
    for exc, code in expected.items():
        assert isinstance(exc, errors.LabbotError)
        assert errors.exit_code_for(exc) is code, type(exc).__name__
    assert errors.exit_code_for(KeyboardInterrupt()) is ExitCode.INTERRUPTED
    for bot_error in (GitHubError(500, "x"), Superseded("abc")):
        assert isinstance(bot_error, BotError) and isinstance(bot_error, errors.LabbotError)
    with pytest.raises(TypeError):
        errors.exit_code_for(ValueError("not ours"))


def test_check_findings_usage_and_config_errors(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert labbot(capsys, "check", SKILL_PATH)[0] == ExitCode.OK
    bad = tree / "taxonomy/compositional_skills/broken/qna.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("version: 3\ncreated_by: a\n")
    assert labbot(capsys, "check", str(bad))[0] == ExitCode.FINDINGS
    code, err = labbot(capsys, "check", "--files-from", "no-such-list")
    assert code == ExitCode.USAGE and err.startswith("labbot: --files-from: ")
    code, err = labbot(capsys, "check", "--config", "missing.yml", SKILL_PATH)
    assert code == ExitCode.USAGE and "--config" in err
    broken = tree / "broken.yml"
    broken.write_text("profile: sideways\n")
    code, err = labbot(capsys, "check", "--config", str(broken), SKILL_PATH)
    assert code == ExitCode.USAGE and f"{broken}:1:" in err and "Traceback" not in err


def test_changed_outside_git_is_a_usage_error_naming_the_flag(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = labbot(capsys, "check", "--changed")
    assert code == ExitCode.USAGE and "--changed" in err


def test_generate_usage_errors_name_their_flags(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, flag in (
        (["--samples", "0"], "--samples"),
        (["--concurrency", "0", "--teacher", "http://127.0.0.1:9/v1"], "--concurrency"),
        (["--context-window", "-3", "--teacher", "http://127.0.0.1:9/v1"], "--context-window"),
        (["--teacher", "ftp://example.org"], "--teacher"),
    ):
        code, err = labbot(capsys, "generate", SKILL_PATH, *argv)
        assert code == ExitCode.USAGE, (argv, err)
        assert err.startswith(f"labbot: {flag}: "), err


def test_a_teacher_failure_exits_3_with_the_cli_hint(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.sdg.teacher import TeacherError, make_teacher

    with ScriptedTeacherServer(echo) as server:
        server.fail_next(401)
        with pytest.raises(TeacherError) as info:
            make_teacher(server.url, cache_dir=tree / "cache")
        assert info.value.status == 401 and info.value.problem == "credentials"
        assert info.value.base_url == server.url.rstrip("/")
        assert "--" not in str(info.value) and "HTTP 401" in info.value.public
        server.fail_next(401)
        code, err = labbot(capsys, "generate", SKILL_PATH, "--teacher", server.url)
    assert code == ExitCode.SERVICE
    assert "rejected the credentials" in err and "hint: set LABBOT_TEACHER_API_KEY" in err


def test_a_document_that_cannot_be_fetched_exits_3_from_generate(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptedTeacherServer(echo) as server:
        code, err = labbot(capsys, "generate", KNOWLEDGE_PATH, "--teacher", server.url)
    assert code == ExitCode.SERVICE, err
    leaf = KNOWLEDGE_PATH.removeprefix("taxonomy/")
    assert leaf in err and "https://github.com/example/quillby at 0123456789ab" in err


def test_build_statuses(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A tree with an invalid file: findings, with their locations, and status 1.
    bad = tree / "taxonomy/compositional_skills/broken/qna.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("version: 3\ncreated_by: a\n")
    code, err = labbot(capsys, "build", "--out", str(tree / "run1"))
    assert code == ExitCode.FINDINGS and "broken/qna.yaml:1:1" in err
    # A fresh build into a folder that holds a run: usage, and the CLI names the flags.
    used = tree / "run2"
    used.mkdir()
    (used / "something").write_text("x")
    code, err = labbot(capsys, "build", "--out", str(used))
    assert code == ExitCode.USAGE and "is not empty" in err and "--resume" in err
    code, err = labbot(capsys, "build", "--resume")
    assert code == ExitCode.USAGE and err.startswith("labbot: --resume: ")


def test_interrupt_exits_130(
    tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import cli

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "validate_path", interrupted)
    code, err = labbot(capsys, "check", SKILL_PATH)
    assert code == ExitCode.INTERRUPTED and err == "labbot: interrupted\n"


def test_serve_without_settings_exits_2_listing_each_problem(
    tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for name in [k for k in os.environ if k.startswith("LABBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LABBOT_WORKERS", "many")
    monkeypatch.setenv("LABBOT_METRICS_TOKEN", "tok-3f9a")
    code, err = labbot(capsys, "serve")
    assert code == ExitCode.USAGE
    lines = err.splitlines()
    assert lines[0] == "labbot cannot start:"
    assert all(line.startswith("  - ") for line in lines[1:])
    assert any(line.startswith("  - LABBOT_WORKERS must be") for line in lines)
    assert any("LABBOT_WEBHOOK_SECRET" in line for line in lines)
    assert "Traceback" not in err and "pydantic" not in err and "tok-3f9a" not in err
