"""Issue 18's acceptance, against a real stack: a script leaves a 40 MiB random file, 200
small files and a symlink to /etc/passwd under /workspace/out/; the list, the download
(REST, gRPC, curl and a real `cynork` process), byte ranges and another user's view
(SPEC §2.11)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from cynode.gateway.v1 import tasks_pb2, tasks_pb2_grpc
from cynode.testing import Stack
from tests.artifacts.conftest import BIN
from tools.stack_client import GatewayClient

pytestmark = [pytest.mark.podman, pytest.mark.slow, pytest.mark.timeout(600)]

BIG = 40 * 1024 * 1024
SCRIPT = f"""#!/bin/sh
set -e
mkdir -p out/small
head -c {BIG} /dev/urandom > out/big.bin
i=0
while [ $i -lt 200 ]; do printf 'small file %d\\n' $i > out/small/f$i.txt; i=$((i+1)); done
ln -s /etc/passwd out/passwd
printf 'outside out' > elsewhere.txt
sha256sum out/big.bin
"""


def wait_complete(client: GatewayClient, task_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resp = client.request("GET", f"/v1/tasks/{task_id}/artifacts")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        if body["complete"]:
            return body
        assert time.monotonic() < deadline, f"artifacts never complete: {body}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def done_task(art_stack: Stack, alice: GatewayClient) -> tuple[str, str, dict[str, Any]]:
    task_id = alice.create(script=SCRIPT, task_name="make-files")
    result = alice.wait_done(task_id, timeout=240)
    if result["status"] != "completed":
        # What the job said and what the node logged of it (the stack's logs go with
        # it): pytest would cut the whole result short.
        keys = ("status", "reason", "exit_code", "stderr")
        jobs = [{k: job.get(k) for k in keys} for job in result["jobs"]]
        ids = [job["id"] for job in result["jobs"]]
        logged = [
            line
            for path in art_stack.log_files()
            for line in path.read_text(errors="replace").splitlines()
            if any(i in line for i in ids) or "WARNING" in line or "ERROR" in line
        ]
        pytest.fail(f"the task {result['status']}: {jobs}\n" + "\n".join(logged[-40:]))
    printed = result["stdout"].split()[0]
    return task_id, printed, wait_complete(alice, task_id)


def test_the_list_shows_the_201_files_and_nothing_else(
    alice: GatewayClient, done_task: tuple[str, str, dict[str, Any]]
) -> None:
    task_id, printed, body = done_task
    assert body["task_id"] == task_id and body["task_name"] == "make-files"
    names = {a["name"]: a for a in body["artifacts"]}
    assert len(names) == 201
    assert "passwd" not in names and "elsewhere.txt" not in names
    assert set(names) == {"big.bin"} | {f"small/f{i}.txt" for i in range(200)}
    assert int(names["big.bin"]["size_bytes"]) == BIG
    assert names["big.bin"]["sha256"] == printed
    assert int(names["small/f7.txt"]["size_bytes"]) == len(b"small file 7\n")
    assert names["small/f7.txt"]["content_type"] == "text/plain"
    # By name too, and the result says the set is complete.
    by_name = alice.request("GET", "/v1/tasks/make-files/artifacts").json()
    assert by_name["artifacts"] == body["artifacts"]
    result = alice.result(task_id)
    assert result["artifacts_complete"] is True and result["artifact_count"] == 201


def test_download_streams_the_exact_bytes_with_headers(
    alice: GatewayClient, done_task: tuple[str, str, dict[str, Any]]
) -> None:
    task_id, printed, body = done_task
    big = next(a for a in body["artifacts"] if a["name"] == "big.bin")
    url = f"/v1/tasks/{task_id}/artifacts/{big['artifact_id']}"
    digest = hashlib.sha256()
    with alice.http.stream("GET", url, headers=alice.headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-length"] == str(BIG)
        assert resp.headers["etag"] == f'"{printed}"'
        assert resp.headers["content-type"] == "application/octet-stream"
        assert resp.headers["content-disposition"].startswith('attachment; filename="big.bin"')
        for block in resp.iter_bytes():
            digest.update(block)
    assert digest.hexdigest() == printed
    small = next(a for a in body["artifacts"] if a["name"] == "small/f3.txt")
    resp = alice.request("GET", f"/v1/tasks/make-files/artifacts/{small['artifact_id']}")
    assert resp.content == b"small file 3\n"
    assert resp.headers["content-type"].startswith("text/plain")


def test_curl_and_the_cynork_process_save_the_bytes_the_job_hashed(
    art_stack: Stack,
    alice: GatewayClient,
    done_task: tuple[str, str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    task_id, printed, body = done_task
    big = next(a for a in body["artifacts"] if a["name"] == "big.bin")
    url = f"{art_stack.gateway_url}/v1/tasks/{task_id}/artifacts/{big['artifact_id']}"
    # The token from a file, not the command line another user's `ps` would show.
    header = tmp_path / "auth-header"
    header.touch(mode=0o600)
    header.write_text(f"Authorization: Bearer {alice.access_token}\n")
    by_curl = tmp_path / "curl.bin"
    subprocess.run(["curl", "-sS", "-f", "-H", f"@{header}", "-o", str(by_curl), url], check=True)
    whole = by_curl.read_bytes()
    assert hashlib.sha256(whole).hexdigest() == printed
    start, end = 33_554_000, 33_554_999
    sliced = subprocess.run(
        ["curl", "-sS", "-f", "-H", f"@{header}", "-r", f"{start}-{end}", "-D", "-", url],
        check=True,
        capture_output=True,
    ).stdout
    head, _, slice_body = sliced.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    assert slice_body == whole[start : end + 1]

    by_cynork = tmp_path / "saved" / "big.bin"
    done = subprocess.run(
        [
            str(BIN / "cynork"),
            "--gateway-url",
            art_stack.gateway_url,
            "-o",
            "json",
            "task",
            "artifacts",
            "get",
            "make-files",
            big["artifact_id"],
            "--out",
            str(by_cynork),
        ],
        env={
            **os.environ,
            "CYNORK_TOKEN": alice.access_token,
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"saved": True, "path": str(by_cynork)}
    assert hashlib.sha256(by_cynork.read_bytes()).hexdigest() == printed


def test_a_range_answers_206_with_exactly_that_slice(
    alice: GatewayClient, done_task: tuple[str, str, dict[str, Any]]
) -> None:
    task_id, _, body = done_task
    small = next(a for a in body["artifacts"] if a["name"] == "small/f42.txt")
    url = f"/v1/tasks/{task_id}/artifacts/{small['artifact_id']}"
    whole = b"small file 42\n"
    resp = alice.request("GET", url, headers={"Range": "bytes=2-5"})
    assert resp.status_code == 206 and resp.content == whole[2:6]
    assert resp.headers["content-range"] == f"bytes 2-5/{len(whole)}"
    assert alice.request("GET", url, headers={"Range": "bytes=-3"}).content == whole[-3:]
    assert alice.request("GET", url, headers={"Range": "bytes=10-"}).content == whole[10:]
    bad = alice.request("GET", url, headers={"Range": "bytes=500-"})
    assert bad.status_code == 416
    assert bad.json()["type"] == "urn:cynode:problem:range-not-satisfiable"
    big = next(a for a in body["artifacts"] if a["name"] == "big.bin")
    start = 12_345_678
    part = alice.request(
        "GET",
        f"/v1/tasks/{task_id}/artifacts/{big['artifact_id']}",
        headers={"Range": f"bytes={start}-{start + 65535}"},
    )
    assert part.status_code == 206 and len(part.content) == 65536


def test_another_user_gets_404_and_an_admin_sees_it(
    alice: GatewayClient,
    bob: GatewayClient,
    admin: GatewayClient,
    done_task: tuple[str, str, dict[str, Any]],
) -> None:
    task_id, _, body = done_task
    artifact = body["artifacts"][0]["artifact_id"]
    for path in (f"/v1/tasks/{task_id}/artifacts", f"/v1/tasks/{task_id}/artifacts/{artifact}"):
        resp = bob.request("GET", path)
        assert resp.status_code == 404, path
        assert resp.json()["type"] == "urn:cynode:problem:not-found"
        assert admin.request("GET", path).status_code == 200
    assert bob.request("GET", "/v1/tasks/make-files/artifacts").status_code == 404
    no_token = alice.http.get(f"/v1/tasks/{task_id}/artifacts/{artifact}")
    assert no_token.status_code == 401
    unknown = alice.request("GET", f"/v1/tasks/{task_id}/artifacts/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert unknown.status_code == 404


def test_grpc_streams_the_same_bytes(
    art_stack: Stack, alice: GatewayClient, done_task: tuple[str, str, dict[str, Any]]
) -> None:
    task_id, printed, body = done_task
    big = next(a for a in body["artifacts"] if a["name"] == "big.bin")
    metadata = (("authorization", f"Bearer {alice.access_token}"),)
    with grpc.insecure_channel(art_stack.gateway_grpc) as channel:
        stub = tasks_pb2_grpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
        listed = stub.ListTaskArtifacts(
            tasks_pb2.ListTaskArtifactsRequest(task_id=task_id), metadata=metadata
        )
        assert len(listed.artifacts) == 201 and listed.complete
        digest = hashlib.sha256()
        first = None
        for message in stub.DownloadTaskArtifact(
            tasks_pb2.DownloadTaskArtifactRequest(task_id=task_id, artifact_id=big["artifact_id"]),
            metadata=metadata,
        ):
            if first is None:
                first = message.artifact
            digest.update(message.data)
        assert first is not None and first.sha256 == printed
        assert digest.hexdigest() == printed
        ranged = b"".join(
            m.data
            for m in stub.DownloadTaskArtifact(
                tasks_pb2.DownloadTaskArtifactRequest(
                    task_id=task_id, artifact_id=big["artifact_id"], offset=100, length=50
                ),
                metadata=metadata,
            )
        )
        assert len(ranged) == 50


def test_the_archive_unpacks_to_the_same_tree(
    alice: GatewayClient, done_task: tuple[str, str, dict[str, Any]]
) -> None:
    task_id, printed, body = done_task
    with alice.http.stream(
        "GET", f"/v1/tasks/{task_id}/artifacts.tar", headers=alice.headers
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-tar"
        data = resp.read()
    assert len(data) == int(resp.headers["content-length"])
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert set(members) == {a["name"] for a in body["artifacts"]}
        assert all(m.isreg() for m in members.values())
        big = archive.extractfile(members["big.bin"])
        assert big is not None and hashlib.sha256(big.read()).hexdigest() == printed
        small = archive.extractfile(members["small/f199.txt"])
        assert small is not None and small.read() == b"small file 199\n"
    assert alice.request("GET", f"/v1/tasks/{task_id}/artifacts.tar").status_code == 200
    assert alice.http.get(f"/v1/tasks/{task_id}/artifacts.tar").status_code == 401


def test_delete_removes_the_task_and_its_artifacts_owner_or_admin_only(
    art_stack: Stack, alice: GatewayClient, bob: GatewayClient, admin: GatewayClient
) -> None:
    task_id = alice.create(
        commands=["mkdir -p out && head -c 5000 /dev/urandom > out/only.bin && sleep 1"]
    )
    alice.wait_done(task_id, timeout=240)
    listed = wait_complete(alice, task_id)
    [artifact] = listed["artifacts"]
    blob = art_stack.dir / "orchestrator" / "artifacts" / "blobs"
    assert any(blob.rglob(artifact["sha256"])), "the blob is where the docs say"
    assert bob.request("DELETE", f"/v1/tasks/{task_id}").status_code == 404
    live = alice.commands("sleep 60")
    refused = alice.request("DELETE", f"/v1/tasks/{live}")
    assert refused.status_code == 409 and "cancel" in refused.json()["detail"]
    alice.cancel(live)
    gone = alice.request("DELETE", f"/v1/tasks/{task_id}")
    assert gone.status_code == 200 and gone.json() == {"task_id": task_id, "deleted": True}
    assert alice.request("GET", f"/v1/tasks/{task_id}").status_code == 404
    assert alice.request("GET", f"/v1/tasks/{task_id}/artifacts").status_code == 404
    assert not any(blob.rglob(artifact["sha256"]))
    assert alice.request("DELETE", f"/v1/tasks/{task_id}").status_code == 404
    alice.wait_done(live, timeout=60)
    assert admin.request("DELETE", f"/v1/tasks/{live}").status_code == 200
