"""No teacher secret or internal address reaches GitHub, whatever way the teacher fails.

Every preview below runs through the App, the contract-checked fake GitHub and a real teacher
server on loopback, with credentials written into the teacher URL *and* an API key set. After
each one, everything the App sent to GitHub (every request body the fake received, every comment
and check run it stored) is searched for the key, the URL's user and password, and the teacher's
``host:port``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.app import ATTR, LEAF, Server, completed, free_port, settings_for, wait_for
from tests.support.fakegithub import FakeGitHub, Setup
from tests.support.samples import SKILL
from tests.support.scripted_teacher import scripted
from tests.support.teacher_server import ScriptedTeacherServer

KEY = "sk-LEAKED-key-7f3a9c21"
USER = "robot-LEAKED"
PASSWORD = "pw-LEAKED-hunter2"


class RecordingTeacher(ScriptedTeacherServer):
    """The scripted teacher, plus: the Authorization header of every request is recorded;
    ``hang`` delays every answer to GET /models; ``echo`` answers every chat request (and
    ``echo_models`` GET /models) with that HTTP status and an error message that quotes the
    URL the client was configured with, the Host header and the Authorization header, as a
    careless proxy would."""

    def __init__(
        self,
        *,
        hang: float = 0.0,
        echo: int | None = None,
        echo_models: int | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(scripted, **kw)
        self.hang = hang
        self.echo = echo
        self.echo_models = echo_models
        self.authorizations: list[str | None] = []

    @property
    def secret_url(self) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.port}/v1"

    def start(self) -> RecordingTeacher:
        super().start()
        assert self._httpd is not None
        owner = self
        base: Any = self._httpd.RequestHandlerClass

        class Recording(base):  # type: ignore[misc,valid-type]
            def parse_request(self) -> bool:
                ok = bool(super().parse_request())
                if ok:
                    owner.authorizations.append(self.headers.get("Authorization"))
                return ok

            def _echo(self, status: int) -> None:
                message = (
                    f"upstream {owner.secret_url} refused {self.headers.get('Authorization')} "
                    f"for host {self.headers.get('Host')}"
                )
                self._send(status, {"error": {"message": message}})

            def do_GET(self) -> None:
                if owner.hang:
                    time.sleep(owner.hang)
                if owner.echo_models is not None:
                    self._echo(owner.echo_models)
                    return
                super().do_GET()

            def do_POST(self) -> None:
                if owner.echo is not None:
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    self._echo(owner.echo)
                    return
                super().do_POST()

        self._httpd.RequestHandlerClass = Recording
        return self


def sent_to_github(fake: FakeGitHub, scene: Setup) -> str:
    """Everything the App wrote to the fake: request bodies, stored comments and check runs."""
    parts = [json.dumps(c.body, default=str) for c in fake.calls if c.method != "GET"]
    for issue in scene.repo.issues.values():
        parts += [c.body for c in issue.comments]
    for run in scene.repo.check_runs:
        parts += [str(run.title), str(run.summary), str(run.text), str(run.details_url)]
        parts += [a.message for a in run.annotations]
    return "\n".join(parts)


def run_preview(fake: FakeGitHub, scene: Setup, tmp_path: Path, url: str, **kw: Any) -> str:
    """Open a valid skill PR as a writer and return the sticky comment once the preview has
    reported (succeeded or not)."""
    settings = settings_for(
        fake,
        scene,
        tmp_path,
        teacher=url,
        teacher_api_key=KEY,
        preview_seconds=20.0,
        **kw,
    )
    with Server(settings) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        scene.repo.set_permission("maintainer", "write")
        pr = scene.repo.create_pull(
            head="units", user="maintainer", files={LEAF: SKILL, ATTR: "Title of work: u\n"}
        )
        fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        )
        wait_for(lambda: completed(scene, pr.head_sha), what="check run")

        def preview() -> str:
            bodies = [c.body for c in pr.live_comments if c.user_type == "Bot"]
            body = bodies[0] if bodies else ""
            done = "Preview unavailable" in body or "Preview of generated samples" in body
            return body if done else ""

        body: str = wait_for(preview, timeout=40, what="the preview")
        return body


def assert_nothing_leaked(text: str, port: int) -> None:
    for secret in (KEY, PASSWORD, USER, f"127.0.0.1:{port}", f"localhost:{port}", f":{port}"):
        assert secret not in text, f"{secret!r} reached GitHub"


@pytest.fixture
def closed_port() -> Iterator[int]:
    yield free_port()  # bound, then closed: nothing listens there


def test_unreachable_teacher_is_named_not_addressed(
    fake: FakeGitHub, scene: Setup, tmp_path: Path, closed_port: int
) -> None:
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{closed_port}/v1"
    body = run_preview(fake, scene, tmp_path, url)
    assert "Preview unavailable" in body and "cannot be reached" in body
    assert_nothing_leaked(sent_to_github(fake, scene), closed_port)


CASES: dict[str, dict[str, Any]] = {
    "timeout": {
        "server": {"hang": 1.0},
        "settings": {"teacher_timeout_seconds": 0.2},
        "expect": "did not answer in time",
    },
    "401": {"faults": (401,), "expect": "rejected labbot's credentials (HTTP 401)"},
    "403": {"faults": (403,), "expect": "rejected labbot's credentials (HTTP 403)"},
    "500": {"faults": (500, 500, 500, 500), "expect": "keeps failing (HTTP 500)"},
    "404": {"faults": (404,), "expect": "does not serve the OpenAI API"},
    "malformed-json": {"faults": ("nonsense",), "expect": "not JSON"},
    "wrong-shape": {"faults": ("wrong-shape",), "expect": "the teacher serves no model"},
    "context-overflow": {
        "server": {"n_ctx": 60, "advertise_context": False},
        "expect": "Preview of generated samples",
    },
    "error-quotes-url-400": {
        "server": {"echo": 400},
        "expect": "the teacher (scripted) refused a request (HTTP 400)",
    },
    "error-quotes-url-503": {
        "server": {"echo": 503},
        "expect": "the teacher (scripted) keeps failing (HTTP 503)",
    },
    "models-error-quotes-url": {
        "server": {"echo_models": 500},
        "expect": "keeps failing (HTTP 500)",
    },
    "success": {"expect": "Teacher: `scripted`"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_no_teacher_secret_or_address_reaches_github(
    fake: FakeGitHub, scene: Setup, tmp_path: Path, case: str
) -> None:
    spec = CASES[case]
    with RecordingTeacher(**spec.get("server", {})) as teacher:
        teacher.fail_next(*spec.get("faults", ()))
        body = run_preview(fake, scene, tmp_path, teacher.secret_url, **spec.get("settings", {}))
        sent = sent_to_github(fake, scene)
        port = teacher.port
    assert spec["expect"] in body, body
    assert_nothing_leaked(sent, port)
    # The server was asked with the API key as a bearer token, never with the URL's password.
    assert teacher.authorizations and set(teacher.authorizations) == {f"Bearer {KEY}"}


def test_url_credentials_alone_become_basic_auth_and_stay_hidden(
    fake: FakeGitHub, scene: Setup, tmp_path: Path
) -> None:
    with RecordingTeacher(echo=400) as teacher:
        settings = settings_for(fake, scene, tmp_path, teacher=teacher.secret_url)
        assert PASSWORD not in repr(settings) and KEY not in repr(settings)
        body = run_preview_plain(fake, scene, settings)
        sent = sent_to_github(fake, scene)
        port = teacher.port
    assert "Preview unavailable" in body
    assert_nothing_leaked(sent, port)
    import base64

    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert teacher.authorizations and set(teacher.authorizations) == {basic}


def run_preview_plain(fake: FakeGitHub, scene: Setup, settings: Any) -> str:
    with Server(settings) as srv:
        fake.set_webhook_target(srv.url + "/webhook")
        scene.repo.set_permission("maintainer", "write")
        pr = scene.repo.create_pull(
            head="units", user="maintainer", files={LEAF: SKILL, ATTR: "Title of work: u\n"}
        )
        fake.deliver(
            "pull_request", fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        )
        body: str = wait_for(
            lambda: next((c.body for c in pr.live_comments if "Preview unavailable" in c.body), ""),
            timeout=40,
            what="the preview",
        )
        return body
