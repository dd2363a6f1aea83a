"""The build configuration: default.yaml against its schema, located errors in a user's file,
``key=value`` overrides, typed sections, and the CLI reporting bad overrides."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.taxonomy.schemas import load_schema, validate
from pipeline.taxonomy.yamlsource import compose, construct, decode
from pipeline.training import config as bc

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_YAML = ROOT / "pipeline" / "training" / "configs" / "default.yaml"


def _errors(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [f"{exc.value.path}:{f.line}:{f.column}: {f.message}" for f in exc.value.findings]


def test_default_yaml_validates_and_gives_every_key_a_value() -> None:
    text, _ = decode(DEFAULT_YAML.read_bytes())
    assert text is not None
    root, findings = compose(text)
    assert root is not None and not findings
    data, _ = construct(root)
    assert validate(data, bc.SCHEMA, root) == []
    for key in bc.known_keys():
        section, _, name = key.partition(".")
        assert (name in data[section]) if name else (section in data), key
    cfg = bc.defaults()
    assert cfg.generate.max_tokens == 256 and cfg.phase1.lr == 3e-4 and cfg.phase1.seed is None
    assert bc.load(DEFAULT_YAML) == cfg == bc.resolve()


def test_every_schema_key_is_described() -> None:
    schema = load_schema(bc.SCHEMA)
    phase = schema["$defs"]["phase"]["properties"]
    for name, node in {**schema["properties"], **phase}.items():
        assert node.get("description"), name
    for section in ("generate", "mix", "eval"):
        for name, node in schema["properties"][section]["properties"].items():
            assert node.get("description"), f"{section}.{name}"


def test_sections_are_typed_and_frozen() -> None:
    cfg = bc.resolve({"phase1": {"lr": 1}, "mix": {"replay_fraction": 0}})
    assert isinstance(cfg.phase1.lr, float) and isinstance(cfg.mix.replay_fraction, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.generate.max_tokens = 1  # type: ignore[misc]
    params = cfg.phase2.train_params(cfg.seed)
    assert params["seed"] == 42 and params["lr"] == 2e-4
    assert bc.resolve(overrides=["phase2.seed=7"]).phase2.train_params(42)["seed"] == 7
    json.dumps(cfg.as_dict())  # plain data, for the run directory and the manifest


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("phase1:\n  epoch: 2\n", ":2:3:", "did you mean 'phase1.epochs'"),
        ("seed: 1\nmax_tokens: 5\n", ":2:1:", "did you mean 'generate.max_tokens'"),
        ("generate:\n  samples: many\n", ":2:12:", "'samples' must be a whole number"),
        ("eval:\n  batch_size: 0\n", ":2:15:", "'eval.batch_size'"),
        ("phase2:\n  parallel: tensor\n", ":2:13:", "'phase2.parallel'"),
        ("teacher_context_window: lots\n", ":1:25:", "'teacher_context_window' must be"),
        ("- a list\n", ":1:1:", "must be a mapping"),
        ("generate: [1\n", ":", "yaml"),
    ],
)
def test_a_bad_file_gets_located_errors(tmp_path: Path, text: str, where: str, words: str) -> None:
    path = tmp_path / "build.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        bc.load(path)
    message = str(info.value)
    assert f"{path}{where}" in message, message
    assert words in message or any(words in f.rule for f in info.value.findings), message
    assert "Traceback" not in message


def test_overrides_are_yaml_scalars() -> None:
    cfg = bc.resolve(
        overrides=[
            "phase1.lr=3e-4",
            "phase2.lr=1",
            "generate.critic=false",
            "teacher_context_window=null",
            "teacher=http://127.0.0.1:8000/v1?a=b",
            "system_prompt='Be brief.'",
            "phase1.checkpoint_every_steps=0",
            "phase1.parallel=fsdp",
        ]
    )
    assert cfg.phase1.lr == 3e-4 and cfg.phase2.lr == 1.0 and isinstance(cfg.phase2.lr, float)
    assert cfg.generate.critic is False and cfg.teacher_context_window is None
    assert cfg.teacher == "http://127.0.0.1:8000/v1?a=b" and cfg.system_prompt == "Be brief."
    assert cfg.phase1.checkpoint_every_steps == 0 and cfg.phase1.parallel == "fsdp"
    assert cfg.phase2.parallel == "ddp"  # one phase's override leaves the other alone


def test_overrides_come_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "build.yaml"
    path.write_text("phase1:\n  epochs: 1\n  lr: 1.0e-4\ngenerate:\n  samples: 3\n")
    cfg = bc.load(path, ["phase1.epochs=2"])
    assert (cfg.phase1.epochs, cfg.phase1.lr, cfg.generate.samples) == (2, 1e-4, 3)
    assert cfg.phase1.max_seq_len == bc.defaults().phase1.max_seq_len


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["phase1.epoch=2"],
            "command line:1:1: 'phase1.epoch=2': unknown key 'phase1.epoch'; "
            "did you mean 'phase1.epochs'?",
        ),
        (
            ["generate.samples=4", "max_tokens=9"],
            "command line:1:20: 'max_tokens=9': unknown key "
            "'max_tokens'; did you mean 'generate.max_tokens'?",
        ),
        (["generat.samples=4"], "did you mean 'generate.samples'?"),
        (["generate=4"], "'generate' is a section: set its keys"),
        (["epochs"], "expected KEY=VALUE"),
        (["phase1.epochs=two"], "'phase1.epochs' must be a whole number, not 'two'"),
        (["phase1.epochs=0"], "'phase1.epochs' must be at least 1, not the number 0"),
        (["phase1.parallel=tp"], "'phase1.parallel' must be one of ddp, fsdp"),
        (["generate.critic=maybe"], "'generate.critic' must be true or false"),
        (["seed=1.5"], "'seed' must be a whole number"),
        (["generate.samples.x=1"], "unknown key 'generate.samples.x'"),
    ],
)
def test_bad_overrides_are_located_and_name_the_closest_key(
    overrides: list[str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        bc.resolve(overrides=overrides)
    assert expected in "\n".join(_errors(info)), _errors(info)


def test_every_bad_override_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        bc.resolve(overrides=["phase1.epoch=1", "seed=0", "eval.batch=2"])
    assert [f.column for f in info.value.findings] == [1, 23]


def test_generate_reads_only_its_keys() -> None:
    cfg = bc.resolve(overrides=["generate.max_tokens=99", "seed=3"], only=bc.GENERATE_KEYS)
    assert cfg.generate_config().max_tokens == 99 and cfg.generate_config().seed == 3
    with pytest.raises(ConfigError, match="'phase1.epochs' does not apply"):
        bc.resolve(overrides=["phase1.epochs=2"], only=bc.GENERATE_KEYS)
    with pytest.raises(ConfigError, match="did you mean 'generate.max_tokens'"):
        bc.resolve(overrides=["generate.max_token=2"], only=bc.GENERATE_KEYS)


def test_a_packed_row_must_hold_a_sample() -> None:
    with pytest.raises(ConfigError, match="'phase2.micro_batch_tokens' \\(512\\) must be at least"):
        bc.resolve(overrides=["phase2.micro_batch_tokens=512", "phase2.max_seq_len=768"])


def test_plain_data_from_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="did you mean 'phase1.epochs'"):
        bc.resolve({"phase1": {"epoch": 3}})
    with pytest.raises(ConfigError, match="'generate.samples' must be a whole number"):
        bc.resolve({"generate": {"samples": "many"}})


def test_the_generate_settings_are_the_cache_key_fields() -> None:
    """Every generation knob the config can set reaches the generator (and so its cache key)."""
    gen = bc.resolve(
        overrides=["generate.samples=5", "generate.max_tokens=77", "generate.temperature=0.2"]
    ).generate_config()
    key: dict[str, Any] = gen.key()
    assert (key["samples"], key["max_tokens"], key["temperature"]) == (5, 77, 0.2)
    assert key["critic"] is True and key["seed"] == 42


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["build", "phase1.epoch=2"], "did you mean 'phase1.epochs'"),
        (["build", "--out", "x", "generate.max_tokens=lots"], "'generate.max_tokens' must be"),
        (["generate", "phase1.epochs=2"], "does not apply"),
        (["generate", "generate.max_token=5"], "did you mean 'generate.max_tokens'"),
    ],
)
def test_the_cli_reports_bad_overrides_before_any_work(
    run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], words: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABBOT_CACHE_DIR", str(tmp_path / "cache"))
    out = run_cli(argv)
    assert out.code == 2, out.err
    assert "command line:1:1:" in out.err and words in out.err, out.err
    assert "Traceback" not in out.err and not (tmp_path / "runs").exists()


def test_generate_tells_paths_from_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import _split_overrides

    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd=name").mkdir()  # an existing path stays a path, '=' or not
    words = ["taxonomy/knowledge", "seed=3", "odd=name", "generate.samples=2", "a b=c"]
    assert _split_overrides(words) == (
        ["taxonomy/knowledge", "odd=name", "a b=c"],
        ["seed=3", "generate.samples=2"],
    )
