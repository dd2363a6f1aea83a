"""Shared vocabulary of the fake's request pipeline: errors, auth, request context, results,
and the GitHub rules tables (which operations need a JWT, which permission each needs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .contract import Operation
from .state import App, Installation, Repo, Token

DOCS = "https://docs.github.com/rest"
COMMENT_MAX = 65536
TOKEN_TTL = 3600
JWT_MAX_LIFETIME = 600
LEVELS = {"none": 0, "read": 1, "write": 2, "admin": 3}
ROLE_TO_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}

# Operations authenticated as the App (JWT); everything else needs an installation token.
APP_OPERATIONS = {
    "apps/get-authenticated",
    "apps/list-installations",
    "apps/get-installation",
    "apps/create-installation-access-token",
    "apps/get-repo-installation",
    "apps/list-webhook-deliveries",
    "apps/get-webhook-delivery",
    "apps/redeliver-webhook-delivery",
}
# Installation permission each operation needs: (alternatives, level).
PERMISSIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "repos/get": (("metadata",), "read"),
    "apps/list-repos-accessible-to-installation": (("metadata",), "read"),
    "pulls/list": (("pull_requests",), "read"),
    "pulls/get": (("pull_requests",), "read"),
    "pulls/list-files": (("pull_requests",), "read"),
    "repos/list-pull-requests-associated-with-commit": (("pull_requests", "contents"), "read"),
    "repos/get-content": (("contents",), "read"),
    "git/get-blob": (("contents",), "read"),
    "repos/get-commit": (("contents",), "read"),
    "checks/create": (("checks",), "write"),
    "checks/update": (("checks",), "write"),
    "checks/get": (("checks",), "read"),
    "checks/list-annotations": (("checks",), "read"),
    "checks/list-for-ref": (("checks",), "read"),
    "issues/get": (("issues", "pull_requests"), "read"),
    "issues/list-comments": (("issues", "pull_requests"), "read"),
    "issues/create-comment": (("issues", "pull_requests"), "write"),
    "issues/get-comment": (("issues", "pull_requests"), "read"),
    "issues/update-comment": (("issues", "pull_requests"), "write"),
    "issues/delete-comment": (("issues", "pull_requests"), "write"),
    "reactions/create-for-issue-comment": (("issues", "pull_requests"), "write"),
    "issues/list-labels-on-issue": (("issues", "pull_requests"), "read"),
    "issues/add-labels": (("issues", "pull_requests"), "write"),
    "issues/remove-label": (("issues", "pull_requests"), "write"),
    "issues/set-labels": (("issues", "pull_requests"), "write"),
    "issues/list-labels-for-repo": (("metadata",), "read"),
    "issues/create-label": (("issues", "pull_requests"), "write"),
    "issues/get-label": (("metadata",), "read"),
    "repos/get-collaborator-permission-level": (("metadata",), "read"),
    "actions/get-workflow": (("actions",), "read"),
    "actions/create-workflow-dispatch": (("actions",), "write"),
    "repos/create-dispatch-event": (("contents",), "write"),
    "actions/list-workflow-runs-for-repo": (("actions",), "read"),
    "actions/get-workflow-run": (("actions",), "read"),
}
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {rid}."
)


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        violation: bool = False,
        documentation_url: str = DOCS,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = dict(headers or {})
        self.violation = violation
        self.documentation_url = documentation_url

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "documentation_url": self.documentation_url}
        if self.errors is not None:
            out["errors"] = self.errors
        out["status"] = str(self.status)
        return out


def unprocessable(message: str, **error: Any) -> HTTPError:
    return HTTPError(422, message, errors=[error] if error else None)


@dataclass
class Auth:
    kind: Literal["app", "installation", "none", "invalid"]
    app: App | None = None
    installation: Installation | None = None
    token: Token | None = None
    error: str | None = None


@dataclass
class Ctx:
    method: str
    path: str
    op: Operation
    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    auth: Auth
    repo: Repo | None = None

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def int_param(self, name: str) -> int:
        return int(self.params[name])

    @property
    def repository(self) -> Repo:
        assert self.repo is not None
        return self.repo

    @property
    def actor_app(self) -> App:
        app = self.auth.app
        assert app is not None
        return app


@dataclass
class Result:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
