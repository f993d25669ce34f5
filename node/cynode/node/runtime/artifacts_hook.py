"""Artifacts: after the job's container has stopped and before anything is removed, the
regular files under /workspace/out/ go into the artifact spool (SPEC §4.11).

Runs in `exited`, so the set is in the job's result. A job that was canceled (the
cancel stopped it) is not collected; one that ended by itself, failed or timed out is.
Whatever goes wrong here never changes the job's status: the set is then marked
truncated with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.artifacts.spool import ArtifactSpool
from cynode.node.runtime import ops
from cynode.node.runtime.collect import Limits, collect_dir, collect_tar
from cynode.node.runtime.context import JobContext, StopKind
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.ops import JOB_LONG_TIMEOUT
from cynode.node.runtime.sandbox import WORKSPACE
from cynode.node.runtime.workspace_image import (
    WorkspaceImageError,
    dump_dir,
    image_path,
    wait_unmounted,
)

log = logging.getLogger(__name__)

OUT_DIR = f"{WORKSPACE}/out"


def read_out(
    client: PodmanClient, container_id: str, into: Path, limits: Limits
) -> job_pb2.ArtifactSet:
    """The container's out/ as an ArtifactSet, its files written into `into` (blocking).

    Podman resolves the path inside the container: an out/ that is a symlink (to /etc,
    say) or missing answers 404, which is an empty set.
    """
    response = client.api.get(
        f"/containers/{container_id}/archive",
        params={"path": OUT_DIR},
        stream=True,
        timeout=JOB_LONG_TIMEOUT,
    )
    try:
        if response.status_code == 404:
            return job_pb2.ArtifactSet()
        response.raise_for_status()
        response.raw.decode_content = True
        return collect_tar(response.raw, into, limits)
    finally:
        response.close()


def read_image_out(image: Path, into: Path, limits: Limits) -> job_pb2.ArtifactSet:
    """The same from a bounded workspace's image (blocking). Podman unmounts that volume
    when the container stops, so its archive API cannot see it: once the image is
    unmounted, debugfs copies out/ from it (no mount on the host, nothing followed) and
    the copy is walked like the tar."""
    if not wait_unmounted(image):
        raise WorkspaceImageError("the workspace is still mounted")
    scratch = into / ".dump"
    scratch.mkdir(mode=0o700)
    try:
        copied = dump_dir(image, OUT_DIR.removeprefix(WORKSPACE), scratch)
        if copied is None:
            return job_pb2.ArtifactSet()
        return collect_dir(copied, into, limits)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_mounted_out(mountpoint: Path, into: Path, limits: Limits) -> job_pb2.ArtifactSet:
    """The same from a bounded workspace a user-namespaced container left mounted on
    the host (userns.py): the job has stopped, so its out/ is read in place; the image
    cannot be read instead, since other namespaces may hold the mount (and unwritten
    blocks) until the volume is removed."""
    return collect_dir(mountpoint / OUT_DIR.removeprefix(f"{WORKSPACE}/"), into, limits, copy=True)


def stopped(client: PodmanClient, container_id: str) -> None:
    """Returns once Podman has recorded the container's stop (blocking)."""
    if ops.ended_state(client, container_id) is None:
        ops.wait_container(client, container_id)


class ArtifactsHook(Hook):
    name = "artifacts"

    async def exited(self, ctx: JobContext) -> None:
        settings = ctx.settings
        if not settings.artifact_dir or ctx.container_id is None:
            return
        if ctx.stop_kind is StopKind.CANCEL:
            return
        if ctx.reported_end is not None and ctx.reported_end.out_empty:
            # A warm sandbox's runner reported the end (SPEC §4.10) as the process
            # exited, with the rest of the job killed: an empty out/ is known without
            # a look.
            ctx.artifacts = job_pb2.ArtifactSet()
            return
        began = time.monotonic()
        job_id = ctx.spec.job_id
        try:
            found = await self._collect(ctx, ctx.container_id)
        except Exception as exc:
            # Anything, the wait for the stop included: the job's status stays its own.
            log.warning("job %s: collecting artifacts failed: %s", job_id, exc)
            ctx.artifacts = job_pb2.ArtifactSet(
                truncated=True, truncated_reason=f"collection failed: {str(exc)[:200]}"
            )
            return
        ctx.artifacts = found
        log.info(
            "job %s attempt %d: %d artifacts, %d bytes, collected in %.3f s%s",
            job_id,
            ctx.spec.attempt,
            len(found.artifacts),
            sum(a.size_bytes for a in found.artifacts),
            time.monotonic() - began,
            f" (truncated: {found.truncated_reason})" if found.truncated else "",
        )

    async def _collect(self, ctx: JobContext, container_id: str) -> job_pb2.ArtifactSet:
        """out/ into the spool; raises on anything that went wrong (nothing is left)."""
        settings = ctx.settings
        if ctx.reported_end is not None:
            # The runner's end came at the process's exit: out/ is read once the
            # container has stopped.
            await asyncio.to_thread(stopped, ctx.client, container_id)
        spool = ArtifactSpool(Path(settings.artifact_dir))
        job_id, attempt = ctx.spec.job_id, ctx.spec.attempt
        partial = await asyncio.to_thread(spool.start, job_id, attempt)
        limits = Limits(settings.artifact_max_file_bytes, settings.artifact_max_job_bytes)
        image = image_path(settings.workspace_mb, settings.workspace_dir, ctx.volume_name)
        kept = False
        try:
            mounted = ""
            if image is not None and settings.userns == "auto":
                mounted = await asyncio.to_thread(ops.mounted_volume, ctx.client, ctx.volume_name)
            if mounted:
                found = await asyncio.to_thread(read_mounted_out, Path(mounted), partial, limits)
            elif image is not None:
                found = await asyncio.to_thread(read_image_out, image, partial, limits)
            else:
                found = await asyncio.to_thread(read_out, ctx.client, container_id, partial, limits)
            if found.artifacts:
                await asyncio.to_thread(spool.finish, partial, job_id, attempt, found)
                kept = True
        finally:
            if not kept:  # an empty set, or a collection that failed
                await asyncio.shield(asyncio.to_thread(spool.abandon, partial))
        return found
