"""cynode.testing.ports: the one port picker and its probes."""

from __future__ import annotations

import socket

from cynode.testing.ports import free_port, listening, pick_port, port_free


def test_a_free_port_can_be_bound_and_reads_free_until_then() -> None:
    port = free_port()
    assert port_free(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_free(port)
        assert listening("127.0.0.1", port)
        # Taken: the picker falls back to another port.
        other = pick_port(port)
        assert other != port and port_free(other)
    assert pick_port(port) == port


def test_nothing_listens_on_a_free_port() -> None:
    assert not listening("127.0.0.1", free_port(), timeout=0.5)
