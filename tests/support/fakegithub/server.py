"""A stateful, contract-checked fake of GitHub's REST API for GitHub App tests.

Serves on ``http://127.0.0.1:<free port>`` from a background thread (stdlib
``ThreadingHTTPServer``, HTTP/1.1 keep-alive). Point PyGithub at ``fake.url``.

Contract checking (see ``contract.py``): every request is matched to an operation of the
committed OpenAPI subset and its path parameters, query and JSON body are validated; every JSON
body the fake answers with is validated against the documented response schema.

* An off-spec request is answered as GitHub answers it (``422 Validation Failed``, ``404`` for an
  unknown route, ``400`` for unparsable JSON) **and** recorded in ``fake.violations``.
* A fake response that drifts from the spec is replaced by ``500`` and recorded.
* GitHub limits that the spec does not state (comment bodies over 65,536 characters, check-run
  column rules, undeclared workflow inputs) are answered with GitHub's 422 and recorded too.

``fake.stop()`` (and leaving ``with FakeGitHub() as fake:``) raises ``ContractViolationError`` if
anything was recorded, so a test cannot pass on traffic GitHub would reject. Tests that provoke
a violation on purpose wrap it in ``with fake.expect_violations() as seen: ...``.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt

from .contract import Contract, Operation
from .endpoints import Endpoints
from .protocol import (
    APP_OPERATIONS,
    DOCS,
    JWT_MAX_LIFETIME,
    LEVELS,
    PERMISSIONS,
    SECONDARY_MESSAGE,
    TOKEN_TTL,
    Auth,
    Ctx,
    HTTPError,
    Result,
)
from .render import Renderer
from .state import (
    DEFAULT_APP_EVENTS,
    DEFAULT_APP_PERMISSIONS,
    App,
    CheckRun,
    Clock,
    Delivery,
    Ids,
    Installation,
    IssueComment,
    PullRequest,
    Redelivery,
    Repo,
    Token,
    WorkflowRun,
    iso,
)
from .webhooks import (
    PostClient,
    encode_payload,
    load_payload,
    payload_path,
    retarget,
    webhook_headers,
)


class ContractViolationError(AssertionError):
    """Raised when traffic broke GitHub's contract (see ``FakeGitHub.violations``)."""


@dataclass
class Violation:
    kind: Literal["request", "response", "rule", "route", "fake"]
    method: str
    path: str
    operation_id: str | None
    messages: list[str]

    def __str__(self) -> str:
        op = f" ({self.operation_id})" if self.operation_id else ""
        lines = "\n    ".join(self.messages)
        return f"[{self.kind}] {self.method} {self.path}{op}:\n    {lines}"


@dataclass
class Call:
    """One request the fake received, and what it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    operation_id: str | None
    status: int = 0
    response: Any = None
    response_headers: dict[str, str] = field(default_factory=dict)
    auth: Literal["app", "installation", "none", "invalid"] = "none"
    installation_id: int | None = None
    fault: bool = False
    time: float = 0.0

    @property
    def url(self) -> str:
        return self.path + (("?" + urlencode(self.query, doseq=True)) if self.query else "")


@dataclass
class Fault:
    """An injected failure; see ``FakeGitHub.inject``."""

    method: re.Pattern[str]
    path: re.Pattern[str]
    status: int
    times: int | None
    body: Any
    headers: dict[str, str]
    delay: float = 0.0
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, method: str, path: str) -> bool:
        return (
            not self.exhausted
            and bool(self.method.fullmatch(method))
            and bool(self.path.search(path))
        )


@dataclass
class RateBucket:
    limit: int
    used: int = 0
    reset: float = 0.0


def github_kwargs(fake: FakeGitHub, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``github.Github``/``GithubIntegration`` against the fake: its
    base URL, no throttling and no retries (PyGithub's defaults add ~1 s per write and retry
    a 5xx ten times). Pass e.g. ``retry=3`` to exercise the retry path on purpose."""
    kwargs: dict[str, Any] = {
        "base_url": fake.url,
        "retry": None,
        "seconds_between_requests": None,
        "seconds_between_writes": None,
        "timeout": 10,
    }
    kwargs.update(overrides)
    return kwargs


@dataclass
class Setup:
    """What ``FakeGitHub.quickstart`` built, plus PyGithub clients for it."""

    fake: FakeGitHub
    app: App
    installation: Installation
    repo: Repo

    def integration(self, **overrides: Any) -> Any:
        """``github.GithubIntegration`` authenticated as the App (JWT)."""
        from github import Auth, GithubIntegration

        auth = Auth.AppAuth(self.app.id, self.app.private_key_pem)
        return GithubIntegration(auth=auth, **github_kwargs(self.fake, **overrides))

    def github(self, **overrides: Any) -> Any:
        """``github.Github`` authenticated as the installation (JWT -> installation token)."""
        from github import Auth, Github

        auth = Auth.AppAuth(self.app.id, self.app.private_key_pem).get_installation_auth(
            self.installation.id
        )
        return Github(auth=auth, **github_kwargs(self.fake, **overrides))


class FakeGitHub:
    """A GitHub REST API double. See the package docstring for a walkthrough."""

    def __init__(
        self,
        *,
        contract: Contract | None = None,
        check_responses: bool = True,
        rate_limit: int = 5000,
        content_writes_per_minute: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.contract = contract or _shared_contract()
        self.check_responses = check_responses
        self.default_rate_limit = rate_limit
        self.content_writes_per_minute = content_writes_per_minute
        self._writes: dict[int, list[float]] = {}
        self.host = host
        self._port = port
        self.lock = threading.RLock()
        self.clock = Clock()
        self.ids = Ids()
        self.render = Renderer(self)
        self.apps: dict[int, App] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, Token] = {}
        self.repos: dict[str, Repo] = {}
        self.users: dict[str, tuple[int, str]] = {}
        self.deliveries: list[Delivery] = []
        self.redeliveries: list[Redelivery] = []
        self.calls: list[Call] = []
        self.violations: list[Violation] = []
        self.faults: list[Fault] = []
        #: Blob-storage stand-in: artifact archives a download redirect points at.
        self.downloads: dict[str, bytes] = {}
        self._rate: dict[tuple[str, int], RateBucket] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._webhook_target: str | PostClient | None = None
        self._webhook_path = "/"
        self._handlers: dict[str, Callable[[Ctx], Result]] = Endpoints(self).table()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL for PyGithub's ``base_url`` (always 127.0.0.1, never localhost)."""
        if self._server is None:
            raise RuntimeError("FakeGitHub is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> FakeGitHub:
        if self._server is not None:
            return self
        fake = self

        class Handler(_Handler):
            owner = fake

        server = ThreadingHTTPServer((self.host, self._port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self, *, check: bool = True) -> None:
        """Stop serving; with ``check`` raise ``ContractViolationError`` on recorded violations."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            with self.lock:
                connections = list(self._connections)
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
        if check:
            self.assert_no_violations()

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Do not mask the test's own exception with a violation report.
        self.stop(check=exc_type is None)

    # -- contract ----------------------------------------------------------------------------

    def assert_no_violations(self) -> None:
        if self.violations:
            report = "\n".join(str(v) for v in self.violations)
            raise ContractViolationError(
                f"{len(self.violations)} GitHub contract violation(s):\n{report}"
            )

    @contextlib.contextmanager
    def expect_violations(self, count: int | None = None) -> Iterator[list[Violation]]:
        """Collect (and clear) the violations raised inside the block; fail if there are none.

        Use it for tests that send off-spec traffic on purpose (e.g. 51 annotations).
        """
        seen: list[Violation] = []
        with self.lock:
            start = len(self.violations)
        yield seen
        with self.lock:
            seen.extend(self.violations[start:])
            del self.violations[start:]
        if not seen:
            raise AssertionError("expected a contract violation, none was recorded")
        if count is not None and len(seen) != count:
            raise AssertionError(f"expected {count} violation(s), got {len(seen)}: {seen}")

    def _violate(
        self, kind: Any, method: str, path: str, op: Operation | None, messages: list[str]
    ) -> None:
        with self.lock:
            self.violations.append(
                Violation(kind, method, path, op.operation_id if op else None, messages)
            )

    # -- time --------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the fake's clock (token expiry, rate-limit reset, timestamps)."""
        self.clock.offset += seconds

    # -- setup: users, apps, installations, repositories ---------------------------------------

    def user_id(self, login: str) -> int:
        with self.lock:
            if login not in self.users:
                kind = "Bot" if login.endswith("[bot]") else "User"
                self.users[login] = (self.ids.next(), kind)
            return self.users[login][0]

    def user_type(self, login: str) -> str:
        self.user_id(login)
        return self.users[login][1]

    def add_user(self, login: str, user_type: str = "User") -> int:
        with self.lock:
            uid = self.users[login][0] if login in self.users else self.ids.next()
            self.users[login] = (uid, user_type)
            return uid

    def create_app(
        self,
        slug: str = "labbot",
        *,
        app_id: int | None = None,
        name: str | None = None,
        owner: str = "labbot-dev",
        permissions: Mapping[str, str] | None = None,
        events: list[str] | None = None,
        webhook_secret: str | None = None,
        client_id: str | None = None,
        fresh_key: bool = False,
    ) -> App:
        """Register a GitHub App; its RSA key pair is ``app.private_key_pem``/``public_key_pem``.

        The pair is shared by all apps of the process unless ``fresh_key=True`` (key
        generation costs ~0.1 s); the bot login is ``<slug>[bot]``.
        """
        private, public = App.generate_key_pair(fresh=fresh_key)
        with self.lock:
            app = App(
                id=app_id if app_id is not None else self.ids.next(),
                slug=slug,
                name=name or slug,
                owner=owner,
                client_id=client_id or f"Iv23li{secrets.token_hex(7)}",
                permissions=dict(permissions or DEFAULT_APP_PERMISSIONS),
                events=list(events or DEFAULT_APP_EVENTS),
                webhook_secret=webhook_secret or secrets.token_hex(16),
                private_key_pem=private,
                public_key_pem=public,
                created_at=self.now(),
            )
            self.apps[app.id] = app
            self.add_user(app.bot_login, "Bot")
            self.add_user(owner, "Organization")
            return app

    def create_installation(
        self,
        account: str,
        *,
        app: App | None = None,
        repositories: list[str] | None = None,
        permissions: Mapping[str, str] | None = None,
        account_type: str = "Organization",
        installation_id: int | None = None,
    ) -> Installation:
        """Install ``app`` (default: the only app) on ``account``.

        ``repositories=None`` means "All repositories" of the account; a list of full names
        means "Only select repositories".
        """
        with self.lock:
            app = app or self._only_app()
            inst = Installation(
                id=installation_id if installation_id is not None else self.ids.next(),
                app=app,
                account=account,
                account_type=account_type,
                permissions=dict(permissions or app.permissions),
                events=list(app.events),
                repository_selection="all" if repositories is None else "selected",
                repositories=set(repositories or []),
                created_at=self.now(),
            )
            self.installations[inst.id] = inst
            self.add_user(account, account_type)
            return inst

    def create_repo(
        self,
        full_name: str,
        *,
        default_branch: str = "main",
        private: bool = False,
        files: Mapping[str, str | bytes] | None = None,
        description: str | None = None,
    ) -> Repo:
        """Create a repository; ``files`` become the first commit on the default branch."""
        with self.lock:
            if full_name.lower() in self.repos:
                raise ValueError(f"{full_name} exists")
            repo = Repo(
                self,
                full_name,
                repo_id=self.ids.next(),
                default_branch=default_branch,
                private=private,
                description=description,
            )
            self.repos[full_name.lower()] = repo
            self.user_id(repo.owner)
            repo.commit(dict(files or {}), branch=default_branch, message="initial commit")
            for inst in self.installations.values():
                if inst.repository_selection == "selected" and full_name in inst.repositories:
                    inst.repositories.add(full_name)
            return repo

    def repo(self, full_name: str) -> Repo:
        return self.repos[full_name.lower()]

    def quickstart(
        self,
        repo: str = "org/taxonomy",
        *,
        slug: str = "labbot",
        files: Mapping[str, str | bytes] | None = None,
        default_branch: str = "main",
        private: bool = False,
    ) -> Setup:
        """The usual scene: one App installed on the repo owner's account, one repository."""
        app = self._only_app() if self.apps else self.create_app(slug)
        owner = repo.split("/", 1)[0]
        inst = next(
            (i for i in self.installations.values() if i.app.id == app.id and i.account == owner),
            None,
        ) or self.create_installation(owner, app=app)
        created = self.create_repo(
            repo, files=files, default_branch=default_branch, private=private
        )
        return Setup(self, app, inst, created)

    def installations_of(self, app: App) -> list[Installation]:
        return [i for i in self.installations.values() if i.app.id == app.id]

    def _only_app(self) -> App:
        if len(self.apps) != 1:
            raise ValueError("pass app= (there is not exactly one registered app)")
        return next(iter(self.apps.values()))

    def issue_token(
        self,
        installation: Installation,
        *,
        permissions: Mapping[str, str] | None = None,
        repositories: set[str] | None = None,
        ttl: float = TOKEN_TTL,
    ) -> Token:
        """Mint an installation token directly (for tests that bypass the JWT step)."""
        with self.lock:
            token = Token(
                token="ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36],
                installation=installation,
                expires_at=self.now() + ttl,
                permissions=dict(permissions or installation.permissions),
                repositories=repositories,
            )
            self.tokens[token.token] = token
            return token

    def expire_tokens(self) -> None:
        """Make every issued installation token expired (next use: 401 Bad credentials)."""
        with self.lock:
            for token in self.tokens.values():
                token.expires_at = self.now() - 1

    # -- setup: deliveries -------------------------------------------------------------------

    def set_webhook_target(self, target: str | PostClient | None, path: str = "/") -> None:
        """Where ``deliver``/``process_redeliveries`` POST: a URL, or a client with ``post``
        (e.g. FastAPI's ``TestClient``) plus the URL ``path``."""
        self._webhook_target = target
        self._webhook_path = path

    def add_delivery(
        self,
        event: str,
        payload: Mapping[str, Any] | None = None,
        *,
        status_code: int = 200,
        guid: str | None = None,
        redelivery: bool = False,
        app: App | None = None,
        delivered_at: float | None = None,
        response_body: str = "",
    ) -> Delivery:
        """Record a delivery in the App's log (``GET /app/hook/deliveries``) without sending."""
        app = app or self._only_app()
        data = dict(payload or {})
        body = encode_payload(data)
        with self.lock:
            guid = guid or str(uuid.uuid4())
            headers = webhook_headers(
                event,
                body,
                app.webhook_secret,
                delivery_id=guid,
                installation_target_id=app.id,
            )
            inst = data.get("installation")
            repo = data.get("repository")
            delivery = Delivery(
                id=self.ids.next() * 1000 + 7,
                guid=guid,
                event=event,
                action=data.get("action") if isinstance(data.get("action"), str) else None,
                delivered_at=delivered_at if delivered_at is not None else self.now(),
                status_code=status_code,
                redelivery=redelivery,
                installation_id=inst.get("id") if isinstance(inst, dict) else None,
                repository_id=repo.get("id") if isinstance(repo, dict) else None,
                request_headers=headers,
                payload=data,
                response_body=response_body,
                app_id=app.id,
            )
            self.deliveries.append(delivery)
            return delivery

    def deliver(
        self,
        event: str,
        payload: Mapping[str, Any],
        *,
        guid: str | None = None,
        app: App | None = None,
        redelivery: bool = False,
    ) -> Delivery:
        """Sign and POST a webhook to the target set by ``set_webhook_target``, as GitHub
        would, and log the delivery with the status code the receiver answered."""
        if self._webhook_target is None:
            raise RuntimeError("call fake.set_webhook_target(url_or_client) first")
        app = app or self._only_app()
        guid = guid or str(uuid.uuid4())
        body = encode_payload(payload)
        headers = webhook_headers(
            event, body, app.webhook_secret, delivery_id=guid, installation_target_id=app.id
        )
        started = time.perf_counter()
        status, response_headers, text = 0, {}, ""
        try:
            if isinstance(self._webhook_target, str):
                import httpx

                response = httpx.post(self._webhook_target, content=body, headers=headers)
            else:
                response = self._webhook_target.post(
                    self._webhook_path, content=body, headers=headers
                )
            status, text = response.status_code, response.text
            response_headers = dict(response.headers)
        except Exception as exc:  # noqa: BLE001 - a failed delivery is data, not an error
            text = f"{type(exc).__name__}: {exc}"
        delivery = self.add_delivery(
            event,
            payload,
            status_code=status,
            guid=guid,
            redelivery=redelivery,
            app=app,
            response_body=text,
        )
        delivery.duration = round(time.perf_counter() - started, 3)
        delivery.response_headers = response_headers
        delivery.request_headers = headers
        return delivery

    def process_redeliveries(self) -> list[Delivery]:
        """Deliver the redeliveries the App requested (``POST .../attempts``), in order."""
        with self.lock:
            pending, self.redeliveries = self.redeliveries, []
        done = []
        for item in pending:
            original = item.original
            done.append(
                self.deliver(
                    original.event,
                    original.payload,
                    guid=original.guid,
                    app=self.apps.get(original.app_id or -1),
                    redelivery=True,
                )
            )
        return done

    # -- webhook payloads consistent with state ----------------------------------------------

    def webhook_payload(
        self,
        event: str,
        action: str | None = None,
        variant: str | None = None,
        *,
        repo: Repo,
        installation: Installation | None = None,
        pr: PullRequest | None = None,
        comment: IssueComment | None = None,
        check_run: CheckRun | None = None,
        run: WorkflowRun | None = None,
        sender: str | None = None,
        rewrite_api_urls: bool = True,
    ) -> dict[str, Any]:
        """A real payload from the fixtures, retargeted at objects of this fake.

        Repository, installation (default: the one covering ``repo``), PR number/head/base/
        author/labels/state, comment id/body/author, check run and workflow run ids are taken
        from state; everything else stays as GitHub sent it. ``sender`` defaults to the PR
        author (``pull_request``) or the comment author (``issue_comment``). The variant is
        picked for you where a derived one exists: ``issue_comment`` on a PR uses
        ``...created.pull_request``, ``pull_request.closed`` of a merged PR uses ``...merged``.
        """
        installation = installation or self._installation_for(repo)
        issue = repo.issues.get(comment.issue_number) if comment is not None else pr
        target_pr = issue if isinstance(issue, PullRequest) else None
        if variant is None:
            if event == "issue_comment" and target_pr is not None:
                variant = "pull_request"
            elif event == "pull_request" and action == "closed" and pr is not None and pr.merged:
                variant = "merged"
            if variant is not None and not payload_path(event, action, variant).exists():
                variant = None
        if sender is None:
            if comment is not None:
                sender = comment.user
            elif pr is not None:
                sender = pr.user
        kwargs: dict[str, Any] = {
            "repo": repo.full_name,
            "repo_id": repo.id,
            "default_branch": repo.default_branch,
            "private": repo.private,
            "installation_id": installation.id if installation else None,
            "sender": sender,
            "sender_type": self.user_type(sender) if sender else "User",
            "number": issue.number if issue is not None else None,
            "api_url": self.url if rewrite_api_urls and self._server else None,
        }
        if issue is not None:
            kwargs.update(title=issue.title, author=issue.user)
        if target_pr is not None:
            kwargs.update(
                head_sha=target_pr.head_sha,
                head_ref=target_pr.head_ref,
                base_sha=target_pr.base_sha,
                base_ref=target_pr.base_ref,
                draft=target_pr.draft,
                merged=target_pr.merged,
                merge_commit_sha=target_pr.merge_commit_sha,
            )
        if comment is not None:
            kwargs.update(
                comment_id=comment.id,
                comment_body=comment.body,
                comment_user=comment.user,
                comment_user_type=comment.user_type,
            )
        if check_run is not None:
            kwargs.update(
                head_sha=check_run.head_sha,
                check_run_id=check_run.id,
                check_name=check_run.name,
                app_id=check_run.app.id,
            )
        if run is not None:
            kwargs.update(
                run_id=run.id,
                head_sha=run.head_sha,
                head_ref=run.head_branch,
                workflow_id=run.workflow.id,
            )
        payload = retarget(load_payload(event, action, variant), **kwargs)

        labels = (
            [self.render.label(repo, repo.ensure_label(n)) for n in issue.labels] if issue else []
        )
        node = payload.get("pull_request")
        if target_pr is not None and isinstance(node, dict):
            node.update(state=target_pr.state, labels=labels, body=target_pr.body)
            node["merged_at"] = iso(target_pr.merged_at) if target_pr.merged_at else None
            node["closed_at"] = iso(target_pr.closed_at) if target_pr.closed_at else None
        node = payload.get("issue")
        if issue is not None and isinstance(node, dict):
            node.update(state=issue.state, labels=labels, body=issue.body)
            if target_pr is None:
                node.pop("pull_request", None)
            elif isinstance(node.get("pull_request"), dict):
                merged_at = target_pr.merged_at
                node["pull_request"]["merged_at"] = iso(merged_at) if merged_at else None
        node = payload.get("workflow_run")
        if run is not None and isinstance(node, dict):
            node.update(
                status=run.status,
                conclusion=run.conclusion,
                event=run.event,
                name=run.workflow.name,
                path=run.workflow.path,
                run_number=run.run_number,
                display_title=run.display_title or run.workflow.name,
            )
        node = payload.get("check_run")
        if check_run is not None and isinstance(node, dict):
            node.update(status=check_run.status, conclusion=check_run.conclusion)
        return payload

    def _installation_for(self, repo: Repo) -> Installation | None:
        for inst in self.installations.values():
            if inst.covers(repo.full_name):
                return inst
        return None

    # -- faults and rate limits ----------------------------------------------------------------

    def inject(
        self,
        method: str,
        path: str,
        status: int = 502,
        *,
        times: int | None = 1,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_after: int | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer matching requests with ``status`` (``times=None``: forever).

        ``method`` is a regex matched in full (``"*"``/``".*"``: any; ``"POST|PATCH"``); ``path``
        is a regex searched in the request path (``r"/check-runs"``). ``delay`` sleeps before
        answering (client timeouts). The request is still contract-checked and logged.
        """
        method_re = ".*" if method in ("*", "") else method
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
        if body is None and status != 204:
            reason = {
                401: "Bad credentials",
                403: "Forbidden",
                404: "Not Found",
                409: "Conflict",
                422: "Validation Failed",
                429: "Too Many Requests",
                500: "Internal Server Error",
                502: "Server Error",
                503: "Service Unavailable",
                504: "We couldn't respond to your request in time.",
            }.get(status, "Injected failure")
            body = {"message": reason, "documentation_url": DOCS, "status": str(status)}
        fault = Fault(
            method=re.compile(method_re, re.IGNORECASE),
            path=re.compile(path),
            status=status,
            times=times,
            body=body,
            headers=extra,
            delay=delay,
        )
        with self.lock:
            self.faults.append(fault)
        return fault

    def inject_rate_limit(
        self,
        method: str = "*",
        path: str = ".*",
        *,
        secondary: bool = False,
        status: int = 403,
        retry_after: int | None = None,
        reset_in: int = 60,
        times: int | None = 1,
    ) -> Fault:
        """A primary (``X-RateLimit-Remaining: 0`` + ``X-RateLimit-Reset``) or secondary
        (``Retry-After``, default 60 s) rate-limit answer, as 403 (default) or 429."""
        rid = f"{secrets.token_hex(2).upper()}:{secrets.token_hex(3).upper()}"
        if secondary:
            headers = {"Retry-After": str(retry_after if retry_after is not None else 60)}
            message = SECONDARY_MESSAGE.format(rid=rid)
            docs = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
        else:
            headers = {
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(self.now()) + reset_in),
                "X-RateLimit-Used": str(self.default_rate_limit),
            }
            if retry_after is not None:
                headers["Retry-After"] = str(retry_after)
            message = "API rate limit exceeded for installation. If you reach out to GitHub "
            message += f"Support for help, please include the request ID {rid}."
            docs = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
        body = {"message": message, "documentation_url": docs, "status": str(status)}
        return self.inject(method, path, status, times=times, body=body, headers=headers)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def set_rate_limit(
        self,
        *,
        remaining: int,
        limit: int | None = None,
        installation: Installation | None = None,
        reset_in: float = 3600,
    ) -> None:
        """Set the primary budget of one installation (default: all known ones and the App).

        When it reaches 0, requests get GitHub's 403 "API rate limit exceeded" until the reset.
        """
        with self.lock:
            keys = (
                [("installation", installation.id)]
                if installation
                else [("installation", i) for i in self.installations]
                + [("app", a) for a in self.apps]
            )
            for key in keys:
                lim = limit or self.default_rate_limit
                self._rate[key] = RateBucket(
                    limit=lim, used=max(0, lim - remaining), reset=self.now() + reset_in
                )

    def _rate_headers(self, auth: Auth) -> tuple[dict[str, str], bool]:
        """Consume one request of the caller's budget; return (headers, exhausted)."""
        if auth.kind == "installation" and auth.installation is not None:
            key: tuple[str, int] = ("installation", auth.installation.id)
        elif auth.kind == "app" and auth.app is not None:
            key = ("app", auth.app.id)
        else:
            key = ("anonymous", 0)
        now = self.now()
        with self.lock:
            bucket = self._rate.get(key)
            limit = self.default_rate_limit if key[0] != "anonymous" else 60
            if bucket is None or now >= bucket.reset:
                bucket = RateBucket(limit=bucket.limit if bucket else limit, reset=now + 3600)
                self._rate[key] = bucket
            exhausted = bucket.used >= bucket.limit
            if not exhausted:
                bucket.used += 1
            headers = {
                "X-RateLimit-Limit": str(bucket.limit),
                "X-RateLimit-Remaining": str(max(0, bucket.limit - bucket.used)),
                "X-RateLimit-Reset": str(int(bucket.reset)),
                "X-RateLimit-Used": str(bucket.used),
                "X-RateLimit-Resource": "core",
            }
            return headers, exhausted

    def _check_write_pace(self, ctx: Ctx) -> None:
        """Opt-in secondary limit: at most ``content_writes_per_minute`` content-creating
        requests per installation and minute (GitHub documents 80), else 403 + Retry-After."""
        limit = self.content_writes_per_minute
        inst = ctx.auth.installation
        if limit is None or inst is None or ctx.method == "GET":
            return
        now = self.now()
        recent = [t for t in self._writes.get(inst.id, []) if t > now - 60]
        if len(recent) >= limit:
            self._writes[inst.id] = recent
            wait = int(recent[0] + 60 - now) + 1
            rid = f"{secrets.token_hex(2).upper()}:{secrets.token_hex(3).upper()}"
            raise HTTPError(
                403,
                SECONDARY_MESSAGE.format(rid=rid),
                headers={"Retry-After": str(wait)},
                documentation_url="https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            )
        recent.append(now)
        self._writes[inst.id] = recent

    # -- call log helpers ----------------------------------------------------------------------

    def calls_to(self, method: str, path: str) -> list[Call]:
        """Calls whose method equals ``method`` (``"*"``: any) and path matches regex ``path``."""
        pattern = re.compile(path)
        return [
            c
            for c in list(self.calls)
            if (method == "*" or c.method == method.upper()) and pattern.search(c.path)
        ]

    def reset_calls(self) -> None:
        with self.lock:
            self.calls.clear()

    # -- request processing --------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Process one HTTP request; returns (status, headers, body). Thread-safe."""
        parts = urlsplit(target)
        path = parts.path or "/"
        if path.startswith("/_downloads/"):  # the storage host redirects point at: no API
            with self.lock:
                blob = self.downloads.get(path)
            if blob is None:
                return 404, {"Content-Type": "text/plain"}, b"not found"
            return 200, {"Content-Type": "application/zip"}, blob
        query = parse_qs(parts.query, keep_blank_values=True)
        hdrs = {k.lower(): v for k, v in headers.items()}
        call = Call(
            method=method,
            path=path,
            query=query,
            headers=dict(hdrs),
            body=None,
            operation_id=None,
            time=self.now(),
        )
        with self.lock:
            self.calls.append(call)
        delay = 0.0
        try:
            result, delay = self._process(call, method, path, query, hdrs, raw)
        except Exception:  # noqa: BLE001 - a bug in the fake must fail the test, loudly
            trace = traceback.format_exc()
            self._violate("fake", method, path, None, [trace])
            result = Result(500, {"message": "fake GitHub crashed", "documentation_url": DOCS})
        if delay:
            time.sleep(delay)
        call.status = result.status
        call.response = result.body
        payload = b""
        out_headers = {
            "X-GitHub-Api-Version-Selected": "2022-11-28",
            "X-GitHub-Media-Type": "github.v3; format=json",
            "X-GitHub-Request-Id": f"{secrets.token_hex(4).upper()}:{secrets.token_hex(5).upper()}",
        }
        if result.status not in (204, 304) and result.body is not None:
            payload = json.dumps(result.body).encode("utf-8")
            out_headers["Content-Type"] = "application/json; charset=utf-8"
        out_headers.update(result.headers)
        call.response_headers = dict(out_headers)
        return result.status, out_headers, payload

    def _process(
        self,
        call: Call,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        raw: bytes,
    ) -> tuple[Result, float]:
        # 1. who is calling (every answer carries that caller's rate-limit headers)
        auth = self._authenticate(headers)
        call.auth = auth.kind
        call.installation_id = auth.installation.id if auth.installation else None
        rate_headers, exhausted = self._rate_headers(auth)

        # 2. route
        matched = self.contract.match(method, path)
        if matched is None:
            known = self.contract.path_known(path)
            why = "method not in the subset" if known else "path not in the OpenAPI subset"
            self._violate("route", method, path, None, [f"{method} {path}: {why}"])
            not_found = {"message": "Not Found", "documentation_url": DOCS, "status": "404"}
            return Result(404, not_found, rate_headers), 0.0
        op, params = matched
        call.operation_id = op.operation_id
        handler = self._handlers.get(op.operation_id)

        # 3. body
        body: Any = None
        has_body = bool(raw.strip())
        if has_body:
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                self._violate("request", method, path, op, [f"body is not JSON: {exc}"])
                bad = {"message": "Problems parsing JSON", "documentation_url": DOCS}
                return Result(400, bad, rate_headers), 0.0
        call.body = body

        # 4. request contract
        problems = self.contract.validate_request(op, params, query, body, has_body)
        if problems:
            self._violate("request", method, path, op, problems)
            error = HTTPError(
                422,
                "Invalid request.\n\n" + "\n".join(problems),
                errors=[
                    {"resource": op.operation_id, "code": "invalid", "message": p} for p in problems
                ],
            )
            return Result(422, error.body(), rate_headers), 0.0

        # 5. injected faults
        with self.lock:
            fault = next((f for f in self.faults if f.matches(method, path)), None)
            if fault is not None:
                fault.hits += 1
        if fault is not None:
            call.fault = True
            return Result(fault.status, fault.body, {**rate_headers, **fault.headers}), fault.delay

        if handler is None:
            self._violate("fake", method, path, op, [f"{op.operation_id} is not implemented"])
            unimplemented = {"message": "Not Implemented", "documentation_url": DOCS}
            return Result(501, unimplemented, rate_headers), 0.0

        # 6. auth decisions, rate limit, handler
        try:
            with self.lock:
                ctx = Ctx(method, path, op, params, query, body, headers, auth)
                self._authorize(ctx)
                if exhausted:
                    raise HTTPError(
                        403,
                        "API rate limit exceeded for "
                        + (
                            f"installation ID {auth.installation.id}."
                            if auth.installation
                            else "this app."
                        ),
                        documentation_url="https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                    )
                self._check_write_pace(ctx)
                result = handler(ctx)
        except HTTPError as err:
            if err.violation:
                self._violate("rule", method, path, op, [err.message])
            result = Result(err.status, err.body(), err.headers)
        result.headers = {**rate_headers, **result.headers}

        # 7. response contract
        if self.check_responses:
            problems = self.contract.validate_response(op, result.status, result.body)
            if problems:
                self._violate("response", method, path, op, problems)
                result = Result(
                    500,
                    {
                        "message": "fake GitHub response violates the contract: "
                        + "; ".join(problems),
                        "documentation_url": DOCS,
                    },
                    rate_headers,
                )
        return result, 0.0

    # -- authentication ------------------------------------------------------------------------

    def _authenticate(self, headers: Mapping[str, str]) -> Auth:
        value = headers.get("authorization", "")
        if not value:
            return Auth("none")
        scheme, _, credential = value.partition(" ")
        credential = credential.strip()
        scheme = scheme.lower()
        if scheme not in ("token", "bearer") or not credential:
            return Auth("invalid", error="Bad credentials")
        if credential.count(".") == 2:
            return self._authenticate_jwt(credential)
        token = self.tokens.get(credential)
        if token is None:
            return Auth("invalid", error="Bad credentials")
        if token.expires_at <= self.now():
            return Auth("invalid", error="Bad credentials")
        return Auth(
            "installation", app=token.installation.app, installation=token.installation, token=token
        )

    def _authenticate_jwt(self, credential: str) -> Auth:
        undecodable = Auth("invalid", error="A JSON web token could not be decoded")
        try:
            claims = jwt.decode(credential, options={"verify_signature": False})
        except jwt.PyJWTError:
            return undecodable
        issuer = str(claims.get("iss", ""))
        app = next(
            (a for a in self.apps.values() if issuer in (str(a.id), a.client_id)),
            None,
        )
        if app is None:
            return Auth("invalid", error="Integration not found")
        try:
            claims = jwt.decode(
                credential,
                app.public_key_pem,
                algorithms=["RS256"],
                options={
                    "require": ["iat", "exp", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError:
            return undecodable
        iat, exp, now = claims.get("iat"), claims.get("exp"), self.now()
        if not isinstance(iat, int) or iat > now + 60:
            return Auth(
                "invalid",
                error="'Issued at' claim ('iat') must be an Integer representing the time that "
                "the assertion was issued.",
            )
        if not isinstance(exp, int) or exp <= now:
            return Auth(
                "invalid",
                error="'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires.",
            )
        if exp - iat > JWT_MAX_LIFETIME or exp > now + JWT_MAX_LIFETIME + 60:
            return Auth(
                "invalid", error="'Expiration time' claim ('exp') is too far in the future."
            )
        return Auth("app", app=app)

    def _authorize(self, ctx: Ctx) -> None:
        auth, op = ctx.auth, ctx.op
        if auth.kind == "invalid":
            raise HTTPError(401, auth.error or "Bad credentials")
        if auth.kind == "none":
            raise HTTPError(401, "Requires authentication")
        if op.operation_id in APP_OPERATIONS:
            if auth.kind != "app":
                raise HTTPError(
                    401,
                    "A JSON web token could not be decoded",
                    documentation_url=f"{DOCS}/apps/apps",
                )
        elif auth.kind != "installation":
            raise HTTPError(
                401,
                "This endpoint requires an installation access token; "
                "a GitHub App JWT is not accepted here.",
            )
        if "owner" in ctx.params and "repo" in ctx.params:
            full = f"{ctx.params['owner']}/{ctx.params['repo']}"
            repo = self.repos.get(full.lower())
            if repo is None:
                raise HTTPError(404, "Not Found")
            if auth.kind == "installation":
                token, inst = auth.token, auth.installation
                assert token is not None and inst is not None
                allowed = inst.covers(repo.full_name) and (
                    token.repositories is None
                    or repo.full_name.lower() in {r.lower() for r in token.repositories}
                )
                if not allowed:
                    raise HTTPError(404, "Not Found")
            ctx.repo = repo
        need = PERMISSIONS.get(op.operation_id)
        if need is not None and auth.token is not None:
            names, level = need
            granted = max(LEVELS.get(auth.token.permissions.get(n, "none"), 0) for n in names)
            if granted < LEVELS[level]:
                raise HTTPError(403, "Resource not accessible by integration")


_CONTRACT: Contract | None = None
_CONTRACT_LOCK = threading.Lock()


def _shared_contract() -> Contract:
    """The committed subset, parsed once per process (validators are cached on it)."""
    global _CONTRACT
    with _CONTRACT_LOCK:
        if _CONTRACT is None:
            _CONTRACT = Contract.load()
        return _CONTRACT


class _Handler(BaseHTTPRequestHandler):
    owner: FakeGitHub
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"
    sys_version = ""
    # One buffered write per response and no Nagle delay: otherwise headers and body leave in
    # two segments and the client's delayed ACK adds ~40 ms to every request.
    wbufsize = -1
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.owner.lock:
            self.owner._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.owner.lock:
            self.owner._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def version_string(self) -> str:
        return "GitHub.com"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, headers, payload = self.owner.handle(
            self.command, self.path, dict(self.headers.items()), raw
        )
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload and self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()
        except (ConnectionError, OSError):  # the client gave up (timeout tests)
            self.close_connection = True

    do_GET = _serve
    do_POST = _serve
    do_PATCH = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_HEAD = _serve
