"""Whether a workflow run is the build the App dispatched: :func:`run_mismatch` compares the run
that GitHub's API describes with what the ledger recorded when the App dispatched it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from bot.state.ledger import BuildRecord

#: GitHub's clock and ours may differ a little, and ``created_at`` has whole seconds.
CLOCK_SKEW_SECONDS = 5.0


#: A dispatched run is created at once; a matching run created later than this is not ours.
DISPATCH_WINDOW_SECONDS = 600.0


_SHA = re.compile(r"[0-9a-f]{40}")


def claimed_sha(run: dict[str, Any]) -> str:
    """The commit a build run says it builds: the last word of its title (the workflow's
    ``run-name: labbot build <sha>``), else the commit it ran on."""
    words = str(run.get("display_title") or "").split()
    if words and _SHA.fullmatch(words[-1]):
        return words[-1]
    return str(run.get("head_sha") or "")


def _timestamp(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def run_mismatch(build: BuildRecord, run: dict[str, Any], repo: str) -> str | None:
    """Why ``run`` (a workflow run as GitHub's API describes it) is not the run the App
    dispatched for ``build``; ``None`` when it matches everything that was recorded.

    Every check is needed: a fork's pull request can add a workflow with any name, path or
    ``run-name`` (so its run can claim any title), and people with write access can dispatch
    the build workflow themselves, on another branch or for another commit.
    """
    if build.dispatched_at is None or not build.dispatch_event or not build.workflow_path:
        return "the App recorded no dispatch for this build"
    if build.dispatch_run_id is not None and run.get("id") != build.dispatch_run_id:
        return f"the dispatch started run {build.dispatch_run_id}, not {run.get('id')}"
    if run.get("event") != build.dispatch_event:
        return f"event {run.get('event')!r} is not {build.dispatch_event!r}"
    if build.workflow_id is not None and run.get("workflow_id") != build.workflow_id:
        return f"workflow {run.get('workflow_id')!r} is not {build.workflow_id}"
    path, _, ref = str(run.get("path") or "").partition("@")
    branch = build.dispatch_branch or ""
    if path != build.workflow_path or ref not in ("", branch, f"refs/heads/{branch}"):
        return f"path {run.get('path')!r} is not {build.workflow_path!r}"
    if run.get("head_branch") != branch:
        return f"branch {run.get('head_branch')!r} is not {branch!r}"
    head_repo = run.get("head_repository")
    if not isinstance(head_repo, dict) or str(head_repo.get("full_name", "")).lower() != (
        repo.lower()
    ):
        name = head_repo.get("full_name") if isinstance(head_repo, dict) else None
        return f"head repository {name!r} is not {repo!r}"
    created = _timestamp(run.get("created_at"))
    earliest = build.dispatched_at - CLOCK_SKEW_SECONDS
    if created is None or not earliest <= created <= earliest + DISPATCH_WINDOW_SECONDS:
        return f"created at {run.get('created_at')!r}, not just after the dispatch"
    if claimed_sha(run) != build.sha:
        return f"it builds {claimed_sha(run)[:12]!r}, not {build.sha[:12]!r}"
    return None
