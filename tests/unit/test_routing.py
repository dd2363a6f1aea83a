"""Webhook events to jobs, and jobs to runners: one table over every committed GitHub payload,
the router's own rules, and the job specs' storage (the rows both queue engines keep)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bot.errors import WebhookError
from bot.handlers import jobs_for, router
from bot.handlers.router import Router
from bot.state.jobs import (
    COMMIT_KINDS,
    JobKind,
    JobSpec,
    UnknownJobKind,
    dump_payload,
    row_to_spec,
    spec_columns,
)
from bot.webhook import KNOWN_EVENTS, Delivery
from tests.support.fakegithub import available_payloads, load_payload

ROOT = Path(__file__).resolve().parents[2]

HELLO = "Codertocat/Hello-World"
OCTO = "octo-org/octo-repo"
PR_HEAD = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
MERGE = "c4295bd74fb0f4fda03689c3df3f2803b658fd85"


def validate(repo: str, pr: int, sha: str, inst: int | None, reason: str) -> JobSpec:
    return JobSpec.for_commit(JobKind.VALIDATE, repo, pr, sha, inst, {"reason": reason})


def run_status(repo: str, key: str, run: dict[str, Any]) -> JobSpec:
    return JobSpec(
        JobKind.BUILD_STATUS, repo, None, None, key, group=str(run["id"]), payload={"run": run}
    )


RUN_289782451 = {
    "id": 289782451,
    "name": "",
    "path": ".github/workflows/test.yml",
    "display_title": "ci(action): update actions/setup-node digest to 8c91899",
    "head_sha": "3484a3fb816e0859fd6e1cea078d76385ff50625",
    "conclusion": None,
    "html_url": "https://github.com/octo-org/octo-repo/actions/runs/289782451",
    "run_attempt": 1,
}

#: Every committed webhook payload (``tests/fixtures/github/webhooks``) and the exact jobs it
#: implies. A fixture added without a row here fails test_the_table_covers_every_fixture.
TABLE: dict[str, list[JobSpec]] = {
    "check_run.requested_action": [],
    "check_run.rerequested": [],  # another app's check run ("randscape")
    "check_suite.requested": [],  # no pull requests in the suite
    "check_suite.rerequested": [validate(HELLO, 2, PR_HEAD, 957387, "check_suite")],
    "installation.created": [],
    "installation.deleted": [],
    "installation_repositories.added": [],
    "issue_comment.created": [],  # on an issue, not a pull request
    "issue_comment.created.pull_request": [],  # no /labbot command in it
    "issue_comment.edited": [],
    "ping": [],
    "pull_request.closed": [],  # closed without merging
    "pull_request.closed.merged": [
        JobSpec.for_commit(JobKind.BUILD_REQUEST, HELLO, 2, MERGE, 1, {"source": "merge"})
    ],
    "pull_request.labeled": [],
    "pull_request.opened": [validate(HELLO, 2, PR_HEAD, 1, "pull_request")],
    "pull_request.ready_for_review": [validate(HELLO, 2, PR_HEAD, 1, "pull_request")],
    "pull_request.reopened": [validate(HELLO, 2, PR_HEAD, 1, "pull_request")],
    "pull_request.synchronize": [validate(HELLO, 2, PR_HEAD, 1, "pull_request")],
    "push": [],  # touched README.md only
    "workflow_dispatch": [],
    "workflow_job.completed": [
        JobSpec(
            JobKind.BUILD_JOB,
            HELLO,
            None,
            None,
            "289782451",
            group="2202229078",
            payload={
                "job": {
                    "id": 289782451,
                    "run_id": 2202229078,
                    "name": "linters",
                    "html_url": "https://github.com/octo-org/octo-repo/runs/1291536064",
                    "conclusion": "failure",
                    "workflow_name": "CodeQL",
                    "head_sha": "3484a3fb816e0859fd6e1cea078d76385ff50625",
                }
            },
        )
    ],
    "workflow_job.in_progress": [],
    "workflow_job.queued": [],
    "workflow_run.completed": [
        run_status(
            HELLO,
            "completed-1",
            {
                "id": 1589141559,
                "name": "Manually triggered workflow",
                "path": None,
                "display_title": None,
                "head_sha": "5779607b49aab1200488439f02372c57b4f75444",
                "status": "queued",
                "conclusion": None,
                "html_url": "https://github.com/octo-org/octo-repo/actions/runs/1589141559",
                "run_attempt": 1,
            },
        )
    ],
    "workflow_run.in_progress": [
        run_status(OCTO, "in_progress-1", {**RUN_289782451, "status": "in_progress"})
    ],
    "workflow_run.requested": [
        run_status(OCTO, "requested-1", {**RUN_289782451, "status": "queued"})
    ],
}


def delivery(stem: str, payload: dict[str, Any] | None = None) -> Delivery:
    data = load_payload(*stem.split(".")) if payload is None else payload
    action = data.get("action")
    inst = data.get("installation")
    return Delivery(
        id=f"d-{stem}",
        event=stem.split(".")[0],
        action=action if isinstance(action, str) else None,
        installation_id=inst.get("id") if isinstance(inst, dict) else None,
        payload=data,
    )


def test_the_table_covers_every_fixture() -> None:
    assert sorted(TABLE) == available_payloads()


@pytest.mark.parametrize("stem", sorted(TABLE))
def test_each_committed_payload_implies_exactly_its_jobs(stem: str) -> None:
    assert jobs_for(delivery(stem)) == TABLE[stem]


def _patched(stem: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(load_payload(*stem.split(".")))
    change(data)
    return data


def _comment(body: str, user_type: str = "User") -> Callable[[dict[str, Any]], None]:
    def change(p: dict[str, Any]) -> None:
        p["comment"]["body"] = body
        p["comment"]["user"]["type"] = user_type

    return change


def _command(word: str) -> list[JobSpec]:
    payload = {"command": word, "comment_id": 492700400, "user": "Codertocat"}
    return [JobSpec(JobKind.COMMAND, HELLO, 1, 1, "", group="492700400", payload=payload)]


def _push_touching(path: str) -> Callable[[dict[str, Any]], None]:
    def change(p: dict[str, Any]) -> None:
        p["commits"][0]["modified"] = [path]

    return change


PUSH_SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
SUITE_SHA = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
RUN_SHA = "d6fde92930d4715a2b49857d24b940956b26d2d3"


def _set(path: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    """Update the object at dotted ``path`` ("" for the payload itself) with ``values``."""

    def change(p: dict[str, Any]) -> None:
        node = p
        for key in filter(None, path.split(".")):
            node = node[key]
        node.update(values)

    return change


def _both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(p: dict[str, Any]) -> None:
        for one in changes:
            one(p)

    return change


COMMENT = "issue_comment.created.pull_request"
QNA = _push_touching("compositional_skills/x/qna.yaml")
PUSHED = [JobSpec.for_commit(JobKind.BUILD_REQUEST, HELLO, None, PUSH_SHA, 1, {"source": "push"})]
SECOND_RUN = {**TABLE["workflow_run.completed"][0].payload["run"], "run_attempt": 2}
SUITE_PRS = [{"number": 3, "head": {"sha": "b" * 40}}, {"number": 6}]

#: Real payloads with one thing changed, for the branches the committed examples miss.
VARIANTS = [
    pytest.param(COMMENT, _comment("/labbot check"), _command("check"), id="check"),
    pytest.param(COMMENT, _comment("ok!\n /labbot PREVIEW \n"), _command("preview"), id="in text"),
    pytest.param(COMMENT, _comment("/labbot deploy"), _command("help"), id="unknown word"),
    pytest.param(COMMENT, _comment("/labbot"), _command("help"), id="bare command"),
    pytest.param(COMMENT, _comment("/labbot check", "Bot"), [], id="a bot's command"),
    pytest.param("issue_comment.created", _comment("/labbot check"), [], id="on an issue"),
    pytest.param("issue_comment.edited", _comment("/labbot check"), [], id="edited command"),
    pytest.param("push", QNA, PUSHED, id="push of a qna.yaml"),
    pytest.param("push", _push_touching("knowledge/a/attribution.txt"), PUSHED, id="attribution"),
    pytest.param("push", _both(QNA, _set("", ref="refs/heads/dev")), [], id="other branch"),
    pytest.param("push", _both(QNA, _set("", deleted=True, after="0" * 40)), [], id="deleted"),
    pytest.param(
        "pull_request.closed.merged",
        _set("pull_request.base", ref="dev"),
        [],
        id="merged elsewhere",
    ),
    pytest.param(
        "pull_request.opened", _set("pull_request", state="closed"), [], id="closed since"
    ),
    pytest.param(
        "check_run.rerequested",
        _set("check_run", name="labbot/validate", pull_requests=[{"number": 4}, {"number": 5}]),
        [validate("github/hello-world", n, RUN_SHA, 1, "check_run") for n in (4, 5)],
        id="our check re-run",
    ),
    pytest.param(
        "check_suite.requested",
        _set("check_suite", pull_requests=SUITE_PRS),
        [validate(HELLO, 6, SUITE_SHA, 957387, "check_suite")],
        id="suite whose PR moved on",
    ),
    pytest.param(
        "workflow_run.completed",
        _set("workflow_run", run_attempt=2),
        [
            JobSpec(
                JobKind.BUILD_STATUS,
                HELLO,
                None,
                None,
                "completed-2",
                group="1589141559",
                payload={"run": SECOND_RUN},
            )
        ],
        id="second attempt",
    ),
    pytest.param(
        "workflow_job.completed", _set("workflow_job", conclusion="success"), [], id="job succeeded"
    ),
]


@pytest.mark.parametrize(("stem", "change", "expected"), VARIANTS)
def test_variants_of_real_payloads(
    stem: str, change: Callable[[dict[str, Any]], None], expected: list[JobSpec]
) -> None:
    assert jobs_for(delivery(stem, _patched(stem, change))) == expected


@pytest.mark.parametrize(
    ("stem", "change", "field"),
    [
        ("pull_request.opened", lambda p: p["pull_request"]["head"].update(sha=""), "head.sha"),
        ("check_suite.requested", lambda p: p["check_suite"].update(head_sha=""), "head_sha"),
        ("pull_request.labeled", lambda p: p["repository"].update(full_name="no-slash"), "owner"),
        ("workflow_run.completed", lambda p: p["workflow_run"].update(id="1"), "workflow_run.id"),
    ],
)
def test_misshapen_fields_are_named(
    stem: str, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    with pytest.raises(WebhookError, match=field) as caught:
        jobs_for(delivery(stem, _patched(stem, change)))
    assert caught.value.status == 422


def test_every_job_kind_has_exactly_one_runner() -> None:
    assert router.kinds == set(JobKind)
    with pytest.raises(ValueError, match="already has a runner"):
        Router(router, router)


def test_the_app_subscribes_to_exactly_the_events_handlers_route() -> None:
    manifest = YAML(typ="safe").load((ROOT / "app.yml").read_text(encoding="utf-8"))
    subscribed = set(manifest["default_events"])
    assert router.events == subscribed
    assert router.events <= KNOWN_EVENTS  # each has its own metrics label


def test_an_unrouted_event_reads_nothing() -> None:
    # Not even the repository: an event no handler registered is acknowledged as it is.
    assert jobs_for(Delivery("d", "star", "created", None, {"repository": 7})) == []
    assert router.actions("push") is None and router.actions("check_run") == {"rerequested"}


# -- job specs and their rows --------------------------------------------------------------


def _row(spec: JobSpec) -> tuple[Any, ...]:
    return (*spec_columns(spec)[:4], spec.installation_id, dump_payload(spec))


ALL_SPECS = [spec for specs in TABLE.values() for spec in specs] + [
    spec for v in VARIANTS for spec in v.values[2]
]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.stored_kind)
def test_specs_survive_their_row(spec: JobSpec) -> None:
    assert row_to_spec(_row(spec)) == spec
    assert (spec.sha is not None) == (spec.kind in COMMIT_KINDS)


def test_every_kind_occurs_in_the_tables_but_the_recovery() -> None:
    assert {s.kind for s in ALL_SPECS} == set(JobKind) - {JobKind.RECOVER, JobKind.PREVIEW}


@pytest.mark.parametrize(
    ("stored", "key", "expected"),
    [
        # Rows as every earlier version wrote them still read back.
        ("validate", "a" * 40, JobSpec.for_commit(JobKind.VALIDATE, "o/r", 1, "a" * 40, 7)),
        ("preview", "b" * 40, JobSpec.for_commit(JobKind.PREVIEW, "o/r", 1, "b" * 40, 7)),
        ("command:55", "", JobSpec(JobKind.COMMAND, "o/r", 1, 7, "", group="55")),
        ("build-status:9", "ok-3", JobSpec(JobKind.BUILD_STATUS, "o/r", 1, 7, "ok-3", group="9")),
        ("build-job:9", "12", JobSpec(JobKind.BUILD_JOB, "o/r", 1, 7, "12", group="9")),
        ("recover", "1767225600", JobSpec(JobKind.RECOVER, "o/r", 1, 7, "1767225600")),
    ],
)  # fmt: skip
def test_rows_of_every_stored_shape_read_back(stored: str, key: str, expected: JobSpec) -> None:
    assert row_to_spec((stored, "o/r", 1, key, 7, "{}")) == expected
    assert spec_columns(expected)[0] == stored and spec_columns(expected)[3] == key


@pytest.mark.parametrize("stored", ["deploy", "Validate", "validate2", ":1", ""])
def test_unknown_stored_kinds_are_named(stored: str) -> None:
    with pytest.raises(UnknownJobKind) as caught:
        row_to_spec((stored, "o/r", 1, "k", None, "{}"))
    assert caught.value.stored == stored


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: JobSpec(JobKind.VALIDATE, "o/r", 1, None, "a" * 40), "commit sha"),
        (lambda: JobSpec(JobKind.PREVIEW, "o/r", 1, None, "x", sha="y"), "commit sha"),
        (lambda: JobSpec.for_commit(JobKind.BUILD_REQUEST, "o/r", None, "", None), "commit sha"),
        (lambda: JobSpec(JobKind.COMMAND, "o/r", 1, None, "", sha="a" * 40), "about no commit"),
        (lambda: JobSpec(JobKind.BUILD_JOB, "o/r", None, None, "1", group="2:3"), "group"),
        (lambda: JobSpec("nope", "o/r", None, None, ""), "unknown job kind"),
    ],
)
def test_specs_keep_one_meaning_per_field(make: Callable[[], JobSpec], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_a_commit_jobs_commit_and_others_refusal() -> None:
    assert JobSpec.for_commit(JobKind.PREVIEW, "o/r", 1, "c" * 40, None).commit == "c" * 40
    with pytest.raises(ValueError, match="about no commit"):
        _ = JobSpec(JobKind.RECOVER, "", None, None, "1").commit
    # str-valued: the enum compares equal to what the rows hold, and serialises as it.
    assert JobKind.BUILD_STATUS == "build-status" and json.dumps(JobKind.VALIDATE) == '"validate"'
