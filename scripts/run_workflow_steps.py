#!/usr/bin/env python3
"""Run a workflow job's steps on this machine, the way a GitHub Actions runner would.

A local stand-in for the GPU runner, for `.github/workflows/build-model.yml`: every `run:` step
runs in order with bash in a fresh workspace, with the environment a runner gives it
(GITHUB_WORKSPACE, GITHUB_RUN_ID, GITHUB_REF, GITHUB_EVENT_PATH, RUNNER_TEMP, a
GITHUB_STEP_SUMMARY file, GITHUB_OUTPUT / GITHUB_ENV / GITHUB_PATH files read back after each
step), and with `${{ }}` expressions in `env:`, `with:` and `if:` resolved from the inputs,
variables and secrets given here. Only the expression forms the workflow uses are understood;
anything else stops the run before the first step, naming the expression.

`uses:` steps are not run. Two are emulated: `actions/checkout` becomes a `git clone` of the
source repository checked out at the requested commit (so `origin/<default branch>` is the
source's branch, as after a `fetch-depth: 0` checkout), and `actions/upload-artifact` copies
the files it would upload to `<workdir>/artifacts/<name>/`. Others are reported and skipped.

Examples:

    # The build, on the CPU, reusing this checkout's .venv instead of scripts/setup.sh
    .venv/bin/python scripts/run_workflow_steps.py --skip-setup --build-config tiny.yaml

    # What the runner does with a commit that is not on the default branch
    .venv/bin/python scripts/run_workflow_steps.py --sha "$(git rev-parse my-branch)"

Exit status: 0 the job succeeded, 1 a step failed, 2 usage error or an unsupported workflow.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKFLOW = ROOT / ".github" / "workflows" / "build-model.yml"
SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]  # what `shell: bash` runs
STEP_KEYS = {
    "name",
    "id",
    "if",
    "env",
    "run",
    "uses",
    "with",
    "shell",
    "timeout-minutes",
    "continue-on-error",
    "working-directory",
}


class Unsupported(Exception):
    """The workflow uses something this stand-in does not implement."""


# -- expressions ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<str>'(?:[^']|'')*')"
    r"|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<op>\|\||&&|==|!=|!|\(|\)|,|\.)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*)"
    r")"
)
#: The contexts an expression may read. `steps` and `env` are filled in while the job runs.
CONTEXTS = {"github", "inputs", "vars", "secrets", "env", "steps", "runner"}
STATUS_FUNCTIONS = {"always", "success", "failure", "cancelled"}


@dataclass
class Node:
    kind: str  # literal | context | not | and | or | eq | ne | call
    value: Any = None
    args: list[Node] = field(default_factory=list)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            rest = text[pos:].lstrip()
            what = "index syntax" if rest[:1] in ("[", "*") else f"{rest!r}"
            raise Unsupported(f"{what} is not supported in expression {text!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over: || && ! == != ( ) literals, context paths, function calls."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            want = repr(value) if value else "more"
            raise Unsupported(f"expected {want} in expression {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.or_()
        extra = self.peek()
        if extra is not None:
            raise Unsupported(f"unexpected {extra[1]!r} in expression {self.text!r}")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            node = Node("or", args=[node, self.and_()])
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.peek() == ("op", "&&"):
            self.take()
            node = Node("and", args=[node, self.not_()])
        return node

    def not_(self) -> Node:
        if self.peek() == ("op", "!"):
            self.take()
            return Node("not", args=[self.not_()])
        return self.cmp()

    def cmp(self) -> Node:
        node = self.primary()
        tok = self.peek()
        if tok == ("op", "==") or tok == ("op", "!="):
            self.take()
            node = Node("eq" if tok[1] == "==" else "ne", args=[node, self.primary()])
        return node

    def primary(self) -> Node:
        kind, value = self.take()
        if (kind, value) == ("op", "("):
            node = self.or_()
            self.take(")")
            return node
        if kind == "str":
            return Node("literal", value[1:-1].replace("''", "'"))
        if kind == "num":
            return Node("literal", float(value) if "." in value else int(value))
        if kind != "name":
            raise Unsupported(f"unexpected {value!r} in expression {self.text!r}")
        if value in ("true", "false"):
            return Node("literal", value == "true")
        if value == "null":
            return Node("literal", None)
        if self.peek() == ("op", "("):
            if value not in STATUS_FUNCTIONS:
                raise Unsupported(f"function {value}() is not supported (in {self.text!r})")
            self.take()
            if self.peek() != ("op", ")"):
                raise Unsupported(f"{value}() takes no arguments (in {self.text!r})")
            self.take(")")
            return Node("call", value)
        if value not in CONTEXTS:
            raise Unsupported(f"context {value!r} is not supported (in {self.text!r})")
        path = [value]
        while self.peek() == ("op", "."):
            self.take()
            kind, name = self.take()
            if kind != "name":
                raise Unsupported(f"property {name!r} is not supported (in {self.text!r})")
            path.append(name)
        return Node("context", path)


def parse_expression(text: str) -> Node:
    """The syntax tree of one expression (the text inside ``${{ }}``).

    Raises:
        Unsupported: for any form outside the subset above (functions other than the status
            functions, index syntax, filters, comparisons other than == and !=).
    """
    return _Parser(text).parse()


def _truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (None, False, 0, "")


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip() or 0)
        except ValueError:
            return math.nan
    return math.nan


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()  # GitHub compares strings ignoring case
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return a is b
    if type(a) is type(b):
        return bool(a == b)
    return _number(a) == _number(b)  # mixed types compare as numbers


def to_string(value: Any) -> str:
    """How an expression's value reads when put into a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2)
    return str(value)


@dataclass
class Status:
    failed: bool = False


def evaluate(node: Node, contexts: Mapping[str, Any], status: Status | None = None) -> Any:
    """The value of ``node``: GitHub's rules for ||, && (operand values), ==, != and truthiness."""
    if node.kind == "literal":
        return node.value
    if node.kind == "context":
        value: Any = contexts.get(node.value[0])
        for name in node.value[1:]:
            value = value.get(name) if isinstance(value, dict) else None
        return value
    if node.kind == "not":
        return not _truthy(evaluate(node.args[0], contexts, status))
    if node.kind == "or":
        left = evaluate(node.args[0], contexts, status)
        return left if _truthy(left) else evaluate(node.args[1], contexts, status)
    if node.kind == "and":
        left = evaluate(node.args[0], contexts, status)
        return evaluate(node.args[1], contexts, status) if _truthy(left) else left
    if node.kind in ("eq", "ne"):
        same = _equal(
            evaluate(node.args[0], contexts, status), evaluate(node.args[1], contexts, status)
        )
        return same if node.kind == "eq" else not same
    if node.kind == "call":
        if status is None:
            raise Unsupported(f"{node.value}() is only allowed in if: conditions")
        return {
            "always": True,
            "success": not status.failed,
            "failure": status.failed,
            "cancelled": False,
        }[node.value]
    raise Unsupported(f"cannot evaluate {node.kind}")


_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def expressions_in(text: str) -> list[str]:
    return [m.group(1).strip() for m in _EXPR.finditer(text)]


def interpolate(text: str, contexts: Mapping[str, Any]) -> Any:
    """A workflow string with its ``${{ }}`` parts replaced (a lone expression keeps its type)."""
    whole = _EXPR.fullmatch(text.strip())
    if whole:
        return evaluate(parse_expression(whole.group(1).strip()), contexts)
    return _EXPR.sub(
        lambda m: to_string(evaluate(parse_expression(m.group(1).strip()), contexts)), text
    )


def _parse_condition(text: Any) -> Node:
    """An ``if:``, with or without ``${{ }}``; without a status function it means success() &&."""
    if isinstance(text, bool):
        node = Node("literal", text)
    else:
        source = str(text).strip()
        whole = _EXPR.fullmatch(source)
        if whole:
            source = whole.group(1).strip()
        elif "${{" in source:
            raise Unsupported(f"if: mixes text and expressions: {text!r}")
        node = parse_expression(source)
    if not _uses_status(node):
        node = Node("and", args=[Node("call", "success"), node])
    return node


def condition(text: Any, contexts: Mapping[str, Any], status: Status) -> bool:
    """Whether a step (or job) with this ``if:`` runs."""
    return _truthy(evaluate(_parse_condition(text), contexts, status))


def _uses_status(node: Node) -> bool:
    if node.kind == "call" and node.value in STATUS_FUNCTIONS:
        return True
    return any(_uses_status(a) for a in node.args)


# -- the workflow -----------------------------------------------------------------------------


def load_workflow(path: Path) -> dict[str, Any]:
    from ruamel.yaml import YAML  # YAML 1.2: `on:` stays a string key

    data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        raise Unsupported(f"{path} is not a workflow (no jobs)")
    return data


def _walk(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string in the workflow with where it is, except if: conditions (checked apart)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "if":
                yield from _walk(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def check_supported(workflow: dict[str, Any], job_id: str) -> None:
    """Refuse, before anything runs, what this stand-in would not do as a runner does."""
    job = workflow["jobs"][job_id]
    if "strategy" in job or "services" in job or "container" in job or "uses" in job:
        raise Unsupported(f"job {job_id}: matrix, services, containers and reusable workflows")
    for scope in (workflow.get("defaults") or {}, job.get("defaults") or {}):
        run_defaults = scope.get("run") or {}
        if set(run_defaults) - {"shell"} or run_defaults.get("shell", "bash") != "bash":
            raise Unsupported(f"defaults.run {run_defaults}: only shell: bash is supported")
    for cond in [job["if"]] if "if" in job else []:
        _parse_condition(cond)
    for i, step in enumerate(job.get("steps") or []):
        where = f"jobs.{job_id}.steps[{i}] ({step.get('name') or step.get('id') or ''})"
        extra = set(step) - STEP_KEYS
        if extra:
            raise Unsupported(f"{where}: keys {sorted(extra)} are not supported")
        if ("run" in step) == ("uses" in step):
            raise Unsupported(f"{where}: a step needs exactly one of run: and uses:")
        if step.get("shell", "bash") != "bash":
            raise Unsupported(f"{where}: shell {step['shell']!r}: only bash is supported")
        if "run" in step and "${{" in str(step["run"]):
            raise Unsupported(
                f"{where}: an expression inside run: (pass it through env: instead; zizmor "
                "reports this as template injection)"
            )
        if "if" in step:
            try:
                _parse_condition(step["if"])
            except Unsupported as exc:
                raise Unsupported(f"{where}.if: {exc}") from None
    for where, text in _walk(workflow, "workflow"):
        for expr in expressions_in(text):
            try:
                node = parse_expression(expr)
            except Unsupported as exc:
                raise Unsupported(f"{where}: {exc}") from None
            if _uses_status(node):
                raise Unsupported(f"{where}: status functions belong in if: only")


# -- files the runner reads back --------------------------------------------------------------


def read_command_file(path: Path) -> list[tuple[str, str]]:
    """NAME=value lines and NAME<<DELIMITER blocks, as in GITHUB_OUTPUT and GITHUB_ENV."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        heredoc = re.fullmatch(r"([^=<]+)<<(.+)", line)
        if heredoc:
            name, delimiter = heredoc.group(1), heredoc.group(2)
            body: list[str] = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"{path.name}: {name}<<{delimiter} is never closed")
            i += 1
            out.append((name, "\n".join(body)))
        elif "=" in line:
            name, value = line.split("=", 1)
            out.append((name, value))
        else:
            raise ValueError(f"{path.name}: cannot read line {line!r}")
    return out


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Options:
    workflow: Path
    job: str | None
    source: Path
    sha: str
    ref: str
    default_branch: str
    event: str
    workdir: Path
    skip_setup: bool
    venv: Path
    variables: dict[str, str]
    secrets: dict[str, str]
    run_id: int
    repository: str


@dataclass
class StepResult:
    name: str
    outcome: str  # success | failure | skipped
    seconds: float = 0.0
    note: str = ""


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


class Runner:
    def __init__(self, opts: Options, log: Callable[[str], None] = print) -> None:
        self.o = opts
        self.log = log
        self.workflow = load_workflow(opts.workflow)
        jobs = self.workflow["jobs"]
        self.job_id = opts.job or next(iter(jobs))
        if self.job_id not in jobs:
            raise Unsupported(f"no job {self.job_id!r} in {opts.workflow}")
        self.job: dict[str, Any] = jobs[self.job_id]
        check_supported(self.workflow, self.job_id)
        w = opts.workdir
        self.workspace = w / "workspace"
        self.temp = w / "temp"
        self.files = w / "files"
        self.artifacts = w / "artifacts"
        self.summary = w / "summary.md"
        self.event_path = w / "event.json"
        self.status = Status()
        self.steps: dict[str, dict[str, Any]] = {}
        self.results: list[StepResult] = []
        self.exported: dict[str, str] = {}
        self.path_prefix: list[str] = []
        self.payload = self._payload()
        self.github: dict[str, Any] = {
            "event": self.payload,
            "event_name": opts.event,
            "ref": opts.ref,
            "ref_name": opts.ref.removeprefix("refs/heads/"),
            "sha": self._ref_head(),
            "repository": opts.repository,
            "repository_owner": opts.repository.split("/")[0],
            "run_id": str(opts.run_id),
            "run_number": "1",
            "run_attempt": "1",
            "workspace": str(self.workspace),
            "workflow": self.workflow.get("name", opts.workflow.name),
            "job": self.job_id,
            "actor": "labbot-local",
            "server_url": "https://github.com",
            "api_url": "https://api.github.com",
        }

    def _payload(self) -> dict[str, Any]:
        repo = {
            "full_name": self.o.repository,
            "name": self.o.repository.split("/")[-1],
            "default_branch": self.o.default_branch,
        }
        if self.o.event == "workflow_dispatch":
            return {"inputs": {"sha": self.o.sha}, "ref": self.o.ref, "repository": repo}
        return {"action": "labbot-build", "client_payload": {"sha": self.o.sha}, "repository": repo}

    def _ref_head(self) -> str:
        try:
            return git("rev-parse", "--verify", f"{self.o.ref}^{{commit}}", cwd=self.o.source)
        except subprocess.CalledProcessError:
            return ""

    def contexts(self, env: Mapping[str, str]) -> dict[str, Any]:
        return {
            "github": self.github,
            "inputs": self.payload.get("inputs", {}),
            "vars": self.o.variables,
            "secrets": {**self.o.secrets, "GITHUB_TOKEN": ""},
            "env": dict(env),
            "steps": self.steps,
            "runner": {"os": "Linux", "arch": "X64", "temp": str(self.temp), "name": "local"},
        }

    def _resolve_env(self, mapping: Any, base: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in (mapping or {}).items():
            ctx = self.contexts({**base, **out})
            out[str(key)] = to_string(interpolate(to_string(value), ctx))
        return out

    def base_env(self) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "RUNNER_", "INPUT_", "ACTIONS_"))
        }
        return {
            **keep,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_RUN_ID": str(self.o.run_id),
            "GITHUB_RUN_NUMBER": "1",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_REPOSITORY": self.o.repository,
            "GITHUB_REPOSITORY_OWNER": self.o.repository.split("/")[0],
            "GITHUB_REF": self.o.ref,
            "GITHUB_REF_NAME": self.github["ref_name"],
            "GITHUB_REF_TYPE": "branch",
            "GITHUB_SHA": self.github["sha"],
            "GITHUB_EVENT_NAME": self.o.event,
            "GITHUB_EVENT_PATH": str(self.event_path),
            "GITHUB_WORKFLOW": str(self.github["workflow"]),
            "GITHUB_JOB": self.job_id,
            "GITHUB_ACTOR": "labbot-local",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_API_URL": "https://api.github.com",
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "RUNNER_TEMP": str(self.temp),
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_NAME": "local",
        }

    def run(self) -> bool:
        for d in (self.workspace, self.temp, self.files, self.artifacts):
            d.mkdir(parents=True, exist_ok=True)
        if any(self.workspace.iterdir()):
            raise Unsupported(f"{self.workspace} is not empty: pass a fresh --workdir")
        self.summary.write_text("")
        self.event_path.write_text(json.dumps(self.payload, indent=2))
        start_ctx = self.contexts({})
        run_name = self.workflow.get("run-name")
        title = to_string(interpolate(run_name, start_ctx)) if run_name else self.github["workflow"]
        self.log(f"run: {title}")
        group = (self.workflow.get("concurrency") or {}).get("group")
        if group:
            self.log(f"concurrency group: {to_string(interpolate(str(group), start_ctx))}")
        self.log(f"job {self.job_id} on {self.job.get('runs-on')} in {self.workspace}")
        if "if" in self.job and not condition(self.job["if"], start_ctx, self.status):
            self.log("job skipped: its if: is false")
            return True
        job_env = self._resolve_env(self.workflow.get("env"), {})
        job_env = {**job_env, **self._resolve_env(self.job.get("env"), job_env)}
        job_timeout = float(self.job.get("timeout-minutes", 360)) * 60
        deadline = time.monotonic() + job_timeout
        steps = self.job.get("steps") or []
        for i, step in enumerate(steps, 1):
            name = str(step.get("name") or step.get("uses") or step.get("run", "").split("\n")[0])
            self.log(f"\n==> [{i}/{len(steps)}] {name}")
            result = self.step(i, step, name, {**job_env, **self.exported}, deadline)
            self.results.append(result)
            note = f" ({result.note})" if result.note else ""
            self.log(f"<== {result.outcome} in {result.seconds:.1f} s{note}")
        self.log("\nsteps:")
        for r in self.results:
            self.log(f"  {r.outcome:8} {r.name}")
        self.log(f"job {'failed' if self.status.failed else 'succeeded'}")
        self.log(f"workspace {self.workspace}\nsummary {self.summary}\nartifacts {self.artifacts}")
        return not self.status.failed

    def step(
        self, index: int, step: dict[str, Any], name: str, env: dict[str, str], deadline: float
    ) -> StepResult:
        step_id = str(step.get("id") or f"__step{index}")
        record: dict[str, Any] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
        self.steps[step_id] = record
        ctx = self.contexts(env)
        if not condition(step.get("if", "success()"), ctx, self.status):
            return StepResult(name, "skipped", note="if: is false")
        step_env = {**env, **self._resolve_env(step.get("env"), env)}
        started = time.monotonic()
        ok, note = True, ""
        try:
            if "uses" in step:
                with_ = self._resolve_env(step.get("with"), step_env)
                ok, note = self.uses(str(step["uses"]), with_)
            elif self.o.skip_setup and "scripts/setup.sh" in str(step["run"]):
                ok, note = self.link_venv()
            else:
                minutes = step.get("timeout-minutes")
                limit = deadline - time.monotonic()
                if minutes is not None:
                    limit = min(limit, float(minutes) * 60)
                ok, note = self.run_script(index, step, step_env, limit)
        except (OSError, subprocess.CalledProcessError, ValueError) as exc:
            ok, note = False, f"{type(exc).__name__}: {exc}"
        outcome = "success" if ok else "failure"
        conclusion = outcome
        if not ok and _truthy(step.get("continue-on-error", False)):
            conclusion = "success"
        record["outcome"], record["conclusion"] = outcome, conclusion
        if conclusion == "failure":
            self.status.failed = True
        return StepResult(name, outcome, time.monotonic() - started, note)

    def run_script(
        self, index: int, step: dict[str, Any], env: dict[str, str], limit: float
    ) -> tuple[bool, str]:
        files = {
            name: self.files / f"{name.lower()}_{index}"
            for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH")
        }
        for path in files.values():
            path.write_text("")
        script = self.temp / f"step_{index}.sh"
        script.write_text(str(step["run"]))
        env = {**self.base_env(), **env, **{k: str(v) for k, v in files.items()}}
        if self.path_prefix:
            env["PATH"] = os.pathsep.join([*self.path_prefix, env.get("PATH", "")])
        cwd = self.workspace / str(step.get("working-directory", "."))
        if limit <= 0:
            return False, "the job's timeout-minutes ran out"
        sys.stdout.flush()
        proc = subprocess.Popen([*SHELL, str(script)], cwd=cwd, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return False, f"timed out after {limit / 60:.1f} min"
        record = self.steps[str(step.get("id") or f"__step{index}")]
        record["outputs"].update(read_command_file(files["GITHUB_OUTPUT"]))
        for key, value in read_command_file(files["GITHUB_ENV"]):
            self.exported[key] = value
        for line in files["GITHUB_PATH"].read_text().splitlines():
            if line.strip():
                self.path_prefix.insert(0, line.strip())
        return code == 0, "" if code == 0 else f"exit status {code}"

    # -- emulated actions ----------------------------------------------------------------

    def uses(self, ref: str, with_: dict[str, str]) -> tuple[bool, str]:
        action = ref.split("@")[0]
        if action == "actions/checkout":
            return self.checkout(with_)
        if action == "actions/upload-artifact":
            return self.upload(with_)
        return True, f"{action} is not emulated here: skipped"

    def checkout(self, with_: dict[str, str]) -> tuple[bool, str]:
        ref = with_.get("ref") or self.github["sha"]
        if any(self.workspace.iterdir()):
            return False, "the workspace is not empty"
        git("clone", "--quiet", "--no-checkout", str(self.o.source), str(self.workspace))
        git("checkout", "--quiet", "--detach", ref, cwd=self.workspace)
        return True, f"cloned {self.o.source} at {ref}"

    def link_venv(self) -> tuple[bool, str]:
        if not (self.o.venv / "bin" / "python").exists():
            return False, f"--skip-setup: {self.o.venv} has no bin/python"
        target = self.workspace / ".venv"
        if target.exists() or target.is_symlink():
            return False, f"--skip-setup: {target} exists already"
        target.symlink_to(self.o.venv, target_is_directory=True)
        return True, f"--skip-setup: linked .venv to {self.o.venv}"

    def upload(self, with_: dict[str, str]) -> tuple[bool, str]:
        name = with_.get("name") or "artifact"
        dest = self.artifacts / name
        if dest.exists():
            return False, f"an artifact named {name!r} exists already in this run"
        hidden = with_.get("include-hidden-files", "false") == "true"
        search: list[Path] = []
        for line in str(with_.get("path", "")).splitlines():
            pattern = line.strip()
            if not pattern:
                continue
            if pattern.startswith("!") or any(c in pattern for c in "*?["):
                raise Unsupported(f"upload-artifact path pattern {pattern!r}")
            path = Path(pattern) if Path(pattern).is_absolute() else self.workspace / pattern
            if path.exists():
                search.append(path.resolve())
        files: list[Path] = []
        for path in search:
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file())
            else:
                files.append(path)
        # The artifact's root: the paths' common folder (a lone file's own folder).
        root = Path(os.path.commonpath([str(p) for p in search])) if search else self.workspace
        if len(search) == 1 and search[0].is_file():
            root = search[0].parent
        if not hidden:  # upload-artifact v4.4+ leaves out hidden files and folders by default
            files = [
                f for f in files if not any(s.startswith(".") for s in f.relative_to(root).parts)
            ]
        if not files:
            policy = with_.get("if-no-files-found", "warn")
            message = f"no files found for artifact {name!r}"
            return policy != "error", message if policy != "ignore" else ""
        for f in dict.fromkeys(files):
            out = dest / f.relative_to(root)
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, out)  # a model is large: link when the file system allows it
            except OSError:
                shutil.copy2(f, out)
        days = with_.get("retention-days", "default")
        return True, f"artifact {name}: {len(files)} files, retention {days} days, in {dest}"


# -- command line -----------------------------------------------------------------------------


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        if "=" not in item:
            raise SystemExit(f"{what} must be NAME=VALUE, not {item!r}")
        key, value = item.split("=", 1)
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 the job succeeded, 1 a step failed, 2 usage or unsupported.",
    )
    p.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW, help="workflow file")
    p.add_argument("--job", help="job id (default: the first job)")
    p.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="git repository the checkout step clones (default: this project)",
    )
    p.add_argument(
        "--sha", default="HEAD", help="the commit to build, or a revision of --source (HEAD)"
    )
    p.add_argument(
        "--default-branch",
        help="the repository's default branch (default: the branch checked out in --source)",
    )
    p.add_argument(
        "--ref", help="the ref the workflow runs from (default: refs/heads/<default branch>)"
    )
    p.add_argument(
        "--event", choices=["workflow_dispatch", "repository_dispatch"], default="workflow_dispatch"
    )
    p.add_argument(
        "--workdir", type=Path, help="where the workspace goes (default: a new temp dir)"
    )
    p.add_argument(
        "--skip-setup",
        action="store_true",
        help="instead of running scripts/setup.sh, link the workspace's .venv to --venv "
        "(the code then comes from that venv's install of labbot)",
    )
    p.add_argument(
        "--venv", type=Path, default=ROOT / ".venv", help="the venv --skip-setup links (.venv)"
    )
    p.add_argument(
        "--build-config", type=Path, help="sets vars.LABBOT_BUILD_CONFIG to this file's path"
    )
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a variable")
    p.add_argument("--secret", action="append", default=[], metavar="NAME=VALUE", help="a secret")
    p.add_argument("--run-id", type=int, default=None, help="GITHUB_RUN_ID (default: from time)")
    p.add_argument("--repository", default=None, help="owner/name (default: local/<folder>)")
    args = p.parse_args(argv)

    source = args.source.resolve()
    sha = args.sha
    try:
        resolved = git("rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}", cwd=source)
        if not re.fullmatch(r"[0-9a-fA-F]{40}", sha):
            sha = resolved
    except subprocess.CalledProcessError:
        print(f"note: {sha!r} is not a commit of {source}; passing it on as given")
    branch = args.default_branch
    if not branch:
        try:
            branch = git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=source)
        except subprocess.CalledProcessError:
            branch = "main"
    variables = _pairs(args.var, "--var")
    if args.build_config:
        variables["LABBOT_BUILD_CONFIG"] = str(args.build_config.resolve())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="labbot-workflow-"))
    opts = Options(
        workflow=args.workflow.resolve(),
        job=args.job,
        source=source,
        sha=sha,
        ref=args.ref or f"refs/heads/{branch}",
        default_branch=branch,
        event=args.event,
        workdir=workdir.resolve(),
        skip_setup=args.skip_setup,
        venv=args.venv.absolute(),
        variables=variables,
        secrets=_pairs(args.secret, "--secret"),
        run_id=args.run_id or int(time.time()),
        repository=args.repository or f"local/{source.name}",
    )
    try:
        ok = Runner(opts).run()
    except Unsupported as exc:
        print(f"run_workflow_steps: unsupported: {exc}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
