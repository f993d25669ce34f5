from __future__ import annotations

from cynode.node.runtime import SandboxSettings, effective_timeout


def test_defaults_match_the_spec() -> None:
    s = SandboxSettings()
    assert (s.image, s.memory_mb, s.cpus, s.pids) == ("localhost/cynode-sandbox", 512, 1.0, 128)
    assert (s.default_timeout_s, s.max_timeout_s, s.max_output_bytes) == (3600, 10800, 262144)


def test_job_timeout_zero_means_node_default() -> None:
    assert effective_timeout(0, SandboxSettings()) == 3600
    assert effective_timeout(-5, SandboxSettings(default_timeout_s=60)) == 60


def test_job_timeout_is_used_below_the_max() -> None:
    assert effective_timeout(120, SandboxSettings()) == 120


def test_node_max_caps_the_job_and_the_default() -> None:
    assert effective_timeout(99999, SandboxSettings()) == 10800
    assert effective_timeout(0, SandboxSettings(default_timeout_s=500, max_timeout_s=300)) == 300


def test_config_constraint_caps_further() -> None:
    assert effective_timeout(600, SandboxSettings(), constraint_max=100) == 100
    assert effective_timeout(0, SandboxSettings(), constraint_max=7200) == 3600


def test_non_positive_constraint_is_no_constraint() -> None:
    assert effective_timeout(600, SandboxSettings(), constraint_max=0) == 600
    assert effective_timeout(600, SandboxSettings(), constraint_max=None) == 600


def test_never_below_one_second() -> None:
    assert effective_timeout(0, SandboxSettings(default_timeout_s=0)) == 1
