"""The private state directory: modes, ownership, the session file."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cynode.node.state import NodeSessionState, StateDir, StateDirError, ensure_private_dir


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
