"""Style checks on a qna.yaml: the problems InstructLab finds with yamllint, found here on
the text and on ruamel's node tree (labbot does not use yamllint itself).

Rules:
    lint.trailing-spaces   spaces or tabs at the end of a line
    lint.final-newline     the file does not end with a newline
    lint.empty-lines       blank lines at the start or end, or more than two in a row
    lint.indentation       indentation width or sequence style differs from the rest of the file
    lint.tabs              a tab in a line's indentation
    lint.line-endings      CRLF or CR line ends (advisory)
"""

from __future__ import annotations

from dataclasses import dataclass

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.findings import Finding, Severity

ERROR = Severity.ERROR
WARNING = Severity.WARNING

MAX_BLANK_LINES = 2


def lint_text(text: str, had_cr: bool = False) -> list[Finding]:
    """Line-based checks that need no parse: they run even on a file with a syntax error."""
    findings: list[Finding] = []
    if not text:
        return findings
    lines = text.split("\n")
    ends_with_newline = lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    else:
        findings.append(
            Finding(
                "lint.final-newline",
                ERROR,
                len(lines),
                len(lines[-1]) + 1,
                "the file does not end with a newline",
                "Add a line break after the last line.",
            )
        )
    for number, line in enumerate(lines, start=1):
        stripped = line.rstrip(" \t")
        if len(stripped) != len(line):
            findings.append(
                Finding(
                    "lint.trailing-spaces",
                    ERROR,
                    number,
                    len(stripped) + 1,
                    "trailing spaces at the end of the line",
                    "Delete the spaces after the last character; most editors can trim them "
                    "on save.",
                )
            )
    findings.extend(_blank_lines(lines))
    if had_cr:
        findings.append(
            Finding(
                "lint.line-endings",
                WARNING,
                1,
                1,
                "the file uses Windows (CRLF) or old Mac (CR) line ends",
                "Save the file with Unix (LF) line ends.",
            )
        )
    return findings


def _blank_lines(lines: list[str]) -> list[Finding]:
    findings: list[Finding] = []
    run_start = 0
    run = 0

    def emit(last_line: int, count: int, limit: int, where: str) -> None:
        findings.append(
            Finding(
                "lint.empty-lines",
                ERROR,
                last_line,
                1,
                f"too many blank lines {where} ({count} > {limit})",
                "Delete the extra blank lines.",
            )
        )

    for number, line in enumerate(lines, start=1):
        if line.strip(" ") == "" and line.strip() == "":
            if run == 0:
                run_start = number
            run += 1
            continue
        if run:
            if run_start == 1:
                emit(number - 1, run, 0, "at the start of the file")
            elif run > MAX_BLANK_LINES:
                emit(number - 1, run, MAX_BLANK_LINES, "in a row")
        run = 0
    if run and len(lines) > run:
        emit(len(lines), run, 0, "at the end of the file")
    elif run:
        emit(len(lines), run, 0, "at the start of the file")
    return findings


@dataclass(slots=True)
class _IndentState:
    width: int | None = None
    flush_sequences: bool | None = None  # True: "- item" under a key at the key's column


def lint_nodes(root: Node, text: str) -> list[Finding]:
    """Node-based checks: indentation consistency and tabs outside block scalars."""
    findings: list[Finding] = []
    state = _IndentState()
    block_lines: set[int] = set()
    if isinstance(root, MappingNode | SequenceNode) and not root.flow_style:
        if root.start_mark.column != 0:
            findings.append(
                _indent_finding(root.start_mark.line + 1, root.start_mark.column, 0, False)
            )
    _walk(root, state, findings, block_lines, set())
    for number, line in enumerate(text.split("\n"), start=1):
        if number in block_lines or "\t" not in line:
            continue
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent and line.strip():
            findings.append(
                Finding(
                    "lint.tabs",
                    WARNING,
                    number,
                    indent.index("\t") + 1,
                    "a tab is used in the indentation",
                    "Use spaces for indentation; tabs break YAML in many places.",
                )
            )
    return findings


def _walk(
    node: Node,
    state: _IndentState,
    findings: list[Finding],
    block_lines: set[int],
    seen: set[int],
) -> None:
    if id(node) in seen:  # an alias: its node was checked where the anchor is
        return
    seen.add(id(node))
    if isinstance(node, ScalarNode):
        if node.style in ("|", ">"):
            block_lines.update(range(node.start_mark.line + 2, node.end_mark.line + 1))
        return
    if isinstance(node, SequenceNode):
        for item in node.value:
            _walk(item, state, findings, block_lines, seen)
        return
    if not isinstance(node, MappingNode):
        return
    for key, value in node.value:
        if not node.flow_style and value.start_mark.line > key.start_mark.line:
            _check_child(key, value, state, findings)
        _walk(value, state, findings, block_lines, seen)


def _check_child(key: Node, value: Node, state: _IndentState, findings: list[Finding]) -> None:
    """Check a value that starts on the line after its key."""
    key_col = key.start_mark.column
    col = value.start_mark.column
    line = value.start_mark.line + 1
    if isinstance(value, SequenceNode) and not value.flow_style:
        flush = col == key_col
        if not flush and state.width is None and col > key_col:
            state.width = col - key_col
        if state.flush_sequences is None:
            if flush or col - key_col == state.width:
                state.flush_sequences = flush
                return
        expected = key_col if state.flush_sequences else key_col + (state.width or 2)
        if col != expected:
            findings.append(_indent_finding(line, col, expected, sequence=True))
        return
    if isinstance(value, ScalarNode) and value.style in ("|", ">"):
        return
    if col <= key_col:
        return
    if state.width is None:
        state.width = col - key_col
        return
    if col != key_col + state.width:
        findings.append(_indent_finding(line, col, key_col + state.width, sequence=False))


def _indent_finding(line: int, found: int, expected: int, sequence: bool) -> Finding:
    what = "this list" if sequence else "this line"
    return Finding(
        "lint.indentation",
        ERROR,
        line,
        found + 1,
        f"wrong indentation: {what} starts at column {found + 1}, expected column {expected + 1} "
        "like the rest of the file",
        "Indent every level by the same number of spaces (2 is usual), and write lists under "
        "a key the same way everywhere (either all indented or all flush with the key).",
    )
