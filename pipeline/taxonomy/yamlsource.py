"""Reading a YAML file safely: bytes to text to located nodes to plain Python data.

Nothing here raises on bad input. Each step returns what it could build plus a list of
findings, every one with a 1-based line and column:

>>> text, fs = decode(b"a: 1\\n")
>>> root, fs = compose(text)
>>> data, fs = construct(root)
>>> data
{'a': 1}

:func:`load` runs the three steps in one call for every reader that needs only the outcome
(validation, which lints between the steps, calls them one by one):

>>> load(b"a: [1, 2]\\n").data
{'a': [1, 2]}
>>> [f.rule for f in load(b"a: [1\\n").findings]
['yaml.syntax']

Scalars are resolved with YAML 1.1 rules, as InstructLab's PyYAML loader does, so ``yes`` is a
boolean and ``2024-05-01`` a date: the schema step then tells the contributor to quote them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ruamel.yaml.composer import ComposerError
from ruamel.yaml.cyaml import CParser  # type: ignore[attr-defined]
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import implicit_resolvers
from ruamel.yaml.tag import Tag

from pipeline.taxonomy.findings import Finding, Severity

ERROR = Severity.ERROR
WARNING = Severity.WARNING

#: Aliases may add at most this many values beyond the file's own (the "billion laughs" guard).
ALIAS_EXPANSION_CAP = 10_000
#: For that cap a long scalar counts as one value per this many characters, so an alias may not
#: repeat a long text thousands of times either.
SCALAR_CHARS_PER_VALUE = 100
#: Lists and mappings (block or flow, complex keys included) nest at most this deep.
MAX_DEPTH = 200
#: Nodes (scalars, lists, mappings) one file may hold. Real files hold a few hundred; every node
#: costs a few microseconds in each step, so this bounds a 2 MiB file's time.
MAX_VALUES = 200_000
#: A scalar YAML reads as a number may be at most this long; longer ones cannot be handled
#: (Python refuses decimal conversions over 4,300 digits) and are reported instead.
MAX_NUMBER_CHARS = 1000

_T = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
_TIMESTAMP, _MAP, _SEQ, _MERGE, _VALUE = (
    _T + "timestamp",
    _T + "map",
    _T + "seq",
    _T + "merge",
    _T + "value",
)
_KNOWN_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP, _MAP, _SEQ, _MERGE, _VALUE}

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_DATE = re.compile(r"^\d{4}-\d\d?-\d\d?$")


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line = text.count("\n", 0, offset) + 1
    start = text.rfind("\n", 0, offset) + 1
    return line, offset - start + 1


def decode(raw: bytes) -> tuple[str | None, list[Finding]]:
    """Bytes to text with LF line ends, or ``None`` and a located finding when that fails."""
    findings: list[Finding] = []
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None, [
            Finding(
                "yaml.encoding",
                ERROR,
                1,
                1,
                "the file is encoded as UTF-16; qna.yaml files must be UTF-8",
                "Re-save the file as UTF-8 (without a byte-order mark).",
            )
        ]
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
        findings.append(
            Finding(
                "yaml.bom",
                WARNING,
                1,
                1,
                "the file starts with a UTF-8 byte-order mark",
                "Re-save the file as UTF-8 without a BOM; some tools show it as stray characters.",
            )
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8", errors="replace")
        line, col = _position(good, len(good))
        findings.append(
            Finding(
                "yaml.encoding",
                ERROR,
                line,
                col,
                f"byte 0x{raw[exc.start]:02x} is not valid UTF-8",
                "Re-save the file as UTF-8; copy-pasted text from word processors is a common "
                "source of such bytes.",
            )
        )
        return None, findings
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    bad = _CONTROL.search(text)
    if bad is not None:
        line, col = _position(text, bad.start())
        char = bad.group()
        rule = "yaml.nul" if char == "\x00" else "yaml.control-character"
        findings.append(
            Finding(
                rule,
                ERROR,
                line,
                col,
                f"the file contains the control character U+{ord(char):04X}",
                "Delete the character; YAML files may not contain control characters.",
            )
        )
        return None, findings
    return text, findings


class _Refused(Exception):
    """The text is refused at ``mark`` before it is fully read (see :func:`compose`)."""

    def __init__(self, rule: str, mark: Any, message: str, hint: str) -> None:
        super().__init__(message)
        self.finding = Finding(rule, ERROR, mark.line + 1, mark.column + 1, message, hint)


def _too_deep(mark: Any) -> _Refused:
    return _Refused(
        "yaml.nesting",
        mark,
        f"lists and mappings are nested more than {MAX_DEPTH} levels deep here",
        "A qna.yaml needs only a few levels of nesting; remove the extra '-', '?', '[' or '{' "
        "(or the extra indentation).",
    )


def _too_many(mark: Any) -> _Refused:
    return _Refused(
        "yaml.too-many-values",
        mark,
        f"the file holds more than {MAX_VALUES:,} values (texts, keys, lists and mappings); "
        "reading stopped here",
        "A qna.yaml needs a few hundred values; split the contribution or remove the "
        "generated content.",
    )


def _resolvers() -> dict[str, tuple[tuple[str, re.Pattern[str]], ...]]:
    """YAML 1.1 implicit resolvers (the ones PyYAML uses) by the first character of a value."""
    table: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    for versions, tag, regexp, first in implicit_resolvers:
        if (1, 1) not in versions:
            continue
        compiled = re.compile(regexp.pattern, regexp.flags)  # ruamel's are lazy proxies: slow
        for char in first or [""]:
            table.setdefault(char or "", []).append((tag, compiled))
    return {char: tuple(entries) for char, entries in table.items()}


_RESOLVERS = _resolvers()
_TAG_OBJECTS: dict[str, Tag] = {}
_STR_TAG = Tag(suffix=_STR)
_TAG_OBJECTS[_STR] = _STR_TAG


def _tag(name: str) -> Tag:
    found = _TAG_OBJECTS.get(name)
    if found is None:
        found = Tag(suffix=name)
        if len(_TAG_OBJECTS) < 1000:  # contributor-chosen tags must not grow a global table
            _TAG_OBJECTS[name] = found
    return found


def _compose_events(text: str) -> Node | None:
    """Build the node tree from libyaml's events with an explicit stack.

    ruamel's composer (C or Python) recurses once per nesting level, so a few thousand ``- ``
    overflow the C stack. Here depth costs no recursion and is refused at :data:`MAX_DEPTH`.
    Raises ruamel's ``MarkedYAMLError`` for syntax errors and :class:`_Refused` past
    :data:`MAX_DEPTH` or :data:`MAX_VALUES`.
    """
    parser = CParser(text)
    root: Node | None = None
    stack: list[Any] = []  # open collections
    keys: list[Any] = []  # per open collection: a mapping key waiting for its value
    anchors: dict[str, Node] = {}
    documents = values = 0
    resolvers = _RESOLVERS
    str_tag, seq_tag, map_tag = _tag(_STR), _tag(_SEQ), _tag(_MAP)
    parent: Any = None  # stack[-1], or None at the top
    in_seq = False
    try:
        while True:
            event = parser.get_event()
            kind = type(event)
            if kind is ScalarEvent:
                values += 1
                if values > MAX_VALUES:
                    raise _too_many(event.start_mark)
                tag = event.tag
                if tag is None or tag == "!":
                    ctag = str_tag
                    value = event.value
                    if event.implicit[0]:
                        for name, regexp in resolvers.get(value[:1], ()):
                            if regexp.match(value):
                                ctag = _tag(name)
                                break
                else:
                    ctag = _tag(tag)
                node: Any = _Scalar(
                    ctag, event.value, event.start_mark, event.end_mark, event.style
                )
            elif kind is SequenceStartEvent or kind is MappingStartEvent:
                values += 1
                if values > MAX_VALUES:
                    raise _too_many(event.start_mark)
                if len(stack) >= MAX_DEPTH:
                    raise _too_deep(event.start_mark)
                tag = event.tag
                if kind is SequenceStartEvent:
                    ctag = seq_tag if tag is None or tag == "!" else _tag(tag)
                    node = _Sequence(ctag, event.start_mark, event.flow_style)
                else:
                    ctag = map_tag if tag is None or tag == "!" else _tag(tag)
                    node = _Mapping(ctag, event.start_mark, event.flow_style)
            elif kind is SequenceEndEvent or kind is MappingEndEvent:
                stack.pop().end_mark = event.end_mark
                keys.pop()
                parent = stack[-1] if stack else None
                in_seq = type(parent) is _Sequence
                continue
            elif kind is AliasEvent:
                node = anchors.get(event.anchor)
                if node is None:
                    raise ComposerError(
                        None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                    )
            elif kind is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise ComposerError(
                        "expected a single document in the stream",
                        root.start_mark if root is not None else None,
                        "but found another document",
                        event.start_mark,
                    )
                continue
            elif kind is StreamEndEvent:
                break
            else:  # stream start, document end
                continue
            if kind is not AliasEvent and event.anchor is not None:
                node.anchor = event.anchor
                anchors[event.anchor] = node
            # attach the node to its parent
            if parent is None:
                root = node
            elif in_seq:
                parent.value.append(node)
            elif keys[-1] is None:
                keys[-1] = node
            else:
                parent.value.append((keys[-1], node))
                keys[-1] = None
            if kind is SequenceStartEvent or kind is MappingStartEvent:
                stack.append(node)
                keys.append(None)
                parent = node
                in_seq = kind is SequenceStartEvent
    finally:
        parser.dispose()
    return root


def compose(text: str) -> tuple[Node | None, list[Finding]]:
    """Parse text into a node tree that keeps every node's start and end position.

    Cost is linear in the text and independent of its nesting: a collection nested deeper than
    :data:`MAX_DEPTH` levels is a ``yaml.nesting`` finding at its position, and reading stops
    with a ``yaml.too-many-values`` finding after :data:`MAX_VALUES` nodes.
    """
    try:
        return _compose_events(text), []
    except _Refused as refused:
        return None, [refused.finding]
    except MarkedYAMLError as exc:
        return None, [_syntax_finding(exc, text)]
    except YAMLError as exc:  # errors without a mark (rare)
        return None, [Finding("yaml.syntax", ERROR, 1, 1, str(exc).splitlines()[0], _SYNTAX_HINT)]


_SYNTAX_HINT = (
    "Check the indentation (spaces only, the same width everywhere) and quote text that "
    "contains ': ', ' #' or starts with a special character such as * & ! [ {."
)


def _syntax_finding(exc: MarkedYAMLError, text: str) -> Finding:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    col = mark.column + 1 if mark is not None else 1
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    message = f"{context}: {problem}" if context and problem else (problem or context or str(exc))
    lines = text.split("\n")
    # A tab in the indentation is the most common cause of a syntax error; say so plainly.
    for ln in (line, line - 1):
        if 1 <= ln <= len(lines):
            src = lines[ln - 1]
            indent = src[: len(src) - len(src.lstrip(" \t"))]
            if "\t" in indent:
                return Finding(
                    "lint.tabs",
                    ERROR,
                    ln,
                    indent.index("\t") + 1,
                    "a tab is used for indentation; YAML allows only spaces there",
                    "Replace each tab at the start of the line with spaces (2 per level).",
                )
    if "scanning an alias" in message and exc.context_mark is not None:
        line, col = exc.context_mark.line + 1, exc.context_mark.column + 1
    if "undefined alias" in message or "scanning an alias" in message:
        return Finding(
            "yaml.undefined-alias",
            ERROR,
            line,
            col,
            "'*' starts an alias to an anchor that does not exist",
            "Quote values that start with '*', for example patterns: [\"*.md\"].",
        )
    if "expected a single document" in message or "but found another document" in message:
        return Finding(
            "yaml.multiple-documents",
            ERROR,
            line,
            col,
            "the file holds more than one YAML document (a second '---')",
            "Keep one document per qna.yaml: remove the extra '---' line.",
        )
    if "found character '\\t'" in message:
        return Finding(
            "lint.tabs",
            ERROR,
            line,
            col,
            "a tab character is not allowed here",
            "Replace the tab with spaces.",
        )
    return Finding("yaml.syntax", ERROR, line, col, message, _SYNTAX_HINT)


@dataclass(slots=True)
class _Built:
    obj: Any
    size: int


class _Constructor:
    """Builds Python data from nodes, collecting findings instead of raising."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.memo: dict[int, _Built] = {}
        self.active: set[int] = set()
        self.unique = 0  # the weight of the distinct nodes (what the file itself holds)

    def node_finding(self, node: Node, rule: str, message: str, hint: str) -> None:
        mark = node.start_mark
        self.findings.append(Finding(rule, ERROR, mark.line + 1, mark.column + 1, message, hint))

    def build(self, node: Node) -> _Built:
        if node.anchor is None:  # only an anchored node can be reached twice
            return self._build(node)
        key = id(node)
        done = self.memo.get(key)
        if done is not None:
            return done
        if key in self.active:
            self.node_finding(
                node,
                "yaml.recursive-alias",
                "an alias refers to the node that contains it",
                "Remove the alias; qna.yaml files cannot hold recursive data.",
            )
            return _Built(None, 1)
        self.active.add(key)
        try:
            built = self._build(node)
        finally:
            self.active.discard(key)
        self.memo[key] = built
        return built

    def _check_tag(self, node: Node, allowed: set[str]) -> None:
        tag = str(node.tag)
        if tag not in allowed:
            known = tag in _KNOWN_TAGS or tag.startswith(_T)
            self.node_finding(
                node,
                "yaml.tag",
                f"the tag {tag.replace(_T, '!!')} is not allowed in qna.yaml",
                "Remove the tag; write the value as plain text."
                if not known
                else "Remove the tag; qna.yaml values are plain text, lists and mappings.",
            )

    def _build(self, node: Node) -> _Built:
        if isinstance(node, ScalarNode):
            weight = 1 + len(node.value) // SCALAR_CHARS_PER_VALUE
            self.unique += weight
            return _Built(self.scalar(node), weight)
        self.unique += 1
        if isinstance(node, SequenceNode):
            self._check_tag(node, {_SEQ})
            items: list[Any] = []
            size = 1
            for child in node.value:
                built = self.build(child)
                items.append(built.obj)
                size += built.size
            return _Built(items, size)
        if isinstance(node, MappingNode):
            self._check_tag(node, {_MAP})
            mapping: dict[Any, Any] = {}
            first_seen: dict[Any, int] = {}
            size = 1
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    self.node_finding(
                        key_node,
                        "yaml.complex-key",
                        "a list or mapping is used as a mapping key",
                        "Keys in qna.yaml are plain words such as question or answer.",
                    )
                    continue
                if key_node.tag == _MERGE:
                    size += self._merge(mapping, value_node)
                    continue
                key = self.scalar(key_node, key=True)
                try:
                    hash(key)
                except TypeError:
                    key = str(key)
                if key in first_seen:
                    self.findings.append(
                        Finding(
                            "yaml.duplicate-key",
                            ERROR,
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                            f"the key '{key}' appears twice in this mapping "
                            f"(first at line {first_seen[key]}); the later value would win",
                            "Delete one of the two, or rename it if it should be a new entry.",
                        )
                    )
                else:
                    first_seen[key] = key_node.start_mark.line + 1
                built = self.build(value_node)
                mapping[key] = built.obj
                size += built.size
            return _Built(mapping, size)
        return _Built(None, 1)  # pragma: no cover - the composer makes only the three kinds

    def _merge(self, mapping: dict[Any, Any], value_node: Node) -> int:
        """Apply a YAML merge key (``<<: *defaults``) as PyYAML does: keys written in the
        mapping itself win over merged ones."""
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        size = 0
        for source in sources:
            built = self.build(source)
            size += built.size
            if not isinstance(built.obj, dict):
                self.node_finding(
                    source,
                    "yaml.merge",
                    "a merge key (<<) must refer to a mapping",
                    "Point << at an anchored mapping, or write the keys out.",
                )
                continue
            for k, v in built.obj.items():
                mapping.setdefault(k, v)
        return size

    def _unreadable_number(self, node: ScalarNode) -> None:
        digits = len(node.value)
        self.node_finding(
            node,
            "schema.type",
            f"YAML reads this {digits:,}-character value as a number, and no YAML reader can "
            "handle a number that long (InstructLab's loader fails on it)",
            'Quote the value so YAML reads it as text, e.g. answer: "123…".',
        )

    def scalar(self, node: ScalarNode, key: bool = False) -> Any:
        value: str = node.value
        if node.ctag is _STR_TAG:  # most scalars: skip rendering the tag to text
            return value
        tag = node.tag
        if tag == _STR or tag == _VALUE:
            return value
        if tag == _MERGE:
            return value  # '<<' is kept as a literal key: the schema reports it
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return value.lower() in ("yes", "true", "on", "y")
        if tag == _INT or tag == _FLOAT:
            if len(value) > MAX_NUMBER_CHARS:
                self._unreadable_number(node)
                return value
            if tag == _INT:
                parsed = _int11(value)
                return value if parsed is None else parsed
            fparsed = _float11(value)
            return value if fparsed is None else fparsed
        if tag == _TIMESTAMP:
            return _timestamp(value)
        self._check_tag(node, _KNOWN_TAGS)
        return value


def _int11(text: str) -> int | None:
    if text.isdigit() and (text[0] != "0" or len(text) == 1):
        return int(text)  # the common case, decimal without sign or underscores
    s = text.replace("_", "")
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    try:
        if s.startswith("0b"):
            return sign * int(s[2:], 2)
        if s.startswith("0x"):
            return sign * int(s[2:], 16)
        if ":" in s:
            total = 0
            for part in s.split(":"):
                total = total * 60 + int(part)
            return sign * total
        if len(s) > 1 and s.startswith("0"):
            return sign * int(s, 8)
        return sign * int(s)
    except ValueError:
        return None


def _float11(text: str) -> float | None:
    s = text.replace("_", "").lower()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == ".inf":
        return sign * math.inf
    if s == ".nan":
        return math.nan
    try:
        if ":" in s:
            total = 0.0
            for part in s.split(":"):
                total = total * 60 + float(part)
            return sign * total
        return sign * float(s)
    except ValueError:
        return None


def _timestamp(text: str) -> Any:
    try:
        if _DATE.match(text):
            y, m, d = (int(p) for p in text.split("-"))
            return dt.date(y, m, d)
        return dt.datetime.fromisoformat(text.replace(" ", "T", 1).replace("Z", "+00:00"))
    except ValueError:
        return text


def construct(root: Node) -> tuple[Any, list[Finding]]:
    """Plain Python data from a node tree, refusing alias bombs and odd tags and keys.

    Returns ``(None, findings)`` when the data must not be used (an alias bomb).
    """
    builder = _Constructor()
    try:
        built = builder.build(root)
    except RecursionError:
        return None, [
            Finding(
                "yaml.nesting",
                ERROR,
                1,
                1,
                "the YAML is nested too deeply to check",
                "A qna.yaml needs only a few levels of nesting.",
            )
        ]
    if built.size - builder.unique > ALIAS_EXPANSION_CAP:
        mark = root.start_mark
        return None, [
            *builder.findings,
            Finding(
                "yaml.alias-expansion",
                ERROR,
                mark.line + 1,
                mark.column + 1,
                f"aliases expand this file to more than {ALIAS_EXPANSION_CAP:,} extra values "
                "(a 'billion laughs' pattern)",
                "Write the values out instead of using anchors (&) and aliases (*).",
            ),
        ]
    return built.obj, builder.findings


def locate(root: Node, path: Sequence[str | int]) -> tuple[Node, Node | None]:
    """The node at a JSON path, and the key node that names it (``None`` for list items).

    Follows the path as far as it exists; a missing step returns the deepest node found.
    Duplicate keys resolve to the last occurrence, as the loaded data does. Each mapping's keys
    are indexed once, so locating many paths in a wide mapping stays linear.
    """
    node: Node = root
    key_node: Node | None = None
    for step in path:
        if isinstance(node, MappingNode):
            found = _key_index(node).get(step if isinstance(step, str) else str(step))
            if found is None:
                return node, key_node
            key_node, node = found
        elif isinstance(node, SequenceNode) and isinstance(step, int) and step < len(node.value):
            key_node, node = None, node.value[step]
        else:
            return node, key_node
    return node, key_node


# ruamel's node classes with a lean constructor (node creation is most of the cost of a
# large file); the mapping can also keep the index that :func:`locate` builds.
class _Scalar(ScalarNode):
    __slots__ = ()

    def __init__(self, tag: Tag, value: str, start: Any, end: Any, style: Any) -> None:
        self.ctag, self.value, self.start_mark, self.end_mark = tag, value, start, end
        self.style, self.comment, self.anchor = style, None, None


class _Sequence(SequenceNode):
    __slots__ = ()

    def __init__(self, tag: Tag, start: Any, flow_style: Any) -> None:
        self.ctag, self.value, self.start_mark, self.end_mark = tag, [], start, None
        self.flow_style, self.comment, self.anchor = flow_style, None, None


class _Mapping(MappingNode):
    __slots__ = ("key_index",)
    key_index: dict[str, tuple[Node, Node]]

    def __init__(self, tag: Tag, start: Any, flow_style: Any) -> None:
        self.ctag, self.value, self.start_mark, self.end_mark = tag, [], start, None
        self.flow_style, self.comment, self.anchor, self.merge = flow_style, None, None, None


def _key_index(node: MappingNode) -> dict[str, tuple[Node, Node]]:
    """Scalar key text to (key node, value node), the last occurrence winning."""
    try:
        cached: dict[str, tuple[Node, Node]] = node.key_index  # type: ignore[attr-defined]
        return cached
    except AttributeError:
        pass
    index: dict[str, tuple[Node, Node]] = {
        k.value: (k, v) for k, v in node.value if isinstance(k, ScalarNode)
    }
    if isinstance(node, _Mapping):
        node.key_index = index
    return index


def json_path(path: Sequence[str | int]) -> str:
    """Render a JSON path the way upstream does: ``.seed_examples[1].answer``, ``.`` for root."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else f".{step}"
    return out or "."


class Loaded(NamedTuple):
    """What :func:`load` read from a file's bytes."""

    #: The plain data; ``None`` for an empty file and whenever a step failed.
    data: Any
    #: The located node tree (``None`` when the text could not be decoded or parsed, or is
    #: empty), for pointing findings at lines.
    root: Node | None
    #: Every step's findings, in order, warnings included.
    findings: list[Finding]

    @property
    def errors(self) -> list[Finding]:
        """The findings that make the data unusable."""
        return [f for f in self.findings if f.severity is ERROR]


def load(raw: bytes) -> Loaded:
    """Decode, compose and construct ``raw``, stopping at the first step that fails."""
    text, findings = decode(raw)
    if text is None:
        return Loaded(None, None, findings)
    root, more = compose(text)
    if root is None:
        return Loaded(None, None, findings + more)
    data, more_still = construct(root)
    return Loaded(data, root, findings + more + more_still)
