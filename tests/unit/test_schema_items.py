"""Array items validated once per shape give exactly the findings of item-by-item validation."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator, validators

from pipeline.config import RepoConfig
from pipeline.taxonomy import schemas
from pipeline.taxonomy.validate import PROFILES, validate_bytes

ITEMS = [
    "  - question: q\n    answer: yes\n",  # a boolean where text belongs
    "  - question: ''\n    answer: a\n",  # empty
    "  - question: q\n    extra: 1\n    answer: a\n",  # unexpected key
    "  - question: 3\n",  # wrong type, missing key
    "  - answer: [1, 2]\n    question: q\n",  # a list, keys in another order
    "  - question: q\n    answer: 1.5\n    context: ~\n",  # float, null
    "  - question: q\n    answer: 2024-05-01\n",  # a date
    "  - question: q\n    answer: a\n",  # valid
]
SKILL = "version: 3\ncreated_by: a\ntask_description: t\nseed_examples:\n" + "".join(
    ITEMS[i % len(ITEMS)] for i in range(80)
)
KNOWLEDGE_ITEM = (
    "  - context: c\n    questions_and_answers:\n"
    "      - question: q\n        answer: a\n      - question: q\n        answer: a\n"
)


def findings(raw: bytes, path: str) -> list[tuple[object, ...]]:
    result = validate_bytes(raw, path, PROFILES["tree"], RepoConfig(), per_rule=10**9)
    return [(f.rule, f.line, f.column, f.message, f.hint, f.path) for f in result.findings]


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (SKILL.encode(), "taxonomy/compositional_skills/s/qna.yaml"),
        (
            (
                "version: 3\ncreated_by: a\ndomain: d\ndocument_outline: o\nseed_examples:\n"
                + KNOWLEDGE_ITEM * 7
            ).encode(),
            "taxonomy/knowledge/k/qna.yaml",
        ),
    ],
)
def test_items_by_shape_match_item_by_item_validation(raw: bytes, path: str) -> None:
    schemas.validator.cache_clear()
    by_shape = findings(raw, path)
    assert len(by_shape) > 20  # the repeated errors are all there, each at its own item
    saved = schemas._Validator
    schemas._Validator = validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator, {"uniqueItems": schemas._unique_items}
    )
    schemas.validator.cache_clear()
    try:
        assert findings(raw, path) == by_shape
    finally:
        schemas._Validator = saved
        schemas.validator.cache_clear()


def test_only_shape_determined_schemas_are_validated_by_shape() -> None:
    assert schemas._by_shape({"type": "string", "minLength": 1})
    assert schemas._by_shape(
        {"type": "object", "required": ["q"], "properties": {"q": {"type": "string"}},
         "additionalProperties": False}
    )  # fmt: skip
    assert not schemas._by_shape({"type": "string", "minLength": 2})  # length matters
    assert not schemas._by_shape({"type": "array", "uniqueItems": True})  # values matter
    assert not schemas._by_shape({"type": "string", "pattern": "^a"})
    assert not schemas._by_shape({"properties": {"q": {"const": 3}}})
    assert schemas._shape("a") == schemas._shape("b") != schemas._shape("")
    assert schemas._shape(True) != schemas._shape(1) != schemas._shape(1.5)
    assert schemas._shape({"a": 1, "b": 2}) != schemas._shape({"b": 2, "a": 1})  # key order
