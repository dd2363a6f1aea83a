"""Style checks on a qna.yaml: the problems InstructLab finds with yamllint, found here on
the text and on ruamel's node tree (labbot does not use yamllint itself).

Rules:
    lint.trailing-spaces   spaces or tabs at the end of a line
    lint.final-newline     the file does not end with a newline
    lint.empty-lines       blank lines at the start or end, or more than two in a row
    lint.indentation       indentation width or sequence style differs from the rest of the file
    lint.tabs              a tab in a line's indentation
    lint.line-endings      CRLF or CR line ends (advisory)
    lint.colons            a space before ':', or more than one after ':' or '?'
    lint.hyphens           more than one space after a list's '-'
    lint.brackets          more than one space inside '[ ]'
    lint.braces            more than one space inside '{ }'

The last four are yamllint's token rules as InstructLab configures them (the ``relaxed`` preset),
reported at the line and column yamllint gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.cyaml import CParser  # type: ignore[attr-defined]
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.tokens import (
    AliasToken,
    BlockEntryToken,
    FlowMappingEndToken,
    FlowMappingStartToken,
    FlowSequenceEndToken,
    FlowSequenceStartToken,
    KeyToken,
    ValueToken,
)

from pipeline.taxonomy.findings import Finding, Severity

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


#: Text that may break one of the token rules; files without it skip the token scan.
_TOKEN_SUSPECT = re.compile(r"[^\S\n]:|[:?-] {2}|[\[{] {2}| {2}[\]}]")

_TOKEN_HINTS = {
    "lint.colons": "Write 'key: value' with no space before the colon and one after it.",
    "lint.hyphens": "Write list items as '- item' with one space after the hyphen.",
    "lint.brackets": "Use at most one space inside [ ], e.g. [a, b] or [ a, b ].",
    "lint.braces": "Use at most one space inside { }, e.g. {a: 1} or { a: 1 }.",
}


def lint_tokens(text: str) -> list[Finding]:
    """yamllint's colons, hyphens, brackets and braces rules (relaxed preset) on the token stream.

    Only files whose text could break them are scanned; a scan error ends the scan quietly
    (the parser reports it).
    """
    if not _TOKEN_SUSPECT.search(text):
        return []
    return list(_token_findings(text))


def _tokens(text: str) -> Iterator[Any]:
    parser = CParser(text)
    try:
        while parser.check_token():
            yield parser.get_token()
    except YAMLError:
        return
    finally:
        parser.dispose()


def _token_findings(text: str) -> Iterator[Finding]:
    prev: Any = None
    token: Any = None
    for nxt in _tokens(text):
        if token is not None:
            yield from _check_token(token, prev, nxt)
        prev, token = token, nxt
    if token is not None:
        yield from _check_token(token, prev, None)


def _problem(rule: str, line: int, column: int, message: str) -> Finding:
    return Finding(rule, ERROR, line + 1, max(column, 1), message, _TOKEN_HINTS[rule])


def _after(token: Any, nxt: Any, most: int, rule: str, message: str) -> Iterator[Finding]:
    """yamllint's ``spaces_after`` with a maximum."""
    if nxt is not None and token.end_mark.line == nxt.start_mark.line:
        if nxt.start_mark.column - token.end_mark.column > most:
            yield _problem(rule, token.start_mark.line, nxt.start_mark.column, message)


def _before(token: Any, prev: Any, most: int, rule: str, message: str) -> Iterator[Finding]:
    """yamllint's ``spaces_before`` with a maximum."""
    if (
        prev is not None
        and prev.end_mark.line == token.start_mark.line
        and prev.end_mark.column != 0  # a multi-line scalar that ends at a line start
        and token.start_mark.column - prev.end_mark.column > most
    ):
        yield _problem(rule, token.start_mark.line, token.start_mark.column, message)


def _check_token(token: Any, prev: Any, nxt: Any) -> Iterator[Finding]:
    kind = type(token)
    if kind is ValueToken:
        glued_alias = (
            type(prev) is AliasToken
            and prev.end_mark.line == token.start_mark.line
            and token.start_mark.column - prev.end_mark.column == 1
        )
        if not glued_alias:
            yield from _before(token, prev, 0, "lint.colons", "too many spaces before colon")
            yield from _after(token, nxt, 1, "lint.colons", "too many spaces after colon")
    elif kind is KeyToken:
        if token.end_mark.column != token.start_mark.column:  # an explicit '?' key
            yield from _after(token, nxt, 1, "lint.colons", "too many spaces after question mark")
    elif kind is BlockEntryToken:
        yield from _after(token, nxt, 1, "lint.hyphens", "too many spaces after hyphen")
    elif kind is FlowSequenceStartToken or kind is FlowMappingStartToken:
        rule, what = _FLOW[kind]
        empty = type(nxt) is _CLOSER[kind]
        inside = f"too many spaces inside {'empty ' if empty else ''}{what}"
        yield from _after(token, nxt, 1, rule, inside)
    elif kind is FlowSequenceEndToken or kind is FlowMappingEndToken:
        rule, what = _FLOW[kind]
        if prev is None or type(prev) is not _OPENER[kind]:
            yield from _before(token, prev, 1, rule, f"too many spaces inside {what}")


_FLOW: dict[type, tuple[str, str]] = {
    FlowSequenceStartToken: ("lint.brackets", "brackets"),
    FlowSequenceEndToken: ("lint.brackets", "brackets"),
    FlowMappingStartToken: ("lint.braces", "braces"),
    FlowMappingEndToken: ("lint.braces", "braces"),
}
_CLOSER: dict[type, type] = {
    FlowSequenceStartToken: FlowSequenceEndToken,
    FlowMappingStartToken: FlowMappingEndToken,
}
_OPENER: dict[type, type] = {
    FlowSequenceEndToken: FlowSequenceStartToken,
    FlowMappingEndToken: FlowMappingStartToken,
}
