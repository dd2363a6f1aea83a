"""Validate HTTP traffic and webhook payloads against the committed GitHub OpenAPI subset.

GitHub's description is OpenAPI 3.0.3. Its schema dialect differs from JSON Schema in a few ways
that matter here, so the subset is translated once, at load time, into JSON Schema 2020-12:

* ``nullable: true`` becomes "also allow null". OpenAPI 3.0.3 read strictly does not add ``null``
  to an ``enum``, but GitHub sends ``conclusion: null`` on a running check run, so it is added.
* boolean ``exclusiveMinimum``/``exclusiveMaximum`` become the numeric form.
* ``example`` keywords are dropped (they are not assertions).

Known errata in GitHub's description are patched at load time too (``ERRATA`` below, each with
the reason); the committed file itself stays byte-for-byte what the update script extracted.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "github"
SUBSET_PATH = FIXTURES_DIR / "openapi-subset.json"
SPEC_URI = "urn:labbot:github-openapi-subset"

_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
)
_SIMPLE_NULLABLE_KEYS = {
    "type",
    "enum",
    "format",
    "description",
    "title",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "minItems",
    "maxItems",
    "maxProperties",
    "minProperties",
    "readOnly",
    "writeOnly",
    "deprecated",
    "uniqueItems",
}


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _to_json_schema(node: Any) -> Any:
    """Translate an OpenAPI 3.0 schema (recursively) into JSON Schema 2020-12."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("example", "nullable", "discriminator", "xml", "externalDocs"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if value and bound in node:
                out[key] = node[bound]
        else:
            out[key] = _to_json_schema(value)
    if isinstance(node.get("exclusiveMinimum"), bool) and node["exclusiveMinimum"]:
        out.pop("minimum", None)
    if isinstance(node.get("exclusiveMaximum"), bool) and node["exclusiveMaximum"]:
        out.pop("maximum", None)
    if node.get("nullable") is True:
        if set(out) <= _SIMPLE_NULLABLE_KEYS and "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def _walk(node: Any, visit: Any) -> None:
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def _erratum_account_all_of(spec: dict[str, Any]) -> None:
    """``GET /app/installations`` declares ``account: allOf[Simple User, Enterprise]``: no
    account is both (GitHub's own example fails it). ``#/components/schemas/installation`` says
    ``anyOf``, which is what GitHub sends."""

    def visit(node: dict[str, Any]) -> None:
        parts = node.get("allOf")
        if isinstance(parts, list) and {p.get("title") for p in parts if isinstance(p, dict)} == {
            "Simple User",
            "Enterprise",
        }:
            node["anyOf"] = node.pop("allOf")

    _walk(spec.get("paths", {}), visit)


def _erratum_bare_label_array(spec: dict[str, Any]) -> None:
    """``POST``/``PUT /repos/{owner}/{repo}/issues/{issue_number}/labels``: the descriptions say
    an ``array`` of label names may be passed directly (PyGithub's ``add_to_labels`` and
    ``set_labels`` do), and that ``PUT`` with an empty array removes all labels, but the
    schemas only list ``{"labels": [...]}`` objects with ``minItems: 1``."""
    path = spec.get("paths", {}).get("/repos/{owner}/{repo}/issues/{issue_number}/labels", {})
    extra = {
        "post": [{"type": "array", "minItems": 1, "items": {"type": "string"}}],
        "put": [
            {"type": "array", "items": {"type": "string"}},
            {
                "type": "object",
                "properties": {"labels": {"type": "array", "maxItems": 0}},
                "required": ["labels"],
            },
        ],
    }
    for method, alternatives in extra.items():
        body = path.get(method, {}).get("requestBody", {}).get("content", {})
        schema = body.get("application/json", {}).get("schema", {})
        if isinstance(schema.get("oneOf"), list):
            schema["oneOf"].extend(alternatives)


ERRATA = (_erratum_account_all_of, _erratum_bare_label_array)


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())

    @checker.checks("date-time")
    def _is_date_time(instance: object) -> bool:
        return not isinstance(instance, str) or bool(_DATE_TIME.match(instance))

    return checker


_SIZED = {
    "maxItems": "items",
    "minItems": "items",
    "maxLength": "characters",
    "minLength": "characters",
    "maxProperties": "properties",
    "minProperties": "properties",
}


def _describe(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    unit = _SIZED.get(error.validator)
    if unit is not None and hasattr(error.instance, "__len__"):
        size = len(error.instance)
        return f"{where}: violates {error.validator}={error.validator_value} ({size} {unit})"
    return f"{where}: {error.message[:300]}"


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str
    required: bool
    schema: dict[str, Any]


@dataclass
class Operation:
    method: str
    template: str
    operation_id: str
    parameters: list[Parameter]
    request_schema_ptr: str | None
    request_required: bool
    responses: dict[str, str | None]  # status -> schema pointer (None: no JSON body)
    regex: re.Pattern[str] = field(repr=False)

    def response_pointer(self, status: int) -> tuple[bool, str | None]:
        """Return (documented, pointer) for a status code."""
        for key in (str(status), f"{str(status)[0]}XX", "default"):
            if key in self.responses:
                return True, self.responses[key]
        return False, None


class Contract:
    """The operations and webhook schemas of the committed subset, ready to validate traffic."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.raw: Mapping[str, Any] = spec
        self.spec: dict[str, Any] = _to_json_schema(copy.deepcopy(dict(spec)))
        for erratum in ERRATA:
            erratum(self.spec)
        # Examples must stay verbatim, not translated.
        self.spec.setdefault("components", {})["examples"] = spec.get("components", {}).get(
            "examples", {}
        )
        resource = Resource.from_contents(self.spec, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}
        self._format_checker = _format_checker()
        self.operations: list[Operation] = self._build_operations()

    @classmethod
    def load(cls, path: Path = SUBSET_PATH) -> Contract:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    @property
    def source(self) -> dict[str, Any]:
        info = self.raw.get("info", {})
        return dict(info.get("x-labbot-source", {}))

    # -- operations ---------------------------------------------------------------------------

    def _resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            target: Any = self.raw
            for token in ref[2:].split("/"):
                target = target[token.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def _build_operations(self) -> list[Operation]:
        operations: list[Operation] = []
        for template, item in self.raw.get("paths", {}).items():
            shared = item.get("parameters", [])
            for method, op in item.items():
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                base = f"#/paths/{_escape_pointer(template)}/{method}"
                params = [self._parameter(p) for p in [*shared, *op.get("parameters", [])]]
                request_ptr: str | None = None
                request_required = False
                body = op.get("requestBody")
                if body is not None:
                    body = self._resolve(body)
                    request_required = bool(body.get("required", False))
                    if "application/json" in body.get("content", {}):
                        request_ptr = f"{base}/requestBody/content/application~1json/schema"
                        if "$ref" in op["requestBody"]:
                            raise ValueError(f"request body $ref not supported: {template}")
                responses: dict[str, str | None] = {}
                for status, response in op.get("responses", {}).items():
                    resolved = self._resolve(response)
                    content = resolved.get("content", {})
                    if "application/json" not in content or "schema" not in content.get(
                        "application/json", {}
                    ):
                        responses[status] = None
                        continue
                    if "$ref" in response:
                        ref = response["$ref"]
                        ptr = f"{ref}/content/application~1json/schema"
                    else:
                        ptr = f"{base}/responses/{status}/content/application~1json/schema"
                    responses[status] = ptr
                operations.append(
                    Operation(
                        method=method.upper(),
                        template=template,
                        operation_id=op.get("operationId", f"{method} {template}"),
                        parameters=params,
                        request_schema_ptr=request_ptr,
                        request_required=request_required,
                        responses=responses,
                        regex=self._template_regex(template),
                    )
                )
        # Literal segments beat parameters: /issues/comments/{id} before /issues/{n}/...
        operations.sort(key=lambda o: (-o.template.count("/"), o.template.count("{")))
        return operations

    def _parameter(self, node: Mapping[str, Any]) -> Parameter:
        resolved = self._resolve(node)
        return Parameter(
            name=resolved["name"],
            location=resolved["in"],
            required=bool(resolved.get("required", resolved["in"] == "path")),
            schema=_to_json_schema(dict(resolved.get("schema", {}))),
        )

    @staticmethod
    def _template_regex(template: str) -> re.Pattern[str]:
        pattern = ""
        for part in re.split(r"(\{[^}]+\})", template):
            if part.startswith("{"):
                name = part[1:-1]
                # GitHub's {path} (contents) spans slashes; everything else is one segment.
                body = ".+" if name == "path" else "[^/]+"
                pattern += f"(?P<{name}>{body})"
            else:
                pattern += re.escape(part)
        return re.compile(f"^{pattern}$")

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        for op in self.operations:
            if op.method != method.upper():
                continue
            found = op.regex.match(path)
            if found:
                return op, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def path_known(self, path: str) -> bool:
        return any(op.regex.match(path) for op in self.operations)

    def operation(self, operation_id: str) -> Operation:
        for op in self.operations:
            if op.operation_id == operation_id:
                return op
        raise KeyError(operation_id)

    # -- validation ---------------------------------------------------------------------------

    def validator(self, pointer: str) -> Draft202012Validator:
        cached = self._validators.get(pointer)
        if cached is None:
            cached = Draft202012Validator(
                {"$ref": f"{SPEC_URI}{pointer}"},
                registry=self._registry,
                format_checker=self._format_checker,
            )
            self._validators[pointer] = cached
        return cached

    def validate_pointer(self, pointer: str, instance: Any) -> list[str]:
        errors = list(self.validator(pointer).iter_errors(instance))
        if not errors:
            return []
        first = best_match(errors)
        described = [_describe(first)]
        described += [_describe(e) for e in errors if e is not first][:4]
        return described

    def validate_schema(self, schema: Mapping[str, Any], instance: Any) -> list[str]:
        validator = Draft202012Validator(
            dict(schema), registry=self._registry, format_checker=self._format_checker
        )
        return [_describe(e) for e in validator.iter_errors(instance)][:5]

    @staticmethod
    def _coerce(raw: str, schema: Mapping[str, Any]) -> Any:
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "integer" in kinds and re.fullmatch(r"-?\d+", raw):
            return int(raw)
        if "boolean" in kinds and raw in ("true", "false"):
            return raw == "true"
        if "array" in kinds:
            return raw.split(",")
        return raw

    def validate_request(
        self,
        op: Operation,
        path_params: Mapping[str, str],
        query: Mapping[str, Iterable[str]],
        body: Any,
        has_body: bool,
    ) -> list[str]:
        problems: list[str] = []
        declared = {(p.location, p.name): p for p in op.parameters}
        for (location, name), param in declared.items():
            if location == "path":
                value = path_params.get(name)
                if value is None:
                    problems.append(f"path parameter {name!r} missing")
                    continue
                for err in self.validate_schema(param.schema, self._coerce(value, param.schema)):
                    problems.append(f"path parameter {name!r}: {err}")
            elif location == "query":
                values = list(query.get(name, []))
                if not values:
                    if param.required:
                        problems.append(f"required query parameter {name!r} missing")
                    continue
                if len(values) > 1:
                    problems.append(f"query parameter {name!r} given {len(values)} times")
                coerced = self._coerce(values[-1], param.schema)
                for err in self.validate_schema(param.schema, coerced):
                    problems.append(f"query parameter {name!r}: {err}")
        for name in query:
            if ("query", name) not in declared:
                problems.append(f"query parameter {name!r} is not in the spec for {op.template}")
        if op.request_schema_ptr is None:
            if has_body:
                problems.append(f"{op.method} {op.template} takes no JSON body, but one was sent")
        elif not has_body:
            if op.request_required:
                problems.append("request body required")
        else:
            problems += [f"body {e}" for e in self.validate_pointer(op.request_schema_ptr, body)]
        return problems

    def validate_response(self, op: Operation, status: int, body: Any) -> list[str]:
        documented, pointer = op.response_pointer(status)
        if not documented:
            if status >= 400:
                # GitHub answers 401/403/404/422/5xx on endpoints that do not document them;
                # the body must still be one of GitHub's error shapes.
                return [f"undocumented {status}: {e}" for e in self._error_shape(body)]
            return [f"status {status} is not documented for {op.operation_id}"]
        if pointer is None:
            if body is not None:
                return [f"status {status} of {op.operation_id} has no body, but one was sent"]
            return []
        return self.validate_pointer(pointer, body)

    def _error_shape(self, body: Any) -> list[str]:
        for name in ("basic-error", "validation-error"):
            if not self.validate_pointer(f"#/components/schemas/{name}", body):
                return []
        return ["body is neither basic-error nor validation-error"]

    # -- webhooks -----------------------------------------------------------------------------

    @cached_property
    def webhook_keys(self) -> set[str]:
        return set(self.raw.get("x-webhooks", {}))

    @staticmethod
    def webhook_key(event: str, action: str | None) -> str:
        key = event.replace("_", "-")
        if action:
            key += "-" + action.replace("_", "-")
        return key

    def validate_webhook(self, event: str, payload: Mapping[str, Any]) -> list[str]:
        """Validate a payload against GitHub's current schema for its event and action."""
        action = payload.get("action")
        key = self.webhook_key(event, action if isinstance(action, str) else None)
        if key not in self.webhook_keys:
            key = self.webhook_key(event, None)
        if key not in self.webhook_keys:
            return [f"no webhook schema for {event}.{action} in the subset"]
        pointer = f"#/x-webhooks/{key}/post/requestBody/content/application~1json/schema"
        return self.validate_pointer(pointer, payload)

    # -- examples -----------------------------------------------------------------------------

    def example(self, name: str) -> Any:
        """A deep copy of ``#/components/examples/<name>``'s value."""
        return copy.deepcopy(self.raw["components"]["examples"][name]["value"])
