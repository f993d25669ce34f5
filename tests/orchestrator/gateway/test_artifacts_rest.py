"""Artifacts on the gateway, in process: the listing, the download route (headers,
ranges, HEAD, errors), the archive, DeleteTask and the gRPC download, over a real
uvicorn socket and a real gRPC port, on SQLite and Postgres (SPEC §2.11, §2.12). The
job's result goes through the control plane's real ingest."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import time
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select

from cynode.gateway.v1 import tasks_pb2
from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.app import Gateway
from cynode.orchestrator.artifacts import catalog
from cynode.orchestrator.artifacts.records import mark_stored_by_sha
from cynode.orchestrator.controlplane.ingest import Ingest, Result
from cynode.orchestrator.events import task_topic
from cynode.orchestrator.store import Job
from cynode.orchestrator.store.models import new_id, utcnow
from tests.orchestrator.gatewaykit import Served, bearer, rest_login

FILES = {"report.txt": b"the report\n", "data/part-1.csv": b"a,b\n1,2\n" * 1000}


async def _noop(conn: AsyncConnection, ids: set[str]) -> None:
    return None


async def finished(
    http: httpx.AsyncClient,
    gateway: Gateway,
    auth: dict[str, str],
    files: dict[str, bytes],
    *,
    store: bool = True,
    name: str | None = None,
) -> tuple[str, dict[str, job_pb2.Artifact]]:
    body: dict[str, Any] = {"commands": ["true"]}
    if name:
        body["task_name"] = name
    created = await http.post("/v1/tasks", json=body, headers=auth)
    task_id = created.json()["task_id"]
    async with gateway.factory() as session:
        job = (await session.exec(select(Job).where(Job.task_id == task_id))).one()
    found = job_pb2.ArtifactSet()
    for file_name, data in files.items():
        found.artifacts.append(
            job_pb2.Artifact(
                artifact_id=new_id(),
                name=file_name,
                size_bytes=len(data),
                content_type="text/csv" if file_name.endswith(".csv") else "text/plain",
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    result = job_pb2.JobResult(
        job_id=job.id, attempt=job.attempt, status=job_pb2.JOB_STATUS_COMPLETED, artifacts=found
    )
    ingest = Ingest(gateway.engine, 30, _noop, lambda ids, ended: None)
    await ingest.apply([Result("NODE", result, lambda: None)])
    await ingest.stop()
    if store:
        await store_files(gateway, files, found.artifacts)
    return task_id, {a.name: a for a in found.artifacts}


async def store_files(gateway: Gateway, files: dict[str, bytes], artifacts: Any) -> None:
    """What the upload service does when an upload is complete: the blob, the rows."""
    for artifact in artifacts:
        key = new_id()
        upload = gateway.blobs.resume(key, 0)
        upload.write(files[artifact.name])
        upload.close()
        gateway.blobs.seal(key, artifact.sha256)
        async with gateway.engine.begin() as conn:
            await mark_stored_by_sha(conn, artifact.sha256, utcnow())


async def test_list_download_ranges_and_headers(http: httpx.AsyncClient, gateway: Gateway) -> None:
    auth = await rest_login(http, gateway)
    task_id, arts = await finished(http, gateway, auth, FILES, name="made-files")
    listed = (await http.get("/v1/tasks/made-files/artifacts", headers=auth)).json()
    assert listed["task_id"] == task_id and listed["complete"] is True
    assert [a["name"] for a in listed["artifacts"]] == ["data/part-1.csv", "report.txt"]
    assert listed["truncated"] is False
    result = (await http.get(f"/v1/tasks/{task_id}/result", headers=auth)).json()
    assert (result["artifacts_complete"], result["artifact_count"]) == (True, 2)
    # The terminal watch event's result reads the listing in its own snapshot: the same.
    async with http.stream(
        "GET", f"/v1/tasks/{task_id}/watch", params={"include_result": "true"}, headers=auth
    ) as resp:
        final = [json.loads(line) async for line in resp.aiter_lines() if line.strip()][-1]
    assert final["terminal"] is True and final["task_result"] == result
    csv = arts["data/part-1.csv"]
    url = f"/v1/tasks/{task_id}/artifacts/{csv.artifact_id.lower()}"
    whole = await http.get(url, headers=auth)
    assert whole.status_code == 200 and whole.content == FILES["data/part-1.csv"]
    assert whole.headers["etag"] == f'"{csv.sha256}"'
    assert whole.headers["content-type"].startswith("text/csv")
    assert whole.headers["content-disposition"].startswith('attachment; filename="part-1.csv"')
    part = await http.get(url, headers={**auth, "Range": "bytes=4-7"})
    assert part.status_code == 206 and part.content == FILES["data/part-1.csv"][4:8]
    other = await http.get(url, headers={**auth, "Range": "bytes=4-7", "If-Range": '"other"'})
    assert other.status_code == 200 and len(other.content) == csv.size_bytes
    head = await http.head(url, headers=auth)
    assert head.status_code == 200 and head.headers["content-length"] == str(csv.size_bytes)
    bad = await http.get(url, headers={**auth, "Range": "bytes=99999-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{csv.size_bytes}"
    garbled = await http.get(url, headers={**auth, "Range": "lines=1-2"})
    assert garbled.status_code == 416


async def test_errors_and_visibility(http: httpx.AsyncClient, gateway: Gateway) -> None:
    owner = await rest_login(http, gateway)
    stranger = await rest_login(http, gateway)
    admin = await rest_login(http, gateway, is_admin=True)
    task_id, arts = await finished(http, gateway, owner, {"a.txt": b"aaa"})
    url = f"/v1/tasks/{task_id}/artifacts/{arts['a.txt'].artifact_id}"
    for path in (url, f"/v1/tasks/{task_id}/artifacts", f"/v1/tasks/{task_id}/artifacts.tar"):
        assert (await http.get(path, headers=stranger)).status_code == 404, path
        assert (await http.get(path, headers=admin)).status_code == 200, path
        assert (await http.get(path)).status_code == 401, path
    other_task, _ = await finished(http, gateway, owner, {"b.txt": b"bbb"})
    wrong_task = f"/v1/tasks/{other_task}/artifacts/{arts['a.txt'].artifact_id}"
    assert (await http.get(wrong_task, headers=owner)).json()["detail"] == "no such artifact"
    pending, parts = await finished(http, gateway, owner, {"c.txt": b"ccc"}, store=False)
    listed = (await http.get(f"/v1/tasks/{pending}/artifacts", headers=owner)).json()
    assert listed["complete"] is False and len(listed["artifacts"]) == 1
    early = await http.get(
        f"/v1/tasks/{pending}/artifacts/{parts['c.txt'].artifact_id}", headers=owner
    )
    assert early.status_code == 409 and early.json()["type"] == "urn:cynode:problem:conflict"
    assert (await http.get(f"/v1/tasks/{pending}/artifacts.tar", headers=owner)).status_code == 409
    queued = (await http.post("/v1/tasks", json={"commands": ["true"]}, headers=owner)).json()
    running = (await http.get(f"/v1/tasks/{queued['task_id']}/artifacts", headers=owner)).json()
    assert running["artifacts"] == [] and running["complete"] is False


async def test_archive_and_delete(http: httpx.AsyncClient, gateway: Gateway) -> None:
    auth = await rest_login(http, gateway)
    # Content of its own: another test's task with the same bytes would keep the blob.
    files = {**FILES, "data/part-1.csv": new_id().encode() * 100}
    task_id, arts = await finished(http, gateway, auth, files)
    resp = await http.get(f"/v1/tasks/{task_id}/artifacts.tar", headers=auth)
    assert resp.status_code == 200 and len(resp.content) == int(resp.headers["content-length"])
    with tarfile.open(fileobj=io.BytesIO(resp.content)) as archive:
        got = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert got == files
    head = await http.head(f"/v1/tasks/{task_id}/artifacts.tar", headers=auth)
    assert head.headers["content-length"] == resp.headers["content-length"]
    live = (await http.post("/v1/tasks", json={"commands": ["true"]}, headers=auth)).json()
    refused = await http.delete(f"/v1/tasks/{live['task_id']}", headers=auth)
    assert refused.status_code == 409
    # The same content in another task keeps its blob when this one goes.
    keeper, _ = await finished(http, gateway, auth, {"same.txt": FILES["report.txt"]})
    gone = await http.delete(f"/v1/tasks/{task_id}", headers=auth)
    assert gone.status_code == 200 and gone.json() == {"task_id": task_id, "deleted": True}
    assert (await http.get(f"/v1/tasks/{task_id}", headers=auth)).status_code == 404
    assert not gateway.blobs.has(arts["data/part-1.csv"].sha256)
    assert gateway.blobs.has(arts["report.txt"].sha256)
    assert (await http.get(f"/v1/tasks/{keeper}/artifacts.tar", headers=auth)).status_code == 200


async def test_grpc_download_and_list(
    http: httpx.AsyncClient, gateway: Gateway, served: Served
) -> None:
    auth = await rest_login(http, gateway)
    token = auth["Authorization"].split()[1]
    task_id, arts = await finished(http, gateway, auth, FILES)
    csv = arts["data/part-1.csv"]
    listed = await served.tasks.ListTaskArtifacts(
        tasks_pb2.ListTaskArtifactsRequest(task_id=task_id), metadata=bearer(token)
    )
    assert listed.complete and [a.name for a in listed.artifacts] == sorted(FILES)
    messages = [
        m
        async for m in served.tasks.DownloadTaskArtifact(
            tasks_pb2.DownloadTaskArtifactRequest(
                task_id=task_id, artifact_id=csv.artifact_id, offset=3, length=10
            ),
            metadata=bearer(token),
        )
    ]
    assert messages[0].artifact.sha256 == csv.sha256
    assert b"".join(m.data for m in messages) == FILES["data/part-1.csv"][3:13]
    for request, code in (
        (
            tasks_pb2.DownloadTaskArtifactRequest(task_id=task_id, artifact_id=new_id()),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            tasks_pb2.DownloadTaskArtifactRequest(
                task_id=task_id, artifact_id=csv.artifact_id, offset=-1
            ),
            grpc.StatusCode.OUT_OF_RANGE,
        ),
        (
            tasks_pb2.DownloadTaskArtifactRequest(task_id="nope", artifact_id=csv.artifact_id),
            grpc.StatusCode.NOT_FOUND,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in served.tasks.DownloadTaskArtifact(request, metadata=bearer(token)):
                pass
        assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.tasks.ListTaskArtifacts(
            tasks_pb2.ListTaskArtifactsRequest(task_id="nope"), metadata=bearer(token)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    deleted = await served.tasks.DeleteTask(
        tasks_pb2.DeleteTaskRequest(task_id=task_id), metadata=bearer(token)
    )
    assert deleted.deleted


async def test_a_task_canceled_before_any_node_ran_it_is_complete_and_empty(
    http: httpx.AsyncClient, gateway: Gateway
) -> None:
    auth = await rest_login(http, gateway)
    created = (await http.post("/v1/tasks", json={"commands": ["true"]}, headers=auth)).json()
    assert (
        await http.post(f"/v1/tasks/{created['task_id']}/cancel", headers=auth, json={})
    ).status_code == 200
    listed = (await http.get(f"/v1/tasks/{created['task_id']}/artifacts", headers=auth)).json()
    assert listed["artifacts"] == [] and listed["complete"] is True


async def test_a_listing_waits_for_the_set_until_it_is_stored_or_its_time_is_up(
    http: httpx.AsyncClient, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """?wait_seconds=N (SPEC §2.11): answered when the set becomes complete (woken by the
    task's topic, as the upload service publishes it), or after N seconds as it is;
    another user's task is 404 at once, without waiting."""
    owner = await rest_login(http, gateway)
    stranger = await rest_login(http, gateway)
    files = {"w.txt": new_id().encode()}
    task_id, arts = await finished(http, gateway, owner, files, store=False)
    url = f"/v1/tasks/{task_id}/artifacts"
    started = time.monotonic()
    hidden = await http.get(url, params={"wait_seconds": 5}, headers=stranger)
    assert hidden.status_code == 404 and time.monotonic() - started < 4
    started = time.monotonic()
    late = await http.get(url, params={"wait_seconds": 1}, headers=owner)
    assert late.status_code == 200 and late.json()["complete"] is False
    assert 0.9 <= time.monotonic() - started < 4
    # Past the cap it waits the cap (made short here), not what was asked.
    monkeypatch.setattr(catalog, "MAX_WAIT_SECONDS", 0.3)
    started = time.monotonic()
    capped = await http.get(url, params={"wait_seconds": 4294967295}, headers=owner)
    assert capped.status_code == 200 and capped.json()["complete"] is False
    assert time.monotonic() - started < 4
    monkeypatch.undo()
    bad = await http.get(url, params={"wait_seconds": -1}, headers=owner)
    assert bad.status_code == 400
    waiting = asyncio.create_task(http.get(url, params={"wait_seconds": 10}, headers=owner))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await store_files(gateway, files, arts.values())
    gateway.bus.publish(task_topic(task_id))
    listed = await asyncio.wait_for(waiting, 8)
    assert listed.status_code == 200 and listed.json()["complete"] is True
    assert [a["artifact_id"] for a in listed.json()["artifacts"]] == [arts["w.txt"].artifact_id]
    # Complete: no wait at all.
    started = time.monotonic()
    again = await http.get(url, params={"wait_seconds": 10}, headers=owner)
    assert again.json()["complete"] is True and time.monotonic() - started < 4
