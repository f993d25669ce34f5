"""Opaque list cursors: the id of the last task of a page, wrapped so clients do not
build them by hand (and so the format may change)."""

from __future__ import annotations

import base64
import binascii
import json

from cynode.orchestrator.gateway.validation import Invalid, looks_like_task_id


def encode_cursor(last_id: str) -> str:
    raw = json.dumps({"v": 1, "before": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise Invalid("cursor is not one this server handed out") from exc
    if not isinstance(data, dict) or data.get("v") != 1:
        raise Invalid("cursor is not one this server handed out")
    before = data.get("before")
    if not isinstance(before, str) or not looks_like_task_id(before):
        raise Invalid("cursor is not one this server handed out")
    return before.upper()
