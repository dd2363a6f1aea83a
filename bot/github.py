"""The one seam to GitHub's REST API, on PyGithub.

App JWTs (RS256, issued 60 s in the past, 5 minutes long) and installation tokens (cached by
PyGithub until shortly before they expire) come from PyGithub's ``Auth.AppAuth``, signed with
the private key parsed once here: parsing a PEM key takes ~40 ms of CPU that holds the GIL,
which stalled the webhook's event loop each time a worker needed a token. This module
adds what an App needs on top: retries of 5xx answers with backoff, ``Retry-After`` and
rate-limit resets honoured, no retry of 4xx validation errors, paced writes, and metrics.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from github import Auth, Github, GithubException

from bot.errors import GitHubError, NotFound, RateLimited, Unprocessable
from bot.metrics import Metrics
from pipeline.retry import full_jitter

ANNOTATIONS_PER_REQUEST = 50
#: Longest wait for a rate limit inside one job; longer ones fail the job for a later retry.
MAX_INLINE_WAIT = 30.0


def load_private_key(pem: str) -> RSAPrivateKey:
    """The App's RSA private key from its PEM text.

    Raises:
        ValueError: the text is not an unencrypted RSA private key in PEM form.
    """
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the private key cannot be read: {exc}") from exc
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("the private key is not an RSA key (GitHub Apps sign with RS256)")
    return key


def seg(value: object) -> str:
    """One URL path segment, percent-encoded: a ``/``, ``#``, ``?`` or ``%`` in a name a
    contributor chose cannot change which resource a request reaches."""
    return quote(str(value), safe="")


def repo_path(repo: str) -> str:
    """``/repos/{owner}/{repo}`` with both parts encoded."""
    owner, _, name = repo.partition("/")
    return f"/repos/{seg(owner)}/{seg(name)}"


def file_path(path: str) -> str:
    """A repository file path for the contents API: each segment encoded, slashes kept."""
    return "/".join(seg(part) for part in path.split("/"))


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Why a file could not be read at a ref (the reason is shown to the contributor)."""

    reason: str
    hint: str


@dataclass
class _Pacer:
    interval: float
    last: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, sleep: Callable[[float], None]) -> None:
        with self.lock:
            gap = self.last + self.interval - time.monotonic()
            if gap > 0:
                sleep(gap)
            self.last = time.monotonic()


class GitHubClient:
    """GitHub for one App: its own calls (JWT) and its installations' calls (tokens)."""

    def __init__(
        self,
        app_id: int,
        private_key: str,
        base_url: str,
        *,
        metrics: Metrics | None = None,
        write_interval: float = 1.0,
        attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        timeout: int = 15,
    ) -> None:
        key = load_private_key(private_key)
        self._auth = Auth.AppAuth(
            app_id, sign_func=lambda payload: jwt.encode(payload, key, algorithm="RS256")
        )
        self._base_url = base_url.rstrip("/")
        self._metrics = metrics or Metrics()
        self._pacer = _Pacer(write_interval)
        self._attempts = attempts
        self._sleep = sleep
        self._timeout = timeout
        self._clients: dict[int | None, Github] = {}
        self._lock = threading.Lock()
        self._bot_login: str | None = None

    def _github(self, installation_id: int | None) -> Github:
        with self._lock:
            gh = self._clients.get(installation_id)
            if gh is None:
                auth: Auth.Auth = (
                    self._auth
                    if installation_id is None
                    else self._auth.get_installation_auth(installation_id)
                )
                gh = Github(
                    auth=auth,
                    base_url=self._base_url,
                    retry=None,
                    seconds_between_requests=None,
                    seconds_between_writes=None,
                    timeout=self._timeout,
                    per_page=100,
                )
                self._clients[installation_id] = gh
            return gh

    def request(
        self,
        installation_id: int | None,
        verb: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], Any]:
        """One REST call with the retry policy. ``installation_id=None`` uses the App's JWT."""
        gh = self._github(installation_id)
        route = _route(url)
        for attempt in range(1, self._attempts + 1):
            if verb != "GET":
                self._pacer.wait(self._sleep)
            try:
                headers, data = gh.requester.requestJsonAndCheck(
                    verb, url, parameters=params, input=body
                )
            except GithubException as exc:
                self._metrics.github_call(route, exc.status)
                self._note_rate(exc.headers or {})
                error = _classify(exc)
                if attempt < self._attempts and error.retryable:
                    self._sleep(self._wait_for(error, attempt))
                    continue
                raise error from exc
            self._metrics.github_call(route, 200)
            self._note_rate(headers)
            return headers, data
        raise GitHubError(599, "retries exhausted")  # pragma: no cover - loop always returns

    def _wait_for(self, error: GitHubError, attempt: int) -> float:
        if isinstance(error, RateLimited):
            if error.retry_after > MAX_INLINE_WAIT:
                raise error
            return error.retry_after
        return full_jitter(attempt, base=0.5, cap=8.0)

    def _note_rate(self, headers: dict[str, Any]) -> None:
        remaining = {k.lower(): v for k, v in headers.items()}.get("x-ratelimit-remaining")
        if remaining is not None:
            try:
                self._metrics.rate_limit_remaining = int(remaining)
            except ValueError:
                pass

    def paginate(
        self, installation_id: int | None, url: str, params: dict[str, Any] | None = None
    ) -> Iterator[Any]:
        """Every item of a paginated list endpoint (``per_page=100``, following ``page``)."""
        page = 1
        while True:
            query = {**(params or {}), "per_page": 100, "page": page}
            headers, data = self.request(installation_id, "GET", url, params=query)
            items = (
                data.get("workflow_runs", data.get("check_runs", data))
                if isinstance(data, dict)
                else data
            )
            yield from items or []
            link = {k.lower(): v for k, v in headers.items()}.get("link", "")
            if 'rel="next"' not in str(link) or not items:
                return
            page += 1

    # ---- the calls the handlers use -------------------------------------------------------

    def bot_login(self) -> str:
        """The App's bot user login, ``<slug>[bot]``."""
        if self._bot_login is None:
            _, app = self.request(None, "GET", "/app")
            self._bot_login = f"{app['slug']}[bot]"
        return self._bot_login

    def pull(self, inst: int | None, repo: str, number: int) -> dict[str, Any]:
        _, data = self.request(inst, "GET", f"{repo_path(repo)}/pulls/{seg(number)}")
        return dict(data)

    def pull_files(self, inst: int | None, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.paginate(inst, f"{repo_path(repo)}/pulls/{seg(number)}/files"))

    def default_branch(self, inst: int | None, repo: str) -> str:
        _, data = self.request(inst, "GET", repo_path(repo))
        return str(data.get("default_branch") or "main")

    def file_at(self, inst: int | None, repo: str, path: str, ref: str) -> bytes | None:
        """A file's bytes at ``ref``, or ``None`` when it is not a readable regular file there
        (missing, a folder, a symbolic link, a submodule)."""
        found = self.read_file(inst, repo, path, ref)
        return found if isinstance(found, bytes) else None

    def read_file(
        self, inst: int | None, repo: str, path: str, ref: str, max_bytes: int | None = None
    ) -> bytes | Unreadable:
        """A regular file's bytes at ``ref``, or why they cannot be had.

        A symbolic link is never followed: GitHub answers a link to a file of the repository
        with that file (under the target's own ``path``) and any other link with a ``symlink``
        object; both are reported. A file over ``max_bytes`` is not downloaded.
        """
        short = ref[:7]
        try:
            _, data = self.request(
                inst, "GET", f"{repo_path(repo)}/contents/{file_path(path)}", params={"ref": ref}
            )
        except NotFound:
            return Unreadable(
                f"this file could not be read at {short}: GitHub has no file at this path",
                "Push the file again; if it was renamed or deleted, check the pull request's "
                "file list.",
            )
        if isinstance(data, list):
            return Unreadable(
                "this is a folder, not a file",
                "A taxonomy leaf is a file named qna.yaml; rename the folder.",
            )
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "symlink" or (kind == "file" and data.get("path") != path):
            target = data.get("target") or data.get("path") or "?"
            return Unreadable(
                f"this is a symbolic link (to {str(target)[:200]}), which labbot does not follow",
                "Commit the file itself instead of a link (git rm the link, copy the file).",
            )
        if kind != "file":
            return Unreadable(
                f"this is not a file (GitHub reports a {str(kind)[:40]})",
                "A taxonomy leaf is a regular file named qna.yaml.",
            )
        size = data.get("size")
        if max_bytes is not None and isinstance(size, int) and size > max_bytes:
            return Unreadable(
                f"the file is {size:,} bytes; the limit is {max_bytes:,}",
                "Split the contribution or shorten the contexts; no real qna.yaml needs this much.",
            )
        if data.get("encoding") == "base64" and data.get("content") is not None:
            return base64.b64decode(data["content"])
        _, blob = self.request(inst, "GET", f"{repo_path(repo)}/git/blobs/{seg(data['sha'])}")
        return base64.b64decode(blob["content"])

    def commit_tree(self, inst: int | None, repo: str, ref: str) -> tuple[str, str]:
        """The commit SHA ``ref`` names and the SHA of its root tree."""
        _, data = self.request(inst, "GET", f"{repo_path(repo)}/commits/{seg(ref)}")
        return str(data["sha"]), str(data["commit"]["tree"]["sha"])

    def git_tree(
        self, inst: int | None, repo: str, tree_sha: str
    ) -> tuple[list[dict[str, Any]], bool]:
        """Every entry below a tree (one recursive Git Trees call), and whether GitHub
        truncated the listing (beyond 100,000 entries or 7 MB)."""
        _, data = self.request(
            inst, "GET", f"{repo_path(repo)}/git/trees/{seg(tree_sha)}", params={"recursive": "1"}
        )
        return [e for e in data.get("tree") or [] if isinstance(e, dict)], bool(
            data.get("truncated")
        )

    def blob(self, inst: int | None, repo: str, sha: str) -> bytes:
        """A blob's bytes by its SHA."""
        _, data = self.request(inst, "GET", f"{repo_path(repo)}/git/blobs/{seg(sha)}")
        return base64.b64decode(data["content"])

    def create_check_run(self, inst: int | None, repo: str, sha: str, name: str) -> int:
        _, data = self.request(
            inst,
            "POST",
            f"{repo_path(repo)}/check-runs",
            body={"name": name, "head_sha": sha, "status": "in_progress"},
        )
        return int(data["id"])

    def complete_check_run(
        self,
        inst: int | None,
        repo: str,
        run_id: int,
        *,
        conclusion: str,
        title: str,
        summary: str,
        annotations: list[dict[str, Any]],
    ) -> None:
        """Complete a check run; annotations go in batches of 50, as GitHub requires."""
        batches = [
            annotations[i : i + ANNOTATIONS_PER_REQUEST]
            for i in range(0, len(annotations), ANNOTATIONS_PER_REQUEST)
        ] or [[]]
        for i, batch in enumerate(batches):
            output: dict[str, Any] = {"title": title, "summary": summary}
            if batch:
                output["annotations"] = batch
            body: dict[str, Any] = {"output": output}
            if i == len(batches) - 1:
                body.update(status="completed", conclusion=conclusion)
            self.request(inst, "PATCH", f"{repo_path(repo)}/check-runs/{seg(run_id)}", body=body)

    def reopen_check_run(self, inst: int | None, repo: str, run_id: int) -> None:
        """Put a completed check run back ``in_progress`` (a retried or repeated validation)."""
        self.request(
            inst,
            "PATCH",
            f"{repo_path(repo)}/check-runs/{seg(run_id)}",
            body={"status": "in_progress"},
        )

    def check_runs_for(self, inst: int | None, repo: str, ref: str, name: str) -> list[Any]:
        return list(
            self.paginate(
                inst, f"{repo_path(repo)}/commits/{seg(ref)}/check-runs", {"check_name": name}
            )
        )

    def find_stickies(
        self, inst: int | None, repo: str, number: int, marker: str
    ) -> list[dict[str, Any]]:
        """Every comment of the App on the PR that carries ``marker``, oldest first."""
        login = self.bot_login()
        return [
            dict(comment)
            for comment in self.paginate(inst, f"{repo_path(repo)}/issues/{seg(number)}/comments")
            if marker in (comment.get("body") or "")
            and comment.get("user", {}).get("login") == login
        ]

    def create_comment(self, inst: int | None, repo: str, number: int, body: str) -> int:
        _, data = self.request(
            inst, "POST", f"{repo_path(repo)}/issues/{seg(number)}/comments", body={"body": body}
        )
        return int(data["id"])

    def edit_comment(self, inst: int | None, repo: str, comment_id: int, body: str) -> None:
        self.request(
            inst,
            "PATCH",
            f"{repo_path(repo)}/issues/comments/{seg(comment_id)}",
            body={"body": body},
        )

    def delete_comment(self, inst: int | None, repo: str, comment_id: int) -> None:
        self.request(inst, "DELETE", f"{repo_path(repo)}/issues/comments/{seg(comment_id)}")

    def add_labels(self, inst: int | None, repo: str, number: int, labels: list[str]) -> None:
        if labels:
            self.request(
                inst,
                "POST",
                f"{repo_path(repo)}/issues/{seg(number)}/labels",
                body={"labels": labels},
            )

    def permission(self, inst: int | None, repo: str, user: str) -> str:
        try:
            _, data = self.request(
                inst, "GET", f"{repo_path(repo)}/collaborators/{seg(user)}/permission"
            )
        except NotFound:
            return "none"
        return str(data.get("permission") or "none")

    def react(self, inst: int | None, repo: str, comment_id: int, content: str = "eyes") -> None:
        self.request(
            inst,
            "POST",
            f"{repo_path(repo)}/issues/comments/{seg(comment_id)}/reactions",
            body={"content": content},
        )

    def open_pulls(self, inst: int | None, repo: str) -> list[dict[str, Any]]:
        return list(self.paginate(inst, f"{repo_path(repo)}/pulls", {"state": "open"}))

    def installations(self) -> list[dict[str, Any]]:
        return list(self.paginate(None, "/app/installations"))

    def installation_repos(self, inst: int) -> list[dict[str, Any]]:
        _, data = self.request(inst, "GET", "/installation/repositories", params={"per_page": 100})
        return list(data.get("repositories", []))

    def dispatch_workflow(
        self, inst: int | None, repo: str, workflow: str, ref: str, inputs: dict[str, str]
    ) -> None:
        self.request(
            inst,
            "POST",
            f"{repo_path(repo)}/actions/workflows/{seg(workflow)}/dispatches",
            body={"ref": ref, "inputs": inputs},
        )

    def repository_dispatch(
        self, inst: int | None, repo: str, event_type: str, payload: dict[str, Any]
    ) -> None:
        self.request(
            inst,
            "POST",
            f"{repo_path(repo)}/dispatches",
            body={"event_type": event_type, "client_payload": payload},
        )

    def run_artifacts(self, inst: int | None, repo: str, run_id: int) -> list[dict[str, Any]]:
        _, data = self.request(
            inst, "GET", f"{repo_path(repo)}/actions/runs/{seg(run_id)}/artifacts"
        )
        return list(data.get("artifacts", []))

    def download_artifact(
        self, inst: int | None, repo: str, artifact_id: int, max_bytes: int = 64 << 20
    ) -> bytes:
        """An artifact's zip archive. GitHub answers with a redirect to a short-lived storage
        URL, which is fetched without the App's token."""
        import httpx

        gh = self._github(inst)
        status, headers, _ = gh.requester.requestJson(
            "GET", f"{repo_path(repo)}/actions/artifacts/{seg(artifact_id)}/zip"
        )
        self._metrics.github_call(_route("/repos/o/r/actions/artifacts/1/zip"), status)
        location = {k.lower(): v for k, v in headers.items()}.get("location")
        if status != 302 or not location:
            raise GitHubError(status, "artifact download did not redirect", retryable=status >= 500)
        with httpx.stream("GET", location, timeout=60, follow_redirects=True) as response:
            if response.status_code != 200:
                raise GitHubError(response.status_code, "artifact storage refused the download")
            data = b""
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise GitHubError(413, f"artifact larger than {max_bytes} bytes", False)
        return data

    def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        _, data = self.request(None, "GET", "/app/hook/deliveries", params={"per_page": limit})
        return list(data or [])

    def redeliver(self, delivery_id: int) -> None:
        self.request(None, "POST", f"/app/hook/deliveries/{seg(delivery_id)}/attempts")


#: The literal words of the API paths labbot calls; any other segment is a name or a number.
_ROUTE_WORDS = frozenset(
    "app hook deliveries attempts installations installation repositories repos pulls files "
    "contents git blobs check-runs commits issues comments labels collaborators permission "
    "reactions actions workflows dispatches runs artifacts zip access_tokens".split()
)


def _route(url: str) -> str:
    """A bounded label for metrics: API words kept, every other segment a placeholder, and
    nothing after ``contents`` (a file path a contributor chose)."""
    out: list[str] = []
    for part in url.split("?")[0].split("/")[1:]:
        if part in _ROUTE_WORDS:
            out.append(part)
            if part == "contents":
                out.append("{path}")
                break
        elif not out or out[-1] != "{x}":
            out.append("{x}")
    return "/" + "/".join(out)


def _classify(exc: GithubException) -> GitHubError:
    status = exc.status
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    message = ""
    if isinstance(exc.data, dict):
        message = str(exc.data.get("message", ""))
    if status in (403, 429):
        retry_after = headers.get("retry-after")
        if retry_after is not None:
            try:
                return RateLimited(status, message or "rate limited", float(retry_after))
            except ValueError:
                pass
        if headers.get("x-ratelimit-remaining") == "0":
            reset = float(headers.get("x-ratelimit-reset", time.time() + 60))
            return RateLimited(
                status, message or "rate limit exhausted", max(1.0, reset - time.time())
            )
        if status == 429 or "secondary rate limit" in message.lower():
            return RateLimited(status, message or "secondary rate limit", 60.0)
    if status == 404:
        return NotFound(message or "not found")
    if status == 422:
        return Unprocessable(message or "validation failed")
    return GitHubError(status, message or "error", retryable=status >= 500)
