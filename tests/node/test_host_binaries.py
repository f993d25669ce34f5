"""Host binaries run for real: found, missing, timed out; podman's version."""

from __future__ import annotations

from cynode.node.host_binaries import command_output, podman_version


async def test_probes_run_real_commands() -> None:
    assert (await podman_version()).startswith("4.")
    assert await podman_version("no-such-podman") == ""
    assert await command_output("no-such-binary") == (127, "no-such-binary: not found")
    code, out = await command_output("sleep", "5", within=0.2)
    assert code == 124 and "timed out" in out
