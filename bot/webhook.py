"""Webhook deliveries, sans I/O: signature check, parsing, and typed reads of the payload.

Which jobs an event implies is decided by the handler modules, each registering the events it
acts on (:mod:`bot.handlers.router`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import WebhookError


def verify_signature(body: bytes, header: str | None, secret: str) -> None:
    """Check ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body) in constant time.

    Raises:
        WebhookError: 401 when the header is missing or does not match.
    """
    if not secret:
        raise WebhookError(500, "no webhook secret is configured")
    if not header or not header.startswith("sha256="):
        raise WebhookError(401, "missing X-Hub-Signature-256 header")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise WebhookError(401, "signature does not match")


#: Events whose metrics carry their own label; any other verified event counts as "other".
KNOWN_EVENTS = frozenset(
    {
        "check_run",
        "check_suite",
        "installation",
        "installation_repositories",
        "issue_comment",
        "ping",
        "pull_request",
        "push",
        "workflow_job",
        "workflow_run",
    }
)


def event_label(event: str) -> str:
    """A bounded metrics label for a verified delivery's event."""
    return event if event in KNOWN_EVENTS else "other"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One parsed webhook delivery."""

    id: str
    event: str
    action: str | None
    installation_id: int | None
    payload: dict[str, Any]

    @property
    def repo(self) -> str:
        repo = self.payload.get("repository")
        name = repo.get("full_name") if isinstance(repo, dict) else None
        return name if isinstance(name, str) else ""


def parse(headers: Mapping[str, str], body: bytes, secret: str, max_bytes: int) -> Delivery:
    """Verify and parse a delivery. ``headers`` must be case-insensitive (as Starlette's are).

    Raises:
        WebhookError: 413 too large, 401 bad signature, 400 malformed.
    """
    if len(body) > max_bytes:
        raise WebhookError(413, f"payload larger than {max_bytes} bytes")
    verify_signature(body, headers.get("x-hub-signature-256"), secret)
    event = headers.get("x-github-event", "")
    delivery_id = headers.get("x-github-delivery", "")
    if not event or not delivery_id:
        raise WebhookError(400, "missing X-GitHub-Event or X-GitHub-Delivery header")
    try:
        payload = json.loads(body)
    except RecursionError as exc:
        raise WebhookError(400, "body is not JSON labbot can read: nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, a 5,000-digit number
        raise WebhookError(400, f"body is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(payload, dict):
        raise WebhookError(400, "body is not a JSON object")
    action = payload.get("action")
    installation = payload.get("installation")
    inst_id = installation.get("id") if isinstance(installation, dict) else None
    return Delivery(
        id=delivery_id[:200],
        event=event[:100],
        action=action if isinstance(action, str) else None,
        installation_id=inst_id if isinstance(inst_id, int) else None,
        payload=payload,
    )


Scalar = str | int | float | bool | None


class Fields:
    """Typed reads from a delivery's JSON: a field that is missing or of the wrong type raises
    a 422 :class:`WebhookError` that names it (``pull_request.head.sha must be a string``)."""

    def __init__(self, data: dict[str, Any], where: str = "") -> None:
        self.data = data
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _fail(self, key: str, wanted: str) -> WebhookError:
        got = type(self.data.get(key)).__name__ if key in self.data else "missing"
        return WebhookError(422, f"{self._name(key)} must be {wanted} (got {got})")

    def obj(self, key: str) -> Fields:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return Fields(value, self._name(key))

    def opt_obj(self, key: str) -> Fields | None:
        return None if self.data.get(key) is None else self.obj(key)

    def integer(self, key: str) -> int:
        value = self.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        return None if self.data.get(key) is None else self.integer(key)

    def string(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def sha(self, key: str) -> str:
        """A commit SHA: a non-empty string."""
        value = self.string(key)
        if not value:
            raise self._fail(key, "a commit SHA")
        return value

    def opt_string(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.string(key)

    def objs(self, key: str) -> list[Fields]:
        """A list of objects (a missing or null list is empty)."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._fail(key, "a list of objects")
        return [Fields(v, f"{self._name(key)}[{i}]") for i, v in enumerate(value)]

    def strings(self, key: str) -> list[str]:
        """A list of strings (a missing or null list is empty)."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return value

    def scalars(self, keys: tuple[str, ...]) -> dict[str, Scalar]:
        """The named fields, each a string, number, boolean or null (a missing one is null)."""
        out: dict[str, Scalar] = {}
        for key in keys:
            value = self.data.get(key)
            if value is not None and not isinstance(value, str | int | float | bool):
                raise self._fail(key, "a string or a number")
            out[key] = value
        return out

    def truthy(self, key: str) -> bool:
        return bool(self.data.get(key))
