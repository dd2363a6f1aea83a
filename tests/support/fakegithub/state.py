"""In-memory state of the fake: apps, installations, repositories and what the App did to them.

Setup helpers live on these objects (``repo.commit``, ``repo.create_pull``, ``pr.push``,
``pr.merge`` ...), and so does what tests assert on afterwards (``repo.check_runs``,
``pr.comments``, ``repo.workflow_dispatches`` ...). Every mutation takes the fake's lock, so
tests may read and write while the server thread is serving.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

if TYPE_CHECKING:
    from .server import FakeGitHub

PermissionLevel = Literal["read", "write", "admin"]
RoleName = Literal["admin", "maintain", "write", "triage", "read", "none"]

DEFAULT_APP_PERMISSIONS: dict[str, str] = {
    "actions": "write",
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
}
DEFAULT_APP_EVENTS: list[str] = [
    "check_run",
    "check_suite",
    "issue_comment",
    "pull_request",
    "push",
    "workflow_job",
    "workflow_run",
]
LARGE_FILE_BYTES = 1024 * 1024  # GitHub returns encoding "none" for contents above 1 MB
_SHARED_KEY_PAIR: tuple[str, str] | None = None
_KEY_LOCK = threading.Lock()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry of a git tree listing: ``path`` from the listed tree, ``mode`` as the API
    writes it (``100644``, ``120000``, ``040000``), ``type`` (``blob`` or ``tree``)."""

    path: str
    mode: str
    type: str
    sha: str
    size: int | None


def git_trees(files: Mapping[str, bytes]) -> dict[str, tuple[str, list[TreeEntry]]]:
    """Git's tree objects of a flat ``path -> content`` map, hashed as git hashes them: for the
    root (``""``) and every folder, its tree SHA and its recursive listing (paths relative to
    that folder, parents before children, in git's order)."""
    nested: dict[str, Any] = {}
    for path, data in files.items():
        node = nested
        *folders, name = path.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = data
    out: dict[str, tuple[str, list[TreeEntry]]] = {}

    def visit(node: dict[str, Any], where: str) -> str:
        # git orders entries by name, a folder's name compared as if it ended with "/"
        names = sorted(node, key=lambda n: n + "/" if isinstance(node[n], dict) else n)
        raw, listing = b"", []
        for name in names:
            value = node[name]
            if isinstance(value, dict):
                sha = visit(value, f"{where}{name}/")
                raw += b"40000 " + name.encode() + b"\0" + bytes.fromhex(sha)
                listing.append(TreeEntry(name, "040000", "tree", sha, None))
                listing += [
                    TreeEntry(f"{name}/{e.path}", e.mode, e.type, e.sha, e.size)
                    for e in out[f"{where}{name}"][1]
                ]
            else:
                mode = "120000" if isinstance(value, Symlink) else "100644"
                sha = blob_sha(value)
                raw += mode.encode() + b" " + name.encode() + b"\0" + bytes.fromhex(sha)
                listing.append(TreeEntry(name, mode, "blob", sha, len(value)))
        sha = hashlib.sha1(b"tree %d\0" % len(raw) + raw).hexdigest()
        out[where.rstrip("/")] = (sha, listing)
        return sha

    visit(nested, "")
    return out


class Symlink(bytes):
    """A tree entry that is a symbolic link (git mode ``120000``); its bytes are the target path,
    as git stores it. Commit one with ``repo.commit({"a/qna.yaml": Symlink(b"../b/qna.yaml")})``.
    """


def resolve_symlink(tree: Mapping[str, bytes], path: str) -> str | None:
    """The tree path a symlink at ``path`` points to, or ``None`` when it leaves the tree."""
    target = tree[path].decode("utf-8", "replace")
    if target.startswith("/"):
        return None
    parts: list[str] = path.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


class Clock:
    """Wall-clock time plus an offset tests can advance (token expiry, rate-limit resets)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        import time

        return time.time() + self.offset


class Ids:
    def __init__(self, start: int = 1000) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._counter)


# -- apps and installations ---------------------------------------------------------------------


@dataclass
class App:
    id: int
    slug: str
    name: str
    owner: str
    client_id: str
    permissions: dict[str, str]
    events: list[str]
    webhook_secret: str
    private_key_pem: str = field(repr=False)
    public_key_pem: str = field(repr=False)
    created_at: float = 0.0

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"

    @staticmethod
    def generate_key_pair(*, fresh: bool = True) -> tuple[str, str]:
        """A 2048-bit RSA key pair as PEM (private: PKCS#1, public: SubjectPublicKeyInfo).

        ``fresh=False`` reuses one pair per process (key generation costs ~0.1 s).
        """
        global _SHARED_KEY_PAIR
        if not fresh:
            with _KEY_LOCK:
                if _SHARED_KEY_PAIR is None:
                    _SHARED_KEY_PAIR = App.generate_key_pair()
                return _SHARED_KEY_PAIR
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode("ascii")
        public = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )
        return private, public


@dataclass
class Installation:
    id: int
    app: App
    account: str
    account_type: str
    permissions: dict[str, str]
    events: list[str]
    repository_selection: Literal["all", "selected"]
    repositories: set[str]  # full names, used when repository_selection == "selected"
    created_at: float = 0.0
    suspended: bool = False

    def covers(self, full_name: str) -> bool:
        if self.repository_selection == "selected":
            return full_name.lower() in {r.lower() for r in self.repositories}
        return full_name.split("/", 1)[0].lower() == self.account.lower()


@dataclass
class Token:
    token: str
    installation: Installation
    expires_at: float
    permissions: dict[str, str]
    repositories: set[str] | None  # None: everything the installation covers


# -- content store --------------------------------------------------------------------------------


@dataclass
class Commit:
    sha: str
    parent: str | None
    tree: dict[str, bytes]
    message: str
    author: str
    date: float


@dataclass
class FileChange:
    """One entry of ``GET /pulls/{n}/files`` (GitHub's ``diff-entry``)."""

    filename: str
    status: Literal["added", "removed", "modified", "renamed", "copied", "changed", "unchanged"]
    additions: int = 0
    deletions: int = 0
    patch: str | None = None
    previous_filename: str | None = None
    sha: str | None = None


def diff_trees(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> list[FileChange]:
    changes: list[FileChange] = []
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        a_lines = (before or b"").decode("utf-8", "replace").splitlines()
        b_lines = (after or b"").decode("utf-8", "replace").splitlines()
        patch_lines = list(difflib.unified_diff(a_lines, b_lines, lineterm="", n=3))[2:]
        additions = sum(1 for x in patch_lines if x.startswith("+"))
        deletions = sum(1 for x in patch_lines if x.startswith("-"))
        status: Literal["added", "removed", "modified"]
        if before is None:
            status = "added"
        elif after is None:
            status = "removed"
        else:
            status = "modified"
        changes.append(
            FileChange(
                filename=path,
                status=status,
                additions=additions,
                deletions=deletions,
                patch="\n".join(patch_lines) or None,
                sha=blob_sha(after) if after is not None else blob_sha(before or b""),
            )
        )
    return changes


# -- repository objects ---------------------------------------------------------------------------


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None
    default: bool = False


@dataclass
class Reaction:
    id: int
    content: str
    user: str
    user_type: str
    created_at: float


@dataclass
class IssueComment:
    id: int
    issue_number: int
    body: str
    user: str
    user_type: str  # "User" or "Bot"
    created_at: float
    updated_at: float
    app: App | None = None  # performed_via_github_app
    reactions: list[Reaction] = field(default_factory=list)
    deleted: bool = False


@dataclass
class Issue:
    number: int
    title: str
    body: str | None
    user: str
    state: Literal["open", "closed"] = "open"
    labels: list[str] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0
    closed_at: float | None = None
    comments: list[IssueComment] = field(default_factory=list)

    @property
    def live_comments(self) -> list[IssueComment]:
        return [c for c in self.comments if not c.deleted]


@dataclass
class PullRequest(Issue):
    id: int = 0
    head_ref: str = ""
    head_sha: str = ""
    base_ref: str = "main"
    base_sha: str = ""
    draft: bool = False
    merged: bool = False
    merged_at: float | None = None
    merge_commit_sha: str | None = None
    merged_by: str | None = None
    files_override: list[FileChange] | None = None
    author_association: str = "CONTRIBUTOR"
    repo: Repo | None = field(default=None, repr=False)

    @property
    def files(self) -> list[FileChange]:
        if self.files_override is not None:
            return self.files_override
        assert self.repo is not None
        return diff_trees(self.repo.tree(self.base_sha), self.repo.tree(self.head_sha))

    def push(self, files: Mapping[str, str | bytes | None], message: str = "update") -> str:
        """Add a commit to the head branch (what a ``synchronize`` event reports)."""
        assert self.repo is not None
        with self.repo.lock:
            sha = self.repo.commit(files, branch=self.head_ref, message=message, author=self.user)
            self.head_sha = sha
            self.updated_at = self.repo.clock.now()
            return sha

    def merge(self, *, merged_by: str = "maintainer", merge_commit_sha: str | None = None) -> str:
        """Merge into the base branch: a merge commit with the head tree lands on base."""
        assert self.repo is not None
        repo = self.repo
        with repo.lock:
            if self.state != "open":
                raise ValueError(f"pull request #{self.number} is not open")
            head_tree = repo.tree(self.head_sha)
            base_tree = dict(repo.tree(repo.branches[self.base_ref]))
            merged = dict(base_tree)
            for change in diff_trees(repo.tree(self.base_sha), head_tree):
                if change.status == "removed":
                    merged.pop(change.filename, None)
                else:
                    merged[change.filename] = head_tree[change.filename]
            sha = repo.commit_tree(
                merged,
                branch=self.base_ref,
                message=f"Merge pull request #{self.number} from {self.head_ref}",
                author=merged_by,
                sha=merge_commit_sha,
            )
            now = repo.clock.now()
            self.state = "closed"
            self.merged = True
            self.merged_at = now
            self.closed_at = now
            self.updated_at = now
            self.merge_commit_sha = sha
            self.merged_by = merged_by
            return sha

    def close(self) -> None:
        assert self.repo is not None
        with self.repo.lock:
            self.state = "closed"
            self.closed_at = self.updated_at = self.repo.clock.now()

    def reopen(self) -> None:
        assert self.repo is not None
        with self.repo.lock:
            self.state = "open"
            self.closed_at = None
            self.updated_at = self.repo.clock.now()


@dataclass
class Annotation:
    path: str
    start_line: int
    end_line: int
    annotation_level: str
    message: str
    start_column: int | None = None
    end_column: int | None = None
    title: str | None = None
    raw_details: str | None = None


@dataclass
class CheckRun:
    id: int
    name: str
    head_sha: str
    app: App
    check_suite_id: int
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    details_url: str | None = None
    external_id: str | None = None
    title: str | None = None
    summary: str | None = None
    text: str | None = None
    annotations: list[Annotation] = field(default_factory=list)
    actions: list[dict[str, str]] = field(default_factory=list)
    updates: int = 0  # PATCHes received


@dataclass
class Workflow:
    id: int
    name: str
    path: str
    state: str = "active"
    inputs: dict[str, dict[str, Any]] | None = None  # declared inputs; None: accept any
    created_at: float = 0.0
    run_name: str | None = None  # the file's `run-name:`, e.g. "build ${{ inputs.sha }}"

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Artifact:
    """A workflow run's uploaded artifact: a zip archive held in memory."""

    id: int
    name: str
    data: bytes
    created_at: float
    expired: bool = False


@dataclass
class WorkflowRun:
    id: int
    workflow: Workflow
    run_number: int
    event: str
    head_branch: str | None
    head_sha: str
    actor: str
    status: str = "queued"
    conclusion: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    display_title: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    run_started_at: float | None = None
    run_attempt: int = 1
    check_suite_id: int = 0
    artifacts: list[Artifact] = field(default_factory=list)
    head_repo: Repo | None = None  # where the head commit lives (a fork); None: this repository

    def set_status(self, status: str, conclusion: str | None = None) -> None:
        """Move the run along (queued -> in_progress -> completed) for tests."""
        self.status = status
        self.conclusion = conclusion
        if status == "in_progress" and self.run_started_at is None:
            self.run_started_at = self.updated_at
        if status == "completed" and conclusion is None:
            raise ValueError("a completed run needs a conclusion")


@dataclass
class RepositoryDispatch:
    event_type: str
    client_payload: dict[str, Any]
    actor: str
    created_at: float


@dataclass
class WorkflowDispatch:
    workflow: Workflow
    ref: str
    inputs: dict[str, Any]
    return_run_details: bool
    run: WorkflowRun
    actor: str
    created_at: float


class Repo:
    """A repository: content store (commits, branches), issues/PRs and App-made objects."""

    def __init__(
        self,
        fake: FakeGitHub,
        full_name: str,
        *,
        repo_id: int,
        default_branch: str = "main",
        private: bool = False,
        description: str | None = None,
    ) -> None:
        owner, name = full_name.split("/", 1)
        self.fake = fake
        self.lock: threading.RLock = fake.lock
        self.clock: Clock = fake.clock
        self.id = repo_id
        self.owner = owner
        self.name = name
        self.default_branch = default_branch
        self.private = private
        self.description = description
        self.created_at = self.clock.now()
        self.commits: dict[str, Commit] = {}
        self.branches: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.issues: dict[int, Issue] = {}
        self.labels: dict[str, Label] = {}
        self.collaborators: dict[str, RoleName] = {}
        self.check_runs: list[CheckRun] = []
        self.check_suites: dict[tuple[int, str], int] = {}
        self.workflows: list[Workflow] = []
        self.workflow_runs: list[WorkflowRun] = []
        self.workflow_dispatches: list[WorkflowDispatch] = []
        self.dispatch_events: list[RepositoryDispatch] = []
        self._numbers = itertools.count(1)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def __repr__(self) -> str:
        return f"Repo({self.full_name!r})"

    # -- content -----------------------------------------------------------------------------

    def resolve_ref(self, ref: str | None) -> str | None:
        """A branch, tag, ``refs/heads/...`` name, full SHA or unique SHA prefix -> commit SHA."""
        if ref is None or ref == "":
            return self.branches.get(self.default_branch)
        for prefix in ("refs/heads/", "heads/"):
            if ref.startswith(prefix) and ref[len(prefix) :] in self.branches:
                return self.branches[ref[len(prefix) :]]
        if ref.startswith("refs/tags/") and ref[10:] in self.tags:
            return self.tags[ref[10:]]
        if ref in self.branches:
            return self.branches[ref]
        if ref in self.tags:
            return self.tags[ref]
        if ref in self.commits:
            return ref
        if len(ref) >= 7:
            found = [sha for sha in self.commits if sha.startswith(ref)]
            if len(found) == 1:
                return found[0]
        return None

    def tree(self, sha: str) -> dict[str, bytes]:
        return self.commits[sha].tree if sha in self.commits else {}

    def commit_tree(
        self,
        tree: Mapping[str, bytes],
        *,
        branch: str | None = None,
        parent: str | None = None,
        message: str = "commit",
        author: str = "octocat",
        sha: str | None = None,
    ) -> str:
        with self.lock:
            if parent is None and branch is not None:
                parent = self.branches.get(branch)
            digest = hashlib.sha1()
            digest.update((parent or "").encode())
            digest.update(message.encode())
            digest.update(secrets.token_bytes(8))
            for path in sorted(tree):
                digest.update(path.encode() + b"\0" + blob_sha(tree[path]).encode())
            new_sha = sha or digest.hexdigest()
            self.commits[new_sha] = Commit(
                sha=new_sha,
                parent=parent,
                tree=dict(tree),
                message=message,
                author=author,
                date=self.clock.now(),
            )
            if branch is not None:
                self.branches[branch] = new_sha
            return new_sha

    def commit(
        self,
        files: Mapping[str, str | bytes | None],
        *,
        branch: str | None = None,
        parent: str | None = None,
        message: str = "commit",
        author: str = "octocat",
        sha: str | None = None,
    ) -> str:
        """Commit ``files`` (path -> content; ``None`` deletes) on top of ``parent``/``branch``.

        With neither, the first commit goes to the default branch. Returns the new SHA.
        """
        with self.lock:
            if branch is None and parent is None:
                branch = self.default_branch
            base = parent if parent is not None else self.branches.get(branch or "")
            tree = dict(self.tree(base)) if base else {}
            for path, content in files.items():
                path = path.lstrip("/")
                if content is None:
                    tree.pop(path, None)
                else:
                    tree[path] = _as_bytes(content)
            return self.commit_tree(
                tree, branch=branch, parent=base, message=message, author=author, sha=sha
            )

    def create_branch(self, name: str, from_ref: str | None = None) -> str:
        with self.lock:
            sha = self.resolve_ref(from_ref)
            if sha is None:
                raise ValueError(f"unknown ref {from_ref!r} in {self.full_name}")
            self.branches[name] = sha
            return sha

    def blob(self, sha: str) -> bytes | None:
        """The content of any committed file whose git blob SHA is ``sha``."""
        for commit in self.commits.values():
            for data in commit.tree.values():
                if blob_sha(data) == sha:
                    return data
        return None

    def git_tree(self, ref_or_sha: str) -> tuple[str, list[TreeEntry]] | None:
        """A tree and its recursive listing, named by its SHA (the root or a folder of any
        commit) or by a ref or SHA of a commit (its root tree), as the Git Trees API takes it."""
        commit = self.resolve_ref(ref_or_sha)
        if commit is not None and commit in self.commits:
            return git_trees(self.tree(commit))[""]
        for c in list(self.commits.values()):
            for sha, listing in git_trees(c.tree).values():
                if sha == ref_or_sha:
                    return sha, listing
        return None

    def file(self, path: str, ref: str | None = None) -> bytes | None:
        sha = self.resolve_ref(ref)
        return None if sha is None else self.tree(sha).get(path)

    # -- people ------------------------------------------------------------------------------

    def set_permission(self, user: str, role: RoleName) -> None:
        """Collaborator role: admin, maintain, write, triage, read or none."""
        with self.lock:
            self.collaborators[user] = role

    # -- issues and pull requests ------------------------------------------------------------

    def _next_number(self) -> int:
        while True:
            number = next(self._numbers)
            if number not in self.issues:
                return number

    def create_issue(
        self, title: str = "An issue", *, user: str = "octocat", body: str | None = None
    ) -> Issue:
        with self.lock:
            now = self.clock.now()
            issue = Issue(
                number=self._next_number(),
                title=title,
                body=body,
                user=user,
                created_at=now,
                updated_at=now,
            )
            self.issues[issue.number] = issue
            return issue

    def create_pull(
        self,
        *,
        head: str = "feature",
        files: Mapping[str, str | bytes | None] | None = None,
        base: str | None = None,
        user: str = "contributor",
        title: str = "Add knowledge",
        body: str | None = "",
        number: int | None = None,
        draft: bool = False,
        labels: Iterable[str] = (),
        head_sha: str | None = None,
        author_association: str = "CONTRIBUTOR",
    ) -> PullRequest:
        """Open a pull request from branch ``head`` into ``base`` (default branch by default).

        ``files`` are committed on a new ``head`` branch cut from ``base``; without them the
        head branch must exist already. Changed files are the diff base..head, as on GitHub.
        """
        with self.lock:
            base = base or self.default_branch
            if base not in self.branches:
                self.commit({}, branch=base, message="initial commit")
            base_sha = self.branches[base]
            if files is not None:
                if head not in self.branches:
                    self.branches[head] = base_sha
                self.commit(files, branch=head, message=title, author=user, sha=head_sha)
            elif head not in self.branches:
                raise ValueError(f"branch {head!r} does not exist; pass files=")
            now = self.clock.now()
            if number is not None and number in self.issues:
                raise ValueError(f"#{number} already exists in {self.full_name}")
            pr = PullRequest(
                number=number if number is not None else self._next_number(),
                title=title,
                body=body,
                user=user,
                created_at=now,
                updated_at=now,
                id=self.fake.ids.next(),
                head_ref=head,
                head_sha=self.branches[head],
                base_ref=base,
                base_sha=base_sha,
                draft=draft,
                author_association=author_association,
                repo=self,
            )
            for name in labels:
                self.ensure_label(name)
                pr.labels.append(name)
            self.issues[pr.number] = pr
            return pr

    @property
    def pulls(self) -> list[PullRequest]:
        return [i for i in self.issues.values() if isinstance(i, PullRequest)]

    def pull(self, number: int) -> PullRequest:
        issue = self.issues[number]
        assert isinstance(issue, PullRequest), f"#{number} is an issue, not a pull request"
        return issue

    def add_comment(
        self, number: int, body: str, *, user: str = "octocat", user_type: str = "User"
    ) -> IssueComment:
        """A comment by a person (or ``user_type="Bot"``), as if made on github.com."""
        with self.lock:
            now = self.clock.now()
            comment = IssueComment(
                id=self.fake.ids.next(),
                issue_number=number,
                body=body,
                user=user,
                user_type=user_type,
                created_at=now,
                updated_at=now,
            )
            self.issues[number].comments.append(comment)
            return comment

    def comments(self, number: int) -> list[IssueComment]:
        return self.issues[number].live_comments

    def find_comment(self, comment_id: int) -> IssueComment | None:
        for issue in self.issues.values():
            for comment in issue.comments:
                if comment.id == comment_id and not comment.deleted:
                    return comment
        return None

    def ensure_label(
        self, name: str, color: str = "ededed", description: str | None = None
    ) -> Label:
        with self.lock:
            for label in self.labels.values():
                if label.name.lower() == name.lower():
                    return label
            label = Label(id=self.fake.ids.next(), name=name, color=color, description=description)
            self.labels[name] = label
            return label

    def find_label(self, name: str) -> Label | None:
        for label in self.labels.values():
            if label.name.lower() == name.lower():
                return label
        return None

    # -- checks ------------------------------------------------------------------------------

    def check_suite_id(self, app: App, head_sha: str) -> int:
        key = (app.id, head_sha)
        if key not in self.check_suites:
            self.check_suites[key] = self.fake.ids.next()
        return self.check_suites[key]

    def checks_for(self, head_sha: str, name: str | None = None) -> list[CheckRun]:
        return [
            run
            for run in self.check_runs
            if run.head_sha == head_sha and (name is None or run.name == name)
        ]

    # -- actions -----------------------------------------------------------------------------

    def add_workflow(
        self,
        path: str = ".github/workflows/build.yml",
        *,
        name: str | None = None,
        inputs: Mapping[str, Mapping[str, Any]] | None = None,
        content: str | None = None,
        run_name: str | None = None,
    ) -> Workflow:
        """Declare a workflow file (committed to the default branch, as dispatch requires).

        ``inputs`` mirrors ``on.workflow_dispatch.inputs`` (e.g. ``{"pr": {"required": True}}``);
        when given, dispatches with undeclared or missing required inputs get GitHub's 422.
        ``run_name`` mirrors ``run-name:``: a dispatched run's ``display_title``, with
        ``${{ inputs.NAME }}`` replaced by the dispatch's input (other runs show ``name``).
        """
        with self.lock:
            workflow = Workflow(
                id=self.fake.ids.next(),
                name=name or path.rsplit("/", 1)[-1].rsplit(".", 1)[0],
                path=path,
                inputs={k: dict(v) for k, v in inputs.items()} if inputs is not None else None,
                created_at=self.clock.now(),
                run_name=run_name,
            )
            self.workflows.append(workflow)
            text = content or f"name: {workflow.name}\non:\n  workflow_dispatch: {{}}\n"
            self.commit({path: text}, branch=self.default_branch, message=f"add {path}")
            return workflow

    def find_workflow(self, workflow_id: str) -> Workflow | None:
        for workflow in self.workflows:
            if workflow_id in (str(workflow.id), workflow.file_name, workflow.path):
                return workflow
        return None

    def create_workflow_run(
        self,
        workflow: Workflow,
        *,
        head_sha: str | None = None,
        head_branch: str | None = None,
        event: str = "push",
        status: str = "queued",
        conclusion: str | None = None,
        actor: str = "octocat",
        inputs: Mapping[str, Any] | None = None,
        display_title: str | None = None,
        head_repo: Repo | None = None,
    ) -> WorkflowRun:
        """A run of ``workflow``; ``head_repo`` is the fork a ``pull_request`` run came from.
        A dispatched run's title follows the workflow's ``run_name`` (see ``add_workflow``)."""
        if display_title is None and workflow.run_name and event == "workflow_dispatch":
            display_title = re.sub(
                r"\$\{\{\s*inputs\.([A-Za-z0-9_-]+)[^}]*\}\}",
                lambda m: str((inputs or {}).get(m.group(1), "")),
                workflow.run_name,
            )
        with self.lock:
            branch = head_branch or self.default_branch
            sha = head_sha or self.branches.get(branch) or ""
            now = self.clock.now()
            run = WorkflowRun(
                id=self.fake.ids.next(),
                workflow=workflow,
                run_number=1 + sum(1 for r in self.workflow_runs if r.workflow is workflow),
                event=event,
                head_branch=branch,
                head_sha=sha,
                actor=actor,
                status=status,
                conclusion=conclusion,
                inputs=dict(inputs or {}),
                display_title=display_title or workflow.name,
                head_repo=head_repo,
                created_at=now,
                updated_at=now,
                check_suite_id=self.fake.ids.next(),
            )
            self.workflow_runs.append(run)
            return run

    def find_run(self, run_id: int) -> WorkflowRun | None:
        return next((r for r in self.workflow_runs if r.id == run_id), None)

    def add_artifact(
        self, run: WorkflowRun, name: str, files: Mapping[str, str | bytes]
    ) -> Artifact:
        """Upload an artifact to ``run``, as actions/upload-artifact would: ``files`` are
        zipped (paths inside the archive as given)."""
        import io
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, content in files.items():
                archive.writestr(path, _as_bytes(content))
        with self.lock:
            artifact = Artifact(
                id=self.fake.ids.next(),
                name=name,
                data=buffer.getvalue(),
                created_at=self.clock.now(),
            )
            run.artifacts.append(artifact)
            return artifact

    def find_artifact(self, artifact_id: int) -> tuple[WorkflowRun, Artifact] | None:
        for run in self.workflow_runs:
            for artifact in run.artifacts:
                if artifact.id == artifact_id:
                    return run, artifact
        return None


# -- webhook deliveries (GET /app/hook/deliveries) ------------------------------------------------


@dataclass
class Delivery:
    id: int
    guid: str
    event: str
    action: str | None
    delivered_at: float
    status_code: int
    duration: float = 0.05
    redelivery: bool = False
    installation_id: int | None = None
    repository_id: int | None = None
    request_headers: dict[str, str] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""
    app_id: int | None = None

    @property
    def status(self) -> str:
        if self.status_code == 0:
            return "timed out"
        return (
            "OK" if 200 <= self.status_code < 300 else f"Invalid HTTP Response: {self.status_code}"
        )

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass
class Redelivery:
    """A redelivery the App asked for; delivered by ``fake.process_redeliveries()``."""

    original: Delivery
    requested_at: float


WebhookTarget = Callable[[dict[str, str], bytes], tuple[int, dict[str, str], str]]
