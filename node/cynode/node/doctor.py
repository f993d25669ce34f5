"""`cynode-node doctor`: checks every prerequisite and says how to fix what fails."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .config import NodeConfig
from .cpclient import TlsConfigError, make_channel
from .host_binaries import command_output, podman_version
from .inference import InferenceUnavailable, check_inference
from .podman_host import PodmanHost
from .runtime.userns import FIX as USERNS_FIX
from .runtime.userns import RANGE_SIZE, SUBID_USER, missing_ranges
from .runtime.workspace_image import tools_present

MIN_PODMAN = (4, 0)
# What podman's stock default_ulimits ask for; a lower hard limit makes every container fail.
STOCK_NOFILE = 1048576


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        text = f"{status}  {self.name:<16} {self.detail}"
        return text if self.ok or not self.fix else f"{text} -> fix: {self.fix}"


async def check_podman(_: NodeConfig) -> Check:
    version = await podman_version()
    if not version:
        return Check("podman", False, "podman not found", "apt-get install podman (4.x)")
    parts = tuple(int(p) for p in version.split(".")[:2])
    if parts < MIN_PODMAN:
        return Check("podman", False, f"podman {version} is too old", "install podman >= 4.0")
    return Check("podman", True, f"podman {version}")


async def check_runc(_: NodeConfig) -> Check:
    code, out = await command_output("runc", "--version")
    if code != 0:
        return Check("runc", False, out or "runc not found", "apt-get install runc")
    return Check("runc", True, out.splitlines()[0])


async def check_containers_conf(config: NodeConfig) -> Check:
    conf = config.effective_containers_conf
    text = ""
    if conf:
        try:
            text = await asyncio.to_thread(Path(conf).read_text)
        except OSError as exc:
            return Check(
                "containers.conf",
                False,
                f"{conf}: {exc.strerror}",
                "set podman.containers_conf to deploy/podman/containers.conf",
            )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    sets_ulimits = re.search(r"^\s*default_ulimits\s*=", text, re.MULTILINE) is not None
    if not sets_ulimits and hard != resource.RLIM_INFINITY and hard < STOCK_NOFILE:
        return Check(
            "containers.conf",
            False,
            f"hard nofile limit {hard} is below podman's default ulimits and "
            f"{conf or 'no containers.conf'} sets no default_ulimits",
            "point CONTAINERS_CONF (or podman.containers_conf) at deploy/podman/containers.conf",
        )
    return Check("containers.conf", True, conf or "podman defaults (host limits suffice)")


async def check_state_dir(config: NodeConfig) -> Check:
    path = config.state_dir
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return Check("state dir", True, f"{path} will be created 0700")
        return Check("state dir", False, f"cannot create {path}", f"mkdir -m 700 {path}")
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid():
        return Check("state dir", False, f"{path} owned by uid {info.st_uid}", "chown the dir")
    if mode & 0o077:
        return Check("state dir", False, f"{path} is {mode:o}", f"chmod 700 {path}")
    return Check("state dir", True, f"{path} (0700)")


async def check_psk(config: NodeConfig) -> Check:
    if not config.psk:
        return Check("psk", False, "no pre-shared key", "export NODE_PSK=... or set psk:")
    return Check("psk", True, "set")


async def check_workspace_tools(config: NodeConfig) -> Check:
    if config.workspace_mb <= 0:
        return Check("workspace bound", True, "off (sandbox.workspace_mb: 0)")
    missing = tools_present()
    if missing:
        return Check(
            "workspace bound",
            False,
            f"{', '.join(missing)} not found (each job's /workspace is an ext4 image)",
            "apt-get install e2fsprogs, or set sandbox.workspace_mb: 0",
        )
    return Check("workspace bound", True, f"{config.workspace_mb} MiB ext4 image per job")


async def check_userns(config: NodeConfig) -> Check:
    if config.sandbox_userns == "host":
        return Check("user namespace", True, "off (sandbox.userns: host)")
    missing = await asyncio.to_thread(missing_ranges)
    if missing:
        return Check(
            "user namespace",
            False,
            f"no range of {RANGE_SIZE} ids for `{SUBID_USER}` in {', '.join(missing)}",
            USERNS_FIX,
        )
    return Check("user namespace", True, f"auto ({SUBID_USER} range in /etc/subuid, /etc/subgid)")


async def check_orchestrator(config: NodeConfig) -> Check:
    target = config.grpc_target
    try:
        channel = make_channel(config)
    except TlsConfigError as exc:
        return Check("orchestrator", False, f"CA file: {exc}", "fix orchestrator.ca_file")
    try:
        await asyncio.wait_for(channel.channel_ready(), 5)
    except TimeoutError:
        return Check(
            "orchestrator",
            False,
            f"no gRPC answer from {target}",
            "start the orchestrator or set CYNODE_ORCHESTRATOR_URL / CYNODE_CONTROL_PLANE_GRPC",
        )
    finally:
        await channel.close(grace=None)
    return Check("orchestrator", True, f"{target} reachable")


async def check_inference_service(config: NodeConfig) -> Check:
    if config.inference_mode == "none":
        return Check("inference", True, "mode none (sandbox-only node)")
    try:
        status = await check_inference(config.inference_mode, config.inference_url)
    except InferenceUnavailable as exc:
        return Check("inference", False, str(exc), "start Ollama or set inference.mode: none")
    return Check("inference", True, f"{len(status.models)} model(s) at {config.inference_url}")


async def check_service_and_images(config: NodeConfig) -> list[Check]:
    """Starts (or reaches) the Podman service like the node would, then looks for images."""
    host = PodmanHost(config, start_timeout_s=10)
    try:
        version = await host.start()
    except Exception as exc:
        fix = (
            "check podman.socket / CYNODE_PODMAN_SOCKET"
            if config.podman_socket
            else "run `podman system service` by hand to see why it fails"
        )
        await host.close()
        return [Check("podman service", False, str(exc) or type(exc).__name__, fix)]
    try:
        checks = [Check("podman service", True, f"answers (podman {version})")]
        image = config.sandbox_image
        if await host.image_exists(image):
            checks.append(Check("images", True, image))
        else:
            checks.append(Check("images", False, f"{image} is missing", "run `make images`"))
        return checks
    finally:
        await host.close()


SIMPLE_CHECKS: list[Callable[[NodeConfig], Awaitable[Check]]] = [
    check_podman,
    check_runc,
    check_containers_conf,
    check_state_dir,
    check_workspace_tools,
    check_userns,
    check_psk,
    check_orchestrator,
    check_inference_service,
]


async def run_doctor(config: NodeConfig) -> list[Check]:
    # The state dir is checked before the service check, which creates it as the node would.
    checks = [await check(config) for check in SIMPLE_CHECKS[:6]]
    checks += await check_service_and_images(config)
    checks += [await check(config) for check in SIMPLE_CHECKS[6:]]
    return checks
