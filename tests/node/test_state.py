"""The private state directory: modes, ownership, the session file."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cynode.node.inference.proxy_host import control_socket
from cynode.node.state import (
    MAX_SOCKET_PATH,
    NodeSessionState,
    StateDir,
    StateDirError,
    ensure_private_dir,
    socket_dir,
)


def test_state_dir_is_private_and_session_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o755)
    state = StateDir(root)
    state.prepare()
    assert root.stat().st_mode & 0o777 == 0o700
    assert state.spool_dir.stat().st_mode & 0o777 == 0o700
    assert state.load_session() is None
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    state.save_session(NodeSessionState("jwt", expires, "N1"))
    assert state.session_file.stat().st_mode & 0o777 == 0o600
    loaded = state.load_session()
    assert loaded == NodeSessionState("jwt", expires, "N1")
    assert loaded.expires_within(timedelta(days=365 * 100))
    assert not loaded.expires_within(timedelta(seconds=1), now=datetime(2029, 1, 1, tzinfo=UTC))
    state.session_file.write_text("{broken")
    assert state.load_session() is None


def test_state_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "other"
    root.mkdir()
    os.chown(root, 12345, 12345)
    with pytest.raises(StateDirError, match="owned by uid 12345"):
        ensure_private_dir(root)


def test_a_socket_dir_is_the_preferred_one_only_while_its_sockets_fit(tmp_path: Path) -> None:
    assert socket_dir(tmp_path / "inference", "relay.sock", "t-") == tmp_path / "inference"
    deep = tmp_path / ("d" * MAX_SOCKET_PATH)
    short = socket_dir(deep, "relay.sock", "cynode-t-")
    assert short.is_dir() and short.name.startswith("cynode-t-")
    assert len(str(short / "relay.sock")) <= MAX_SOCKET_PATH
    # A restart finds the same one, so none is left behind per start.
    assert socket_dir(deep, "relay.sock", "cynode-t-") == short
    short.rmdir()
    # The proxy host's control socket is named inside whichever directory was chosen.
    assert control_socket(tmp_path) == tmp_path / "proxy-host" / "host.sock"
    chosen = control_socket(deep)
    assert chosen.name == "host.sock" and len(str(chosen)) <= MAX_SOCKET_PATH
    chosen.parent.rmdir()


def test_a_socket_dir_someone_else_could_reach_is_not_used(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * MAX_SOCKET_PATH)
    named = socket_dir(deep, "relay.sock", "cynode-t-")
    named.rmdir()
    try:
        # A link in its place is not followed, wherever it points.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        named.symlink_to(elsewhere)
        linked = socket_dir(deep, "relay.sock", "cynode-t-")
        assert linked != named and linked.is_dir() and not linked.is_symlink()
        linked.rmdir()
        named.unlink()
        # Nor a directory of another user, or one others may write.
        named.mkdir(mode=0o700)
        os.chown(named, 12345, 12345)
        owned = socket_dir(deep, "relay.sock", "cynode-t-")
        assert owned not in (named, linked) and owned.stat().st_uid == os.geteuid()
        owned.rmdir()
        os.chown(named, os.geteuid(), os.getegid())
        named.chmod(0o711)  # others may enter it (the relay's is so): still used
        assert socket_dir(deep, "relay.sock", "cynode-t-") == named
        named.chmod(0o733)  # others may write it: not
        wide = socket_dir(deep, "relay.sock", "cynode-t-")
        assert wide != named and stat.S_IMODE(wide.stat().st_mode) == 0o700
        wide.rmdir()
    finally:
        if named.is_symlink():
            named.unlink()
        elif named.exists():
            named.rmdir()
