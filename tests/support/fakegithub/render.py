"""Turn the fake's state into GitHub-shaped JSON bodies.

Bodies start from GitHub's own examples in the committed OpenAPI subset (so every field GitHub
documents is there), then every id, name and URL is set from state. All API URLs point at the
fake's base URL (PyGithub follows ``url``/``issue_url``/``Link`` and asserts that their host and
port equal its ``base_url``); leftover example URLs are rewritten as a last pass.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .state import (
    LARGE_FILE_BYTES,
    App,
    CheckRun,
    Commit,
    FileChange,
    Installation,
    Issue,
    IssueComment,
    Label,
    PullRequest,
    Reaction,
    Repo,
    Symlink,
    TreeEntry,
    Workflow,
    WorkflowRun,
    blob_sha,
    git_trees,
    iso,
)

if TYPE_CHECKING:
    from .server import FakeGitHub

WEB = "https://github.com"
GITHUB_API = "https://api.github.com"


def node_id(kind: str, ident: int | str) -> str:
    return base64.b64encode(f"0:{kind}{ident}".encode()).decode("ascii").rstrip("=")


def _rewrite(value: Any, replacements: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for old, new in replacements:
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_rewrite(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, replacements) for k, v in value.items()}
    return value


class Renderer:
    def __init__(self, fake: FakeGitHub) -> None:
        self.fake = fake
        self.contract = fake.contract

    @property
    def api(self) -> str:
        return self.fake.url

    def finish(self, body: dict[str, Any]) -> dict[str, Any]:
        """Last pass: no URL may point at api.github.com."""
        rewritten: dict[str, Any] = _rewrite(body, [(GITHUB_API, self.api)])
        return rewritten

    # -- people --------------------------------------------------------------------------------

    def user(self, login: str, user_type: str | None = None) -> dict[str, Any]:
        kind = user_type or self.fake.user_type(login)
        uid = self.fake.user_id(login)
        api = f"{self.api}/users/{login}"
        return {
            "login": login,
            "id": uid,
            "node_id": node_id("User" if kind != "Organization" else "Organization", uid),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
            "gravatar_id": "",
            "url": api,
            "html_url": f"{WEB}/{login}" if kind != "Bot" else f"{WEB}/apps/{login[:-5]}",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    # -- apps ----------------------------------------------------------------------------------

    def app(self, app: App) -> dict[str, Any]:
        body = self.contract.example("integration")
        body.update(
            id=app.id,
            slug=app.slug,
            client_id=app.client_id,
            node_id=node_id("Integration", app.id),
            owner=self.user(app.owner, "Organization"),
            name=app.name,
            description="",
            external_url="https://example.com",
            html_url=f"{WEB}/apps/{app.slug}",
            created_at=iso(app.created_at),
            updated_at=iso(app.created_at),
            permissions=dict(app.permissions),
            events=list(app.events),
            installations_count=len(self.fake.installations_of(app)),
        )
        return self.finish(body)

    def installation(self, inst: Installation) -> dict[str, Any]:
        body = self.contract.example("installation")
        for drop in ("single_file_paths", "has_multiple_single_files"):
            body.pop(drop, None)
        account = self.user(inst.account, inst.account_type)
        settings = (
            f"{WEB}/organizations/{inst.account}/settings/installations/{inst.id}"
            if inst.account_type == "Organization"
            else f"{WEB}/settings/installations/{inst.id}"
        )
        body.update(
            id=inst.id,
            account=account,
            repository_selection=inst.repository_selection,
            access_tokens_url=f"{self.api}/app/installations/{inst.id}/access_tokens",
            repositories_url=f"{self.api}/installation/repositories",
            html_url=settings,
            app_id=inst.app.id,
            client_id=inst.app.client_id,
            app_slug=inst.app.slug,
            target_id=account["id"],
            target_type=inst.account_type,
            permissions=dict(inst.permissions),
            events=list(inst.events),
            created_at=iso(inst.created_at),
            updated_at=iso(inst.created_at),
            single_file_name=None,
            suspended_at=None,
            suspended_by=None,
        )
        return self.finish(body)

    # -- repositories --------------------------------------------------------------------------

    def repo(self, repo: Repo) -> dict[str, Any]:
        body = self.contract.example("full-repository-default-response")
        for drop in ("parent", "source", "template_repository", "organization", "temp_clone_token"):
            body.pop(drop, None)
        body = _rewrite(
            body,
            [
                (f"{GITHUB_API}/repos/octocat/Hello-World", f"{self.api}/repos/{repo.full_name}"),
                ("octocat/Hello-World", repo.full_name),
                ("git.example.com/", "github.com/"),
            ],
        )
        owner_type = self.fake.user_type(repo.owner)
        head = repo.branches.get(repo.default_branch)
        pushed = repo.commits[head].date if head else repo.created_at
        open_issues = sum(1 for i in repo.issues.values() if i.state == "open")
        body.update(
            id=repo.id,
            node_id=node_id("Repository", repo.id),
            name=repo.name,
            full_name=repo.full_name,
            owner=self.user(repo.owner, owner_type),
            private=repo.private,
            visibility="private" if repo.private else "public",
            description=repo.description,
            homepage=None,
            language=None,
            mirror_url=None,
            license=None,
            topics=[],
            forks_count=0,
            forks=0,
            stargazers_count=0,
            watchers_count=0,
            watchers=0,
            subscribers_count=0,
            network_count=0,
            size=sum(len(v) for v in repo.tree(head).values()) // 1024 if head else 0,
            default_branch=repo.default_branch,
            open_issues_count=open_issues,
            open_issues=open_issues,
            pushed_at=iso(pushed),
            created_at=iso(repo.created_at),
            updated_at=iso(pushed),
            permissions={
                "admin": False,
                "maintain": False,
                "push": True,
                "triage": True,
                "pull": True,
            },
        )
        if owner_type == "Organization":
            body["organization"] = self.user(repo.owner, "Organization")
        return self.finish(body)

    def label(self, repo: Repo, label: Label) -> dict[str, Any]:
        return {
            "id": label.id,
            "node_id": node_id("Label", label.id),
            "url": f"{self.api}/repos/{repo.full_name}/labels/{quote(label.name, safe='')}",
            "name": label.name,
            "description": label.description,
            "color": label.color,
            "default": label.default,
        }

    # -- pull requests and issues --------------------------------------------------------------

    def _pr_links(self, repo: Repo, number: int, head_sha: str) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        return {
            "url": f"{api}/pulls/{number}",
            "html_url": f"{WEB}/{repo.full_name}/pull/{number}",
            "diff_url": f"{WEB}/{repo.full_name}/pull/{number}.diff",
            "patch_url": f"{WEB}/{repo.full_name}/pull/{number}.patch",
            "issue_url": f"{api}/issues/{number}",
            "commits_url": f"{api}/pulls/{number}/commits",
            "review_comments_url": f"{api}/pulls/{number}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{number}/comments",
            "statuses_url": f"{api}/statuses/{head_sha}",
        }

    def pull(self, repo: Repo, pr: PullRequest, *, simple: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = self.contract.example("pull-request")
        links = self._pr_links(repo, pr.number, pr.head_sha)
        body.update(links)
        repo_body = self.repo(repo)
        files = pr.files
        body.update(
            id=pr.id,
            node_id=node_id("PullRequest", pr.id),
            number=pr.number,
            state=pr.state,
            locked=False,
            active_lock_reason=None,
            title=pr.title,
            user=self.user(pr.user),
            body=pr.body,
            # pull-request(-simple) declares label.description a non-null string
            labels=[
                {**self.label(repo, lb), "description": lb.description or ""}
                for lb in (repo.ensure_label(n) for n in pr.labels)
            ],
            milestone=None,
            created_at=iso(pr.created_at),
            updated_at=iso(pr.updated_at),
            closed_at=iso(pr.closed_at) if pr.closed_at else None,
            merged_at=iso(pr.merged_at) if pr.merged_at else None,
            merge_commit_sha=pr.merge_commit_sha,
            assignee=None,
            assignees=[],
            requested_reviewers=[],
            requested_teams=[],
            head={
                "label": f"{repo.owner}:{pr.head_ref}",
                "ref": pr.head_ref,
                "sha": pr.head_sha,
                "user": self.user(repo.owner),
                "repo": repo_body,
            },
            base={
                "label": f"{repo.owner}:{pr.base_ref}",
                "ref": pr.base_ref,
                "sha": pr.base_sha,
                "user": self.user(repo.owner),
                "repo": repo_body,
            },
            _links={
                "self": {"href": links["url"]},
                "html": {"href": links["html_url"]},
                "issue": {"href": links["issue_url"]},
                "comments": {"href": links["comments_url"]},
                "review_comments": {"href": links["review_comments_url"]},
                "review_comment": {"href": links["review_comment_url"]},
                "commits": {"href": links["commits_url"]},
                "statuses": {"href": links["statuses_url"]},
            },
            author_association=pr.author_association,
            auto_merge=None,
            draft=pr.draft,
            merged=pr.merged,
            mergeable=None if pr.merged else True,
            rebaseable=None if pr.merged else True,
            mergeable_state="unknown" if pr.merged else "clean",
            merged_by=self.user(pr.merged_by) if pr.merged_by else None,
            comments=len(pr.live_comments),
            review_comments=0,
            maintainer_can_modify=False,
            commits=max(1, self._commit_count(repo, pr)),
            additions=sum(f.additions for f in files),
            deletions=sum(f.deletions for f in files),
            changed_files=len(files),
        )
        if simple:
            for key in (
                "merged",
                "mergeable",
                "rebaseable",
                "mergeable_state",
                "merged_by",
                "comments",
                "review_comments",
                "maintainer_can_modify",
                "commits",
                "additions",
                "deletions",
                "changed_files",
            ):
                body.pop(key, None)
        return self.finish(body)

    @staticmethod
    def _commit_count(repo: Repo, pr: PullRequest) -> int:
        count, sha = 0, pr.head_sha
        while sha and sha != pr.base_sha and sha in repo.commits and count < 250:
            count += 1
            sha = repo.commits[sha].parent or ""
        return count

    def pull_minimal(self, repo: Repo, pr: PullRequest) -> dict[str, Any]:
        repo_ref = {"id": repo.id, "url": f"{self.api}/repos/{repo.full_name}", "name": repo.name}
        return {
            "id": pr.id,
            "number": pr.number,
            "url": f"{self.api}/repos/{repo.full_name}/pulls/{pr.number}",
            "head": {"ref": pr.head_ref, "sha": pr.head_sha, "repo": repo_ref},
            "base": {"ref": pr.base_ref, "sha": pr.base_sha, "repo": repo_ref},
        }

    def issue(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/issues/{issue.number}"
        is_pr = isinstance(issue, PullRequest)
        body: dict[str, Any] = {
            "id": issue.id if isinstance(issue, PullRequest) else 10_000_000 + issue.number,
            "node_id": node_id("Issue", issue.number),
            "url": api,
            "repository_url": f"{self.api}/repos/{repo.full_name}",
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": f"{WEB}/{repo.full_name}/{'pull' if is_pr else 'issues'}/{issue.number}",
            "number": issue.number,
            "state": issue.state,
            "state_reason": None,
            "title": issue.title,
            "body": issue.body,
            "user": self.user(issue.user),
            "labels": [self.label(repo, repo.ensure_label(n)) for n in issue.labels],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": len(issue.live_comments),
            "closed_at": iso(issue.closed_at) if issue.closed_at else None,
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_by": None,
            "author_association": "CONTRIBUTOR",
        }
        if isinstance(issue, PullRequest):
            links = self._pr_links(repo, issue.number, issue.head_sha)
            body["pull_request"] = {
                "url": links["url"],
                "html_url": links["html_url"],
                "diff_url": links["diff_url"],
                "patch_url": links["patch_url"],
                "merged_at": iso(issue.merged_at) if issue.merged_at else None,
            }
            body["draft"] = issue.draft
        return body

    def comment(self, repo: Repo, comment: IssueComment) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        issue = repo.issues[comment.issue_number]
        kind = "pull" if isinstance(issue, PullRequest) else "issues"
        body: dict[str, Any] = {
            "id": comment.id,
            "node_id": node_id("IssueComment", comment.id),
            "url": f"{api}/issues/comments/{comment.id}",
            "html_url": f"{WEB}/{repo.full_name}/{kind}/{comment.issue_number}"
            f"#issuecomment-{comment.id}",
            "body": comment.body,
            "user": self.user(comment.user, comment.user_type),
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "issue_url": f"{api}/issues/{comment.issue_number}",
            "author_association": "NONE" if comment.user_type == "Bot" else "CONTRIBUTOR",
            "performed_via_github_app": self.app(comment.app) if comment.app else None,
            "reactions": self.reaction_rollup(repo, comment),
        }
        return body

    def reaction_rollup(self, repo: Repo, comment: IssueComment) -> dict[str, Any]:
        counts = {
            k: 0 for k in ("+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket")
        }
        for reaction in comment.reactions:
            counts[reaction.content] += 1
        return {
            "url": f"{self.api}/repos/{repo.full_name}/issues/comments/{comment.id}/reactions",
            "total_count": len(comment.reactions),
            **counts,
        }

    def reaction(self, reaction: Reaction) -> dict[str, Any]:
        return {
            "id": reaction.id,
            "node_id": node_id("Reaction", reaction.id),
            "user": self.user(reaction.user, reaction.user_type),
            "content": reaction.content,
            "created_at": iso(reaction.created_at),
        }

    def diff_entry(self, repo: Repo, pr: PullRequest, change: FileChange) -> dict[str, Any]:
        body: dict[str, Any] = {
            "sha": change.sha or blob_sha(b""),
            "filename": change.filename,
            "status": change.status,
            "additions": change.additions,
            "deletions": change.deletions,
            "changes": change.additions + change.deletions,
            "blob_url": f"{WEB}/{repo.full_name}/blob/{pr.head_sha}/{quote(change.filename)}",
            "raw_url": f"{WEB}/{repo.full_name}/raw/{pr.head_sha}/{quote(change.filename)}",
            "contents_url": f"{self.api}/repos/{repo.full_name}/contents/"
            f"{quote(change.filename)}?ref={pr.head_sha}",
        }
        if change.patch is not None:
            body["patch"] = change.patch
        if change.previous_filename is not None:
            body["previous_filename"] = change.previous_filename
        return body

    # -- contents and commits ------------------------------------------------------------------

    def _content_links(self, repo: Repo, path: str, ref: str, sha: str, kind: str) -> Any:
        url = f"{self.api}/repos/{repo.full_name}/contents/{quote(path)}?ref={quote(ref)}"
        git_url = f"{self.api}/repos/{repo.full_name}/git/{'blobs' if kind == 'file' else 'trees'}"
        html = f"{WEB}/{repo.full_name}/{'blob' if kind == 'file' else 'tree'}/{ref}/{quote(path)}"
        return url, f"{git_url}/{sha}", html

    def content_file(self, repo: Repo, path: str, ref: str, data: bytes) -> dict[str, Any]:
        sha = blob_sha(data)
        url, git_url, html = self._content_links(repo, path, ref, sha, "file")
        if len(data) > LARGE_FILE_BYTES:
            encoding, content = "none", ""
        else:
            raw = base64.b64encode(data).decode("ascii")
            encoding = "base64"
            content = "".join(raw[i : i + 60] + "\n" for i in range(0, len(raw), 60))
        return {
            "type": "file",
            "encoding": encoding,
            "size": len(data),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "content": content,
            "sha": sha,
            "url": url,
            "git_url": git_url,
            "html_url": html,
            "download_url": f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{path}",
            "_links": {"git": git_url, "self": url, "html": html},
        }

    def content_symlink(self, repo: Repo, path: str, ref: str, data: bytes) -> dict[str, Any]:
        """A symlink whose target is not a normal file of the repository (``content-symlink``)."""
        sha = blob_sha(data)
        url, git_url, html = self._content_links(repo, path, ref, sha, "file")
        return {
            "type": "symlink",
            "target": data.decode("utf-8", "replace"),
            "size": len(data),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "url": url,
            "git_url": git_url,
            "html_url": html,
            "download_url": f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{path}",
            "_links": {"git": git_url, "self": url, "html": html},
        }

    def blob(self, repo: Repo, sha: str, data: bytes) -> dict[str, Any]:
        raw = base64.b64encode(data).decode("ascii")
        return {
            "sha": sha,
            "node_id": node_id("Blob", sha),
            "size": len(data),
            "url": f"{self.api}/repos/{repo.full_name}/git/blobs/{sha}",
            "content": "".join(raw[i : i + 60] + "\n" for i in range(0, len(raw), 60)),
            "encoding": "base64",
        }

    def git_tree(
        self, repo: Repo, sha: str, listing: list[TreeEntry], truncated: bool
    ) -> dict[str, Any]:
        git = f"{self.api}/repos/{repo.full_name}/git"
        return {
            "sha": sha,
            "url": f"{git}/trees/{sha}",
            "tree": [
                {
                    "path": e.path,
                    "mode": e.mode,
                    "type": e.type,
                    "sha": e.sha,
                    **({"size": e.size} if e.size is not None else {}),
                    "url": f"{git}/{'blobs' if e.type == 'blob' else 'trees'}/{e.sha}",
                }
                for e in listing
            ],
            "truncated": truncated,
        }

    def content_directory(
        self, repo: Repo, path: str, ref: str, tree: dict[str, bytes]
    ) -> list[dict[str, Any]]:
        prefix = f"{path}/" if path else ""
        entries: dict[str, str] = {}
        for name in tree:
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            head, _, tail = rest.partition("/")
            entries[head] = (
                "dir" if tail else "symlink" if isinstance(tree[name], Symlink) else "file"
            )
        out: list[dict[str, Any]] = []
        for name in sorted(entries):
            kind = entries[name]
            full = prefix + name
            data = tree.get(full, b"")
            if kind in ("file", "symlink"):
                sha = blob_sha(data)
            else:
                sha = hashlib.sha1(full.encode() + ref.encode()).hexdigest()
            url, git_url, html = self._content_links(repo, full, ref, sha, kind)
            out.append(
                {
                    "type": kind,
                    "size": len(data) if kind != "dir" else 0,
                    "name": name,
                    "path": full,
                    "sha": sha,
                    "url": url,
                    "git_url": git_url,
                    "html_url": html,
                    "download_url": (
                        f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{full}"
                        if kind != "dir"
                        else None
                    ),
                    "_links": {"git": git_url, "self": url, "html": html},
                }
            )
        return out

    def commit(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        parent_tree = repo.tree(commit.parent) if commit.parent else {}
        changes = [c for c in _diff(parent_tree, commit.tree)]
        files = []
        for change in changes:
            name = quote(change.filename)
            files.append(
                {
                    "sha": change.sha or blob_sha(b""),
                    "filename": change.filename,
                    "status": change.status,
                    "additions": change.additions,
                    "deletions": change.deletions,
                    "changes": change.additions + change.deletions,
                    "blob_url": f"{WEB}/{repo.full_name}/blob/{commit.sha}/{name}",
                    "raw_url": f"{WEB}/{repo.full_name}/raw/{commit.sha}/{name}",
                    "contents_url": f"{api}/contents/{name}?ref={commit.sha}",
                    **({"patch": change.patch} if change.patch else {}),
                }
            )
        person = {
            "name": commit.author,
            "email": f"{commit.author}@example.com",
            "date": iso(commit.date),
        }
        tree_sha = git_trees(commit.tree)[""][0]
        return {
            "url": f"{api}/commits/{commit.sha}",
            "sha": commit.sha,
            "node_id": node_id("Commit", commit.sha),
            "html_url": f"{WEB}/{repo.full_name}/commit/{commit.sha}",
            "comments_url": f"{api}/commits/{commit.sha}/comments",
            "commit": {
                "url": f"{api}/git/commits/{commit.sha}",
                "author": person,
                "committer": person,
                "message": commit.message,
                "tree": {"url": f"{api}/git/trees/{tree_sha}", "sha": tree_sha},
                "comment_count": 0,
                "verification": {
                    "verified": False,
                    "reason": "unsigned",
                    "signature": None,
                    "payload": None,
                    "verified_at": None,
                },
            },
            "author": self.user(commit.author),
            "committer": self.user(commit.author),
            "parents": (
                [
                    {
                        "url": f"{api}/commits/{commit.parent}",
                        "sha": commit.parent,
                        "html_url": f"{WEB}/{repo.full_name}/commit/{commit.parent}",
                    }
                ]
                if commit.parent
                else []
            ),
            "stats": {
                "additions": sum(c.additions for c in changes),
                "deletions": sum(c.deletions for c in changes),
                "total": sum(c.additions + c.deletions for c in changes),
            },
            "files": files,
        }

    # -- checks --------------------------------------------------------------------------------

    def check_run(self, repo: Repo, run: CheckRun) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        prs = [
            self.pull_minimal(repo, pr)
            for pr in repo.pulls
            if pr.head_sha == run.head_sha and pr.state == "open"
        ]
        return {
            "id": run.id,
            "head_sha": run.head_sha,
            "node_id": node_id("CheckRun", run.id),
            "external_id": run.external_id or "",
            "url": f"{api}/check-runs/{run.id}",
            "html_url": f"{WEB}/{repo.full_name}/runs/{run.id}",
            "details_url": run.details_url or f"{WEB}/apps/{run.app.slug}",
            "status": run.status,
            "conclusion": run.conclusion,
            "started_at": iso(run.started_at) if run.started_at else None,
            "completed_at": iso(run.completed_at) if run.completed_at else None,
            "output": {
                "title": run.title,
                "summary": run.summary,
                "text": run.text,
                "annotations_count": len(run.annotations),
                "annotations_url": f"{api}/check-runs/{run.id}/annotations",
            },
            "name": run.name,
            "check_suite": {"id": run.check_suite_id},
            "app": self.app(run.app),
            "pull_requests": prs,
        }

    def annotation(self, repo: Repo, run: CheckRun, index: int) -> dict[str, Any]:
        ann = run.annotations[index]
        return {
            "path": ann.path,
            "blob_href": f"{WEB}/{repo.full_name}/blob/{run.head_sha}/{ann.path}",
            "start_line": ann.start_line,
            "end_line": ann.end_line,
            "start_column": ann.start_column,
            "end_column": ann.end_column,
            "annotation_level": ann.annotation_level,
            "title": ann.title,
            "message": ann.message,
            "raw_details": ann.raw_details,
        }

    # -- actions -------------------------------------------------------------------------------

    def workflow(self, repo: Repo, workflow: Workflow) -> dict[str, Any]:
        return {
            "id": workflow.id,
            "node_id": node_id("Workflow", workflow.id),
            "name": workflow.name,
            "path": workflow.path,
            "state": workflow.state,
            "created_at": iso(workflow.created_at),
            "updated_at": iso(workflow.created_at),
            "url": f"{self.api}/repos/{repo.full_name}/actions/workflows/{workflow.id}",
            "html_url": f"{WEB}/{repo.full_name}/blob/{repo.default_branch}/{workflow.path}",
            "badge_url": f"{WEB}/{repo.full_name}/workflows/{workflow.name}/badge.svg",
        }

    def artifact(self, repo: Repo, run: WorkflowRun, artifact: Any) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/actions/artifacts/{artifact.id}"
        body: dict[str, Any] = {}
        body.update(
            id=artifact.id,
            node_id=f"MDg6QXJ0aWZhY3R7{artifact.id}",
            name=artifact.name,
            size_in_bytes=len(artifact.data),
            url=api,
            archive_download_url=f"{api}/zip",
            expired=artifact.expired,
            created_at=iso(artifact.created_at),
            updated_at=iso(artifact.created_at),
            expires_at=iso(artifact.created_at + 90 * 86400),
            workflow_run={
                "id": run.id,
                "repository_id": repo.id,
                "head_repository_id": repo.id,
                "head_branch": run.head_branch,
                "head_sha": run.head_sha,
            },
        )
        return body

    def workflow_run(self, repo: Repo, run: WorkflowRun) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        body = self.contract.example("workflow-run")
        body.pop("referenced_workflows", None)
        body.pop("previous_attempt_url", None)
        commit = repo.commits.get(run.head_sha)
        repo_min = self.minimal_repo(repo)
        prs = (
            [
                self.pull_minimal(repo, pr)
                for pr in repo.pulls
                if pr.head_sha == run.head_sha and pr.state == "open"
            ]
            if run.event.startswith("pull_request")
            else []
        )
        run_url = f"{api}/actions/runs/{run.id}"
        body.update(
            id=run.id,
            name=run.workflow.name,
            node_id=node_id("WorkflowRun", run.id),
            check_suite_id=run.check_suite_id,
            check_suite_node_id=node_id("CheckSuite", run.check_suite_id),
            head_branch=run.head_branch,
            head_sha=run.head_sha,
            path=f"{run.workflow.path}@{run.head_branch or repo.default_branch}",
            run_number=run.run_number,
            event=run.event,
            display_title=run.display_title or run.workflow.name,
            status=run.status,
            conclusion=run.conclusion,
            workflow_id=run.workflow.id,
            url=run_url,
            html_url=f"{WEB}/{repo.full_name}/actions/runs/{run.id}",
            pull_requests=prs,
            created_at=iso(run.created_at),
            updated_at=iso(run.updated_at),
            actor=self.user(run.actor),
            triggering_actor=self.user(run.actor),
            run_attempt=run.run_attempt,
            run_started_at=iso(run.run_started_at or run.created_at),
            jobs_url=f"{run_url}/jobs",
            logs_url=f"{run_url}/logs",
            check_suite_url=f"{api}/check-suites/{run.check_suite_id}",
            artifacts_url=f"{run_url}/artifacts",
            cancel_url=f"{run_url}/cancel",
            rerun_url=f"{run_url}/rerun",
            workflow_url=f"{api}/actions/workflows/{run.workflow.id}",
            head_commit=(
                {
                    "id": commit.sha,
                    "tree_id": hashlib.sha1(("tree" + commit.sha).encode()).hexdigest(),
                    "message": commit.message,
                    "timestamp": iso(commit.date),
                    "author": {"name": commit.author, "email": f"{commit.author}@example.com"},
                    "committer": {"name": commit.author, "email": f"{commit.author}@example.com"},
                }
                if commit
                else None
            ),
            repository=repo_min,
            head_repository=self.minimal_repo(run.head_repo) if run.head_repo else repo_min,
            head_repository_id=(run.head_repo or repo).id,
        )
        return self.finish(body)

    def minimal_repo(self, repo: Repo) -> dict[str, Any]:
        full = self.repo(repo)
        keep = set(self.contract.raw["components"]["schemas"]["minimal-repository"]["required"])
        return {k: v for k, v in full.items() if k in keep}


def _diff(old: dict[str, bytes], new: dict[str, bytes]) -> list[FileChange]:
    from .state import diff_trees

    return diff_trees(old, new)
