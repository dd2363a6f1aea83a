"""The GitHub Actions workflows: schema, zizmor, the build workflow's shape and security rules,
and the build workflow's steps run in order on this machine by scripts/run_workflow_steps.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
BUILD = ROOT / ".github" / "workflows" / "build-model.yml"
SCRIPT = ROOT / "scripts" / "run_workflow_steps.py"

sys.path.insert(0, str(ROOT / "scripts"))
import run_workflow_steps as rws  # noqa: E402


def _tool(name: str) -> str:
    """A tool from this interpreter's venv (where `pip install -e .[dev]` puts it), else PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: it is a dev dependency (bash scripts/setup.sh)")
    return found


def _load(path: Path) -> dict[str, Any]:
    return rws.load_workflow(path)


def _steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (job_id, step)
        for job_id, job in workflow["jobs"].items()
        for step in job.get("steps") or []
    ]


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    return _load(BUILD)


def _step(build: dict[str, Any], needle: str) -> tuple[int, dict[str, Any]]:
    """The one build step whose run: or uses: contains ``needle``, and its index."""
    hits = [
        (i, s)
        for i, s in enumerate(build["jobs"]["build"]["steps"])
        if needle in str(s.get("run", "")) or needle in str(s.get("uses", ""))
    ]
    assert len(hits) == 1, f"expected one step with {needle!r}, found {len(hits)}"
    return hits[0]


# -- every workflow ------------------------------------------------------------------------------


def test_there_are_workflows() -> None:
    assert BUILD in WORKFLOWS
    assert len(WORKFLOWS) >= 2


def test_workflows_validate_against_githubs_schema() -> None:
    proc = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_reports_nothing() -> None:
    proc = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", str(ROOT / ".github" / "workflows")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, "zizmor findings:\n" + proc.stdout + proc.stderr
    assert "No findings" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path: Path) -> None:
    lines = [line for line in path.read_text().splitlines() if re.match(r"\s*-?\s*uses:", line)]
    assert lines, f"{path.name} uses no actions?"
    for line in lines:
        ref = line.split("uses:", 1)[1].strip()
        if ref.startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*", ref), line


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_top_level_permissions_are_empty_and_jobs_ask_little(path: Path) -> None:
    workflow = _load(path)
    assert workflow["permissions"] == {}
    for job_id, job in workflow["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"{job_id} must list its permissions"
        assert set(perms.items()) <= {("contents", "read")}, (job_id, perms)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkouts_keep_no_credentials_and_jobs_have_timeouts(path: Path) -> None:
    workflow = _load(path)
    for job_id, job in workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"{job_id} has no timeout-minutes"
    checkouts = [s for _, s in _steps(workflow) if "actions/checkout@" in str(s.get("uses"))]
    for step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, step


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_inside_a_run_script(path: Path) -> None:
    for job_id, step in _steps(_load(path)):
        assert "${{" not in str(step.get("run", "")), (job_id, step.get("name"))


def test_only_the_build_workflow_reaches_the_self_hosted_runner() -> None:
    # Any workflow that names the GPU runner's labels runs on it, with whatever triggers it has:
    # keep them to the build workflow, which runs default-branch commits only.
    for path in WORKFLOWS:
        for job_id, job in _load(path)["jobs"].items():
            labels = job["runs-on"] if isinstance(job["runs-on"], list) else [job["runs-on"]]
            hosted = not any(str(label).lower() in ("self-hosted", "gpu") for label in labels)
            assert hosted or path == BUILD, f"{path.name} job {job_id} runs on {labels}"


# -- the build workflow's shape ----------------------------------------------------------------


def test_build_triggers_are_the_two_dispatches_only(build: dict[str, Any]) -> None:
    assert build["name"] == "labbot build"
    on = build["on"]
    assert set(on) == {"workflow_dispatch", "repository_dispatch"}
    sha = on["workflow_dispatch"]["inputs"]["sha"]
    assert sha["required"] is True and sha["type"] == "string"
    assert set(on["workflow_dispatch"]["inputs"]) == {"sha"}
    assert on["repository_dispatch"]["types"] == ["labbot-build"]


def test_run_name_ends_with_the_sha_for_both_triggers(build: dict[str, Any]) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    dispatch = {"inputs": {"sha": sha}, "github": {"event": {"inputs": {"sha": sha}}}}
    repo_dispatch = {"inputs": {}, "github": {"event": {"client_payload": {"sha": sha}}}}
    for contexts in (dispatch, repo_dispatch):
        title = rws.interpolate(build["run-name"], contexts)
        assert title == f"labbot build {sha}"
        assert title.split()[-1] == sha


def test_builds_are_serialized_per_repository(build: dict[str, Any]) -> None:
    assert build["concurrency"] == {
        "group": "labbot-build-${{ github.repository }}",
        "cancel-in-progress": False,
    }


def test_build_job_runs_on_the_gpu_runner_with_a_timeout(build: dict[str, Any]) -> None:
    assert list(build["jobs"]) == ["build"]
    job = build["jobs"]["build"]
    assert job["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert job["permissions"] == {"contents": "read"}
    assert 60 <= job["timeout-minutes"] <= 24 * 60


def test_the_commit_is_checked_before_anything_from_it_runs(build: dict[str, Any]) -> None:
    steps = build["jobs"]["build"]["steps"]
    i_validate, validate = _step(build, "[0-9a-f]{40}")
    i_checkout, checkout = _step(build, "actions/checkout@")
    i_ancestry, ancestry = _step(build, "merge-base --is-ancestor")
    i_setup, _ = _step(build, "scripts/setup.sh")
    i_build, build_step = _step(build, ".venv/bin/labbot build")
    assert i_validate < i_checkout < i_ancestry < i_setup < i_build
    assert i_validate == 0
    # The sha reaches scripts only through env:, and the checkout uses the validated one.
    assert "inputs.sha" in validate["env"]["REQUESTED_SHA"]
    assert "client_payload.sha" in validate["env"]["REQUESTED_SHA"]
    assert checkout["with"]["ref"] == "${{ steps.target.outputs.sha }}"
    assert checkout["with"]["fetch-depth"] == 0
    assert ancestry["env"]["SHA"] == "${{ steps.target.outputs.sha }}"
    assert "default_branch" in ancestry["env"]["DEFAULT_BRANCH"]
    # No step between the checkout and the ancestry check runs anything.
    assert all("run" not in s for s in steps[i_checkout + 1 : i_ancestry])
    assert '.venv/bin/labbot build "${args[@]}"' in build_step["run"]
    assert build["jobs"]["build"]["env"]["RUN_DIR"] == "runs/build-${{ github.run_id }}"


def test_secrets_reach_only_the_step_that_needs_them(build: dict[str, Any]) -> None:
    text = BUILD.read_text()
    assert "toJSON(secrets)" not in text
    where: dict[str, set[str]] = {}
    for step in build["jobs"]["build"]["steps"]:
        for name, value in (step.get("env") or {}).items():
            if "secrets." in str(value):
                assert value == "${{ secrets." + name + " }}", (step.get("name"), name)
                where.setdefault(name, set()).add(str(step.get("name")))
    assert where == {
        "HF_TOKEN": {"Publish the model to the Hugging Face Hub"},
        "LABBOT_CACHE_KEY": {"Verify the caches", "Record the caches"},
        "LABBOT_TEACHER_API_KEY": {"Build the model"},
    }
    assert text.count("secrets.") == 4
    assert "secrets" not in str(build["jobs"]["build"].get("env"))


def test_caches_are_verified_before_setup_and_recorded_after_the_build(
    build: dict[str, Any],
) -> None:
    steps = [s.get("name") for s in build["jobs"]["build"]["steps"]]
    verify = steps.index("Verify the caches")
    assert steps.index("Refuse commits that are not on the default branch") < verify
    assert verify < steps.index("Set up") < steps.index("Build the model")
    record = steps.index("Record the caches")
    assert steps.index("Build the model") < record < steps.index("Upload the run")
    summary = build["jobs"]["build"]["steps"][-1]
    assert "cache_guard.py summary" in summary["run"]


def test_artifacts_and_the_summary(build: dict[str, Any]) -> None:
    uploads = {
        s["with"]["name"]: s
        for s in build["jobs"]["build"]["steps"]
        if "upload-artifact@" in str(s.get("uses"))
    }
    assert {"labbot-eval", "labbot-run"} <= set(uploads)
    for upload in uploads.values():
        assert isinstance(upload["with"]["retention-days"], int)
    eval_paths = uploads["labbot-eval"]["with"]["path"]
    for part in ("/eval/", "/manifest.json", "/report.md", "/loss.png"):
        assert part in eval_paths
    assert "model" not in eval_paths
    summary = build["jobs"]["build"]["steps"][-1]
    assert summary["if"] == "always()"
    assert "GITHUB_STEP_SUMMARY" in summary["run"]


# -- the local runner's expression subset -------------------------------------------------------


def test_expressions_follow_githubs_rules() -> None:
    ctx = {"inputs": {"sha": ""}, "github": {"event": {"client_payload": {"sha": "abc"}}}}
    assert rws.interpolate("${{ inputs.sha || github.event.client_payload.sha }}", ctx) == "abc"
    assert rws.interpolate("x-${{ github.nothing.here }}-y", ctx) == "x--y"
    status = rws.Status()
    vars_ctx = {"vars": {"A": "Yes"}, "steps": {"b": {"outcome": "failure"}}}
    assert rws.condition("vars.A != ''", vars_ctx, status)
    assert rws.condition("vars.A == 'yes'", vars_ctx, status)  # strings compare ignoring case
    assert not rws.condition("vars.MISSING != ''", vars_ctx, status)
    assert not rws.condition("failure() && steps.b.outcome == 'failure'", vars_ctx, status)
    status.failed = True
    assert not rws.condition("vars.A != ''", vars_ctx, status)  # implicit success()
    assert rws.condition("always()", vars_ctx, status)
    assert rws.condition("${{ failure() && steps.b.outcome == 'failure' }}", vars_ctx, status)


@pytest.mark.parametrize(
    "expr",
    [
        "toJSON(github)",
        "github.event['x']",
        "github.event.*.sha",
        "hashFiles('**')",
        "matrix.os",
        "1 < 2",
        "always(1)",
    ],
)
def test_unsupported_expressions_fail_clearly(expr: str) -> None:
    with pytest.raises(rws.Unsupported):
        rws.parse_expression(expr)


def test_the_runner_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text(
        "on: workflow_dispatch\njobs:\n  j:\n    runs-on: x\n    steps:\n"
        "      - run: echo ${{ github.sha }}\n"
    )
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--workflow", wf, "--workdir", tmp_path / "w"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "expression inside run:" in proc.stderr
    wf.write_text(
        "on: workflow_dispatch\njobs:\n  j:\n    runs-on: x\n    steps:\n"
        "      - run: echo hi\n        env:\n          A: ${{ fromJSON('1') }}\n"
    )
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--workflow", wf, "--workdir", tmp_path / "w2"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "fromJSON() is not supported" in proc.stderr


def test_command_files_are_read_like_the_runner(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("a=1\nb=x=y\nc<<EOF\nline 1\nline 2\nEOF\n\n")
    assert rws.read_command_file(path) == [("a", "1"), ("b", "x=y"), ("c", "line 1\nline 2")]


def test_env_output_and_summary_pass_between_steps(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text(
        """on: workflow_dispatch
defaults:
  run:
    shell: bash
jobs:
  j:
    runs-on: x
    timeout-minutes: 5
    env:
      JOB: job-${{ github.run_id }}
    steps:
      - id: one
        run: |
          echo "out=from-one" >> "$GITHUB_OUTPUT"
          echo "EXPORTED=exported" >> "$GITHUB_ENV"
      - env:
          OUT: ${{ steps.one.outputs.out }}
          SHA: ${{ inputs.sha }}
        run: |
          echo "$JOB $OUT $EXPORTED ${#SHA} $GITHUB_RUN_ID $RUNNER_TEMP" >> "$GITHUB_STEP_SUMMARY"
          false
      - if: vars.NEVER != ''
        run: echo never >> "$GITHUB_STEP_SUMMARY"
      - if: always()
        run: echo always >> "$GITHUB_STEP_SUMMARY"
"""
    )
    work = tmp_path / "w"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--workflow", wf, "--workdir", work, "--run-id", "77"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = (work / "summary.md").read_text().splitlines()
    assert summary == [f"job-77 from-one exported 40 77 {work / 'temp'}", "always"]


# -- the build workflow, run here ---------------------------------------------------------------


#: Files the workflow runs from its checkout: the clone gets this working tree's copies.
WORKFLOW_SCRIPTS = ("scripts/cache_guard.py",)


def _source(tmp_path: Path) -> tuple[Path, str]:
    """A clone of this project at HEAD, with HEAD as its `main` (CI checkouts may be detached),
    plus a commit with the working tree's copies of the scripts the workflow runs."""
    src = tmp_path / "src"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(src)], check=True)
    subprocess.run(["git", "-C", str(src), "checkout", "--quiet", "-B", "main"], check=True)
    for rel in WORKFLOW_SCRIPTS:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", *WORKFLOW_SCRIPTS], check=True)
    if subprocess.run([*git, "diff", "--cached", "--quiet"]).returncode:
        subprocess.run([*git, "commit", "--quiet", "-m", "working tree scripts"], check=True)
    sha = rws.git("rev-parse", "HEAD", cwd=src)
    return src, sha


CACHE_VARS = ("LABBOT_CACHE_DIR", "PIP_CACHE_DIR", "HF_HOME", "LABBOT_CACHE_STATE")


def _run(*args: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The runner stand-in. Unless ``env`` names them, the caches and their manifests live
    beside the work folder, never in this machine's own ~/.cache."""
    env = dict(os.environ if env is None else env)
    strs = [str(a) for a in args]
    if "--workdir" in strs:
        caches = Path(strs[strs.index("--workdir") + 1] + "-caches")
        for var in CACHE_VARS:
            if env.get(var) in (None, os.environ.get(var)):  # not chosen by the caller
                env[var] = str(caches / var.lower())
    return subprocess.run(
        [sys.executable, SCRIPT, *strs],
        capture_output=True,
        text=True,
        env=env,
    )


def test_a_commit_off_the_default_branch_is_refused(tmp_path: Path) -> None:
    src, _ = _source(tmp_path)
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "checkout", "--quiet", "-b", "pr-head"], check=True)
    (src / "taxonomy" / "extra.txt").write_text("not merged\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "a pull request's head"], check=True)
    pr_sha = rws.git("rev-parse", "HEAD", cwd=src)
    subprocess.run([*git, "checkout", "--quiet", "main"], check=True)
    work = tmp_path / "w"
    for event in ("workflow_dispatch", "repository_dispatch"):
        work = tmp_path / event
        proc = _run("--source", src, "--sha", pr_sha, "--workdir", work, "--event", event)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, out
        assert f"{pr_sha} is not on the default branch (main): refusing to build it" in out
        assert re.search(r"skipped\s+Set up", out) and re.search(r"skipped\s+Build the model", out)
        summary = (work / "summary.md").read_text()
        assert summary.startswith(f"# labbot build {pr_sha}\n")
        assert "**The build failed.**" in summary
        assert "| commit on the default branch | failure |" in summary
        assert not (work / "workspace" / "runs").exists()


@pytest.mark.parametrize(
    ("sha", "ref", "message"),
    [
        ("abc123", None, "sha must be a full commit id of 40 hex digits (got 6 characters)"),
        ("$(touch pwned)", None, "sha must be a full commit id of 40 hex digits"),
        (None, "refs/heads/feature", "runs only from the default branch (main)"),
    ],
)
def test_bad_requests_stop_before_the_checkout(
    tmp_path: Path, sha: str | None, ref: str | None, message: str
) -> None:
    src, head = _source(tmp_path)
    args: list[Any] = ["--source", src, "--sha", sha or head, "--workdir", tmp_path / "w"]
    if ref:
        args += ["--ref", ref]
    proc = _run(*args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert message in out
    assert re.search(r"skipped\s+Check out the commit", out)
    assert not any((tmp_path / "w" / "workspace").iterdir())
    assert not (tmp_path / "w" / "workspace" / "pwned").exists()


FAKE_LABBOT = """#!/usr/bin/env bash
# A stand-in for `labbot build --out DIR [--config FILE]`: writes the files a build writes.
set -euo pipefail
[[ "$1" == build && "$2" == --out ]]
out=$3
mkdir -p "$out/model" "$out/eval" "$out/phase2/checkpoints"
echo "building into $out with ${*:4}"
echo '<b>model & card</b>' > "$out/model/README.md"
echo weights > "$out/model/model.safetensors"
echo '[]' > "$out/eval/leaves.json"
echo '{}' > "$out/manifest.json"
echo png > "$out/loss.png"
echo hidden > "$out/.hidden"
echo state > "$out/phase2/checkpoints/step-1"
if [[ -n "${FAKE_FAIL:-}" ]]; then
  echo '<script>alert(1)</script> & the build broke' >&2
  exit 3
fi
printf '# fake report\\n\\nargs: %s\\n' "${*:4}" > "$out/report.md"
"""


def _fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "fake-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "labbot").write_text(FAKE_LABBOT)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for name in ("labbot", "python"):
        (venv / "bin" / name).chmod(0o755)
    return venv


@pytest.mark.slow
def test_artifacts_publishing_and_summary_with_a_stand_in_build(tmp_path: Path) -> None:
    src, sha = _source(tmp_path)
    config = tmp_path / "cfg.yaml"
    config.write_text("{}\n")
    work, published = tmp_path / "w", tmp_path / "published"
    proc = _run(
        "--source", src, "--sha", sha, "--workdir", work, "--run-id", "9",
        "--skip-setup", "--venv", _fake_venv(tmp_path), "--build-config", config,
        "--var", f"LABBOT_PUBLISH_PATH={published}",
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"skipped\s+Publish the model to the Hugging Face Hub", out)
    run = work / "workspace" / "runs" / "build-9"
    log = (run / "build.log").read_text()
    assert log.startswith(f"building into runs/build-9 with --config {config}\n")
    arts = work / "artifacts"
    eval_files = sorted(
        str(p.relative_to(arts / "labbot-eval"))
        for p in (arts / "labbot-eval").rglob("*")
        if p.is_file()
    )
    assert eval_files == ["eval/leaves.json", "loss.png", "manifest.json", "report.md"]
    assert (arts / "labbot-run" / "phase2" / "checkpoints" / "step-1").is_file()
    assert (arts / "labbot-run" / "build.log").is_file()
    assert not (arts / "labbot-run" / ".hidden").exists()  # upload-artifact skips hidden files
    assert (published / sha / "model" / "model.safetensors").read_text() == "weights\n"
    assert os.readlink(published / "latest") == sha
    summary = (work / "summary.md").read_text()
    assert summary.startswith("# fake report\n")
    assert f"Model published to `{published / sha}`." in summary

    # A second build of the same commit replaces the published folder.
    (published / sha / "stale").write_text("from an older build\n")
    proc = _run(
        "--source", src, "--sha", sha, "--workdir", tmp_path / "w2", "--run-id", "10",
        "--skip-setup", "--venv", _fake_venv(tmp_path / "2"),
        "--var", f"LABBOT_PUBLISH_PATH={published}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in published.iterdir()) == [sha, "latest"]
    assert not (published / sha / "stale").exists()
    assert (published / sha / "report.md").read_text().startswith("# fake report\n")

    # A bad publish path fails the job, and the summary says so under the report.
    proc = _run(
        "--source", src, "--sha", sha, "--workdir", tmp_path / "w3", "--run-id", "11",
        "--skip-setup", "--venv", _fake_venv(tmp_path / "3"),
        "--var", "LABBOT_PUBLISH_PATH=relative",
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "LABBOT_PUBLISH_PATH must be an absolute path" in out
    summary = (tmp_path / "w3" / "summary.md").read_text()
    assert summary.startswith("# fake report\n")
    assert "**Publishing to LABBOT_PUBLISH_PATH failed** (see the job log)." in summary


def test_a_failed_build_leaves_its_log_and_an_escaped_summary(tmp_path: Path) -> None:
    src, sha = _source(tmp_path)
    work = tmp_path / "w"
    proc = _run(
        "--source", src, "--sha", sha, "--workdir", work, "--run-id", "11",
        "--skip-setup", "--venv", _fake_venv(tmp_path),
        "--var", f"LABBOT_PUBLISH_PATH={tmp_path / 'published'}",
        env={**os.environ, "FAKE_FAIL": "1"},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "labbot build failed with exit status 3" in out
    for name in ("Upload the evaluation", "Upload the run", "Publish the model to a folder"):
        assert re.search(rf"skipped\s+{name}", out), name
    assert re.search(r"success\s+Upload the build log", out)
    log = (work / "artifacts" / "labbot-build-log" / "labbot-build.log").read_text()
    assert "the build broke" in log
    summary = (work / "summary.md").read_text()
    assert summary.startswith(f"# labbot build {sha}\n")
    assert "| labbot build | failure |" in summary
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; the build broke" in summary
    assert "<script>" not in summary
    assert not (tmp_path / "published").exists()


# The whole build, on the CPU, with the embedded model and a tiny configuration. It needs a
# working `labbot build` and the venv this test runs in (linked in place of scripts/setup.sh).
# The converted model and the generated data are cached in LABBOT_CACHE_DIR (default
# /tmp/labbot-cache, shared with tests/integration/test_train.py), so later runs skip most of
# the work.
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_build_workflow_steps_run_in_order_on_the_cpu(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    if not (venv / "bin" / "labbot").exists():
        pytest.skip(f"{venv} is not a venv with labbot installed (bash scripts/setup.sh)")
    src, sha = _source(tmp_path)
    # A tiny random student with SmolLM2's tokenizer and a scripted teacher on loopback keep this
    # minutes-long test to the workflow's mechanics (benchmarks/build_sample.py times the real one).
    from tests.support.models import tiny_student
    from tests.support.scripted_teacher import scripted
    from tests.support.teacher_server import ScriptedTeacherServer

    student = tiny_student(tmp_path / "student")
    teacher = ScriptedTeacherServer(scripted, concurrency=4).start()
    config = tmp_path / "tiny-build.yaml"
    config.write_text(
        f"student: {student}\n"
        f"teacher: {teacher.url}\n"
        "generate: {samples: 2, max_tokens: 64}\n"
        "phase1: {epochs: 1, max_seq_len: 384, batch_tokens: 1024, micro_batch_tokens: 512}\n"
        "phase2: {epochs: 1, max_seq_len: 384, batch_tokens: 1024, micro_batch_tokens: 512}\n"
        "eval: {max_new_tokens: 8}\n"
    )
    work, published = tmp_path / "w", tmp_path / "published"
    env = {
        **os.environ,
        "LABBOT_CACHE_DIR": os.environ.get("LABBOT_CACHE_DIR", "/tmp/labbot-cache"),
    }
    proc = _run(
        "--source", src, "--sha", sha, "--workdir", work, "--run-id", "4242",
        "--skip-setup", "--venv", venv, "--build-config", config,
        "--var", f"LABBOT_PUBLISH_PATH={published}",
        "--var", "LABBOT_HF_REPO=example/labbot-model",  # no HF_TOKEN secret: a warning only
        env=env,
    )  # fmt: skip
    teacher.stop()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    for name in ("Check the request", "Refuse commits", "Build the model", "Write the step"):
        assert re.search(rf"success\s+{name}", out), name
    assert re.search(r"skipped\s+Upload the build log", out)
    assert "LABBOT_HF_REPO is set but the HF_TOKEN secret is not" in out

    run = work / "workspace" / "runs" / "build-4242"
    for path in ("manifest.json", "report.md", "model/README.md", "eval/leaves.json", "build.log"):
        assert (run / path).is_file(), path
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["taxonomy"]["sha"] == sha
    assert manifest["config"]["generate"]["samples"] == 2

    report = (run / "report.md").read_text()
    summary = (work / "summary.md").read_text()
    assert summary.startswith(report)
    assert sha in report
    assert f"Model published to `{published / sha}`." in summary

    arts = work / "artifacts"
    for path in ("manifest.json", "report.md", "eval/leaves.json"):
        assert (arts / "labbot-eval" / path).is_file(), path
    assert not (arts / "labbot-eval" / "model").exists()
    assert (arts / "labbot-run" / "model" / "README.md").is_file()
    assert not (arts / "labbot-build-log").exists()

    assert (published / sha / "model" / "README.md").is_file()
    assert (published / sha / "report.md").read_text() == report
    assert os.readlink(published / "latest") == sha
    assert not [p for p in published.iterdir() if p.name.startswith(".")]
    shutil.rmtree(tmp_path)  # a few GB of models; kept above only when an assertion fails


# -- the cache guard -----------------------------------------------------------------------------

import cache_guard  # noqa: E402


def _fill(folder: Path) -> None:
    (folder / "generated" / "leaf").mkdir(parents=True)
    (folder / "generated" / "leaf" / "samples.jsonl").write_text('{"q": 1}\n')
    (folder / "models").mkdir()
    (folder / "models" / "weights.bin").write_bytes(b"\0" * 1000)


def test_a_cache_that_matches_its_manifest_is_kept(tmp_path: Path) -> None:
    cache, state, run = tmp_path / "cache", tmp_path / "state", tmp_path / "run"
    _fill(cache)
    cache_guard.record("labbot", cache, state, run, "41", None)
    verdict = cache_guard.verify("labbot", cache, state, None)
    assert verdict["origin"] == "restored, verified"
    assert "2 files, 1,009 bytes, as build 41 left them" in verdict["detail"]
    assert (cache / "models" / "weights.bin").is_file()
    assert json.loads((run / "cache-manifests" / "labbot.json").read_text())["run_id"] == "41"


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (lambda c: (c / "models" / "weights.bin").write_bytes(b"\1" * 1000), "changed"),
        (lambda c: (c / "generated" / "evil.py").write_text("import os\n"), "added"),
        (lambda c: (c / "generated" / "leaf" / "samples.jsonl").unlink(), "removed"),
        (lambda c: (c / "models" / "weights.bin").chmod(0o755), "changed"),
        (
            lambda c: (
                (c / "models" / "weights.bin").unlink(),
                (c / "models" / "weights.bin").symlink_to("/etc/passwd"),
            ),
            "changed",
        ),
    ],
    ids=["content", "new-file", "deleted-file", "mode", "symlink"],
)
def test_a_changed_cache_is_discarded(tmp_path: Path, tamper: Any, why: str) -> None:
    cache, state, run = tmp_path / "cache", tmp_path / "state", tmp_path / "run"
    _fill(cache)
    cache_guard.record("labbot", cache, state, run, "41", None)
    tamper(cache)
    verdict = cache_guard.verify("labbot", cache, state, None)
    assert verdict["origin"] == "rebuilt" and why in verdict["detail"], verdict
    assert "since build 41" in verdict["detail"]
    assert not cache.exists()
    assert Path("/etc/passwd").exists()  # a symlink is removed, never followed


def test_no_manifest_or_a_forged_one_means_rebuild(tmp_path: Path) -> None:
    cache, state, run = tmp_path / "cache", tmp_path / "state", tmp_path / "run"
    _fill(cache)
    assert cache_guard.verify("labbot", cache, state, None)["detail"] == (
        "no manifest from an earlier build"
    )
    assert not cache.exists()
    # A job without the key rewrites the cache and writes a matching, unsigned manifest.
    _fill(cache)
    cache_guard.record("labbot", cache, state, run, "66", None)
    verdict = cache_guard.verify("labbot", cache, state, "the-real-key")
    assert (
        verdict["origin"] == "rebuilt" and "not signed with LABBOT_CACHE_KEY" in verdict["detail"]
    )
    # Signed with the wrong key: refused too; with the right one: kept.
    _fill(cache)
    cache_guard.record("labbot", cache, state, run, "67", "a-guessed-key")
    assert cache_guard.verify("labbot", cache, state, "the-real-key")["origin"] == "rebuilt"
    _fill(cache)
    cache_guard.record("labbot", cache, state, run, "68", "the-real-key")
    assert cache_guard.verify("labbot", cache, state, "the-real-key")["origin"] == (
        "restored, verified"
    )
    # A manifest written for another folder does not vouch for this one.
    other = tmp_path / "other"
    shutil.copytree(cache, other)
    (state / "labbot.json").write_text(
        (state / "labbot.json").read_text().replace(str(cache), str(other))
    )
    assert "manifest is for" in cache_guard.verify("labbot", cache, state, "the-real-key")["detail"]


def test_cache_summary_is_escaped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cache_guard._append(
        run, {"cache": "pip", "path": "/x|<b>", "origin": "rebuilt", "detail": "a <i>|b"}
    )
    text = cache_guard.summary(run)
    assert "| pip | `/x\\|&lt;b&gt;` | rebuilt | a &lt;i&gt;\\|b |" in text
    assert "not checked" in cache_guard.summary(tmp_path / "nothing")


@pytest.mark.slow
def test_the_workflow_verifies_records_and_reports_its_caches(tmp_path: Path) -> None:
    src, sha = _source(tmp_path)
    caches = tmp_path / "caches"
    env = {**os.environ, **{v: str(caches / v.lower()) for v in CACHE_VARS}}
    labbot_cache = caches / "labbot_cache_dir"
    (labbot_cache / "generated").mkdir(parents=True)
    (labbot_cache / "generated" / "old.jsonl").write_text("left by someone else\n")

    def build(run_id: int) -> str:
        proc = _run(
            "--source", src, "--sha", sha, "--workdir", tmp_path / f"w{run_id}",
            "--run-id", run_id, "--skip-setup", "--venv", _fake_venv(tmp_path / str(run_id)),
            "--secret", "LABBOT_CACHE_KEY=k3y",
            env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return (tmp_path / f"w{run_id}" / "summary.md").read_text()

    # 1: a cache nobody vouches for is discarded; empty ones are built; manifests recorded.
    summary = build(1)
    assert (
        "| labbot | `" in summary and "| rebuilt | no manifest from an earlier build |" in summary
    )
    assert "| pip | `" in summary and "| built | empty: this build fills it |" in summary
    assert not (labbot_cache / "generated" / "old.jsonl").exists()
    run = tmp_path / "w1" / "artifacts" / "labbot-run"
    assert sorted(p.name for p in (run / "cache-manifests").iterdir()) == [
        "huggingface.json",
        "labbot.json",
        "pip.json",
    ]
    assert [e["cache"] for e in json.loads((run / "caches.json").read_text())][:3] == [
        "labbot",
        "pip",
        "huggingface",
    ]
    # 2: the caches as build 1 left them (plus what it wrote) are restored and verified.
    (labbot_cache / "generated").mkdir(parents=True, exist_ok=True)
    (labbot_cache / "generated" / "leaf.jsonl").write_text("{}\n")
    cache_guard.record(
        "labbot", labbot_cache, caches / "labbot_cache_state", tmp_path / "scratch", "1", "k3y"
    )
    summary = build(2)
    assert "| labbot | `" in summary and "restored, verified | 1 files" in summary
    # 3: something else on the runner changes the cache between builds: discarded.
    (labbot_cache / "generated" / "leaf.jsonl").write_text('{"poisoned": true}\n')
    summary = build(3)
    assert "rebuilt | it changed since build 2: generated/leaf.jsonl changed" in summary
    assert not (labbot_cache / "generated" / "leaf.jsonl").exists()
