"""Hostile qna.yaml files, by class and size, with the verdict each must get.

Every class is a shape a contributor can send to make a YAML validator crash, stall or flood
its output: deep nesting of every collection kind, many items or keys, long scalars, numbers
too long to represent, and files with tens of thousands of findings. Each class comes in
several sizes, the largest just under labbot's 2 MiB file cap.

``cases()`` returns them all; ``python -m tests.support.hostile DIR`` writes them to DIR.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.samples import SKILL, SKILL_PATH

#: Keep the largest file under labbot's default 2 MiB cap.
LARGEST = 2_000_000
#: labbot's nesting limit; a collection at a deeper level is a ``yaml.nesting`` finding.
DEPTH_LIMIT = 200
#: labbot reads at most this many nodes (scalars, lists, mappings) of one file.
MAX_VALUES = 200_000
#: SKILL holds 34 nodes (the root mapping, 4 keys and values, the list, 5 examples of 5).
SKILL_NODES = 34
#: SKILL has 14 lines: anything appended starts at line 15.
AFTER = SKILL.count("\n") + 1
PATH = SKILL_PATH


@dataclass(frozen=True)
class Case:
    """One hostile file and what labbot must say about it.

    ``rule`` and ``line``: a finding that must be present (``None`` for a valid file).
    ``floods``: a rule whose findings must be capped, with the rest counted as omitted.
    """

    klass: str
    size: str
    data: bytes
    valid: bool
    rule: str | None = None
    line: int | None = None
    floods: str | None = None

    @property
    def name(self) -> str:
        return f"{self.klass}[{self.size}]"


def _skill_with(answer: str) -> str:
    """SKILL with the first answer's value (line 6) replaced."""
    lines = SKILL.split("\n")
    lines[5] = "    answer: " + answer
    return "\n".join(lines)


def _sizes(unit: int, floor: int = 1) -> list[tuple[str, int]]:
    """Repeat counts giving about 10 kB, 200 kB and just under 2 MB of ``unit``-byte pieces."""
    return [
        ("10k", max(floor, 10_000 // unit)),
        ("200k", max(floor, 200_000 // unit)),
        ("2M", max(floor, (LARGEST - 2_000) // unit)),
    ]


def _square_sizes(per_level: int) -> list[tuple[str, int]]:
    """Depths for shapes whose size grows with the square of the depth (indented nesting)."""
    top = int((2 * (LARGEST - 2_000) / per_level) ** 0.5)
    return [("d300", 300), ("d1000", 1000), (f"d{top}", top)]


def deep_block_sequences() -> Iterator[Case]:
    # "- - - - y": compact nested sequences on one line (the 80 kB crash of issue 10).
    for size, n in _sizes(2, DEPTH_LIMIT + 100):
        text = SKILL + "x:\n" + "- " * n + "y\n"
        yield Case("deep-block-seq-compact", size, text.encode(), False, "yaml.nesting", AFTER + 1)
    # Each level on its own line, one column further in.
    for size, n in _square_sizes(1):
        body = "".join(" " * i + "-\n" for i in range(n)) + " " * n + "- y\n"
        line = AFTER + 1 + DEPTH_LIMIT - 1  # the sequence at level 201 (the root map is 1)
        yield Case("deep-block-seq-indented", size, (SKILL + "x:\n" + body).encode(), False,
                   "yaml.nesting", line)  # fmt: skip
    # The whole file one compact sequence (no mapping around it).
    for size, n in _sizes(2, DEPTH_LIMIT + 100):
        yield Case("deep-block-seq-root", size, ("- " * n + "y\n").encode(), False,
                   "yaml.nesting", 1)  # fmt: skip


def deep_block_mappings() -> Iterator[Case]:
    for size, n in _square_sizes(3):
        body = "".join(" " * (i + 1) + "k:\n" for i in range(n)) + " " * (n + 1) + "k: y\n"
        line = AFTER + 1 + DEPTH_LIMIT - 1  # mapping i (0-based) is at level i + 2
        yield Case("deep-block-map", size, (SKILL + "x:\n" + body).encode(), False,
                   "yaml.nesting", line)  # fmt: skip
    # Sequences of mappings, "- k:" each two columns further in: two levels per line.
    for size, n in _square_sizes(2 + 4):
        body = "".join(" " * (2 * i) + "- k:\n" for i in range(n)) + " " * (2 * n) + "- y\n"
        line = AFTER + 1 + (DEPTH_LIMIT - 1) // 2
        yield Case("deep-block-seq-of-maps", size, (SKILL + "x:\n" + body).encode(), False,
                   "yaml.nesting", line)  # fmt: skip


def deep_flow() -> Iterator[Case]:
    shapes: list[tuple[str, str, str]] = [
        ("deep-flow-seq", "[", "]"),
        ("deep-flow-map", "{a: ", "}"),
        ("deep-flow-mixed", "[{a: ", "}]"),
        ("deep-flow-pair", "[a: ", "]"),  # a single-pair mapping inside each sequence
    ]
    for klass, opener, closer in shapes:
        for size, n in _sizes(len(opener) + len(closer), DEPTH_LIMIT + 100):
            text = SKILL + "x: " + opener * n + "y" + closer * n + "\n"
            yield Case(klass, size, text.encode(), False, "yaml.nesting", AFTER)
    # Unclosed: the guard must still answer before the parser reaches the end.
    for size, n in _sizes(1, DEPTH_LIMIT + 100):
        yield Case("deep-flow-unclosed", size, (SKILL + "x: " + "[" * n + "\n").encode(), False,
                   "yaml.nesting", AFTER)  # fmt: skip


def deep_mixed() -> Iterator[Case]:
    # Block sequences, then flow sequences inside them on the same line.
    for size, n in _sizes(4, DEPTH_LIMIT + 100):
        block = min(n, DEPTH_LIMIT - 50)
        text = SKILL + "x:\n" + "- " * block + "[" * n + "y" + "]" * n + "\n"
        yield Case("deep-mixed-block-flow", size, text.encode(), False, "yaml.nesting", AFTER + 1)


def deep_complex_keys() -> Iterator[Case]:
    for size, n in _sizes(2, DEPTH_LIMIT + 100):
        text = SKILL + "x:\n  " + "? " * n + "y\n"
        yield Case("deep-complex-key", size, text.encode(), False, "yaml.nesting", AFTER + 1)
    for size, n in _sizes(4, DEPTH_LIMIT + 100):
        text = SKILL + "x:\n  " + "? - " * n + "y\n"
        yield Case("deep-complex-key-seq", size, text.encode(), False, "yaml.nesting", AFTER + 1)


def _example(i: int) -> str:
    return (
        f"  - question: What is the name of item number {i} in the catalogue?\n"
        f"    answer: Item number {i} is called widget-{i}.\n"
    )


_HEADER = "version: 3\ncreated_by: alice\ntask_description: Name the catalogue items.\n"


def many_items() -> Iterator[Case]:
    unit = len(_example(99_999))
    for size, n in _sizes(unit, 5):
        text = _HEADER + "seed_examples:\n" + "".join(_example(i) for i in range(n))
        yield Case("many-items", size, text.encode(), True)
    # Every example the same: one duplicate per item after the first.
    for size, n in _sizes(unit, 5):
        text = _HEADER + "seed_examples:\n" + _example(7) * n
        yield Case("many-duplicate-items", size, text.encode(), False, "schema.duplicate", 7,
                   floods="schema.duplicate")  # fmt: skip
    # One flow list with up to 660,000 short items: past MAX_VALUES reading stops.
    for size, n in _sizes(3):
        text = SKILL + "x: [" + "1, " * n + "1]\n"
        rule = "yaml.too-many-values" if n > MAX_VALUES else "schema.unexpected-key"
        yield Case("many-flow-items", size, text.encode(), False, rule, AFTER)
    for size, n in _sizes(3):
        text = SKILL + "x: [" + "{}," * n + "{}]\n"
        rule = "yaml.too-many-values" if n > MAX_VALUES else "schema.unexpected-key"
        yield Case("many-empty-mappings", size, text.encode(), False, rule, AFTER)


def _pairs_case(klass: str, size: str, n: int, pair: Callable[[int], str], rule: str, line: int,
                floods: str) -> Case:  # fmt: skip
    """SKILL and ``n`` more one-line key/value pairs (two nodes each)."""
    text = SKILL + "".join(pair(i) for i in range(n))
    if SKILL_NODES + 2 * n > MAX_VALUES:  # the key that is node MAX_VALUES + 1 stops reading
        first = (MAX_VALUES + 1 - SKILL_NODES - 1) // 2
        return Case(klass, size, text.encode(), False, "yaml.too-many-values", AFTER + first)
    return Case(klass, size, text.encode(), False, rule, line, floods=floods)


def many_keys() -> Iterator[Case]:
    for size, n in _sizes(len("k123456: v\n")):
        yield _pairs_case("many-keys", size, n, lambda i: f"k{i}: v\n",
                          "schema.unexpected-key", AFTER, "schema.unexpected-key")  # fmt: skip
    # The largest size that stays under MAX_VALUES, so the per-rule cap is tested at scale.
    n = (MAX_VALUES - SKILL_NODES) // 2
    yield _pairs_case("many-keys", "max", n, lambda i: f"k{i}: v\n", "schema.unexpected-key",
                      AFTER, "schema.unexpected-key")  # fmt: skip
    for size, n in _sizes(len("dup: v\n")):
        yield _pairs_case("many-duplicate-keys", size, n, lambda i: "dup: v\n",
                          "yaml.duplicate-key", AFTER + 1, "yaml.duplicate-key")  # fmt: skip


def long_scalars() -> Iterator[Case]:
    for size, n in _sizes(5):
        words = "word " * (n - 1) + "end"
        yield Case("long-plain-scalar", size, _skill_with(words).encode(), True)
        yield Case("long-quoted-scalar", size, _skill_with(f'"{words}"').encode(), True)
        block = "|\n" + "      line of text\n" * max(1, n // 4) + "      end"
        yield Case("long-block-scalar", size, _skill_with(block).encode(), True)
        key = "k" * (5 * n)
        # A plain key longer than 1024 characters is a syntax error in YAML itself.
        yield Case("long-key", size, (SKILL + key + ": v\n").encode(), False,
                   "yaml.syntax", AFTER)  # fmt: skip
        yield Case("long-explicit-key", size, (SKILL + "? " + key + "\n: v\n").encode(), False,
                   "schema.unexpected-key", AFTER)  # fmt: skip


def _number_cases(klass: str, make: Callable[[int], str], unit: int) -> Iterator[Case]:
    for size, n in _sizes(unit, 5_000 // unit):
        yield Case(klass, size, _skill_with(make(n)).encode(), False, "schema.type", 6)


def numbers() -> Iterator[Case]:
    yield from _number_cases("long-int", lambda n: "1" * n, 1)
    yield from _number_cases("long-negative-int", lambda n: "-" + "9" * n, 1)
    yield from _number_cases("long-underscored-int", lambda n: "1_" * n + "1", 2)
    yield from _number_cases("long-hex", lambda n: "0x" + "f" * n, 1)
    yield from _number_cases("long-octal", lambda n: "0" + "7" * n, 1)
    yield from _number_cases("long-binary", lambda n: "0b" + "1" * n, 1)
    yield from _number_cases("long-base60", lambda n: "1" + ":1" * n, 2)
    yield from _number_cases("long-base60-float", lambda n: "1" + ":1" * n + ".5", 2)
    yield from _number_cases("long-float", lambda n: "1" * n + ".5", 1)
    yield from _number_cases("long-exponent-float", lambda n: "1." + "5" * n + "e+10", 1)
    # The same digits quoted are text: valid.
    for size, n in _sizes(1, 5_000):
        yield Case("long-quoted-number", size, _skill_with(f'"{"1" * n}"').encode(), True)
    # A long number as a key (PyYAML cannot build it).
    for size, n in _sizes(1, 5_000):
        text = SKILL + "? " + "1" * n + "\n: v\n"
        yield Case("long-int-key", size, text.encode(), False, "schema.type", AFTER)


def many_findings() -> Iterator[Case]:
    # A block answer whose every line ends with a space.
    for size, n in _sizes(len("      w \n")):
        text = _skill_with("|\n" + "      w \n" * n + "      end")
        yield Case("many-trailing-spaces", size, text.encode(), False, "lint.trailing-spaces", 7,
                   floods="lint.trailing-spaces")  # fmt: skip
    # Every line a second document.
    for size, n in _sizes(4):
        yield Case("many-documents", size, (SKILL + "---\n" * n).encode(), False,
                   "yaml.multiple-documents", AFTER)  # fmt: skip
    # One line of nothing but spaces.
    for size, n in _sizes(1):
        yield Case("long-blank-line", size, (SKILL + " " * n + "\n").encode(), False,
                   "lint.trailing-spaces", AFTER)  # fmt: skip


def blank_files() -> Iterator[Case]:
    for size, n in _sizes(1):
        yield Case("only-newlines", size, b"\n" * n, False, "file.empty", 1)
    for size, n in _sizes(5):
        yield Case("only-whitespace", size, b"    \n" * n, False, "file.empty", 1)
    for size, n in _sizes(2):
        yield Case("only-comments", size, b"#\n" * n, False, "file.empty", 1)


GENERATORS: tuple[Callable[[], Iterator[Case]], ...] = (
    deep_block_sequences,
    deep_block_mappings,
    deep_flow,
    deep_mixed,
    deep_complex_keys,
    many_items,
    many_keys,
    long_scalars,
    numbers,
    many_findings,
    blank_files,
)


def cases() -> list[Case]:
    out = [case for make in GENERATORS for case in make()]
    for case in out:
        assert len(case.data) <= LARGEST + 10_000, (case.name, len(case.data))
    return out


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "hostile-files")
    for case in cases():
        folder = target / case.klass / case.size / "compositional_skills" / "x"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "qna.yaml").write_bytes(case.data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
