"""What a JobAssignment carries: the task's fields and its attachments in order, one
attempt row per dispatch, on SQLite and Postgres."""

from __future__ import annotations

import sqlalchemy as sa

from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.simnode import SimNode
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
)
from cynode.orchestrator.store.models import new_id
from cynode.orchestrator.store.tables import ATTACHMENTS, ATTEMPTS, TASKS
from cynode.testing import until

PSK = "test-psk-0123456789"


async def test_assignment_carries_task_fields_and_attachments(server: ControlPlaneServer) -> None:
    user = await make_user(server.engine)
    pairs = await enqueue_jobs(server.engine, user, 3, input_mode="script")
    with_files, plain = pairs[0], pairs[1]
    first, second = sorted((new_id(), new_id()))  # attachments go out in id order
    async with server.engine.begin() as conn:
        await conn.execute(
            TASKS.update()
            .where(TASKS.c.id == plain[0])
            .values(timeout_seconds=42, image="localhost/custom")
        )
        await conn.execute(
            ATTACHMENTS.insert(),
            [
                {"id": second, "task_id": with_files[0], "name": "b.bin", "content": b"\x00B"},
                {"id": first, "task_id": with_files[0], "name": "a.txt", "content": b"A"},
            ],
        )
    node = SimNode(server.target, PSK, "spec", slots=3)
    await node.start()
    server.cp.scheduler.wake()
    await until(lambda: len(node.acked) == 3, what="three results acknowledged")
    specs = {s.job_id: s for s in node.assignments}
    files = specs[with_files[1]]
    assert [(f.name, f.content) for f in files.attachments] == [
        ("a.txt", b"A"),
        ("b.bin", b"\x00B"),
    ]
    assert files.task_id == with_files[0]
    assert files.input_mode == job_pb2.INPUT_MODE_SCRIPT
    assert files.script == "echo hi"
    assert files.attempt == 1
    other = specs[plain[1]]
    assert list(other.attachments) == []
    assert (other.timeout_seconds, other.image) == (42, "localhost/custom")
    async with server.engine.connect() as conn:
        attempts = list(await conn.execute(sa.select(ATTEMPTS.c.job_id, ATTEMPTS.c.attempt)))
    assert sorted(attempts) == sorted((job, 1) for _, job in pairs)
    await node.stop()
