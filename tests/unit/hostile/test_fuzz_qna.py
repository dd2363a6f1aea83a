"""Property-based fuzzing of validate_bytes with mutations of the real sample files.

Hostile mutations (byte flips, YAML-special characters, truncation, indentation changes) must
never make validation raise, and every verdict must be located. Mutations that keep the meaning
(keys reordered, every string re-written double-quoted, the whole file as one line of JSON) must
keep a valid file valid with the same data. Deterministic and bounded, so CI runs the same
examples every time in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import RepoConfig
from pipeline.taxonomy.findings import FileResult, Severity
from pipeline.taxonomy.validate import NOT_LOOKED_UP, PROFILES, validate_bytes
from pipeline.taxonomy.yamlsource import compose, construct, decode

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = sorted((ROOT / "taxonomy").rglob("qna.yaml"))
CONFIG = RepoConfig()
SPECIAL = [c.encode() for c in ":-?[]{}#&*!|>'\"%@`,\t\n "] + [b"\xff", b"\x00", b"\r", b"- - "]

FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _check(raw: bytes, path: str) -> FileResult:
    return validate_bytes(raw, path, PROFILES["pr"], CONFIG, NOT_LOOKED_UP)


def _data(raw: bytes) -> Any:
    text, _ = decode(raw)
    assert text is not None
    root, _ = compose(text)
    assert root is not None
    data, _ = construct(root)
    return data


def _assert_verdict(result: FileResult) -> None:
    assert isinstance(result.valid, bool)
    for f in result.findings:
        assert f.line >= 1 and f.column >= 1 and f.rule and f.message
    if not result.valid:
        located = [f for f in result.findings if f.severity is Severity.ERROR]
        assert located or result.omitted_errors, "an invalid file names at least one error"


def test_the_samples_are_valid() -> None:
    assert len(SAMPLES) >= 3
    for path in SAMPLES:
        assert _check(path.read_bytes(), _rel(path)).valid, path


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str]:
    path = draw(st.sampled_from(SAMPLES))
    raw = bytearray(path.read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "truncate", "indent", "dedent"]))
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "flip" and raw:
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            raw[at:at] = draw(st.sampled_from(SPECIAL)) * draw(st.integers(1, 3))
        elif kind == "truncate":
            del raw[at:]
        else:
            start = raw.rfind(b"\n", 0, at) + 1
            if kind == "indent":
                raw[start:start] = b" " * draw(st.integers(1, 3))
            else:
                while raw[start : start + 1] == b" " and draw(st.booleans()):
                    del raw[start]
    return bytes(raw), _rel(path)


@FUZZ
@given(mutated())
def test_hostile_mutations_always_get_a_located_verdict(case: tuple[bytes, str]) -> None:
    raw, path = case
    _assert_verdict(_check(raw, path))


def _quoted(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value)


def _block(value: Any, order: st.DataObject, pad: str = "") -> list[str]:
    """``value`` as block YAML, keys in a drawn order, every string double-quoted."""
    lines: list[str] = []
    if isinstance(value, dict):
        keys = order.draw(st.permutations(list(value)))
        for key in keys:
            item = value[key]
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_block(item, order, pad + "  "))
            else:
                lines.append(f"{pad}{key}: {_quoted(item)}")
        return lines
    for item in value:
        if isinstance(item, dict | list) and item:
            inner = _block(item, order, pad + "  ")
            inner[0] = f"{pad}- {inner[0][len(pad) + 2 :]}"
            lines.extend(inner)
        else:
            lines.append(f"{pad}- {_quoted(item)}")
    return lines


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_reordered_and_quoted_files_stay_valid(path: Path, order: st.DataObject) -> None:
    data = _data(path.read_bytes())
    rewritten = ("\n".join(_block(data, order)) + "\n").encode()
    result = _check(rewritten, _rel(path))
    assert result.valid, [(f.rule, f.line, f.message) for f in result.findings]
    assert _data(rewritten) == data


def test_a_file_as_one_line_of_json_stays_valid() -> None:
    for path in SAMPLES:
        data = _data(path.read_bytes())
        as_json = (json.dumps(data, ensure_ascii=False) + "\n").encode()
        result = _check(as_json, _rel(path))
        assert result.valid, [(f.rule, f.line, f.message) for f in result.findings]
        assert _data(as_json) == data
