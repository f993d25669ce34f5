"""Local accounts: create, change password, disable, and the bootstrap admin."""

from __future__ import annotations

import re

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator import audit
from cynode.orchestrator.auth.passwords import Passwords, check_new_password
from cynode.orchestrator.store import RefreshSession, User, transaction, utcnow

ADMIN_HANDLE = "admin"
_HANDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class UserError(Exception):
    """A user operation that cannot be done; the message is safe to show."""


def check_handle(handle: str) -> None:
    if not _HANDLE_RE.fullmatch(handle):
        raise UserError(
            "a handle is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


async def get_user(factory: async_sessionmaker[AsyncSession], handle: str) -> User | None:
    async with factory() as session:
        return (await session.exec(select(User).where(User.handle == handle))).first()


async def create_user(
    factory: async_sessionmaker[AsyncSession],
    passwords: Passwords,
    handle: str,
    password: str,
    *,
    is_admin: bool = False,
    email: str | None = None,
) -> User:
    check_handle(handle)
    try:
        check_new_password(password)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    user = User(
        handle=handle, email=email, password_hash=await passwords.hash(password), is_admin=is_admin
    )
    try:
        async with transaction(factory) as session:
            session.add(user)
            audit.add_audit(session, audit.USER_CREATE, "ok", user_id=user.id, handle=handle)
    except IntegrityError as exc:
        raise UserError(f"user {handle!r} already exists") from exc
    return user


async def _revoke_all(session: AsyncSession, user_id: str) -> None:
    await session.exec(  # type: ignore[call-overload]
        update(RefreshSession)
        .where(col(RefreshSession.user_id) == user_id, col(RefreshSession.revoked_at).is_(None))
        .values(revoked_at=utcnow())
    )


async def set_password(
    factory: async_sessionmaker[AsyncSession], passwords: Passwords, handle: str, password: str
) -> None:
    """A new password; every session of the user is revoked."""
    try:
        check_new_password(password)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    new_hash = await passwords.hash(password)
    async with transaction(factory) as session:
        user = (await session.exec(select(User).where(User.handle == handle))).first()
        if user is None:
            raise UserError(f"no user {handle!r}")
        user.password_hash = new_hash
        user.updated_at = utcnow()
        session.add(user)
        await _revoke_all(session, user.id)
        audit.add_audit(session, audit.USER_PASSWORD, "ok", user_id=user.id, handle=handle)


async def disable_user(factory: async_sessionmaker[AsyncSession], handle: str) -> None:
    """Disabled users cannot log in; their sessions and access tokens stop working."""
    async with transaction(factory) as session:
        user = (await session.exec(select(User).where(User.handle == handle))).first()
        if user is None:
            raise UserError(f"no user {handle!r}")
        user.is_active = False
        user.updated_at = utcnow()
        session.add(user)
        await _revoke_all(session, user.id)
        audit.add_audit(session, audit.USER_DISABLE, "ok", user_id=user.id, handle=handle)


async def ensure_admin(
    factory: async_sessionmaker[AsyncSession], passwords: Passwords, password: str
) -> bool:
    """Creates `admin` on first start; True when it was created. An existing admin keeps
    its password (change it with `user passwd admin`)."""
    if await get_user(factory, ADMIN_HANDLE) is not None:
        return False
    try:
        await create_user(factory, passwords, ADMIN_HANDLE, password, is_admin=True)
    except UserError:
        # Another replica created it between our read and our insert.
        if await get_user(factory, ADMIN_HANDLE) is None:
            raise
        return False
    return True
