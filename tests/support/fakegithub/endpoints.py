"""The REST endpoints of the fake: one handler per OpenAPI operationId.

Handlers run with the fake's lock held, after routing, request validation, authentication and
authorization (``server.py``); they read and change state (``state.py``) and return a
``Result`` whose body ``render.py`` built. Raise ``HTTPError`` for GitHub's error answers;
``violation=True`` marks a limit GitHub enforces but the OpenAPI description does not state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .protocol import (
    COMMENT_MAX,
    DOCS,
    LEVELS,
    ROLE_TO_PERMISSION,
    Ctx,
    HTTPError,
    Result,
    parse_time,
    unprocessable,
)
from .state import (
    Annotation,
    CheckRun,
    Delivery,
    Installation,
    IssueComment,
    PullRequest,
    Reaction,
    Redelivery,
    RepositoryDispatch,
    Symlink,
    WorkflowDispatch,
    iso,
    resolve_symlink,
)

if TYPE_CHECKING:
    from .server import FakeGitHub

#: Entries of one Git Trees answer; GitHub truncates a recursive listing beyond 100,000.
TREE_ENTRIES_MAX = 100_000


class Endpoints:
    def __init__(self, fake: FakeGitHub) -> None:
        self.fake = fake
        self.render = fake.render

    def _page(self, ctx: Ctx, items: list[Any]) -> tuple[list[Any], dict[str, str]]:
        per_page = max(1, min(100, int(ctx.q("per_page") or 30)))
        page = max(1, int(ctx.q("page") or 1))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]

        def link(n: int) -> str:
            query = {k: v[-1] for k, v in ctx.query.items()}
            query["page"] = str(n)
            return f"<{self.fake.url}{ctx.path}?{urlencode(query)}>"

        rels = []
        if page > 1:
            rels.append(f'{link(page - 1)}; rel="prev"')
        if page < last:
            rels.append(f'{link(page + 1)}; rel="next"')
            rels.append(f'{link(last)}; rel="last"')
        if page > 1:
            rels.append(f'{link(1)}; rel="first"')
        return chunk, ({"Link": ", ".join(rels)} if rels else {})

    def table(self) -> dict[str, Callable[[Ctx], Result]]:
        """operationId -> handler."""
        return {
            "apps/get-authenticated": self._get_app,
            "apps/list-installations": self._list_installations,
            "apps/get-installation": self._get_installation,
            "apps/create-installation-access-token": self._create_token,
            "apps/get-repo-installation": self._get_repo_installation,
            "apps/list-repos-accessible-to-installation": self._list_installation_repos,
            "apps/list-webhook-deliveries": self._list_deliveries,
            "apps/get-webhook-delivery": self._get_delivery,
            "apps/redeliver-webhook-delivery": self._redeliver,
            "repos/get": self._get_repo,
            "pulls/list": self._list_pulls,
            "pulls/get": self._get_pull,
            "pulls/list-files": self._list_pull_files,
            "repos/get-content": self._get_content,
            "git/get-blob": self._get_blob,
            "git/get-tree": self._get_tree,
            "repos/get-commit": self._get_commit,
            "repos/list-pull-requests-associated-with-commit": self._pulls_for_commit,
            "checks/create": self._create_check_run,
            "checks/update": self._update_check_run,
            "checks/get": self._get_check_run,
            "checks/list-annotations": self._list_annotations,
            "checks/list-for-ref": self._list_check_runs,
            "issues/get": self._get_issue,
            "issues/list-comments": self._list_comments,
            "issues/create-comment": self._create_comment,
            "issues/get-comment": self._get_comment,
            "issues/update-comment": self._update_comment,
            "issues/delete-comment": self._delete_comment,
            "reactions/create-for-issue-comment": self._create_reaction,
            "issues/list-labels-on-issue": self._list_issue_labels,
            "issues/add-labels": self._add_labels,
            "issues/remove-label": self._remove_label,
            "issues/set-labels": self._set_labels,
            "issues/list-labels-for-repo": self._list_repo_labels,
            "issues/create-label": self._create_label,
            "issues/get-label": self._get_label,
            "repos/get-collaborator-permission-level": self._collaborator_permission,
            "actions/get-workflow": self._get_workflow,
            "actions/create-workflow-dispatch": self._dispatch_workflow,
            "repos/create-dispatch-event": self._repository_dispatch,
            "actions/list-workflow-runs-for-repo": self._list_runs,
            "actions/get-workflow-run": self._get_run,
            "actions/list-workflow-run-artifacts": self._list_artifacts,
            "actions/download-artifact": self._download_artifact,
        }

    # apps ------------------------------------------------------------------------------------

    def _get_app(self, ctx: Ctx) -> Result:
        return Result(200, self.render.app(ctx.actor_app))

    def _list_installations(self, ctx: Ctx) -> Result:
        items = [self.render.installation(i) for i in self.fake.installations_of(ctx.actor_app)]
        page, link = self._page(ctx, items)
        return Result(200, page, link)

    def _app_installation(self, ctx: Ctx) -> Installation:
        inst = self.fake.installations.get(ctx.int_param("installation_id"))
        if inst is None or inst.app.id != ctx.actor_app.id:
            raise HTTPError(404, "Not Found")
        return inst

    def _get_installation(self, ctx: Ctx) -> Result:
        return Result(200, self.render.installation(self._app_installation(ctx)))

    def _create_token(self, ctx: Ctx) -> Result:
        inst = self._app_installation(ctx)
        if inst.suspended:
            raise HTTPError(403, "This installation has been suspended")
        body = ctx.body or {}
        requested = {k: v for k, v in (body.get("permissions") or {}).items()}
        for name, level in requested.items():
            if LEVELS.get(level, 0) > LEVELS.get(inst.permissions.get(name, "none"), 0):
                raise unprocessable(
                    "The permissions requested are not granted to this installation.",
                    resource="Installation",
                    field="permissions",
                    code="invalid",
                )
        repos: set[str] | None = None
        names = body.get("repositories")
        ids = body.get("repository_ids")
        if names or ids:
            repos = set()
            for repo in self.fake.repos.values():
                if (names and repo.name in names) or (ids and repo.id in ids):
                    if repo.owner.lower() == inst.account.lower() and inst.covers(repo.full_name):
                        repos.add(repo.full_name)
            if len(repos) != len(set(names or [])) + len(set(ids or [])):
                raise unprocessable(
                    "There is at least one repository that does not exist or is not accessible "
                    "to the parent installation.",
                    resource="Installation",
                    code="invalid",
                )
        token = self.fake.issue_token(
            inst, permissions=requested or inst.permissions, repositories=repos
        )
        out: dict[str, Any] = {
            "token": token.token,
            "expires_at": iso(token.expires_at),
            "permissions": dict(token.permissions),
            "repository_selection": "selected" if repos is not None else inst.repository_selection,
        }
        if repos is not None:
            out["repositories"] = [self.render.repo(self.fake.repo(r)) for r in sorted(repos)]
        return Result(201, out)

    def _get_repo_installation(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        for inst in self.fake.installations_of(ctx.actor_app):
            if inst.covers(repo.full_name):
                return Result(200, self.render.installation(inst))
        raise HTTPError(404, "Not Found", documentation_url=f"{DOCS}/apps/apps")

    def _list_installation_repos(self, ctx: Ctx) -> Result:
        token, inst = ctx.auth.token, ctx.auth.installation
        assert token is not None and inst is not None
        repos = [
            r
            for r in self.fake.repos.values()
            if inst.covers(r.full_name)
            and (token.repositories is None or r.full_name in token.repositories)
        ]
        page, link = self._page(ctx, repos)
        body = {
            "total_count": len(repos),
            "repositories": [self.render.repo(r) for r in page],
            "repository_selection": inst.repository_selection,
        }
        return Result(200, body, link)

    # deliveries ------------------------------------------------------------------------------

    def _delivery_item(self, d: Delivery, *, full: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": d.id,
            "guid": d.guid,
            "delivered_at": iso(d.delivered_at),
            "redelivery": d.redelivery,
            "duration": d.duration,
            "status": d.status,
            "status_code": d.status_code,
            "event": d.event,
            "action": d.action,
            "installation_id": d.installation_id,
            "repository_id": d.repository_id,
            "throttled_at": None,
        }
        if full:
            body["url"] = "https://labbot.example.com/webhook"
            body["request"] = {"headers": d.request_headers, "payload": d.payload}
            body["response"] = {"headers": d.response_headers, "payload": d.response_body}
        return body

    def _list_deliveries(self, ctx: Ctx) -> Result:
        app = ctx.actor_app
        items = sorted(
            (d for d in self.fake.deliveries if d.app_id == app.id),
            key=lambda d: d.id,
            reverse=True,
        )
        status = ctx.q("status")
        if status == "success":
            items = [d for d in items if d.ok]
        elif status == "failure":
            items = [d for d in items if not d.ok]
        cursor = ctx.q("cursor")
        if cursor:
            try:
                before = int(cursor.removeprefix("v1_"))
            except ValueError as exc:
                raise HTTPError(400, "Invalid cursor") from exc
            items = [d for d in items if d.id < before]
        per_page = max(1, min(100, int(ctx.q("per_page") or 30)))
        page = items[:per_page]
        headers = {}
        if len(items) > per_page:
            query = {k: v[-1] for k, v in ctx.query.items()}
            query["cursor"] = f"v1_{page[-1].id}"
            headers["Link"] = f'<{self.fake.url}{ctx.path}?{urlencode(query)}>; rel="next"'
        return Result(200, [self._delivery_item(d) for d in page], headers)

    def _find_delivery(self, ctx: Ctx) -> Delivery:
        wanted = ctx.int_param("delivery_id")
        for d in self.fake.deliveries:
            if d.id == wanted and d.app_id == ctx.actor_app.id:
                return d
        raise HTTPError(404, "Not Found")

    def _get_delivery(self, ctx: Ctx) -> Result:
        return Result(200, self._delivery_item(self._find_delivery(ctx), full=True))

    def _redeliver(self, ctx: Ctx) -> Result:
        delivery = self._find_delivery(ctx)
        if delivery.delivered_at < self.fake.now() - 3 * 86400:
            raise unprocessable("Delivery is too old to be redelivered.", code="invalid")
        self.fake.redeliveries.append(Redelivery(original=delivery, requested_at=self.fake.now()))
        return Result(202, {})

    # repos, pulls, contents ------------------------------------------------------------------

    def _get_repo(self, ctx: Ctx) -> Result:
        return Result(200, self.render.repo(ctx.repository))

    def _pull(self, ctx: Ctx) -> PullRequest:
        issue = ctx.repository.issues.get(ctx.int_param("pull_number"))
        if not isinstance(issue, PullRequest):
            raise HTTPError(
                404, "Not Found", documentation_url=f"{DOCS}/pulls/pulls#get-a-pull-request"
            )
        return issue

    def _list_pulls(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        state = ctx.q("state", "open")
        pulls = [p for p in repo.pulls if state == "all" or p.state == state]
        head = ctx.q("head")
        if head:
            owner, _, ref = head.partition(":")
            pulls = [p for p in pulls if p.head_ref == ref and owner.lower() == repo.owner.lower()]
        base = ctx.q("base")
        if base:
            pulls = [p for p in pulls if p.base_ref == base]
        sort = ctx.q("sort", "created")
        direction = ctx.q("direction") or ("desc" if sort == "created" else "asc")
        key: Callable[[PullRequest], Any] = (
            (lambda p: p.updated_at)
            if sort in ("updated", "popularity", "long-running")
            else (lambda p: (p.created_at, p.number))
        )
        pulls.sort(key=key, reverse=direction == "desc")
        page, link = self._page(ctx, pulls)
        return Result(200, [self.render.pull(repo, p, simple=True) for p in page], link)

    def _get_pull(self, ctx: Ctx) -> Result:
        return Result(200, self.render.pull(ctx.repository, self._pull(ctx)))

    def _list_pull_files(self, ctx: Ctx) -> Result:
        pr = self._pull(ctx)
        files = pr.files[:3000]
        page, link = self._page(ctx, files)
        return Result(200, [self.render.diff_entry(ctx.repository, pr, f) for f in page], link)

    def _get_content(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        ref = ctx.q("ref") or repo.default_branch
        sha = repo.resolve_ref(ref)
        if sha is None:
            raise HTTPError(404, f"No commit found for the ref {ref}")
        path = ctx.params["path"].strip("/")
        tree = repo.tree(sha)
        if path in tree and isinstance(tree[path], Symlink):
            # GitHub answers with the target's content when the link points at a normal file
            # of the repository, and with the link itself otherwise.
            target = resolve_symlink(tree, path)
            if target is not None and target in tree and not isinstance(tree[target], Symlink):
                return Result(200, self.render.content_file(repo, target, ref, tree[target]))
            return Result(200, self.render.content_symlink(repo, path, ref, tree[path]))
        if path in tree:
            return Result(200, self.render.content_file(repo, path, ref, tree[path]))
        listing = self.render.content_directory(repo, path, ref, tree)
        if listing:
            return Result(200, listing)
        raise HTTPError(
            404, "Not Found", documentation_url=f"{DOCS}/repos/contents#get-repository-content"
        )

    def _get_blob(self, ctx: Ctx) -> Result:
        repo, wanted = ctx.repository, ctx.params["file_sha"]
        if not re.fullmatch(r"[0-9a-f]{40}", wanted):
            raise unprocessable("Validation Failed", resource="Blob", code="invalid", field="sha")
        data = repo.blob(wanted)
        if data is None:
            raise HTTPError(404, "Not Found")
        return Result(200, self.render.blob(repo, wanted, data))

    def _get_tree(self, ctx: Ctx) -> Result:
        repo, wanted = ctx.repository, ctx.params["tree_sha"]
        found = repo.git_tree(wanted)
        if found is None:
            raise HTTPError(404, "Not Found", documentation_url=f"{DOCS}/git/trees#get-a-tree")
        sha, listing = found
        if ctx.q("recursive") is None:  # any value, even 0 or false, means recursive
            listing = [e for e in listing if "/" not in e.path]
        truncated = len(listing) > TREE_ENTRIES_MAX
        return Result(200, self.render.git_tree(repo, sha, listing[:TREE_ENTRIES_MAX], truncated))

    def _get_commit(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        sha = repo.resolve_ref(ctx.params["ref"])
        if sha is None:
            raise unprocessable(f"No commit found for SHA: {ctx.params['ref']}")
        return Result(200, self.render.commit(repo, repo.commits[sha]))

    def _pulls_for_commit(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        sha = repo.resolve_ref(ctx.params["commit_sha"])
        if sha is None:
            raise unprocessable(f"No commit found for SHA: {ctx.params['commit_sha']}")
        found = []
        for pr in repo.pulls:
            ancestry = set()
            cursor: str | None = pr.head_sha
            while cursor and cursor not in ancestry and cursor != pr.base_sha:
                ancestry.add(cursor)
                cursor = repo.commits[cursor].parent if cursor in repo.commits else None
            if sha in ancestry or sha == pr.merge_commit_sha:
                found.append(pr)
        page, link = self._page(ctx, found)
        return Result(200, [self.render.pull(repo, p, simple=True) for p in page], link)

    # checks ----------------------------------------------------------------------------------

    def _apply_check_fields(
        self, run: CheckRun, body: Mapping[str, Any], *, creating: bool
    ) -> None:
        now = self.fake.now()
        for key in ("name", "details_url", "external_id"):
            if key in body:
                setattr(run, key, body[key])
        if "started_at" in body:
            run.started_at = parse_time(body["started_at"])
        conclusion = body.get("conclusion")
        status = body.get("status")
        if conclusion is not None and status not in (None, "completed"):
            raise unprocessable(
                "Invalid request.\n\nconclusion can only be set when status is completed.",
                code="invalid",
                field="conclusion",
            )
        if conclusion == "stale":
            raise unprocessable(
                "Only GitHub can set a check run conclusion to stale.", code="invalid"
            )
        if (status == "completed" or "completed_at" in body) and conclusion is None:
            if run.conclusion is None:
                raise HTTPError(
                    422,
                    "Invalid request.\n\nNo conclusion provided for completed check run.",
                    violation=True,
                )
        if status is not None:
            run.status = status
        if conclusion is not None:
            run.status = "completed"
            run.conclusion = conclusion
        if run.status == "completed":
            run.completed_at = parse_time(body["completed_at"]) if "completed_at" in body else now
        if run.started_at is None and (creating or run.status != "queued"):
            run.started_at = now
        output = body.get("output")
        if output is not None:
            if "title" in output:
                run.title = output["title"]
            if "summary" in output:
                run.summary = output["summary"]
            if "text" in output:
                run.text = output["text"]
            for i, raw in enumerate(output.get("annotations") or []):
                single_line = raw["start_line"] == raw["end_line"]
                if not single_line and ("start_column" in raw or "end_column" in raw):
                    raise HTTPError(
                        422,
                        f"Invalid request.\n\nannotations[{i}]: start_column and end_column may "
                        "only be used when start_line equals end_line.",
                        violation=True,
                    )
                if raw["end_line"] < raw["start_line"]:
                    raise HTTPError(
                        422,
                        f"Invalid request.\n\nannotations[{i}]: end_line is before start_line.",
                        violation=True,
                    )
            for raw in output.get("annotations") or []:
                run.annotations.append(
                    Annotation(
                        path=raw["path"],
                        start_line=raw["start_line"],
                        end_line=raw["end_line"],
                        annotation_level=raw["annotation_level"],
                        message=raw["message"],
                        start_column=raw.get("start_column"),
                        end_column=raw.get("end_column"),
                        title=raw.get("title"),
                        raw_details=raw.get("raw_details"),
                    )
                )
        if "actions" in body:
            run.actions = list(body["actions"])

    def _create_check_run(self, ctx: Ctx) -> Result:
        repo, body = ctx.repository, ctx.body
        sha = body["head_sha"]
        if sha not in repo.commits:
            raise unprocessable(
                f"No commit found for SHA: {sha}",
                resource="CheckRun",
                field="head_sha",
                code="invalid",
            )
        app = ctx.actor_app
        run = CheckRun(
            id=self.fake.ids.next(),
            name=body["name"],
            head_sha=sha,
            app=app,
            check_suite_id=repo.check_suite_id(app, sha),
        )
        self._apply_check_fields(run, body, creating=True)
        repo.check_runs.append(run)
        return Result(201, self.render.check_run(repo, run))

    def _check_run(self, ctx: Ctx) -> CheckRun:
        wanted = ctx.int_param("check_run_id")
        for run in ctx.repository.check_runs:
            if run.id == wanted:
                return run
        raise HTTPError(404, "Not Found")

    def _update_check_run(self, ctx: Ctx) -> Result:
        run = self._check_run(ctx)
        if run.app.id != ctx.actor_app.id:
            raise HTTPError(
                403,
                f"Invalid app_id `{ctx.actor_app.id}` - check run can only be modified by the "
                "GitHub App that created it.",
            )
        self._apply_check_fields(run, ctx.body, creating=False)
        run.updates += 1
        return Result(200, self.render.check_run(ctx.repository, run))

    def _get_check_run(self, ctx: Ctx) -> Result:
        return Result(200, self.render.check_run(ctx.repository, self._check_run(ctx)))

    def _list_annotations(self, ctx: Ctx) -> Result:
        run = self._check_run(ctx)
        items = list(range(len(run.annotations)))
        page, link = self._page(ctx, items)
        return Result(200, [self.render.annotation(ctx.repository, run, i) for i in page], link)

    def _list_check_runs(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        sha = repo.resolve_ref(ctx.params["ref"])
        if sha is None:
            raise unprocessable(f"No commit found for SHA: {ctx.params['ref']}")
        runs = [r for r in repo.check_runs if r.head_sha == sha]
        name = ctx.q("check_name")
        if name:
            runs = [r for r in runs if r.name == name]
        status = ctx.q("status")
        if status:
            runs = [r for r in runs if r.status == status]
        app_id = ctx.q("app_id")
        if app_id:
            runs = [r for r in runs if str(r.app.id) == app_id]
        if (ctx.q("filter") or "latest") == "latest":
            latest: dict[tuple[int, str], CheckRun] = {}
            for run in runs:
                latest[(run.app.id, run.name)] = run
            runs = list(latest.values())
        runs.sort(key=lambda r: r.id, reverse=True)
        page, link = self._page(ctx, runs)
        body = {
            "total_count": len(runs),
            "check_runs": [self.render.check_run(repo, r) for r in page],
        }
        return Result(200, body, link)

    # issues and comments ---------------------------------------------------------------------

    def _issue(self, ctx: Ctx) -> Any:
        issue = ctx.repository.issues.get(ctx.int_param("issue_number"))
        if issue is None:
            raise HTTPError(404, "Not Found")
        return issue

    def _get_issue(self, ctx: Ctx) -> Result:
        return Result(200, self.render.issue(ctx.repository, self._issue(ctx)))

    def _list_comments(self, ctx: Ctx) -> Result:
        issue = self._issue(ctx)
        comments = list(issue.live_comments)
        since = ctx.q("since")
        if since:
            limit = parse_time(since)
            comments = [c for c in comments if c.updated_at >= limit]
        page, link = self._page(ctx, comments)
        return Result(200, [self.render.comment(ctx.repository, c) for c in page], link)

    @staticmethod
    def _check_comment_body(body: Any) -> str:
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            raise unprocessable(
                "Validation Failed", resource="IssueComment", code="missing_field", field="body"
            )
        if len(text) > COMMENT_MAX:
            raise HTTPError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "IssueComment",
                        "code": "custom",
                        "field": "body",
                        "message": f"body is too long (maximum is {COMMENT_MAX} characters)",
                    }
                ],
                violation=True,
            )
        return text

    def _create_comment(self, ctx: Ctx) -> Result:
        issue = self._issue(ctx)
        text = self._check_comment_body(ctx.body)
        app = ctx.actor_app
        now = self.fake.now()
        comment = IssueComment(
            id=self.fake.ids.next(),
            issue_number=issue.number,
            body=text,
            user=app.bot_login,
            user_type="Bot",
            created_at=now,
            updated_at=now,
            app=app,
        )
        issue.comments.append(comment)
        issue.updated_at = now
        body = self.render.comment(ctx.repository, comment)
        return Result(201, body, {"Location": body["url"]})

    def _comment(self, ctx: Ctx) -> IssueComment:
        comment = ctx.repository.find_comment(ctx.int_param("comment_id"))
        if comment is None:
            raise HTTPError(404, "Not Found")
        return comment

    def _get_comment(self, ctx: Ctx) -> Result:
        return Result(200, self.render.comment(ctx.repository, self._comment(ctx)))

    def _update_comment(self, ctx: Ctx) -> Result:
        comment = self._comment(ctx)
        comment.body = self._check_comment_body(ctx.body)
        comment.updated_at = self.fake.now()
        return Result(200, self.render.comment(ctx.repository, comment))

    def _delete_comment(self, ctx: Ctx) -> Result:
        self._comment(ctx).deleted = True
        return Result(204)

    def _create_reaction(self, ctx: Ctx) -> Result:
        comment = self._comment(ctx)
        content = ctx.body["content"]
        login = ctx.actor_app.bot_login
        for existing in comment.reactions:
            if existing.content == content and existing.user == login:
                return Result(200, self.render.reaction(existing))
        reaction = Reaction(
            id=self.fake.ids.next(),
            content=content,
            user=login,
            user_type="Bot",
            created_at=self.fake.now(),
        )
        comment.reactions.append(reaction)
        return Result(201, self.render.reaction(reaction))

    # labels ----------------------------------------------------------------------------------

    def _list_issue_labels(self, ctx: Ctx) -> Result:
        repo, issue = ctx.repository, self._issue(ctx)
        labels = [repo.ensure_label(n) for n in issue.labels]
        page, link = self._page(ctx, labels)
        return Result(200, [self.render.label(repo, lb) for lb in page], link)

    def _add_labels(self, ctx: Ctx) -> Result:
        repo, issue, body = ctx.repository, self._issue(ctx), ctx.body
        raw = body.get("labels", []) if isinstance(body, dict) else body or []
        names = [x["name"] if isinstance(x, dict) else x for x in raw]
        for name in names:
            label = repo.ensure_label(name)
            if label.name not in issue.labels:
                issue.labels.append(label.name)
        return Result(200, [self.render.label(repo, repo.ensure_label(n)) for n in issue.labels])

    def _set_labels(self, ctx: Ctx) -> Result:
        repo, issue, body = ctx.repository, self._issue(ctx), ctx.body
        raw = body.get("labels", []) if isinstance(body, dict) else body or []
        issue.labels = []
        for item in raw:
            label = repo.ensure_label(item["name"] if isinstance(item, dict) else item)
            if label.name not in issue.labels:
                issue.labels.append(label.name)
        return Result(200, [self.render.label(repo, repo.ensure_label(n)) for n in issue.labels])

    def _list_repo_labels(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        labels = sorted(repo.labels.values(), key=lambda lb: lb.name.lower())
        page, link = self._page(ctx, labels)
        return Result(200, [self.render.label(repo, lb) for lb in page], link)

    def _remove_label(self, ctx: Ctx) -> Result:
        repo, issue = ctx.repository, self._issue(ctx)
        name = ctx.params["name"]
        match = next((n for n in issue.labels if n.lower() == name.lower()), None)
        if match is None:
            raise HTTPError(404, "Label does not exist")
        issue.labels.remove(match)
        return Result(200, [self.render.label(repo, repo.ensure_label(n)) for n in issue.labels])

    def _create_label(self, ctx: Ctx) -> Result:
        repo, body = ctx.repository, ctx.body
        if repo.find_label(body["name"]) is not None:
            raise unprocessable(
                "Validation Failed", resource="Label", code="already_exists", field="name"
            )
        color = str(body.get("color", "ededed")).lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
            raise unprocessable(
                "Validation Failed", resource="Label", code="invalid", field="color"
            )
        label = repo.ensure_label(
            body["name"], color=color.lower(), description=body.get("description")
        )
        return Result(201, self.render.label(repo, label))

    def _get_label(self, ctx: Ctx) -> Result:
        label = ctx.repository.find_label(ctx.params["name"])
        if label is None:
            raise HTTPError(404, "Not Found")
        return Result(200, self.render.label(ctx.repository, label))

    def _collaborator_permission(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        login = ctx.params["username"]
        role = repo.collaborators.get(login)
        if role is None:
            if login == repo.owner:
                role = "admin"
            else:
                role = "none" if repo.private else "read"
        permission = ROLE_TO_PERMISSION[role]
        user = self.render.user(login)
        user["permissions"] = {
            "pull": LEVELS[permission] >= 1,
            "triage": role in ("triage", "write", "maintain", "admin"),
            "push": LEVELS[permission] >= 2,
            "maintain": role in ("maintain", "admin"),
            "admin": role == "admin",
        }
        user["role_name"] = role
        return Result(200, {"permission": permission, "role_name": role, "user": user})

    # actions ---------------------------------------------------------------------------------

    def _workflow(self, ctx: Ctx) -> Any:
        workflow = ctx.repository.find_workflow(ctx.params["workflow_id"])
        if workflow is None:
            raise HTTPError(404, "Not Found")
        return workflow

    def _get_workflow(self, ctx: Ctx) -> Result:
        return Result(200, self.render.workflow(ctx.repository, self._workflow(ctx)))

    def _dispatch_workflow(self, ctx: Ctx) -> Result:
        repo, workflow, body = ctx.repository, self._workflow(ctx), ctx.body
        ref = body["ref"]
        sha = repo.resolve_ref(ref)
        if sha is None or ref in repo.commits:
            raise unprocessable(f"No ref found for: {ref}")
        inputs = dict(body.get("inputs") or {})
        if workflow.inputs is not None:
            unexpected = sorted(set(inputs) - set(workflow.inputs))
            if unexpected:
                raise HTTPError(
                    422,
                    f"Unexpected inputs provided: {json.dumps(unexpected)}",
                    violation=True,
                )
            missing = sorted(
                name
                for name, spec in workflow.inputs.items()
                if spec.get("required") and name not in inputs and "default" not in spec
            )
            if missing:
                raise HTTPError(422, f"Required input '{missing[0]}' not provided", violation=True)
        branch = ref.removeprefix("refs/heads/")
        actor = ctx.actor_app.bot_login
        run = repo.create_workflow_run(
            workflow,
            head_sha=sha,
            head_branch=branch,
            event="workflow_dispatch",
            actor=actor,
            inputs=inputs,
        )
        details = bool(body.get("return_run_details"))
        repo.workflow_dispatches.append(
            WorkflowDispatch(
                workflow=workflow,
                ref=ref,
                inputs=inputs,
                return_run_details=details,
                run=run,
                actor=actor,
                created_at=self.fake.now(),
            )
        )
        if details:
            api = f"{self.fake.url}/repos/{repo.full_name}/actions/runs/{run.id}"
            return Result(
                200,
                {
                    "workflow_run_id": run.id,
                    "run_url": api,
                    "html_url": f"https://github.com/{repo.full_name}/actions/runs/{run.id}",
                },
            )
        return Result(204)

    def _repository_dispatch(self, ctx: Ctx) -> Result:
        repo, body = ctx.repository, ctx.body
        payload = dict(body.get("client_payload") or {})
        if len(json.dumps(payload).encode()) >= 64 * 1024:
            raise HTTPError(422, "client_payload must be less than 64KB", violation=True)
        repo.dispatch_events.append(
            RepositoryDispatch(
                event_type=body["event_type"],
                client_payload=payload,
                actor=ctx.actor_app.bot_login,
                created_at=self.fake.now(),
            )
        )
        return Result(204)

    def _list_runs(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        runs = list(repo.workflow_runs)
        for name, attr in (("branch", "head_branch"), ("event", "event"), ("head_sha", "head_sha")):
            value = ctx.q(name)
            if value:
                runs = [r for r in runs if getattr(r, attr) == value]
        status = ctx.q("status")
        if status:
            runs = [r for r in runs if status in (r.status, r.conclusion)]
        actor = ctx.q("actor")
        if actor:
            runs = [r for r in runs if r.actor == actor]
        runs.sort(key=lambda r: r.id, reverse=True)
        page, link = self._page(ctx, runs)
        body = {
            "total_count": len(runs),
            "workflow_runs": [self.render.workflow_run(repo, r) for r in page],
        }
        return Result(200, body, link)

    def _list_artifacts(self, ctx: Ctx) -> Result:
        repo = ctx.repository
        run = repo.find_run(ctx.int_param("run_id"))
        if run is None:
            raise HTTPError(404, "Not Found")
        items = [self.render.artifact(repo, run, a) for a in run.artifacts]
        return Result(200, {"total_count": len(items), "artifacts": items})

    def _download_artifact(self, ctx: Ctx) -> Result:
        found = ctx.repository.find_artifact(ctx.int_param("artifact_id"))
        if found is None or ctx.params.get("archive_format") != "zip":
            raise HTTPError(404, "Not Found")
        _, artifact = found
        if artifact.expired:
            raise HTTPError(410, "Artifact has expired")
        location = f"/_downloads/artifacts/{artifact.id}.zip"
        with self.fake.lock:
            self.fake.downloads[location] = artifact.data
        return Result(302, None, {"Location": f"{self.fake.url}{location}"})

    def _get_run(self, ctx: Ctx) -> Result:
        run = ctx.repository.find_run(ctx.int_param("run_id"))
        if run is None:
            raise HTTPError(404, "Not Found")
        return Result(200, self.render.workflow_run(ctx.repository, run))
