"""Claim: queued jobs handed to nodes, each a new attempt with a lease.

A claimed job stays `queued` (with its node set) until the node says it started: a job
the node never got is then requeued by the lease alone, with nothing to undo.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.orchestrator.lifecycle.status import AttemptStatus, Status
from cynode.orchestrator.store.models import new_ids
from cynode.orchestrator.store.tables import ATTEMPTS, JOBS, Many, insert

# Built once: a statement object memoizes its cache key, so reusing it saves both the
# construction and the cache-key walk that each round would otherwise repeat.
_ASSIGN_JOBS = Many(
    JOBS.update()
    .where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.status == Status.QUEUED)
    .values(
        node_id=sa.bindparam("b_node"),
        attempt=sa.bindparam("b_attempt"),
        lease_expires_at=sa.bindparam("b_lease"),
        updated_at=sa.bindparam("b_now"),
    )
)
_ATTEMPT_COLUMNS = (
    "id",
    "job_id",
    "attempt",
    "node_id",
    "status",
    "received_at",
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
)
_INSERT_ATTEMPTS = insert(ATTEMPTS, _ATTEMPT_COLUMNS)


async def claim(
    conn: AsyncConnection,
    claims: Sequence[tuple[str, str, int]],
    now: datetime,
    lease: datetime,
) -> None:
    """Stamps each (job_id, node_id, attempt) of jobs claimed in this transaction (rows
    the caller selected as queued and, on Postgres, locked) with its node, attempt and
    lease, and records the attempt `assigned`. The attempt row is unique per (job,
    attempt), so a second live copy of one attempt cannot be recorded."""
    attempt_ids = new_ids(len(claims))
    await _ASSIGN_JOBS.run(
        conn,
        [
            {"b_id": job, "b_node": node, "b_attempt": attempt, "b_lease": lease, "b_now": now}
            for job, node, attempt in claims
        ],
    )
    await _INSERT_ATTEMPTS.run(
        conn,
        [
            {
                "b_id": attempt_id,
                "b_job_id": job,
                "b_attempt": attempt,
                "b_node_id": node,
                "b_status": AttemptStatus.ASSIGNED,
                "b_received_at": now,
                "b_stdout": b"",
                "b_stderr": b"",
                "b_stdout_truncated": False,
                "b_stderr_truncated": False,
            }
            for (job, node, attempt), attempt_id in zip(claims, attempt_ids, strict=True)
        ],
    )
