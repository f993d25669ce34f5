"""The node's sandbox runtime: one job in one locked-down Podman container.

Public API (stable; the node daemon builds on it):

    SandboxSettings(image, memory_mb, cpus, pids, default_timeout_s, max_timeout_s,
                    max_output_bytes, node_id)
    effective_timeout(spec_timeout, settings, constraint_max=None) -> int
    JobRunner(client, settings, *, on_output=None, on_started=None, warm_pods=None,
              background_release=False)
        await runner.run(spec) -> JobResult      # never raises for job/runtime failures
        await runner.cancel(reason="canceled")   # container stopped on return
        await runner.released()                  # all the job made is removed
    WarmPodPool(client, size=1)                  # inference pods made ahead (warm_pool.py)
        .fill(settings)  await .take(settings)  await .close()
    WarmSandboxPool(client, size=2, max_jobs=None)  # plain jobs' sandboxes made ahead
        (warm_sandbox.py; same methods; JobRunner(..., warm_sandboxes=pool))
    PodmanService(runtime_dir, containers_conf=None)  /  PodmanService.existing(socket)
        .start() .stop() .astart() .astop() .client() .uri .socket_path
    remove_leftovers(client, node_id) -> CleanupReport   # at node start

One JobRunner per job attempt. A job's life is a sequence of hooks (workspace volume,
container, input files, output streaming, timeout), each in its own module; the runner
only sequences them (see hooks.py). Results: exit 0 COMPLETED; non-zero FAILED
"exit_code"; OOM kill FAILED "oom"; wall-clock limit FAILED "timeout"; cancel CANCELED
with the given reason; anything the runtime could not do FAILED "error: <short>" with
exit_code -1 when the job never ran.
"""

from cynode.node.runtime.cleanup import CleanupReport, remove_leftovers, remove_leftovers_sync
from cynode.node.runtime.labels import (
    LABEL_ATTEMPT,
    LABEL_JOB_ID,
    LABEL_NODE_ID,
    LABEL_ROLE,
    LABEL_TASK_ID,
)
from cynode.node.runtime.runner import JobRunner
from cynode.node.runtime.sandbox import SANDBOX_UID, build_create_kwargs
from cynode.node.runtime.service import PodmanService, PodmanServiceError
from cynode.node.runtime.settings import SandboxSettings, effective_timeout
from cynode.node.runtime.warm_pool import WarmPodPool
from cynode.node.runtime.warm_sandbox import WarmSandboxPool

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_JOB_ID",
    "LABEL_NODE_ID",
    "LABEL_ROLE",
    "LABEL_TASK_ID",
    "SANDBOX_UID",
    "CleanupReport",
    "JobRunner",
    "PodmanService",
    "PodmanServiceError",
    "SandboxSettings",
    "WarmPodPool",
    "WarmSandboxPool",
    "build_create_kwargs",
    "effective_timeout",
    "remove_leftovers",
    "remove_leftovers_sync",
]
