"""The build ledger: which model build includes which merged pull requests (SQLite).

A build is requested for a default-branch SHA. While it has not started, a newer merge folds
it into a new build for the newer SHA (``superseded``): the workflow's concurrency group keeps
only the newest pending run, and the ledger keeps the pull requests of both.

The ledger also records what the App dispatched for each build (event, workflow id and path,
branch, time, and the run id when GitHub returned one). A workflow run counts as the build only
when it matches all of that (:func:`bot.state.ledger.run_mismatch`): anyone who can open a pull
request can start *some* workflow run, and its name, path or title prove nothing.

States: requested -> running -> completed, or superseded.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    sha TEXT NOT NULL,
    installation_id INTEGER,
    state TEXT NOT NULL,
    check_run_id INTEGER,
    run_id INTEGER,
    run_url TEXT,
    failed_job_url TEXT,
    conclusion TEXT,
    superseded_by INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS builds_repo_sha ON builds (repo, sha);
CREATE INDEX IF NOT EXISTS builds_repo_state ON builds (repo, state);
CREATE TABLE IF NOT EXISTS build_prs (
    build_id INTEGER NOT NULL,
    pr INTEGER NOT NULL,
    leaves TEXT NOT NULL,
    PRIMARY KEY (build_id, pr)
);
"""

#: Columns added after the first release (``ALTER TABLE`` on an older ledger).
DISPATCH_COLUMNS = {
    "dispatch_event": "TEXT",
    "workflow_id": "INTEGER",
    "workflow_path": "TEXT",
    "dispatch_branch": "TEXT",
    "dispatched_at": "REAL",
    "dispatch_run_id": "INTEGER",
}
BUILD_COLUMNS = (
    "id, repo, sha, installation_id, state, check_run_id, run_id, run_url, failed_job_url,"
    " conclusion, dispatch_event, workflow_id, workflow_path, dispatch_branch, dispatched_at,"
    " dispatch_run_id"
)


@dataclass
class BuildRecord:
    id: int
    repo: str
    sha: str
    installation_id: int | None
    state: str
    check_run_id: int | None
    run_id: int | None
    run_url: str | None
    failed_job_url: str | None
    conclusion: str | None
    dispatch_event: str | None = None  # workflow_dispatch or repository_dispatch
    workflow_id: int | None = None
    workflow_path: str | None = None  # .github/workflows/<file>
    dispatch_branch: str | None = None
    dispatched_at: float | None = None  # the App's clock, just before the dispatch request
    dispatch_run_id: int | None = None  # when GitHub answered the dispatch with the run's id
    prs: dict[int, list[str]] = field(default_factory=dict)  # PR number -> its leaf paths


class BuildLedger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=10, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.executescript(_SCHEMA)
        have = {str(row[1]) for row in self._conn.execute("PRAGMA table_info(builds)")}
        for name, kind in DISPATCH_COLUMNS.items():
            if name not in have:
                self._conn.execute(f"ALTER TABLE builds ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _get(self, where: str, args: tuple[Any, ...]) -> BuildRecord | None:
        row = self._conn.execute(
            f"SELECT {BUILD_COLUMNS} FROM builds WHERE {where} ORDER BY id DESC LIMIT 1", args
        ).fetchone()
        if row is None:
            return None
        record = BuildRecord(*row)
        for pr, leaves in self._conn.execute(
            "SELECT pr, leaves FROM build_prs WHERE build_id = ? ORDER BY pr", (record.id,)
        ):
            record.prs[int(pr)] = json.loads(leaves)
        return record

    def get(self, build_id: int) -> BuildRecord | None:
        with self._lock:
            return self._get("id = ?", (build_id,))

    def by_sha(self, repo: str, sha: str) -> BuildRecord | None:
        """The newest build of ``sha`` that was not folded into another."""
        with self._lock:
            return self._get("repo = ? AND sha = ? AND state != 'superseded'", (repo, sha))

    def by_run(self, repo: str, run_id: int) -> BuildRecord | None:
        """The build a verified run was bound to (``run_id``) or dispatched as."""
        with self._lock:
            return self._get(
                "repo = ? AND (run_id = ? OR dispatch_run_id = ?)", (repo, run_id, run_id)
            )

    def awaiting(self, repo: str) -> list[BuildRecord]:
        """Builds of ``repo`` that were dispatched and have not finished."""
        with self._lock:
            ids = [
                int(r[0])
                for r in self._conn.execute(
                    "SELECT id FROM builds WHERE repo = ? AND state IN ('requested', 'running')"
                    " AND dispatched_at IS NOT NULL ORDER BY id DESC LIMIT 20",
                    (repo,),
                )
            ]
            return [b for b in (self._get("id = ?", (i,)) for i in ids) if b is not None]

    def request(
        self, repo: str, sha: str, installation_id: int | None, prs: dict[int, list[str]]
    ) -> tuple[BuildRecord, bool, list[BuildRecord]]:
        """Record that ``sha`` must be built with these pull requests.

        Returns ``(build, is_new, folded)``: the build that includes them, whether it must be
        dispatched, and the waiting builds it replaces (their pull requests move over).
        """
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                same = self._get("repo = ? AND sha = ? AND state != 'superseded'", (repo, sha))
                if same is not None:
                    self._add_prs(same.id, prs)
                    self._conn.execute("COMMIT")
                    same.prs.update(prs)
                    return same, False, []
                waiting_ids = [
                    int(r[0])
                    for r in self._conn.execute(
                        "SELECT id FROM builds WHERE repo = ? AND state = 'requested'", (repo,)
                    )
                ]
                folded = [b for b in (self._get("id = ?", (i,)) for i in waiting_ids) if b]
                cur = self._conn.execute(
                    "INSERT INTO builds (repo, sha, installation_id, state, created_at, updated_at)"
                    " VALUES (?, ?, ?, 'requested', ?, ?)",
                    (repo, sha, installation_id, now, now),
                )
                build_id = int(cur.lastrowid or 0)
                merged: dict[int, list[str]] = {}
                for old in folded:
                    merged.update(old.prs)
                    self._conn.execute(
                        "UPDATE builds SET state = 'superseded', superseded_by = ?, updated_at = ?"
                        " WHERE id = ?",
                        (build_id, now, old.id),
                    )
                merged.update(prs)
                self._add_prs(build_id, merged)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            record = self._get("id = ?", (build_id,))
        assert record is not None
        return record, True, folded

    def _add_prs(self, build_id: int, prs: dict[int, list[str]]) -> None:
        for pr, leaves in prs.items():
            self._conn.execute(
                "INSERT INTO build_prs (build_id, pr, leaves) VALUES (?, ?, ?)"
                " ON CONFLICT (build_id, pr) DO UPDATE SET leaves = excluded.leaves",
                (build_id, pr, json.dumps(sorted(set(leaves)))),
            )

    def update(self, build_id: int, **fields: Any) -> None:
        allowed = {"state", "check_run_id", "run_id", "run_url", "failed_job_url", "conclusion"}
        allowed |= set(DISPATCH_COLUMNS)
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._conn.execute(
                f"UPDATE builds SET {assignments}, updated_at = ? WHERE id = ?",
                (*fields.values(), time.time(), build_id),
            )
