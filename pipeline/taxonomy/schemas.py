"""The JSON Schemas in ``schemas/`` and the translation of their errors into located findings."""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import functools
import json
from collections import deque
from collections.abc import Iterator, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from pipeline.taxonomy.findings import MAX_PER_RULE, Finding, Severity
from pipeline.taxonomy.yamlsource import json_path, locate

ERROR = Severity.ERROR

#: Messages never print more than this much of a value.
MAX_VALUE_CHARS = 60


def schema_dir() -> Traversable:
    """The schema files: the top-level ``schemas`` folder, which the wheel ships as package data
    next to ``pipeline`` (in a checkout it is the repository's own ``schemas/``)."""
    folder = resources.files("schemas")
    if not folder.joinpath("skills-v3.json").is_file():
        raise FileNotFoundError("labbot's schemas/ folder is missing from this installation")
    return folder


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema by file name, e.g. ``knowledge-v3.json``."""
    with schema_dir().joinpath(name).open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """``uniqueItems`` by hashing: jsonschema compares every pair, which takes minutes on a list
    of 20,000 items. Equality is JSON Schema's (``1 == 1.0``, ``true != 1``)."""
    if unique and isinstance(instance, list) and _duplicates(instance):
        yield ValidationError("has non-unique elements")


#: Keywords whose verdict on a value depends only on its shape (see :func:`_shape`).
_SHAPE_KEYWORDS = frozenset(
    {"type", "required", "properties", "additionalProperties", "minItems", "items",
     "description", "title"}
)  # fmt: skip


def _by_shape(schema: Any) -> bool:
    """Whether every value of one :func:`_shape` gets the same errors under ``schema``: only
    types, required keys, known keys, list lengths and empty-or-not strings count."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key == "minLength":
            if not isinstance(value, int) or value > 1:
                return False
        elif key == "additionalProperties":
            if value is not False:
                return False
        elif key == "properties":
            if not all(_by_shape(sub) for sub in value.values()):
                return False
        elif key == "items":
            if not _by_shape(value):
                return False
        elif key not in _SHAPE_KEYWORDS:
            return False
    return True


def _shape(value: Any) -> Any:
    """What a :func:`_by_shape` schema can see of ``value``: the kinds of its parts, its keys in
    order, its lengths, and whether each string is empty. Anything else is its own shape."""
    if isinstance(value, str):
        return "" if not value else "s"
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "f" if not value.is_integer() else "fi"
    if value is None:
        return "n"
    if isinstance(value, list):
        return ("l", tuple(_shape(v) for v in value))
    if isinstance(value, dict):
        return ("d", tuple((type(k).__name__, k, _shape(v)) for k, v in value.items()))
    return ("x", id(value))


def _at(value: Any, path: Sequence[Any]) -> Any:
    for step in path:
        value = value[step]
    return value


def _items(
    validator: Any, items: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """``items`` that validates one item of each :func:`_shape` and gives the others the same
    errors, re-pathed: 20,000 seed examples cost a few distinct validations, not 20,000."""
    if not validator.is_type(instance, "array") or schema.get("prefixItems"):
        yield from _DRAFT_ITEMS(validator, items, instance, schema)
        return
    if items is False or not _by_shape(items):
        yield from _DRAFT_ITEMS(validator, items, instance, schema)
        return
    # Per shape: the errors of its first item, with their paths as they were then (the
    # callers prepend to an error's path deques once it is yielded).
    seen: dict[Any, list[tuple[ValidationError, tuple[Any, ...], tuple[Any, ...]]]] = {}
    for index, item in enumerate(instance):
        key = _shape(item)
        known = seen.get(key)
        if known is None:
            errors = list(validator.descend(instance=item, schema=items, path=index))
            seen[key] = [
                (e, tuple(e.relative_path)[1:], tuple(e.relative_schema_path)) for e in errors
            ]
            yield from errors
            continue
        for error, rest, schema_path in known:
            clone = copy.copy(error)
            clone.path = clone.relative_path = deque([index, *rest])
            clone.schema_path = clone.relative_schema_path = deque(schema_path)
            clone.instance = _at(item, rest)
            yield clone


_DRAFT_ITEMS = Draft202012Validator.VALIDATORS["items"]

#: Draft 2020-12 with a linear-time ``uniqueItems`` and ``items`` by shape.
_Validator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"uniqueItems": _unique_items, "items": _items}
)


#: Keywords that make ``unevaluatedProperties`` differ from ``additionalProperties``.
_APPLICATORS = frozenset(
    {"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref", "$dynamicRef",
     "dependentSchemas", "patternProperties"}
)  # fmt: skip


def _plain_additional(schema: Any) -> Any:
    """``schema`` with ``unevaluatedProperties: false`` written as ``additionalProperties:
    false`` wherever no applicator could evaluate other keys (true of all of labbot's schemas).

    The two mean the same there, but jsonschema checks ``unevaluatedProperties`` by descending
    into every key of the instance, one error object each: 100,000 unexpected keys took most
    of a second. ``additionalProperties`` is one set difference."""
    if isinstance(schema, list):
        return [_plain_additional(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _plain_additional(value) for key, value in schema.items()}
    if out.get("unevaluatedProperties") is False and not _APPLICATORS & out.keys():
        del out["unevaluatedProperties"]
        out["additionalProperties"] = False
    return out


@functools.cache
def validator(name: str) -> Draft202012Validator:
    checker: Draft202012Validator = _Validator(_plain_additional(load_schema(name)))
    return checker


def schema_name(kind: str, version: int) -> str:
    """The schema file for a kind and version; foundational skills use the skill schema."""
    if kind == "knowledge":
        return f"knowledge-v{version}.json"
    return f"skills-v{version}.json"


def describe(value: Any) -> str:
    """A short, safe rendering of a YAML value for a message."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        shown = repr(value)  # at most a few hundred digits: yamlsource caps number lengths
        if len(shown) > MAX_VALUE_CHARS:
            shown = shown[: MAX_VALUE_CHARS - 1] + "…"
        return f"the number {shown}"
    if isinstance(value, dt.date):
        return f"the date {value.isoformat()}"
    if isinstance(value, str):
        text = value if len(value) <= MAX_VALUE_CHARS else value[: MAX_VALUE_CHARS - 1] + "…"
        return repr(text)
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"a mapping with {len(value)} keys"
    return type(value).__name__


_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "array": "a list",
    "object": "a mapping of keys to values",
    "boolean": "true or false",
    "number": "a number",
}


def _field(path: list[str | int]) -> str:
    for step in reversed(path):
        if isinstance(step, str):
            return step
    return "the file"


def validate(
    data: Any,
    schema: str,
    root: Node,
    omitted: dict[str, int] | None = None,
    per_rule: int = MAX_PER_RULE,
) -> list[Finding]:
    """Every schema violation of ``data`` as a finding located on its node in ``root``.

    With ``omitted``, at most ``per_rule`` findings of each rule are built; the others are only
    counted there (rule to count), so 100,000 unexpected keys cost no 100,000 hints.
    """
    findings: list[Finding] = []
    budget = _Budget(per_rule, omitted)
    for error in _errors(validator(schema), data):
        findings.extend(_translate(error, root, budget))
    return findings


class _Budget:
    """How many more findings of each rule to build; beyond that they are only counted."""

    def __init__(self, per_rule: int, omitted: dict[str, int] | None) -> None:
        self.per_rule = per_rule
        self.omitted = omitted
        self.built: dict[str, int] = {}

    def take(self, rule: str) -> bool:
        if self.omitted is None:
            return True
        built = self.built.get(rule, 0)
        if built < self.per_rule:
            self.built[rule] = built + 1
            return True
        self.omitted[rule] = self.omitted.get(rule, 0) + 1
        return False


#: The rule each single-finding validator reports.
_ONE_FINDING = {
    "type": "schema.type",
    "minLength": "schema.empty",
    "minItems": "schema.too-few",
}


def _errors(v: Draft202012Validator, data: Any) -> Iterator[ValidationError]:
    # Our schemas have no oneOf/anyOf, so every error stands alone (no error.context to walk).
    yield from v.iter_errors(data)


def _finding(
    rule: str,
    node: Node,
    message: str,
    hint: str,
    path: list[str | int],
) -> Finding:
    mark = node.start_mark
    return Finding(rule, ERROR, mark.line + 1, mark.column + 1, message, hint, json_path(path))


def _translate(error: ValidationError, root: Node, budget: _Budget) -> list[Finding]:
    one = _ONE_FINDING.get(str(error.validator))
    if one is not None and not budget.take(one):
        return []
    path = list(error.absolute_path)
    node, key_node = locate(root, path)
    field = _field(path)
    instance: Any = error.instance
    validator_name = error.validator
    validator_value: Any = error.validator_value
    subschema: Any = error.schema

    if validator_name == "required":
        missing = [k for k in validator_value if k not in instance]
        return [
            _finding(
                "schema.missing-key",
                _mapping_anchor(node),
                f"missing required key '{name}'" + ("" if not path else f" in {json_path(path)}"),
                _MISSING_HINTS.get(name, f"Add a '{name}:' entry here."),
                path,
            )
            for name in missing
            if budget.take("schema.missing-key")
        ]
    if validator_name in ("unevaluatedProperties", "additionalProperties"):
        known = set(subschema.get("properties", {}))
        out = []
        for k in instance:
            if k in known or not budget.take("schema.unexpected-key"):
                continue
            _, knode = locate(node, [k]) if isinstance(node, MappingNode) else (node, None)
            out.append(
                _finding(
                    "schema.unexpected-key",
                    knode or _mapping_anchor(node),
                    f"unexpected key '{k}'" + ("" if not path else f" in {json_path(path)}"),
                    _unexpected_hint(str(k), known),
                    [*path, str(k)],
                )
            )
        return out
    if validator_name == "type":
        want = validator_value
        want_words = _TYPE_WORDS.get(want, want) if isinstance(want, str) else str(want)
        hint = 'Quote the value so YAML reads it as text, e.g. answer: "yes".'
        if want != "string":
            hint = f"Write {field} as {want_words}."
        return [
            _finding(
                "schema.type",
                node,
                f"'{field}' must be {want_words}, but YAML read {describe(instance)}",
                hint,
                path,
            )
        ]
    if validator_name == "minLength":
        return [
            _finding(
                "schema.empty",
                node,
                f"'{field}' is empty",
                f"Write the {field.replace('_', ' ')} text.",
                path,
            )
        ]
    if validator_name == "minItems":
        need = validator_value
        have = len(instance) if isinstance(instance, list) else 0
        return [
            _finding(
                "schema.too-few",
                node,
                f"'{field}' has {have} item{'s' if have != 1 else ''}; "
                f"at least {need} are required",
                _TOO_FEW_HINTS.get(field, f"Add items to {field} until there are {need}."),
                path,
            )
        ]
    if (
        validator_name == "uniqueItems"
        and isinstance(instance, list)
        and isinstance(node, SequenceNode)
    ):
        out = []
        for first, dup in _duplicates(instance):
            if not budget.take("schema.duplicate"):
                continue
            dup_node = node.value[dup] if dup < len(node.value) else node
            first_line = node.value[first].start_mark.line + 1 if first < len(node.value) else 1
            out.append(
                _finding(
                    "schema.duplicate",
                    dup_node,
                    f"item {dup + 1} of '{field}' repeats item {first + 1} (line {first_line})",
                    "Each item must be different: change or remove the repeated one.",
                    [*path, dup],
                )
            )
        return out
    if validator_name == "const":
        if field == "version":
            return [
                _finding(
                    "schema.version",
                    node,
                    f"'version' must be {error.validator_value}, found {describe(instance)}",
                    f"Write version: {error.validator_value} (a number, without quotes).",
                    path,
                )
            ]
    if not budget.take("schema.invalid"):
        return []
    text = error.message
    if len(text) > 200:
        text = text[:199] + "…"
    return [_finding("schema.invalid", node, text, "", path)]


def _mapping_anchor(node: Node) -> Node:
    """Where to point for a problem with a whole mapping: its first key, as ``yq`` would."""
    if isinstance(node, MappingNode) and node.value:
        first_key: Node = node.value[0][0]
        return first_key
    return node


def _duplicates(items: list[Any]) -> list[tuple[int, int]]:
    """(first index, repeating index) for every item equal to an earlier one, in linear time."""
    first: dict[Any, int] = {}
    pairs = []
    for i, item in enumerate(items):
        key = _frozen(item)
        seen = first.get(key)
        if seen is None:
            first[key] = i
        else:
            pairs.append((seen, i))
    return pairs


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a YAML value; equal exactly when JSON Schema calls them equal.

    The nesting depth is bounded by yamlsource.MAX_DEPTH, so the recursion is too.
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)  # 1 and 1.0 hash and compare equal, as JSON Schema wants
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list):
        return ("list", tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((_frozen(k), _frozen(v)) for k, v in value.items()))
    if value is None:
        return ("null",)
    try:
        hash(value)
    except TypeError:
        return ("other", repr(value))
    return ("other", value)


def _unexpected_hint(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    if close:
        return f"Did you mean '{close[0]}'? Allowed keys here: {', '.join(sorted(known))}."
    if key == "attribution":
        return "Attribution goes in an attribution.txt file beside qna.yaml, not in qna.yaml."
    if key == "task_description":
        return (
            "Knowledge files (version 3) have no task_description; describe the document in "
            "document_outline instead."
        )
    return f"Remove it. Allowed keys here: {', '.join(sorted(known))}."


_MISSING_HINTS = {
    "version": "Add 'version: 3' as the first line.",
    "created_by": "Add 'created_by: <your GitHub username>'.",
    "task_description": "Add 'task_description:' with one sentence saying what the skill teaches.",
    "seed_examples": "Add 'seed_examples:' with at least 5 examples.",
    "domain": "Add 'domain:' naming the subject area, e.g. 'domain: astronomy'.",
    "document_outline": "Add 'document_outline:' with a one-line summary of the document.",
    "document": "Add 'document:' with repo, commit and patterns of the source document.",
    "question": "Add 'question:' to this example.",
    "answer": "Add 'answer:' to this example.",
    "context": "Add 'context:' with a passage from the document.",
    "questions_and_answers": "Add 'questions_and_answers:' with at least 3 question/answer pairs.",
    "repo": "Add 'repo:' with the https URL of the document's git repository.",
    "commit": "Add 'commit:' with the full 40-character SHA of the document's commit.",
    "patterns": "Add 'patterns:' with a list of the document file names, e.g. [\"doc.md\"].",
}

_TOO_FEW_HINTS = {
    "seed_examples": "Add more seed examples; the teacher model needs several to generalise.",
    "questions_and_answers": "Write at least 3 question/answer pairs about each context.",
    "patterns": 'List at least one document file pattern, e.g. ["doc.md"].',
}
