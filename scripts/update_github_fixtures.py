#!/usr/bin/env python3
"""Regenerate tests/fixtures/github/ from GitHub's published OpenAPI description and real payloads.

Sources (both MIT, fetched from the npm registry with ``npm pack``; Node is needed only here):

* ``@octokit/openapi``: GitHub's official REST description (``generated/api.github.com.json``).
  The operations labbot calls are copied with every ``#/components/...`` they reference
  (transitively), plus the ``x-webhooks`` schemas of the events labbot handles, into
  ``openapi-subset.json``. The subset is self-contained and records the package version.
* ``@octokit/webhooks-examples``: real webhook payloads. A curated set is written to
  ``webhooks/<event>[.<action>][.<variant>].json``; a few payloads GitHub sends but the package
  lacks are derived from real ones and marked ``derived`` in ``webhooks/index.json``.

Usage::

    .venv/bin/python scripts/update_github_fixtures.py            # pinned versions
    .venv/bin/python scripts/update_github_fixtures.py --openapi-version latest
    .venv/bin/python scripts/update_github_fixtures.py --from-dir /tmp/unpacked  # no network

Run it on purpose (bumping a pin), review the diff, then run ``pytest tests/support/fakegithub``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "tests" / "fixtures" / "github"

OPENAPI_PACKAGE = "@octokit/openapi"
OPENAPI_VERSION = "23.0.2"
OPENAPI_MEMBER = "package/generated/api.github.com.json"
EXAMPLES_PACKAGE = "@octokit/webhooks-examples"
EXAMPLES_VERSION = "7.6.1"
EXAMPLES_MEMBER = "package/api.github.com/index.json"

# (method, path) pairs labbot calls or the fake serves. Keep in sync with tests/support/fakegithub.
OPERATIONS: list[tuple[str, str]] = [
    ("get", "/app"),
    ("get", "/app/installations"),
    ("get", "/app/installations/{installation_id}"),
    ("post", "/app/installations/{installation_id}/access_tokens"),
    ("get", "/app/hook/deliveries"),
    ("get", "/app/hook/deliveries/{delivery_id}"),
    ("post", "/app/hook/deliveries/{delivery_id}/attempts"),
    ("get", "/installation/repositories"),
    ("get", "/repos/{owner}/{repo}"),
    ("get", "/repos/{owner}/{repo}/installation"),
    ("get", "/repos/{owner}/{repo}/pulls"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}/files"),
    ("get", "/repos/{owner}/{repo}/contents/{path}"),
    ("get", "/repos/{owner}/{repo}/git/blobs/{file_sha}"),
    ("get", "/repos/{owner}/{repo}/git/trees/{tree_sha}"),
    ("get", "/repos/{owner}/{repo}/commits/{ref}"),
    ("get", "/repos/{owner}/{repo}/commits/{commit_sha}/pulls"),
    ("get", "/repos/{owner}/{repo}/commits/{ref}/check-runs"),
    ("post", "/repos/{owner}/{repo}/check-runs"),
    ("get", "/repos/{owner}/{repo}/check-runs/{check_run_id}"),
    ("patch", "/repos/{owner}/{repo}/check-runs/{check_run_id}"),
    ("get", "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations"),
    ("get", "/repos/{owner}/{repo}/issues/{issue_number}"),
    ("get", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    ("post", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    ("get", "/repos/{owner}/{repo}/issues/comments/{comment_id}"),
    ("patch", "/repos/{owner}/{repo}/issues/comments/{comment_id}"),
    ("delete", "/repos/{owner}/{repo}/issues/comments/{comment_id}"),
    ("post", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"),
    ("get", "/repos/{owner}/{repo}/issues/{issue_number}/labels"),
    ("post", "/repos/{owner}/{repo}/issues/{issue_number}/labels"),
    ("delete", "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}"),
    ("put", "/repos/{owner}/{repo}/issues/{issue_number}/labels"),
    ("get", "/repos/{owner}/{repo}/labels"),
    ("post", "/repos/{owner}/{repo}/labels"),
    ("get", "/repos/{owner}/{repo}/labels/{name}"),
    ("get", "/repos/{owner}/{repo}/collaborators/{username}/permission"),
    ("get", "/repos/{owner}/{repo}/actions/workflows/{workflow_id}"),
    ("post", "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches"),
    ("post", "/repos/{owner}/{repo}/dispatches"),
    ("get", "/repos/{owner}/{repo}/actions/runs"),
    ("get", "/repos/{owner}/{repo}/actions/runs/{run_id}"),
    ("get", "/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts"),
    ("get", "/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/{archive_format}"),
]

# x-webhooks keys kept for validating (and re-validating derived) payloads.
WEBHOOK_SCHEMAS = [
    "pull-request-opened",
    "pull-request-synchronize",
    "pull-request-reopened",
    "pull-request-closed",
    "pull-request-ready-for-review",
    "pull-request-labeled",
    "issue-comment-created",
    "issue-comment-edited",
    "check-run-rerequested",
    "check-run-requested-action",
    "check-suite-requested",
    "check-suite-rerequested",
    "installation-created",
    "installation-deleted",
    "installation-repositories-added",
    "push",
    "ping",
    "workflow-dispatch",
    "workflow-run-requested",
    "workflow-run-in-progress",
    "workflow-run-completed",
    "workflow-job-queued",
    "workflow-job-in-progress",
    "workflow-job-completed",
]

# (event, action) -> a predicate choosing the example; the first match wins, and examples that
# carry an ``installation`` (what a GitHub App receives) are preferred over those that do not.
Pick = Callable[[dict[str, Any]], bool]


def _any(_: dict[str, Any]) -> bool:
    return True


def _branch_push(p: dict[str, Any]) -> bool:
    return str(p.get("ref", "")).startswith("refs/heads/")


def _repository_ping(p: dict[str, Any]) -> bool:
    return "repository" in p


CURATED: list[tuple[str, str | None, Pick]] = [
    ("pull_request", "opened", _any),
    ("pull_request", "synchronize", _any),
    ("pull_request", "reopened", _any),
    ("pull_request", "closed", _any),
    ("pull_request", "ready_for_review", _any),
    ("pull_request", "labeled", _any),
    ("issue_comment", "created", _any),
    ("issue_comment", "edited", _any),
    ("check_run", "rerequested", _any),
    ("check_run", "requested_action", _any),
    ("check_suite", "requested", _any),
    ("check_suite", "rerequested", _any),
    ("installation", "created", _any),
    ("installation", "deleted", _any),
    ("installation_repositories", "added", _any),
    ("push", None, _branch_push),
    ("ping", None, _repository_ping),
    ("workflow_dispatch", None, _any),
    ("workflow_run", "requested", _any),
    ("workflow_run", "in_progress", _any),
    ("workflow_run", "completed", _any),
    ("workflow_job", "queued", _any),
    ("workflow_job", "in_progress", _any),
    ("workflow_job", "completed", _any),
]


def run(cmd: list[str], cwd: Path) -> str:
    print("+", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


def npm_pack(package: str, version: str, dest: Path) -> tuple[Path, str]:
    """Download a package tarball with ``npm pack``; return (tarball, resolved version)."""
    out = run(
        ["npm", "pack", "--json", f"{package}@{version}", "--pack-destination", str(dest)], dest
    )
    info = json.loads(out)[0]
    return dest / info["filename"], str(info["version"])


def read_member(tarball: Path, member: str) -> bytes:
    with tarfile.open(tarball, "r:gz") as tar:
        extracted = tar.extractfile(member)
        if extracted is None:
            raise SystemExit(f"{member} missing from {tarball}")
        return extracted.read()


# -- OpenAPI subset --------------------------------------------------------------------------


def collect_refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            collect_refs(value, found)
    elif isinstance(node, list):
        for value in node:
            collect_refs(value, found)


def resolve_pointer(doc: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise SystemExit(f"external $ref not supported: {ref}")
    node: Any = doc
    for token in ref[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def build_subset(spec: dict[str, Any], version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path in OPERATIONS:
        item = spec["paths"].get(path)
        if item is None or method not in item:
            raise SystemExit(f"{method.upper()} {path} is not in {OPENAPI_PACKAGE}@{version}")
        target = paths.setdefault(path, {})
        if "parameters" in item:
            target["parameters"] = item["parameters"]
        target[method] = item[method]
    webhooks: dict[str, Any] = {}
    for key in WEBHOOK_SCHEMAS:
        if key not in spec.get("x-webhooks", {}):
            raise SystemExit(f"webhook schema {key} is not in {OPENAPI_PACKAGE}@{version}")
        webhooks[key] = spec["x-webhooks"][key]

    components: dict[str, dict[str, Any]] = {}
    pending: set[str] = set()
    collect_refs(paths, pending)
    collect_refs(webhooks, pending)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        parts = ref[2:].split("/")
        if parts[0] != "components" or len(parts) != 3:
            raise SystemExit(f"unexpected $ref {ref}")
        value = resolve_pointer(spec, ref)
        components.setdefault(parts[1], {})[parts[2]] = value
        collect_refs(value, pending)

    return {
        "openapi": spec["openapi"],
        "info": {
            "title": spec["info"]["title"] + " (labbot test subset)",
            "version": spec["info"]["version"],
            "license": spec["info"].get("license"),
            "x-labbot-source": {
                "package": OPENAPI_PACKAGE,
                "version": version,
                "file": OPENAPI_MEMBER.removeprefix("package/"),
                "license": "MIT",
                "generated_by": "scripts/update_github_fixtures.py",
                "operations": len(OPERATIONS),
                "webhooks": len(WEBHOOK_SCHEMAS),
            },
        },
        "servers": spec.get("servers", []),
        "paths": {p: paths[p] for p in sorted(paths)},
        "x-webhooks": {k: webhooks[k] for k in sorted(webhooks)},
        "components": {
            kind: {name: entries[name] for name in sorted(entries)}
            for kind, entries in sorted(components.items())
        },
    }


# -- webhook payloads ------------------------------------------------------------------------


def pick_examples(index: list[dict[str, Any]]) -> dict[tuple[str, str | None], tuple[int, Any]]:
    by_event = {entry["name"]: entry["examples"] for entry in index}
    chosen: dict[tuple[str, str | None], tuple[int, Any]] = {}
    for event, action, predicate in CURATED:
        candidates = [
            (i, ex)
            for i, ex in enumerate(by_event.get(event, []))
            if ex.get("action") == action and predicate(ex)
        ]
        candidates.sort(key=lambda c: "installation" not in c[1])  # stable: keeps order
        if candidates:
            chosen[(event, action)] = candidates[0]
    return chosen


def derive_merged_close(closed: dict[str, Any]) -> dict[str, Any]:
    payload = copy.deepcopy(closed)
    pr = payload["pull_request"]
    merged_at = pr.get("closed_at") or pr["updated_at"]
    pr.update(
        merged=True,
        merged_at=merged_at,
        merge_commit_sha=pr.get("merge_commit_sha") or "0" * 40,
        merged_by=copy.deepcopy(payload["sender"]),
        mergeable=None,
        mergeable_state="unknown",
        state="closed",
    )
    return payload


def derive_pr_comment(created: dict[str, Any], pr_payload: dict[str, Any]) -> dict[str, Any]:
    """An issue_comment on a pull request: GitHub sets ``issue.pull_request`` to PR links."""
    payload = copy.deepcopy(created)
    pr = pr_payload["pull_request"]
    issue = payload["issue"]
    repo_api = payload["repository"]["url"]
    repo_html = payload["repository"]["html_url"]
    number = issue["number"]
    issue["pull_request"] = {
        "url": f"{repo_api}/pulls/{number}",
        "html_url": f"{repo_html}/pull/{number}",
        "diff_url": f"{repo_html}/pull/{number}.diff",
        "patch_url": f"{repo_html}/pull/{number}.patch",
        "merged_at": None,
    }
    issue["html_url"] = f"{repo_html}/pull/{number}"
    issue["draft"] = bool(pr.get("draft", False))
    return payload


def derive_run_in_progress(requested: dict[str, Any]) -> dict[str, Any]:
    payload = copy.deepcopy(requested)
    payload["action"] = "in_progress"
    run_ = payload["workflow_run"]
    run_["status"] = "in_progress"
    run_["conclusion"] = None
    return payload


def file_name(event: str, action: str | None, variant: str | None = None) -> str:
    return ".".join(part for part in (event, action, variant) if part) + ".json"


def write_json(path: Path, data: Any, *, compact: bool = False) -> None:
    if compact:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=False)
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def load_contract(subset: dict[str, Any]) -> Any:
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    module = importlib.import_module("fakegithub.contract")
    return module.Contract(subset)


def build_webhooks(
    index: list[dict[str, Any]], version: str, subset: dict[str, Any], out: Path
) -> list[dict[str, Any]]:
    contract = load_contract(subset)
    chosen = pick_examples(index)
    entries: list[dict[str, Any]] = []
    payloads: dict[str, dict[str, Any]] = {}

    def emit(
        name: str,
        event: str,
        action: str | None,
        payload: dict[str, Any],
        origin: dict[str, Any],
    ) -> None:
        write_json(out / name, payload)
        payloads[name] = payload
        errors = contract.validate_webhook(event, payload)
        entries.append(
            {
                "file": name,
                "event": event,
                "action": action,
                **origin,
                "has_installation": "installation" in payload,
                "schema_valid": not errors,
                "schema_errors": errors[:5],
            }
        )

    for event, action, _ in CURATED:
        if (event, action) not in chosen:
            continue
        i, example = chosen[(event, action)]
        origin = {"source": f"{EXAMPLES_PACKAGE}@{version}", "example_index": i}
        emit(file_name(event, action), event, action, example, origin)

    def derived(name: str, event: str, action: str, base: str, how: str, data: Any) -> None:
        origin = {"source": f"{EXAMPLES_PACKAGE}@{version}", "derived_from": base, "derived": how}
        emit(name, event, action, data, origin)

    closed = payloads.get(file_name("pull_request", "closed"))
    if closed is not None:
        derived(
            file_name("pull_request", "closed", "merged"),
            "pull_request",
            "closed",
            file_name("pull_request", "closed"),
            "merged=true, merged_at, merge_commit_sha, merged_by set (no merged example exists)",
            derive_merged_close(closed),
        )
    created = payloads.get(file_name("issue_comment", "created"))
    opened = payloads.get(file_name("pull_request", "opened"))
    if created is not None and opened is not None:
        derived(
            file_name("issue_comment", "created", "pull_request"),
            "issue_comment",
            "created",
            file_name("issue_comment", "created"),
            "issue.pull_request links added (no example comments on a pull request)",
            derive_pr_comment(created, opened),
        )
    requested = payloads.get(file_name("workflow_run", "requested"))
    if requested is not None and (("workflow_run", "in_progress") not in chosen):
        derived(
            file_name("workflow_run", "in_progress"),
            "workflow_run",
            "in_progress",
            file_name("workflow_run", "requested"),
            "action/status=in_progress, conclusion=null (no in_progress example exists)",
            derive_run_in_progress(requested),
        )
    return entries


# -- README ----------------------------------------------------------------------------------

README = """\
# GitHub contract fixtures (generated)

Generated by `scripts/update_github_fixtures.py`; do not edit by hand. Re-run the script to
refresh (it needs `npm`, CI does not), review the diff, then run `pytest tests/support/fakegithub`.

## `openapi-subset.json`

* Source: npm package `{openapi_pkg}@{openapi_version}`, file `{openapi_member}`: GitHub's
  official REST API description (originally published by GitHub as `github/rest-api-description`),
  repackaged by Octokit.
* Content: {n_ops} operations on {n_paths} paths that labbot calls or the test fake serves, the
  `x-webhooks` schemas of {n_hooks} webhook event/actions, and every `#/components/...` entry
  they reference, transitively, so the file is self-contained ({size_kb} KB). The extracted
  objects are copied verbatim; the OpenAPI-3.0 to JSON-Schema translation (`nullable`, boolean
  exclusive bounds) and the patches for known errata of GitHub's description (listed in
  `ERRATA`) happen at load time in `tests/support/fakegithub/contract.py`.
* The package version is also recorded in the file, under `info.x-labbot-source`.

## `webhooks/`

Real webhook payloads from npm package `{examples_pkg}@{examples_version}` (file
`{examples_member}`; upstream `octokit/webhooks`, frozen since 2024-12). One payload per
event/action, copied verbatim, preferring examples that carry an `installation` (what a GitHub
App receives). `webhooks/index.json` lists, for every file, the example index it came from,
whether it carries `installation`, and whether it validates against the *current* official
schema in the subset (many 2019-era examples lack fields GitHub added later).

Derived payloads (GitHub sends them, the package has no example) are built by the script from a
real example and marked `"derived"` in `index.json`:

{derived}

## Attribution and licence

Both packages are published under the MIT License by the Octokit contributors
(`@octokit/openapi` ships `LICENSE`, "Copyright (c) 2020 Octokit contributors";
`@octokit/webhooks-examples` declares `"license": "MIT"` in its `package.json`). The GitHub
REST API description is MIT-licensed by GitHub. The MIT notice applies to the files in this
directory:

> Permission is hereby granted, free of charge, to any person obtaining a copy of this software
> and associated documentation files (the "Software"), to deal in the Software without
> restriction, including without limitation the rights to use, copy, modify, merge, publish,
> distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
> Software is furnished to do so, subject to the following conditions:
>
> The above copyright notice and this permission notice shall be included in all copies or
> substantial portions of the Software.
>
> THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
> BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
> NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
> DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
> OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def write_readme(
    out: Path,
    subset: dict[str, Any],
    openapi_version: str,
    examples_version: str,
    entries: Iterable[dict[str, Any]],
) -> None:
    derived = [
        f"* `webhooks/{e['file']}`: from `{e['derived_from']}`; {e['derived']}."
        for e in entries
        if "derived" in e
    ]
    size = (out / "openapi-subset.json").stat().st_size
    text = README.format(
        openapi_pkg=OPENAPI_PACKAGE,
        openapi_version=openapi_version,
        openapi_member=OPENAPI_MEMBER.removeprefix("package/"),
        n_ops=len(OPERATIONS),
        n_paths=len(subset["paths"]),
        n_hooks=len(subset["x-webhooks"]),
        size_kb=size // 1024,
        examples_pkg=EXAMPLES_PACKAGE,
        examples_version=examples_version,
        examples_member=EXAMPLES_MEMBER.removeprefix("package/"),
        derived="\n".join(derived) or "* (none)",
    )
    (out / "README.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--openapi-version", default=OPENAPI_VERSION)
    parser.add_argument("--examples-version", default=EXAMPLES_VERSION)
    parser.add_argument(
        "--from-dir",
        type=Path,
        help="use tarballs already in this folder (from `npm pack`) instead of downloading",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gh-fixtures-") as tmp:
        workdir = Path(tmp)
        if args.from_dir:
            api_tgz = next(args.from_dir.glob("octokit-openapi-*.tgz"))
            ex_tgz = next(args.from_dir.glob("octokit-webhooks-examples-*.tgz"))
            api_version = api_tgz.name.removeprefix("octokit-openapi-").removesuffix(".tgz")
            ex_version = ex_tgz.name.removeprefix("octokit-webhooks-examples-").removesuffix(".tgz")
        else:
            api_tgz, api_version = npm_pack(OPENAPI_PACKAGE, args.openapi_version, workdir)
            ex_tgz, ex_version = npm_pack(EXAMPLES_PACKAGE, args.examples_version, workdir)
        spec = json.loads(read_member(api_tgz, OPENAPI_MEMBER))
        index = json.loads(read_member(ex_tgz, EXAMPLES_MEMBER))

    out: Path = args.out
    hooks_dir = out / "webhooks"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    for old in hooks_dir.glob("*.json"):
        old.unlink()

    subset = build_subset(spec, api_version)
    write_json(out / "openapi-subset.json", subset, compact=True)
    entries = build_webhooks(index, ex_version, subset, hooks_dir)
    write_json(
        hooks_dir / "index.json",
        {
            "source": {"package": EXAMPLES_PACKAGE, "version": ex_version, "license": "MIT"},
            "schemas_from": {"package": OPENAPI_PACKAGE, "version": api_version},
            "payloads": entries,
        },
    )
    write_readme(out, subset, api_version, ex_version, entries)

    size = (out / "openapi-subset.json").stat().st_size
    valid = sum(1 for e in entries if e["schema_valid"])
    print(
        f"openapi-subset.json: {len(subset['paths'])} paths, "
        f"{sum(len(v) for v in subset['components'].values())} components, {size // 1024} KB"
    )
    print(f"webhooks: {len(entries)} payloads, {valid} valid against the current schema")
    for entry in entries:
        if not entry["schema_valid"]:
            print(f"  {entry['file']}: {entry['schema_errors'][0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
