"""Tests of the GitHub fake itself: PyGithub end to end, auth, contract checks, faults."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from github import Auth, Github, GithubException, GithubIntegration, GithubRetry
from github.GithubException import (
    BadCredentialsException,
    RateLimitExceededException,
    UnknownObjectException,
)

from tests.support.fakegithub.contract import FIXTURES_DIR, SUBSET_PATH, Contract
from tests.support.fakegithub.server import ContractViolationError, FakeGitHub, Setup, github_kwargs
from tests.support.fakegithub.state import CheckRun, Symlink
from tests.support.fakegithub.webhooks import (
    available_payloads,
    load_payload,
    payload_index,
    retarget,
    send_webhook,
    sign,
)

QNA = "version: 3\ncreated_by: alice\nseed_examples: []\n"


def make_annotations(n: int, path: str = "knowledge/x/qna.yaml") -> list[dict[str, Any]]:
    return [
        {
            "path": path,
            "start_line": i + 1,
            "end_line": i + 1,
            "annotation_level": "warning",
            "message": f"finding {i}",
        }
        for i in range(n)
    ]


def raw_client(fake: FakeGitHub, setup: Setup) -> httpx.Client:
    """An httpx client with an installation token, for requests PyGithub would never send."""
    token = fake.issue_token(setup.installation).token
    return httpx.Client(base_url=fake.url, headers={"Authorization": f"token {token}"})


@pytest.fixture
def gh(github_setup: Setup) -> Iterator[Github]:
    client = github_setup.github()
    yield client
    client.close()


# -- App auth ------------------------------------------------------------------------------------


def test_app_jwt_then_installation_token_then_repo(github_setup: Setup) -> None:
    fake, app, inst = github_setup.fake, github_setup.app, github_setup.installation
    with github_setup.integration() as gi:
        assert gi.get_app().slug == "labbot"
        assert [i.id for i in gi.get_installations()] == [inst.id]
        assert gi.get_repo_installation("org", "taxonomy").id == inst.id
        assert gi.get_app_installation(inst.id).app_id == app.id
        token = gi.get_access_token(inst.id)
        assert token.token.startswith("ghs_")
        assert 3500 < token.expires_at.timestamp() - time.time() <= 3600
    with github_setup.github() as gh:
        assert gh.get_repo("org/taxonomy").default_branch == "main"

    jwt_calls = [
        c for c in fake.calls if c.path.startswith("/app") or c.path.endswith("/installation")
    ]
    assert jwt_calls and all(c.headers["authorization"].startswith("Bearer ") for c in jwt_calls)
    assert all(c.auth == "app" for c in jwt_calls)
    repo_call = fake.calls_to("GET", r"^/repos/org/taxonomy$")[0]
    assert repo_call.auth == "installation" and repo_call.installation_id == inst.id
    assert repo_call.headers["authorization"].startswith("token ghs_")
    assert app.bot_login == "labbot[bot]"


def _jwt(app_id: int, key: str, *, iat: int, exp: int) -> str:
    return jwt.encode({"iat": iat, "exp": exp, "iss": str(app_id)}, key, algorithm="RS256")


def test_jwt_rules(github_setup: Setup) -> None:
    fake, app = github_setup.fake, github_setup.app
    other = fake.create_app("intruder", fresh_key=True)
    now = int(time.time())

    def get_app(token: str) -> httpx.Response:
        return httpx.get(f"{fake.url}/app", headers={"Authorization": f"Bearer {token}"})

    assert (
        get_app(_jwt(app.id, app.private_key_pem, iat=now - 60, exp=now + 540)).status_code == 200
    )
    # signed with another App's key
    wrong_key = get_app(_jwt(app.id, other.private_key_pem, iat=now - 60, exp=now + 300))
    assert wrong_key.status_code == 401
    assert wrong_key.json()["message"] == "A JSON web token could not be decoded"
    # lifetime over 10 minutes
    too_long = get_app(_jwt(app.id, app.private_key_pem, iat=now - 60, exp=now + 600))
    assert too_long.status_code == 401 and "too far in the future" in too_long.json()["message"]
    # expired
    assert (
        get_app(_jwt(app.id, app.private_key_pem, iat=now - 700, exp=now - 100)).status_code == 401
    )
    # issued in the future
    assert (
        get_app(_jwt(app.id, app.private_key_pem, iat=now + 300, exp=now + 600)).status_code == 401
    )
    # no credentials; an installation token where a JWT is needed; a JWT where a token is
    assert httpx.get(f"{fake.url}/app").status_code == 401
    token = fake.issue_token(github_setup.installation).token
    assert (
        httpx.get(f"{fake.url}/app", headers={"Authorization": f"token {token}"}).status_code == 401
    )
    jwt_on_repo = httpx.get(
        f"{fake.url}/repos/org/taxonomy",
        headers={
            "Authorization": f"Bearer {_jwt(app.id, app.private_key_pem, iat=now, exp=now + 60)}"
        },
    )
    assert jwt_on_repo.status_code == 401
    # every answer carries GitHub's rate-limit headers
    assert all("X-RateLimit-Remaining" in c.response_headers for c in fake.calls)

    with GithubIntegration(
        auth=Auth.AppAuth(app.id, other.private_key_pem), **github_kwargs(fake)
    ) as gi:
        with pytest.raises(GithubException) as err:
            gi.get_app()
        assert err.value.status == 401


def test_installation_token_expiry_and_scoping(github_setup: Setup) -> None:
    fake, inst = github_setup.fake, github_setup.installation
    fake.create_repo("org/other")
    fake.create_repo("elsewhere/repo")
    with github_setup.integration() as gi:
        scoped = gi.get_access_token(
            inst.id, permissions={"checks": "read", "metadata": "read", "pull_requests": "read"}
        )
        with pytest.raises(GithubException) as err:
            gi.get_access_token(inst.id, permissions={"administration": "write"})
        assert err.value.status == 422
    assert scoped.permissions == {"checks": "read", "metadata": "read", "pull_requests": "read"}
    with Github(auth=Auth.Token(scoped.token), **github_kwargs(fake)) as gh:
        repo = gh.get_repo("org/taxonomy")
        head = github_setup.repo.branches["main"]
        with pytest.raises(GithubException) as err:
            repo.create_check_run("labbot", head)
        assert err.value.status == 403
        assert err.value.data["message"] == "Resource not accessible by integration"
        with pytest.raises(UnknownObjectException):
            gh.get_repo("elsewhere/repo")  # not covered by the installation
    # the token stops working when it expires (fake clock)
    with github_setup.github() as gh:
        gh.get_repo("org/taxonomy")
        fake.advance(3601)
        with pytest.raises(BadCredentialsException):
            gh.get_repo("org/other")


# -- repositories, pull requests, contents -------------------------------------------------------


def test_pull_request_files_pagination(github_setup: Setup, gh: Github) -> None:
    fake, repo = github_setup.fake, github_setup.repo
    files = {f"knowledge/topic{i:02d}/qna.yaml": QNA for i in range(75)}
    pr = repo.create_pull(head="many", files=files, user="alice", title="Many")
    pull = gh.get_repo("org/taxonomy").get_pull(pr.number)
    assert (pull.number, pull.user.login, pull.head.sha, pull.base.ref) == (
        pr.number,
        "alice",
        pr.head_sha,
        "main",
    )
    assert pull.changed_files == 75 and pull.merged is False
    got = pull.get_files()
    assert [f.filename for f in got] == sorted(files)
    assert {f.status for f in got} == {"added"}
    pages = fake.calls_to("GET", rf"/pulls/{pr.number}/files$")
    assert len(pages) == 3
    link = pages[0].response_headers["Link"]
    assert f'<{fake.url}/repos/org/taxonomy/pulls/{pr.number}/files?page=2>; rel="next"' in link
    assert 'page=3>; rel="last"' in link

    # per_page is honoured (PyGithub sends it only when it is not 30) and capped at 100
    with github_setup.github(per_page=100) as gh100:
        assert len(list(gh100.get_repo("org/taxonomy").get_pull(pr.number).get_files())) == 75
    assert (
        fake.calls[-1].query["per_page"] == ["100"]
        and "Link" not in fake.calls[-1].response_headers
    )
    # totalCount asks for per_page=1 and reads the "last" link
    assert pull.get_files().totalCount == 75


def test_pull_list_status_and_commit_pulls(github_setup: Setup, gh: Github) -> None:
    repo = github_setup.repo
    prs = [repo.create_pull(head=f"b{i}", files={f"f{i}.txt": "x"}) for i in range(35)]
    prs[0].close()
    remote = gh.get_repo("org/taxonomy")
    open_numbers = [p.number for p in remote.get_pulls(state="open")]
    assert open_numbers == sorted((p.number for p in prs[1:]), reverse=True)
    assert len(list(remote.get_pulls(state="all"))) == 35

    merged = prs[1]
    sha = merged.merge(merged_by="maintainer")
    assert repo.branches["main"] == sha and repo.file("f1.txt") == b"x"
    assert [p.number for p in remote.get_commit(sha).get_pulls()] == [merged.number]
    pull = remote.get_pull(merged.number)
    assert pull.merged and pull.merge_commit_sha == sha and pull.merged_by.login == "maintainer"


def test_contents_of_symlinks_and_url_special_names(github_setup: Setup, gh: Github) -> None:
    """GitHub answers a link to a file of the repository with that file (its own path), any
    other link with a ``symlink`` object; names arrive percent-encoded and are decoded once."""
    repo = github_setup.repo
    sha = repo.commit(
        {
            "k/real/qna.yaml": QNA,
            "k/x#y?ref=main/qna.yaml": QNA,
            "k/100%25 a+b/qna.yaml": "other\n",
            "k/in/qna.yaml": Symlink(b"../real/qna.yaml"),
            "k/out/qna.yaml": Symlink(b"../../../etc/passwd"),
        }
    )

    def get(path: str) -> Any:
        _, data = gh.requester.requestJsonAndCheck(
            "GET", f"/repos/org/taxonomy/contents/{path}", parameters={"ref": sha}
        )
        return data

    followed = get("k/in/qna.yaml")
    assert followed["type"] == "file" and followed["path"] == "k/real/qna.yaml"
    dangling = get("k/out/qna.yaml")
    assert dangling["type"] == "symlink" and dangling["target"] == "../../../etc/passwd"
    assert get("k/x%23y%3Fref%3Dmain/qna.yaml")["path"] == "k/x#y?ref=main/qna.yaml"
    assert get("k/100%2525%20a%2Bb/qna.yaml")["path"] == "k/100%25 a+b/qna.yaml"
    listing = get("k/in")
    assert [(e["name"], e["type"]) for e in listing] == [("qna.yaml", "symlink")]


def test_contents(github_setup: Setup, gh: Github) -> None:
    repo = github_setup.repo
    big = "x" * (1024 * 1024 + 1)
    sha = repo.commit(
        {"knowledge/a b/qna.yaml": QNA, "knowledge/a b/doc.md": "# doc\n", "big.bin": big},
        message="add",
    )
    remote = gh.get_repo("org/taxonomy")
    content = remote.get_contents("knowledge/a b/qna.yaml", ref=sha)
    assert not isinstance(content, list)
    assert content.decoded_content.decode() == QNA and content.encoding == "base64"
    again = remote.get_contents("knowledge/a b/qna.yaml", ref="main")
    assert not isinstance(again, list) and again.sha == content.sha
    listing = remote.get_contents("knowledge/a b")
    assert isinstance(listing, list) and sorted(c.name for c in listing) == ["doc.md", "qna.yaml"]
    large = remote.get_contents("big.bin")
    assert not isinstance(large, list) and large.encoding == "none" and large.size == len(big)
    blob = remote.get_git_blob(large.sha)  # GitHub's way to read files over 1 MB
    assert base64.b64decode(blob.content) == big.encode() and blob.encoding == "base64"
    with pytest.raises(UnknownObjectException):
        remote.get_contents("missing.yaml", ref=sha)
    pr = repo.create_pull(head="edit", files={"knowledge/a b/qna.yaml": QNA + "x: 1\n"})
    (change,) = remote.get_pull(pr.number).get_files()
    assert change.status == "modified" and change.additions == 1 and "+x: 1" in change.patch


# -- checks --------------------------------------------------------------------------------------


def test_check_runs_annotations_append_and_limits(github_setup: Setup, gh: Github) -> None:
    fake, repo = github_setup.fake, github_setup.repo
    pr = repo.create_pull(head="qna", files={"knowledge/x/qna.yaml": QNA})
    remote = gh.get_repo("org/taxonomy")
    run = remote.create_check_run(
        "labbot/validate",
        pr.head_sha,
        status="in_progress",
        output={"title": "Validating", "summary": "...", "annotations": make_annotations(50)},
    )
    assert run.status == "in_progress" and run.conclusion is None
    assert [p.number for p in run.pull_requests] == [pr.number]
    run.edit(
        conclusion="failure",
        output={"title": "2 errors", "summary": "failed", "annotations": make_annotations(30)},
    )
    (state,) = repo.checks_for(pr.head_sha, "labbot/validate")
    assert (state.status, state.conclusion, len(state.annotations)) == ("completed", "failure", 80)
    assert state.completed_at is not None and state.app.slug == "labbot"
    assert len(list(run.get_annotations())) == 80
    listed = remote.get_commit(pr.head_sha).get_check_runs(check_name="labbot/validate")
    assert [r.id for r in listed] == [run.id]

    # 51 annotations in one request: 422 as on GitHub, and recorded as a violation
    with fake.expect_violations(1) as seen:
        with pytest.raises(GithubException) as err:
            run.edit(output={"title": "t", "summary": "s", "annotations": make_annotations(51)})
    assert err.value.status == 422 and "maxItems" in seen[0].messages[0]
    assert len(state.annotations) == 80
    # summary over 65535 characters
    with fake.expect_violations(1):
        with pytest.raises(GithubException) as err:
            remote.create_check_run(
                "big", pr.head_sha, output={"title": "t", "summary": "x" * 65536}
            )
    assert err.value.status == 422
    # rules GitHub enforces beyond the schema
    with fake.expect_violations(1):
        with pytest.raises(GithubException) as err:
            remote.create_check_run("no-conclusion", pr.head_sha, status="completed")
    with pytest.raises(GithubException) as err:
        remote.create_check_run("ghost", "f" * 40)
    assert err.value.status == 422 and "No commit found" in err.value.data["message"]


# -- comments, reactions, labels, permissions ----------------------------------------------------


def test_sticky_comment_reactions_labels(github_setup: Setup, gh: Github) -> None:
    fake, repo = github_setup.fake, github_setup.repo
    other = repo.create_issue("unrelated")
    pr = repo.create_pull(head="qna", files={"knowledge/x/qna.yaml": QNA})
    human = repo.add_comment(pr.number, "/labbot preview", user="alice")
    pull = gh.get_repo("org/taxonomy").get_pull(pr.number)
    assert pull.issue_url.endswith(f"/issues/{pr.number}")
    created = pull.create_issue_comment("<!-- labbot:sticky -->\nfirst")
    created.edit("<!-- labbot:sticky -->\nsecond")
    assert [c.body for c in repo.comments(pr.number)] == [
        "/labbot preview",
        "<!-- labbot:sticky -->\nsecond",
    ]
    assert repo.comments(other.number) == []
    bot = [c for c in pull.get_issue_comments() if c.user.login == "labbot[bot]"]
    assert [c.id for c in bot] == [created.id] and bot[0].user.type == "Bot"
    assert bot[0].performed_via_github_app.slug == "labbot"

    remote_human = gh.get_repo("org/taxonomy").get_issue(pr.number).get_comment(human.id)
    assert remote_human.user.login == "alice"
    remote_human.create_reaction("eyes")
    remote_human.create_reaction("eyes")
    assert [(r.content, r.user) for r in human.reactions] == [("eyes", "labbot[bot]")]
    statuses = [c.status for c in fake.calls_to("POST", "/reactions$")]
    assert statuses == [201, 200]

    pull.add_to_labels("knowledge")  # PyGithub sends a bare JSON array
    remote = gh.get_repo("org/taxonomy")
    remote.create_label("bot/validated", "0e8a16", "validated by labbot")
    pull.add_to_labels("bot/validated")
    assert pr.labels == ["knowledge", "bot/validated"]
    assert remote.get_label("bot/validated").color == "0e8a16"
    pull.remove_from_labels("knowledge")
    assert [lb.name for lb in pull.get_labels()] == ["bot/validated"]
    with pytest.raises(GithubException) as err:
        remote.create_label("bot/validated", "0e8a16")
    assert err.value.status == 422 and err.value.data["errors"][0]["code"] == "already_exists"
    with pytest.raises(UnknownObjectException):
        remote.get_label("nope")

    # GitHub's 65,536-character limit on comment bodies (not in the spec)
    with fake.expect_violations(1):
        with pytest.raises(GithubException) as err:
            pull.create_issue_comment("x" * 65537)
    assert err.value.status == 422


def test_collaborator_permission(github_setup: Setup, gh: Github) -> None:
    repo = github_setup.repo
    repo.set_permission("ann", "admin")
    repo.set_permission("mo", "maintain")
    repo.set_permission("wu", "write")
    repo.set_permission("tri", "triage")
    remote = gh.get_repo("org/taxonomy")
    got = {u: remote.get_collaborator_permission(u) for u in ("ann", "mo", "wu", "tri", "rando")}
    assert got == {"ann": "admin", "mo": "write", "wu": "write", "tri": "read", "rando": "read"}
    assert remote.get_collaborator_role_name("mo") == "maintain"


# -- Actions -------------------------------------------------------------------------------------


def test_workflow_and_repository_dispatch(github_setup: Setup, gh: Github) -> None:
    fake, repo = github_setup.fake, github_setup.repo
    workflow = repo.add_workflow(
        ".github/workflows/build-model.yml", inputs={"pr": {"required": True}, "sha": {}}
    )
    remote = gh.get_repo("org/taxonomy")
    wf = remote.get_workflow("build-model.yml")
    assert wf.id == workflow.id
    assert wf.create_dispatch("main", {"pr": "7", "sha": "abc"}) is True
    run = wf.create_dispatch("main", {"pr": "8"}, return_run_details=True, throw=True)
    assert run.id == repo.workflow_dispatches[-1].run.id
    assert [d.inputs for d in repo.workflow_dispatches] == [{"pr": "7", "sha": "abc"}, {"pr": "8"}]
    assert [c.status for c in fake.calls_to("POST", "/dispatches$")] == [204, 200]

    with fake.expect_violations(1):
        with pytest.raises(GithubException) as err:
            wf.create_dispatch("main", {"pr": "1", "unknown": "x"}, throw=True)
    assert err.value.status == 422 and "Unexpected inputs" in err.value.data["message"]
    with pytest.raises(GithubException) as err:
        wf.create_dispatch("no-such-branch", {"pr": "1"}, throw=True)
    assert err.value.status == 422
    with fake.expect_violations(1):  # more than 25 inputs: the spec's maxProperties
        with pytest.raises(GithubException):
            wf.create_dispatch("main", {f"i{n}": "x" for n in range(26)}, throw=True)

    assert remote.create_repository_dispatch("model-build", {"sha": "abc"}) is True
    assert repo.dispatch_events[0].event_type == "model-build"
    with fake.expect_violations(1):  # client_payload has at most 10 top-level keys
        # PyGithub returns False (status != 204) rather than raising here
        assert remote.create_repository_dispatch("x", {f"k{n}": n for n in range(11)}) is False
    assert fake.calls[-1].status == 422 and len(repo.dispatch_events) == 1

    state_run = repo.workflow_dispatches[0].run
    state_run.set_status("completed", "success")
    runs = remote.get_workflow_runs(event="workflow_dispatch")
    assert runs.totalCount == 2
    got = remote.get_workflow_run(state_run.id)
    assert (got.status, got.conclusion, got.head_branch) == ("completed", "success", "main")
    assert got.head_sha == repo.branches["main"]


# -- contract checking ---------------------------------------------------------------------------


def test_off_spec_requests_are_rejected_and_recorded(github_setup: Setup) -> None:
    fake = github_setup.fake
    head = github_setup.repo.branches["main"]
    with raw_client(fake, github_setup) as client:
        with fake.expect_violations(1) as seen:
            bad_level = make_annotations(1)
            bad_level[0]["annotation_level"] = "error"
            response = client.post(
                "/repos/org/taxonomy/check-runs",
                json={
                    "name": "x",
                    "head_sha": head,
                    "output": {"title": "t", "summary": "s", "annotations": bad_level},
                },
            )
        assert response.status_code == 422 and seen[0].kind == "request"
        assert "annotation_level" in seen[0].messages[0]

        with fake.expect_violations(1) as seen:
            assert (
                client.get("/repos/org/taxonomy/pulls", params={"colour": "red"}).status_code == 422
            )
        assert "'colour' is not in the spec" in seen[0].messages[0]

        with fake.expect_violations(1):
            assert client.get("/repos/org/taxonomy/pulls/abc").status_code == 422

        with fake.expect_violations(1) as seen:
            assert client.get("/repos/org/taxonomy/statuses/" + head).status_code == 404
        assert seen[0].kind == "route"

        with fake.expect_violations(1):
            response = client.post(
                "/repos/org/taxonomy/issues/1/comments",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 400

        with fake.expect_violations(1):
            assert client.post("/repos/org/taxonomy/dispatches", json={}).status_code == 422

    # leaving the context manager with an unconsumed violation raises
    other = FakeGitHub().start()
    other.quickstart()
    assert httpx.get(f"{other.url}/nowhere").status_code == 404
    with pytest.raises(ContractViolationError, match="path not in the OpenAPI subset"):
        other.stop()


def test_fake_responses_are_validated(github_setup: Setup, gh: Github, monkeypatch: Any) -> None:
    fake = github_setup.fake
    github_setup.repo.ensure_label("knowledge")
    original = fake.render.label

    def drifted(repo: Any, label: Any) -> dict[str, Any]:
        body = original(repo, label)
        del body["color"]
        return body

    monkeypatch.setattr(fake.render, "label", drifted)
    with fake.expect_violations(1) as seen:
        with pytest.raises(GithubException) as err:
            gh.get_repo("org/taxonomy").get_label("knowledge")
    assert err.value.status == 500
    assert seen[0].kind == "response" and "'color' is a required property" in seen[0].messages[0]


def test_subset_is_self_contained_and_records_its_source() -> None:
    assert SUBSET_PATH.stat().st_size < 1_500_000
    contract = Contract.load()
    assert contract.source["package"] == "@octokit/openapi"
    assert contract.source["version"]
    refs: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(contract.raw)
    for ref in refs:
        kind, name = ref.split("/")[2:4]
        assert name in contract.raw["components"][kind], ref
    # every operation the fake serves is in the subset
    served = set(FakeGitHub()._handlers)
    assert served == {op.operation_id for op in contract.operations}


# -- faults and rate limits ----------------------------------------------------------------------


def test_fault_injection_and_call_log(github_setup: Setup, gh: Github) -> None:
    fake = github_setup.fake
    pr = github_setup.repo.create_pull(head="qna", files={"a.txt": "a"})
    remote = gh.get_repo("org/taxonomy")

    fault = fake.inject("GET", rf"/pulls/{pr.number}$", status=502, times=1)
    with pytest.raises(GithubException) as err:
        remote.get_pull(pr.number)
    assert err.value.status == 502
    assert remote.get_pull(pr.number).number == pr.number
    assert fault.hits == 1 and fault.exhausted
    log = fake.calls_to("GET", rf"/pulls/{pr.number}$")
    assert [(c.status, c.fault) for c in log] == [(502, True), (200, False)]

    # PyGithub's own retry recovers from transient 5xx
    fake.inject("GET", rf"/pulls/{pr.number}$", status=503, times=2)
    with github_setup.github(retry=GithubRetry(total=3, backoff_factor=0)) as retrying:
        assert retrying.get_repo("org/taxonomy").get_pull(pr.number).number == pr.number
    assert [c.status for c in fake.calls_to("GET", rf"/pulls/{pr.number}$")][-3:] == [503, 503, 200]

    # primary rate limit: 403 + X-RateLimit-Remaining: 0 + X-RateLimit-Reset
    fake.inject_rate_limit("POST", "/comments$", reset_in=120)
    with pytest.raises(RateLimitExceededException) as limited:
        remote.get_issue(pr.number).create_comment("hi")
    assert limited.value.headers is not None
    headers = {k.lower(): v for k, v in limited.value.headers.items()}
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["x-ratelimit-reset"]) >= int(time.time()) + 100

    # secondary rate limit with Retry-After, as 429
    fake.inject_rate_limit("*", r"/labels", secondary=True, status=429, retry_after=30)
    with pytest.raises(GithubException) as err:
        remote.get_label("x")
    assert err.value.status == 429 and err.value.headers is not None
    assert {k.lower(): v for k, v in err.value.headers.items()}["retry-after"] == "30"

    # slow answers, for client timeouts
    fake.inject("GET", r"^/repos/org/taxonomy$", status=200, delay=0.3, body={})
    with raw_client(fake, github_setup) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/repos/org/taxonomy", timeout=0.1)


def test_primary_rate_limit_budget(github_setup: Setup, gh: Github) -> None:
    fake = github_setup.fake
    remote = gh.get_repo("org/taxonomy")
    first = int(fake.calls[-1].response_headers["X-RateLimit-Remaining"])
    remote.get_labels().totalCount  # noqa: B018 - a request
    assert int(fake.calls[-1].response_headers["X-RateLimit-Remaining"]) == first - 1
    fake.set_rate_limit(remaining=1, installation=github_setup.installation, reset_in=60)
    remote.get_pulls().totalCount  # noqa: B018 - spends the last request
    with pytest.raises(RateLimitExceededException):
        gh.get_repo("org/taxonomy")
    fake.advance(61)  # the window resets
    gh.get_repo("org/taxonomy")


def test_opt_in_secondary_limit_on_content_writes() -> None:
    with FakeGitHub(content_writes_per_minute=3) as fake:
        setup = fake.quickstart()
        issue = setup.repo.create_issue("paced")
        with setup.github() as gh:
            remote = gh.get_repo("org/taxonomy").get_issue(issue.number)
            for n in range(3):
                remote.create_comment(f"c{n}")
            with pytest.raises(RateLimitExceededException) as err:
                remote.create_comment("one too many")
            assert err.value.headers is not None
            assert int({k.lower(): v for k, v in err.value.headers.items()}["retry-after"]) <= 61
            remote.get_comments().totalCount  # noqa: B018 - reads are not limited
            fake.advance(61)
            remote.create_comment("after the minute")
        assert len(setup.repo.comments(issue.number)) == 4


# -- webhooks ------------------------------------------------------------------------------------


class Receiver:
    """A stand-in for the App's webhook endpoint: verifies HMAC-SHA256, records deliveries,
    answers 503 to the first ``ping`` (so there is a failed delivery to redeliver)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.seen: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = outer.receive({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhook"

    def receive(self, headers: dict[str, str], body: bytes) -> int:
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-hub-signature-256", "")):
            return 401
        self.seen.append({"headers": headers, "payload": json.loads(body)})
        if headers["x-github-event"] == "ping" and len(self.seen) == 1:
            return 503
        return 200

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class PostOnly:
    """Any client with ``post(path, content=, headers=)`` works (e.g. FastAPI's TestClient)."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base)

    def post(self, url: str, *, content: bytes, headers: Any) -> httpx.Response:
        return self.client.post(url, content=content, headers=headers)


def test_payload_fixtures_and_index() -> None:
    index = payload_index()
    files = {entry["file"] for entry in index["payloads"]}
    assert files == {f"{name}.json" for name in available_payloads()}
    for name in (
        "pull_request.opened",
        "pull_request.synchronize",
        "pull_request.closed.merged",
        "issue_comment.created.pull_request",
        "check_run.rerequested",
        "check_suite.requested",
        "installation.created",
        "push",
        "ping",
        "workflow_run.completed",
        "workflow_job.queued",
    ):
        assert name in available_payloads()
    derived = {e["file"] for e in index["payloads"] if "derived" in e}
    assert "pull_request.closed.merged.json" in derived
    assert load_payload("pull_request", "closed", "merged")["pull_request"]["merged"] is True
    comment = load_payload("issue_comment", "created", "pull_request")
    assert comment["issue"]["pull_request"]["url"].endswith(f"/pulls/{comment['issue']['number']}")
    readme = (FIXTURES_DIR / "README.md").read_text()
    assert "MIT" in readme and "@octokit/webhooks-examples" in readme

    # retargeting keeps a payload exactly as valid as GitHub's original
    contract = Contract.load()
    for entry in index["payloads"]:
        original = json.loads((FIXTURES_DIR / "webhooks" / entry["file"]).read_text())
        moved = retarget(
            original,
            repo="org/taxonomy",
            repo_id=99,
            installation_id=7,
            sender="alice",
            number=12,
            head_sha="a" * 40,
            comment_id=555,
            comment_body="/labbot help",
            run_id=321,
            api_url="http://127.0.0.1:1",
        )
        before = {e.split(":")[0] for e in contract.validate_webhook(entry["event"], original)}
        after = {e.split(":")[0] for e in contract.validate_webhook(entry["event"], moved)}
        assert after <= before, (entry["file"], after - before)
        assert "octocat/Hello-World" not in json.dumps(moved.get("repository", {}))


def test_webhook_payloads_from_state_stay_as_valid_as_githubs(github_setup: Setup) -> None:
    fake, repo = github_setup.fake, github_setup.repo
    pr = repo.create_pull(head="q", files={"a.yaml": "x"}, labels=["knowledge"], user="bob")
    comment = repo.add_comment(pr.number, "/labbot help", user="alice")
    workflow = repo.add_workflow()
    run = repo.create_workflow_run(workflow, status="completed", conclusion="success")
    check = CheckRun(
        id=77, name="labbot", head_sha=pr.head_sha, app=github_setup.app, check_suite_id=5
    )
    contract = Contract.load()
    for entry in payload_index()["payloads"]:
        event, action = entry["event"], entry["action"]
        parts = entry["file"].removesuffix(".json").split(".")
        variant = parts[2] if len(parts) == 3 else None
        by_event: dict[str, dict[str, Any]] = {
            "pull_request": {"pr": pr},
            "issue_comment": {"comment": comment},
            "check_run": {"check_run": check},
            "workflow_run": {"run": run},
            "workflow_job": {"run": run},
        }
        objects = by_event.get(event, {})
        payload = fake.webhook_payload(event, action, variant, repo=repo, **objects)
        original = load_payload(event, action, variant)
        before = {e.split(":")[0] for e in contract.validate_webhook(event, original)}
        after = {e.split(":")[0] for e in contract.validate_webhook(event, payload)}
        assert after <= before, (entry["file"], contract.validate_webhook(event, payload))
        if "repository" in payload:
            assert payload["repository"]["full_name"] == "org/taxonomy"
        if "installation" in payload:
            assert payload["installation"]["id"] == github_setup.installation.id
    opened = fake.webhook_payload("pull_request", "opened", repo=repo, pr=pr)
    assert [lb["name"] for lb in opened["pull_request"]["labels"]] == ["knowledge"]
    assert opened["sender"]["login"] == "bob" and opened["pull_request"]["user"]["login"] == "bob"
    pr.merge()
    closed = fake.webhook_payload("pull_request", "closed", repo=repo, pr=pr)
    assert closed["pull_request"]["merged"] is True
    assert closed["pull_request"]["merge_commit_sha"] == pr.merge_commit_sha
    on_issue = repo.add_comment(repo.create_issue("question").number, "hi", user="carol")
    plain = fake.webhook_payload("issue_comment", "created", repo=repo, comment=on_issue)
    assert "pull_request" not in plain["issue"] and plain["sender"]["login"] == "carol"


def test_send_webhook_signs_like_github() -> None:
    payload = load_payload("pull_request", "opened")
    with Receiver("s3cret") as hook:
        client = PostOnly(hook.url.removesuffix("/webhook"))
        response = send_webhook(client, "s3cret", "pull_request", payload, "d-1", path="/webhook")
        assert response.status_code == 200
        bad = send_webhook(client, "wrong", "pull_request", payload, path="/webhook")
        assert bad.status_code == 401
        client.client.close()
    headers = hook.seen[0]["headers"]
    assert headers["x-github-event"] == "pull_request"
    assert headers["x-github-delivery"] == "d-1"
    assert headers["user-agent"].startswith("GitHub-Hookshot/")
    assert headers["x-github-hook-installation-target-type"] == "integration"
    assert headers["x-hub-signature"].startswith("sha1=")
    assert hook.seen[0]["payload"] == payload
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert headers["x-hub-signature-256"] == sign("s3cret", body)


def test_send_webhook_to_a_url() -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        response = send_webhook(url, "k", "ping", load_payload("ping"))
        assert response.status_code == 204
    finally:
        server.shutdown()
        server.server_close()
    headers, body = received[0]
    assert headers["X-Hub-Signature-256"] == sign("k", body)


def test_webhook_payload_matches_state_and_deliveries_redelivery(github_setup: Setup) -> None:
    fake, app, repo = github_setup.fake, github_setup.app, github_setup.repo
    pr = repo.create_pull(head="qna", files={"knowledge/x/qna.yaml": QNA}, user="alice")
    payload = fake.webhook_payload("pull_request", "opened", repo=repo, pr=pr)
    assert payload["repository"]["full_name"] == "org/taxonomy"
    assert payload["installation"]["id"] == github_setup.installation.id
    assert payload["pull_request"]["head"]["sha"] == pr.head_sha
    assert payload["pull_request"]["number"] == payload["number"] == pr.number
    assert payload["pull_request"]["url"] == f"{fake.url}/repos/org/taxonomy/pulls/{pr.number}"
    comment = repo.add_comment(pr.number, "/labbot preview", user="alice")
    cpayload = fake.webhook_payload(
        "issue_comment", "created", "pull_request", repo=repo, comment=comment, sender="alice"
    )
    assert cpayload["comment"]["id"] == comment.id and cpayload["issue"]["number"] == pr.number
    assert cpayload["comment"]["body"] == "/labbot preview"
    assert cpayload["issue"]["pull_request"]["url"].endswith(f"/pulls/{pr.number}")

    with Receiver(app.webhook_secret) as hook:
        fake.set_webhook_target(hook.url)
        failed = fake.deliver("ping", load_payload("ping"))  # the receiver answers 503 once
        ok = fake.deliver("pull_request", payload)
        assert (failed.status_code, failed.ok, ok.status_code) == (503, False, 200)
        for n in range(3):
            fake.add_delivery("push", {"ref": "refs/heads/main", "n": n})

        # the App's redelivery sweep, as raw REST calls with a JWT
        now = int(time.time())
        token = _jwt(app.id, app.private_key_pem, iat=now - 60, exp=now + 300)
        with httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {token}"}) as api:
            page1 = api.get("/app/hook/deliveries", params={"per_page": 2})
            assert [d["event"] for d in page1.json()] == ["push", "push"]
            next_url = page1.headers["Link"].split(">")[0].lstrip("<")
            page2 = api.get(next_url)
            assert len(page2.json()) == 2
            failures = api.get("/app/hook/deliveries", params={"status": "failure"}).json()
            assert [d["guid"] for d in failures] == [failed.guid]
            detail = api.get(f"/app/hook/deliveries/{failed.id}").json()
            assert detail["request"]["headers"]["X-GitHub-Event"] == "ping"
            assert api.post(f"/app/hook/deliveries/{failed.id}/attempts").status_code == 202

        (redelivered,) = fake.process_redeliveries()
    assert redelivered.redelivery and redelivered.ok and redelivered.guid == failed.guid
    assert hook.seen[-1]["headers"]["x-github-delivery"] == failed.guid
    assert [d.guid for d in fake.deliveries].count(failed.guid) == 2


def test_round_trip_under_a_few_hundred_ms(github_setup: Setup, gh: Github) -> None:
    repo = github_setup.repo
    pr = repo.create_pull(head="qna", files={"knowledge/x/qna.yaml": QNA})
    started = time.perf_counter()
    remote = gh.get_repo("org/taxonomy")
    pull = remote.get_pull(pr.number)
    for f in pull.get_files():
        content = remote.get_contents(f.filename, ref=pull.head.sha)
        assert not isinstance(content, list)
        base64.b64decode(content.content)
    run = remote.create_check_run("v", pull.head.sha, status="in_progress")
    run.edit(conclusion="success", output={"title": "ok", "summary": "ok"})
    pull.create_issue_comment("done")
    assert time.perf_counter() - started < 1.0
