"""Argon2id password hashing. Hashing is CPU- and memory-heavy, so it runs in a thread
to keep the event loop serving other requests."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_PASSWORD_BYTES = 1024


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Unknown handles are checked against this so they cost the same time as a
        # wrong password: the answer must not tell which handles exist.
        self._dummy_hash = self._hasher.hash("cynode-no-such-user")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when `password` matches `stored`; with `stored` None, does the same work
        and answers False."""
        if stored is None:
            await asyncio.to_thread(self._verify, self._dummy_hash, password)
            return False
        return await asyncio.to_thread(self._verify, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        try:
            return bool(self._hasher.check_needs_rehash(stored))
        except InvalidHashError:
            return True


def check_new_password(password: str) -> None:
    """Rules for a password being set (not for one being checked)."""
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValueError(f"a password may have at most {MAX_PASSWORD_BYTES} bytes")
