from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cynode.node.runtime import PodmanService, PodmanServiceError
from cynode.node.runtime.service import conmon_wrapper_script, find_conmon, with_conmon_path


def test_conmon_path_goes_into_the_engine_table() -> None:
    text = '[containers]\na = 1\n\n[engine]  # comment\nruntime = "runc"\n'
    out = with_conmon_path(text, "/x/conmon")
    assert out.splitlines()[4:6] == ['conmon_path = ["/x/conmon"]', 'runtime = "runc"']


def test_conmon_path_adds_an_engine_table_when_missing() -> None:
    assert with_conmon_path("[containers]\n", "/c").endswith('\n\n[engine]\nconmon_path = ["/c"]\n')


def test_an_explicit_conmon_path_is_respected() -> None:
    text = '[engine]\nconmon_path = ["/mine"]\n'
    assert with_conmon_path(text, "/x") == text


def test_real_repo_conf_keeps_its_settings() -> None:
    conf = Path(__file__).resolve().parents[3] / "deploy" / "podman" / "containers.conf"
    out = with_conmon_path(conf.read_text(), "/w")
    assert 'runtime = "runc"' in out and 'conmon_path = ["/w"]' in out
    assert "nofile=1024:1024" in out


def test_wrapper_runs_conmon_in_the_bundle_directory(tmp_path: Path) -> None:
    fake = tmp_path / "fake conmon"
    fake.write_text('#!/bin/sh\npwd\necho "$@"\n')
    fake.chmod(0o755)
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(conmon_wrapper_script(str(fake)))
    wrapper.chmod(0o755)
    bundle = tmp_path / "bundle dir"
    bundle.mkdir()
    for args in (["-c", "id", "-b", str(bundle), "-u", "x"], [f"--bundle={bundle}"]):
        out = subprocess.run([str(wrapper), *args], capture_output=True, text=True, check=True)
        assert out.stdout.splitlines() == [str(bundle), " ".join(args)]


def test_find_conmon_finds_an_executable() -> None:
    found = find_conmon()
    assert found is not None and os.access(found, os.X_OK)


def test_a_service_that_cannot_start_says_why(tmp_path: Path) -> None:
    fake = tmp_path / "podman"
    fake.write_text("#!/bin/sh\necho 'cannot do it' >&2\nexit 7\n")
    fake.chmod(0o755)
    conf = tmp_path / "c.conf"
    conf.write_text("[engine]\n")
    service = PodmanService(tmp_path / "rt", containers_conf=conf, podman=str(fake))
    with pytest.raises(PodmanServiceError, match=r"exited with 7: cannot do it"):
        service.start(timeout_s=5)
    assert not service.socket_path.exists()
    # the derived config and wrapper were written next to the socket
    assert "conmon_path" in (tmp_path / "rt" / "containers.conf").read_text()


def test_a_service_that_never_answers_times_out(tmp_path: Path) -> None:
    fake = tmp_path / "podman"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    service = PodmanService(tmp_path / "rt", podman=str(fake), fix_oom_reports=False)
    with pytest.raises(PodmanServiceError, match="did not answer"):
        service.start(timeout_s=0.5)
    service.stop()  # idempotent


def test_existing_socket_is_used_not_started(podman_service: PodmanService) -> None:
    existing = PodmanService.existing(podman_service.uri)
    assert existing.socket_path == podman_service.socket_path
    existing.start(timeout_s=5)
    with existing.client() as client:
        assert client.ping()
    existing.stop()
    assert podman_service.socket_path.exists(), "stop() must not touch a service it did not start"


def test_existing_socket_that_is_missing_fails(tmp_path: Path) -> None:
    with pytest.raises(PodmanServiceError):
        PodmanService.existing(tmp_path / "none.sock").start(timeout_s=0.3)


async def test_private_service_lifecycle(tmp_path_factory: pytest.TempPathFactory) -> None:
    runtime_dir = tmp_path_factory.mktemp("svc")
    service = PodmanService(runtime_dir)
    await service.astart()
    try:
        assert service.ping()
        await service.astart()  # already running: no second process
    finally:
        await service.astop()
    assert not service.ping()
    assert not service.socket_path.exists()
    with PodmanService(runtime_dir) as again:
        assert again.ping()
