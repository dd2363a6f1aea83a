"""An offline, contract-checked fake of GitHub for labbot's tests.

Quick start (PyGithub 2.10)::

    from github import Auth, Github, GithubIntegration
    from fakegithub import FakeGitHub, github_kwargs

    with FakeGitHub() as fake:
        app = fake.create_app("labbot")
        inst = fake.create_installation("org")
        repo = fake.create_repo("org/taxonomy", files={"README.md": "hi"})
        pr = repo.create_pull(head="add-qna", files={"knowledge/x/qna.yaml": "version: 3\n"})

        auth = Auth.AppAuth(app.id, app.private_key_pem).get_installation_auth(inst.id)
        gh = Github(auth=auth, **github_kwargs(fake))
        gh.get_repo("org/taxonomy").get_pull(pr.number).create_issue_comment("hello")
        gh.close()
        assert pr.comments[0].user == "labbot[bot]"

Leaving the ``with`` block raises ``ContractViolationError`` if any request or response broke
GitHub's OpenAPI contract. See ``server.py`` for the rules and ``README.md`` in this folder.
"""

from __future__ import annotations

from .contract import Contract
from .server import (
    Call,
    ContractViolationError,
    FakeGitHub,
    Fault,
    Setup,
    Violation,
    github_kwargs,
)
from .state import (
    App,
    Artifact,
    CheckRun,
    Delivery,
    FileChange,
    Installation,
    Issue,
    IssueComment,
    PullRequest,
    Repo,
    Symlink,
    Workflow,
    WorkflowRun,
)
from .webhooks import (
    available_payloads,
    encode_payload,
    load_payload,
    payload_index,
    retarget,
    send_webhook,
    sign,
    webhook_headers,
)

__all__ = [
    "App",
    "Artifact",
    "Call",
    "CheckRun",
    "Contract",
    "ContractViolationError",
    "Delivery",
    "FakeGitHub",
    "Fault",
    "FileChange",
    "Installation",
    "Issue",
    "IssueComment",
    "PullRequest",
    "Repo",
    "Setup",
    "Symlink",
    "Violation",
    "Workflow",
    "WorkflowRun",
    "available_payloads",
    "encode_payload",
    "github_kwargs",
    "load_payload",
    "payload_index",
    "retarget",
    "send_webhook",
    "sign",
    "webhook_headers",
]
