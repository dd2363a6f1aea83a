"""Real GitHub webhook payloads, signed and delivered as GitHub delivers them.

* ``load_payload("pull_request", "opened")`` reads ``tests/fixtures/github/webhooks/`` (real
  payloads from ``@octokit/webhooks-examples``; see that folder's README and ``index.json``).
* ``retarget(payload, repo="org/taxonomy", number=3, head_sha=..., installation_id=...)`` points
  a real payload at the objects a test set up, keeping everything else as GitHub sent it.
* ``send_webhook(target, secret, event, payload)`` signs the exact body bytes with
  HMAC-SHA256 (and the legacy SHA-1) and POSTs them with GitHub's full header set, to a URL or
  through any client with a ``post`` method (FastAPI's ``TestClient``, ``httpx.Client``).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import httpx

from .contract import FIXTURES_DIR

WEBHOOKS_DIR = FIXTURES_DIR / "webhooks"
HOOKSHOT_USER_AGENT = "GitHub-Hookshot/5d2b6f1"
DEFAULT_HOOK_ID = 412_412_412


class PostClient(Protocol):
    def post(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> httpx.Response: ...


def payload_path(event: str, action: str | None = None, variant: str | None = None) -> Path:
    name = ".".join(part for part in (event, action, variant) if part) + ".json"
    return WEBHOOKS_DIR / name


@cache
def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_payload(event: str, action: str | None = None, variant: str | None = None) -> Any:
    """A fresh (deep-copied) real payload, e.g. ``load_payload("issue_comment", "created",
    "pull_request")`` for the derived comment-on-a-PR payload."""
    path = payload_path(event, action, variant)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in WEBHOOKS_DIR.glob("*.*.json")))
        raise FileNotFoundError(f"no payload {path.name}; available: {known}")
    return copy.deepcopy(_read(path))


def available_payloads() -> list[str]:
    return sorted(p.stem for p in WEBHOOKS_DIR.glob("*.json") if p.name != "index.json")


def payload_index() -> dict[str, Any]:
    """``webhooks/index.json``: provenance and current-schema validity of every payload."""
    data: dict[str, Any] = copy.deepcopy(_read(WEBHOOKS_DIR / "index.json"))
    return data


# -- signing and delivery ------------------------------------------------------------------------


def encode_payload(payload: Any) -> bytes:
    """GitHub's wire form: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str | bytes, body: bytes, algorithm: str = "sha256") -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    digest = hmac.new(key, body, getattr(hashlib, algorithm)).hexdigest()
    return f"{algorithm}={digest}"


def webhook_headers(
    event: str,
    body: bytes,
    secret: str | bytes | None,
    *,
    delivery_id: str | None = None,
    hook_id: int = DEFAULT_HOOK_ID,
    installation_target_id: int | None = None,
    installation_target_type: str = "integration",
) -> dict[str, str]:
    """The headers GitHub sends with an App webhook delivery.

    ``installation_target_id`` is the App's id for App webhooks. Without a secret GitHub
    sends no signature headers.
    """
    headers = {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": HOOKSHOT_USER_AGENT,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Event": event,
        "X-GitHub-Hook-ID": str(hook_id),
        "X-GitHub-Hook-Installation-Target-ID": str(installation_target_id or hook_id),
        "X-GitHub-Hook-Installation-Target-Type": installation_target_type,
    }
    if secret is not None:
        headers["X-Hub-Signature"] = sign(secret, body, "sha1")
        headers["X-Hub-Signature-256"] = sign(secret, body, "sha256")
    return headers


def send_webhook(
    target: str | PostClient,
    secret: str | bytes | None,
    event: str,
    payload: Any,
    delivery_id: str | None = None,
    *,
    path: str = "/",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    **header_options: Any,
) -> httpx.Response:
    """Sign ``payload`` and POST it like GitHub does; return the receiver's response.

    ``target`` is a URL (``http://127.0.0.1:8000/webhook``) or a client with ``post`` (then
    ``path`` is the URL path). ``body`` overrides the encoding (to test byte-exact signing),
    ``headers`` are merged last (to test a bad signature or a missing header).
    ``header_options`` go to :func:`webhook_headers` (``hook_id``,
    ``installation_target_id``, ``installation_target_type``).
    """
    raw = body if body is not None else encode_payload(payload)
    sent = webhook_headers(event, raw, secret, delivery_id=delivery_id, **header_options)
    sent.update(headers or {})
    if isinstance(target, str):
        return httpx.post(target, content=raw, headers=sent, timeout=timeout)
    return target.post(path, content=raw, headers=sent)


# -- retargeting real payloads -------------------------------------------------------------------


def _replace_strings(node: Any, old: str, new: str) -> Any:
    if isinstance(node, str):
        return node.replace(old, new)
    if isinstance(node, list):
        return [_replace_strings(v, old, new) for v in node]
    if isinstance(node, dict):
        return {k: _replace_strings(v, old, new) for k, v in node.items()}
    return node


def _sub_strings(node: Any, pattern: re.Pattern[str], new: str) -> Any:
    if isinstance(node, str):
        return pattern.sub(new, node)
    if isinstance(node, list):
        return [_sub_strings(v, pattern, new) for v in node]
    if isinstance(node, dict):
        return {k: _sub_strings(v, pattern, new) for k, v in node.items()}
    return node


def _set_user(node: Any, login: str, user_type: str = "User", user_id: int | None = None) -> None:
    if not isinstance(node, dict):
        return
    old = node.get("login")
    if isinstance(old, str) and old:
        for key, value in list(node.items()):
            if isinstance(value, str) and key.endswith("url"):
                node[key] = value.replace(f"/{old}", f"/{login}")
    node["login"] = login
    node["type"] = user_type
    if user_id is not None:
        node["id"] = user_id


def _renumber(node: Any, kinds: tuple[str, ...], old: int, new: int) -> Any:
    for kind in kinds:
        node = _replace_strings(node, f"/{kind}/{old}", f"/{kind}/{new}")
    return node


def retarget(
    payload: Mapping[str, Any],
    *,
    repo: str | None = None,
    repo_id: int | None = None,
    default_branch: str | None = None,
    private: bool | None = None,
    installation_id: int | None = None,
    sender: str | None = None,
    sender_type: str = "User",
    number: int | None = None,
    title: str | None = None,
    author: str | None = None,
    head_sha: str | None = None,
    head_ref: str | None = None,
    base_sha: str | None = None,
    base_ref: str | None = None,
    draft: bool | None = None,
    merged: bool | None = None,
    merge_commit_sha: str | None = None,
    comment_id: int | None = None,
    comment_body: str | None = None,
    comment_user: str | None = None,
    comment_user_type: str = "User",
    check_run_id: int | None = None,
    check_name: str | None = None,
    app_id: int | None = None,
    run_id: int | None = None,
    workflow_id: int | None = None,
    api_url: str | None = None,
) -> dict[str, Any]:
    """A copy of a real payload pointed at a test's repository, PR, comment or run.

    Only the named fields change (plus the URLs that embed them); the rest stays as GitHub
    sent it. ``api_url`` rewrites ``https://api.github.com`` (e.g. to the fake's URL).
    """
    out: dict[str, Any] = copy.deepcopy(dict(payload))
    repository = out.get("repository")
    if repo is not None and isinstance(repository, dict):
        old_full = str(repository.get("full_name", ""))
        old_owner = old_full.split("/", 1)[0]
        new_owner, new_name = repo.split("/", 1)
        if old_full:
            # "owner/name" inside URLs (after "/" or ":"), not inside longer names.
            pattern = re.compile(rf"(?<=[/:]){re.escape(old_full)}(?=$|[/.?#{{])")
            out = _sub_strings(out, pattern, repo)
        repository = out["repository"]
        repository["name"] = new_name
        repository["full_name"] = repo
        if isinstance(repository.get("owner"), dict):
            _set_user(repository["owner"], new_owner, repository["owner"].get("type", "User"))
        for key in ("organization",):
            org = out.get(key)
            if isinstance(org, dict) and org.get("login") == old_owner:
                org["login"] = new_owner
        for side in ("head", "base"):
            pr_side = out.get("pull_request", {}).get(side) if "pull_request" in out else None
            if isinstance(pr_side, dict) and isinstance(pr_side.get("repo"), dict):
                pr_side["repo"]["name"] = new_name
                pr_side["repo"]["full_name"] = repo
                if isinstance(pr_side.get("user"), dict):
                    _set_user(pr_side["user"], new_owner, pr_side["user"].get("type", "User"))
                pr_side["label"] = f"{new_owner}:{pr_side.get('ref', '')}"
    repository = out.get("repository")
    if isinstance(repository, dict):
        if repo_id is not None:
            repository["id"] = repo_id
        if default_branch is not None:
            repository["default_branch"] = default_branch
            if "master_branch" in repository:
                repository["master_branch"] = default_branch
        if private is not None:
            repository["private"] = private
            if "visibility" in repository:
                repository["visibility"] = "private" if private else "public"

    if installation_id is not None:
        current = out.get("installation")
        if isinstance(current, dict) and "account" in current:
            # installation.* events carry the full installation object: keep its shape
            current["id"] = installation_id
            out = _sub_strings(
                out, re.compile(r"(?<=/installations/)\d+(?=$|[/?#])"), str(installation_id)
            )
        else:
            out["installation"] = {
                "id": installation_id,
                "node_id": f"MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u{installation_id}",
            }
    if sender is not None and isinstance(out.get("sender"), dict):
        _set_user(out["sender"], sender, sender_type)

    pr = out.get("pull_request")
    if isinstance(pr, dict):
        old_number = pr.get("number")
        if number is not None and isinstance(old_number, int):
            out["pull_request"] = pr = _renumber(
                pr, ("pulls", "pull", "issues"), old_number, number
            )
            pr["number"] = number
            if "number" in out:
                out["number"] = number
        if title is not None:
            pr["title"] = title
        if author is not None:
            _set_user(pr.get("user"), author)
        if head_sha is not None:
            pr["head"]["sha"] = head_sha
            for key in ("statuses_url",):
                if key in pr:
                    pr[key] = pr[key].rsplit("/", 1)[0] + "/" + head_sha
        if head_ref is not None:
            pr["head"]["ref"] = head_ref
            pr["head"]["label"] = pr["head"]["label"].split(":")[0] + ":" + head_ref
        if base_sha is not None:
            pr["base"]["sha"] = base_sha
        if base_ref is not None:
            pr["base"]["ref"] = base_ref
            pr["base"]["label"] = pr["base"]["label"].split(":")[0] + ":" + base_ref
        if draft is not None:
            pr["draft"] = draft
        if merged is not None:
            pr["merged"] = merged
        if merge_commit_sha is not None:
            pr["merge_commit_sha"] = merge_commit_sha

    issue = out.get("issue")
    if isinstance(issue, dict):
        old_number = issue.get("number")
        if number is not None and isinstance(old_number, int):
            out["issue"] = issue = _renumber(issue, ("pulls", "pull", "issues"), old_number, number)
            issue["number"] = number
            if isinstance(out.get("comment"), dict):
                out["comment"] = _renumber(out["comment"], ("pull", "issues"), old_number, number)
        if title is not None:
            issue["title"] = title
        if author is not None:
            _set_user(issue.get("user"), author)

    comment = out.get("comment")
    if isinstance(comment, dict):
        old_id = comment.get("id")
        if comment_id is not None and isinstance(old_id, int):
            out["comment"] = comment = _replace_strings(
                comment, f"comments/{old_id}", f"comments/{comment_id}"
            )
            comment = _replace_strings(
                comment, f"issuecomment-{old_id}", f"issuecomment-{comment_id}"
            )
            out["comment"] = comment
            comment["id"] = comment_id
        if comment_body is not None:
            comment["body"] = comment_body
        if comment_user is not None:
            _set_user(comment.get("user"), comment_user, comment_user_type)

    for key in ("check_run", "check_suite"):
        node = out.get(key)
        if isinstance(node, dict) and head_sha is not None:
            node["head_sha"] = head_sha
            suite = node.get("check_suite")
            if isinstance(suite, dict):
                suite["head_sha"] = head_sha
    check = out.get("check_run")
    if isinstance(check, dict):
        if check_run_id is not None and isinstance(check.get("id"), int):
            check = _sub_strings(
                check,
                re.compile(rf"(?<=/check-runs/){check['id']}(?=$|[/?#])|(?<=/runs/){check['id']}$"),
                str(check_run_id),
            )
            check["id"] = check_run_id
            out["check_run"] = check
        if check_name is not None:
            check["name"] = check_name
        if app_id is not None and isinstance(check.get("app"), dict):
            check["app"]["id"] = app_id

    run = out.get("workflow_run")
    if isinstance(run, dict):
        if run_id is not None:
            old_run = run.get("id")
            if isinstance(old_run, int):
                run = _replace_strings(run, f"/runs/{old_run}", f"/runs/{run_id}")
            run["id"] = run_id
        if head_sha is not None:
            run["head_sha"] = head_sha
            if isinstance(run.get("head_commit"), dict):
                run["head_commit"]["id"] = head_sha
        if head_ref is not None:
            run["head_branch"] = head_ref
        if workflow_id is not None:
            run["workflow_id"] = workflow_id
        out["workflow_run"] = run
    job = out.get("workflow_job")
    if isinstance(job, dict):
        if run_id is not None:
            old_run = job.get("run_id")
            if isinstance(old_run, int):
                job = _replace_strings(job, f"/runs/{old_run}", f"/runs/{run_id}")
            job["run_id"] = run_id
        if head_sha is not None:
            job["head_sha"] = head_sha
        if head_ref is not None and "head_branch" in job:
            job["head_branch"] = head_ref
        out["workflow_job"] = job
    if isinstance(out.get("workflow"), dict) and workflow_id is not None:
        out["workflow"]["id"] = workflow_id

    if api_url is not None:
        out = _replace_strings(out, "https://api.github.com", api_url.rstrip("/"))
    return out
