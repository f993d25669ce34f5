"""Shared fixtures live in tests/fixtures/, one module per real dependency."""

import os

# A test forks this process and runs Python in the child (the proxy host's control
# loop, in-process: tests/proxy/test_host.py). With gRPC's fork support on (its
# default), a child forked while gRPC's threads poll can die in gRPC's at-fork handler
# (73 of 300 such forks in a scratch check, 0 with it off). Our processes never use gRPC in a
# forked child, so the suite turns it off before anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.podman",
]
