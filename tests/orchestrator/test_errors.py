from __future__ import annotations

import pytest

from cynode.orchestrator.errors import client_address, metadata_value
from cynode.orchestrator.rest import RestServicerContext


@pytest.mark.parametrize(
    ("peer", "client"),
    [
        ("ipv4:10.1.2.3:5555", "10.1.2.3"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:%5B::1%5D:5555", "::1"),
        ("unix:/tmp/sock", "unix"),
        ("", "unknown"),
        ("weird", "weird"),
    ],
)
def test_client_address_drops_the_port(peer: str, client: str) -> None:
    assert client_address(RestServicerContext(peer=peer)) == client


def test_metadata_lookup_is_case_insensitive() -> None:
    ctx = RestServicerContext([("Authorization", "Bearer x")])
    assert metadata_value(ctx, "authorization") == "Bearer x"
    assert metadata_value(ctx, "other") is None
