"""Shared fixtures live in tests/fixtures/, one module per real dependency."""

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.podman",
]
