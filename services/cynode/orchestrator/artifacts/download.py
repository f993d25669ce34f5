"""Artifact bytes on REST: GET /v1/tasks/{task_id}/artifacts/{artifact_id} (SPEC §2.11).

A route of its own beside the transcoded ones: the bytes go out as the body itself,
streamed from the blob in chunks (never whole in memory), with Content-Length,
Content-Type, ETag (the SHA-256), Content-Disposition and single byte ranges (206).
A transcoded server stream would send JSON messages, not the file. Auth, visibility
and errors are the gateway's own (bearer token, 404 for another user's task,
problem+json).
"""

from __future__ import annotations

import asyncio
import re
import tarfile
from collections.abc import AsyncIterator
from urllib.parse import quote

import grpc
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cynode.orchestrator.artifacts import catalog
from cynode.orchestrator.artifacts.blobs import NOT_STORED, FsBlobStore, read_blob
from cynode.orchestrator.auth import Authenticator, Principal
from cynode.orchestrator.gateway.tasks import TaskBook, TaskNotFound
from cynode.orchestrator.gateway.validation import Invalid
from cynode.orchestrator.rest import problems
from cynode.orchestrator.rest.context import RestServicerContext, format_peer
from cynode.orchestrator.rest.problems import problem_response
from cynode.orchestrator.store import Artifact

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeError(ValueError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range asked for as (start, end exclusive); None for the whole file
    (no header, or several ranges, which are answered with the whole file). Raises
    RangeError when it cannot be satisfied."""
    if header is None:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        if header.strip().startswith("bytes=") and "," in header:
            return None
        raise RangeError("Range must be bytes=START-END, bytes=START- or bytes=-LENGTH")
    first, last = match.groups()
    if not first and not last:
        raise RangeError("Range names no bytes")
    if not first:  # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise RangeError("Range names no bytes")
        return max(size - length, 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        raise RangeError(f"Range starts past the {size} bytes of the artifact")
    return start, end


def disposition(name: str) -> str:
    """`attachment` with the file's own name (RFC 6266: an ASCII fallback and UTF-8)."""
    base = name.rsplit("/", 1)[-1]
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in base)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(base, safe='')}"


def _context(request: Request) -> RestServicerContext:
    client = request.client
    peer = format_peer((client.host, client.port) if client else None)
    return RestServicerContext(list(request.headers.items()), peer=peer)


async def authenticate(authenticator: Authenticator, request: Request) -> Principal | None:
    try:
        return await authenticator.authenticate(_context(request))
    except grpc.aio.AbortError:
        return None


TAR_BLOCK = 512
# Bigger reads than gRPC's 1 MiB messages: fewer hops to the file thread per byte.
HTTP_CHUNK = 4 << 20


def tar_header(row: Artifact) -> bytes:
    """The ustar/PAX header of one artifact in the archive (PAX for long names)."""
    info = tarfile.TarInfo(row.name)
    info.size = row.size_bytes
    info.mode = 0o644
    info.mtime = int(row.created_at.timestamp())
    return info.tobuf(format=tarfile.PAX_FORMAT)


def tar_padding(size: int) -> bytes:
    return b"\0" * (-size % TAR_BLOCK)


async def tar_stream(
    blobs: FsBlobStore, parts: list[tuple[bytes, Artifact]]
) -> AsyncIterator[bytes]:
    for header, row in parts:
        yield header
        async for block in read_blob(blobs, row.sha256, 0, row.size_bytes, HTTP_CHUNK):
            yield block
        yield tar_padding(row.size_bytes)
    yield b"\0" * (2 * TAR_BLOCK)


def artifact_routes(
    book: TaskBook, authenticator: Authenticator, blobs: FsBlobStore
) -> list[Route]:
    async def download(request: Request) -> Response:
        principal = await authenticate(authenticator, request)
        if principal is None:
            return problem_response(
                problems.GRPC_PROBLEMS[grpc.StatusCode.UNAUTHENTICATED],
                "missing or invalid access token",
            )
        try:
            _, row = await catalog.find(
                book, principal, request.path_params["task_id"], request.path_params["artifact_id"]
            )
        except Invalid as exc:
            return problem_response(problems.BAD_REQUEST, str(exc))
        except TaskNotFound:
            return problem_response(problems.NOT_FOUND, "no such task")
        except catalog.ArtifactNotFound:
            return problem_response(problems.NOT_FOUND, "no such artifact")
        if row.stored_at is None or not await asyncio.to_thread(blobs.has, row.sha256):
            return problem_response(problems.CONFLICT, NOT_STORED)
        size = row.size_bytes
        headers = {
            "etag": f'"{row.sha256}"',
            "accept-ranges": "bytes",
            "content-disposition": disposition(row.name),
        }
        try:
            wanted = parse_range(request.headers.get("range"), size)
        except RangeError as exc:
            return problem_response(
                problems.RANGE_NOT_SATISFIABLE, str(exc), {"content-range": f"bytes */{size}"}
            )
        if_range = request.headers.get("if-range")
        if wanted is not None and if_range is not None and if_range.strip() != headers["etag"]:
            wanted = None  # the client's copy is of other content: send it all
        start, end = wanted or (0, size)
        headers["content-length"] = str(end - start)
        status = 200
        if wanted is not None:
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=row.content_type)
        return StreamingResponse(
            read_blob(blobs, row.sha256, start, end, HTTP_CHUNK),
            status_code=status,
            headers=headers,
            media_type=row.content_type,
        )

    async def archive(request: Request) -> Response:
        principal = await authenticate(authenticator, request)
        if principal is None:
            return problem_response(
                problems.GRPC_PROBLEMS[grpc.StatusCode.UNAUTHENTICATED],
                "missing or invalid access token",
            )
        try:
            found = await catalog.listing(book, principal, request.path_params["task_id"])
        except Invalid as exc:
            return problem_response(problems.BAD_REQUEST, str(exc))
        except TaskNotFound:
            return problem_response(problems.NOT_FOUND, "no such task")
        if not found.complete:
            return problem_response(
                problems.CONFLICT, "the task's artifacts are not complete yet (see complete)"
            )
        parts = [(tar_header(row), row) for row in found.artifacts]
        length = 2 * TAR_BLOCK + sum(
            len(header) + row.size_bytes + len(tar_padding(row.size_bytes)) for header, row in parts
        )
        stem = found.task.name or found.task.id
        headers = {
            "content-length": str(length),
            "content-disposition": disposition(f"{stem}-artifacts.tar"),
        }
        if request.method == "HEAD":
            return Response(headers=headers, media_type="application/x-tar")
        return StreamingResponse(
            tar_stream(blobs, parts), headers=headers, media_type="application/x-tar"
        )

    return [
        Route(
            "/v1/tasks/{task_id}/artifacts.tar",
            archive,
            methods=["GET", "HEAD"],
            name="artifact-archive",
        ),
        Route(
            "/v1/tasks/{task_id}/artifacts/{artifact_id}",
            download,
            methods=["GET", "HEAD"],
            name="artifact-download",
        ),
    ]
