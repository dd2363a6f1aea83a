"""The build ledger (:class:`bot.state.ledger.BuildLedger`) on PostgreSQL, shared by App replicas.

Same methods and states. :meth:`PgBuildLedger.request`, the one read-modify-write (fold the
waiting builds of a repository into a new one), holds an advisory lock on the repository for
its transaction, so two replicas handling merges of one repository at once fold in turn.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from bot.state.ledger import BUILD_COLUMNS, DISPATCH_COLUMNS, BuildRecord
from bot.state.postgres.pool import lock_id

__all__ = ["PgBuildLedger"]

_FIELDS = {"state", "check_run_id", "run_id", "run_url", "failed_job_url", "conclusion"}
_FIELDS |= set(DISPATCH_COLUMNS)


class PgBuildLedger:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def close(self) -> None:
        """Nothing to do: the pool belongs to the backend that opened it."""

    def _get(
        self, conn: psycopg.Connection[Any], where: str, args: tuple[Any, ...]
    ) -> BuildRecord | None:
        row = conn.execute(
            f"SELECT {BUILD_COLUMNS} FROM builds WHERE {where} ORDER BY id DESC LIMIT 1", args
        ).fetchone()
        if row is None:
            return None
        record = BuildRecord(*row)
        for pr, leaves in conn.execute(
            "SELECT pr, leaves FROM build_prs WHERE build_id = %s ORDER BY pr", (record.id,)
        ):
            record.prs[int(pr)] = json.loads(leaves)
        return record

    def _read(self, where: str, args: tuple[Any, ...]) -> BuildRecord | None:
        with self.pool.connection() as conn, conn.transaction():
            return self._get(conn, where, args)

    def get(self, build_id: int) -> BuildRecord | None:
        return self._read("id = %s", (build_id,))

    def by_sha(self, repo: str, sha: str) -> BuildRecord | None:
        """The newest build of ``sha`` that was not folded into another."""
        return self._read("repo = %s AND sha = %s AND state != 'superseded'", (repo, sha))

    def by_run(self, repo: str, run_id: int) -> BuildRecord | None:
        """The build a verified run was bound to (``run_id``) or dispatched as."""
        return self._read(
            "repo = %s AND (run_id = %s OR dispatch_run_id = %s)", (repo, run_id, run_id)
        )

    def awaiting(self, repo: str) -> list[BuildRecord]:
        """See :meth:`bot.state.ledger.BuildLedger.awaiting`."""
        with self.pool.connection() as conn, conn.transaction():
            ids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM builds WHERE repo = %s AND state IN ('requested', 'running')"
                    " AND dispatched_at IS NOT NULL ORDER BY id DESC LIMIT 20",
                    (repo,),
                )
            ]
            return [b for b in (self._get(conn, "id = %s", (i,)) for i in ids) if b is not None]

    def request(
        self, repo: str, sha: str, installation_id: int | None, prs: dict[int, list[str]]
    ) -> tuple[BuildRecord, bool, list[BuildRecord]]:
        """See :meth:`bot.state.ledger.BuildLedger.request`."""
        now = time.time()
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(f"labbot:build:{repo}"),))
            same = self._get(conn, "repo = %s AND sha = %s AND state != 'superseded'", (repo, sha))
            if same is not None:
                self._add_prs(conn, same.id, prs)
                same.prs.update(prs)
                return same, False, []
            waiting = [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM builds WHERE repo = %s AND state = 'requested' ORDER BY id",
                    (repo,),
                )
            ]
            folded = [b for b in (self._get(conn, "id = %s", (i,)) for i in waiting) if b]
            row = conn.execute(
                "INSERT INTO builds (repo, sha, installation_id, state, created_at, updated_at)"
                " VALUES (%s, %s, %s, 'requested', %s, %s) RETURNING id",
                (repo, sha, installation_id, now, now),
            ).fetchone()
            assert row is not None
            build_id = int(row[0])
            merged: dict[int, list[str]] = {}
            for old in folded:
                merged.update(old.prs)
                conn.execute(
                    "UPDATE builds SET state = 'superseded', superseded_by = %s, updated_at = %s"
                    " WHERE id = %s",
                    (build_id, now, old.id),
                )
            merged.update(prs)
            self._add_prs(conn, build_id, merged)
            record = self._get(conn, "id = %s", (build_id,))
        assert record is not None
        return record, True, folded

    def _add_prs(
        self, conn: psycopg.Connection[Any], build_id: int, prs: dict[int, list[str]]
    ) -> None:
        for pr, leaves in prs.items():
            conn.execute(
                "INSERT INTO build_prs (build_id, pr, leaves) VALUES (%s, %s, %s)"
                " ON CONFLICT (build_id, pr) DO UPDATE SET leaves = excluded.leaves",
                (build_id, pr, json.dumps(sorted(set(leaves)))),
            )

    def update(self, build_id: int, **fields: Any) -> None:
        if not fields or set(fields) - _FIELDS:
            raise ValueError(f"cannot update {sorted(set(fields) - _FIELDS)}")
        assignments = ", ".join(f"{k} = %s" for k in fields)
        with self.pool.connection() as conn:
            conn.execute(
                f"UPDATE builds SET {assignments}, updated_at = %s WHERE id = %s",
                (*fields.values(), time.time(), build_id),
            )
