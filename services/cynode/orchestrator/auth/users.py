"""Local accounts, the one home of every write to them: create, change password,
disable, enable, revoke sessions, weight and quotas, and the bootstrap admin. The
operator's shell (`cynode-orchestrator user`) and UserService on the gateway both call
these."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


class UnknownUser(UserError):
    pass


class UserExists(UserError):
    pass


@dataclass(frozen=True)
class Actor:
    """Who asked, for the audit log: an administrator over the gateway. Without one the
    operator's shell asked (`cynode-orchestrator user ...`)."""

    user_id: str
    handle: str
    client: str | None = None


def _audit(
    session: AsyncSession, action: str, target: User, actor: Actor | None, **detail: Any
) -> None:
    """One audit row: who acted (the admin, or the target itself from the shell) and on
    whom."""
    if actor is None:
        audit.add_audit(session, action, "ok", user_id=target.id, handle=target.handle, **detail)
    else:
        audit.add_audit(
            session,
            action,
            "ok",
            user_id=actor.user_id,
            handle=actor.handle,
            client=actor.client,
            target_id=target.id,
            target_handle=target.handle,
            **detail,
        )


def check_handle(handle: str) -> None:
    if not _HANDLE_RE.fullmatch(handle):
        raise UserError(
            "a handle is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


async def get_user(factory: async_sessionmaker[AsyncSession], handle: str) -> User | None:
    async with factory() as session:
        return (await session.exec(select(User).where(User.handle == handle))).first()


async def find_user(session: AsyncSession, ref: str) -> User:
    """The user whose id (any case) or handle is `ref`."""
    user = None
    if len(ref) == 26:
        user = await session.get(User, ref.upper())
    if user is None and ref and len(ref) <= 64 and "\x00" not in ref:
        user = (await session.exec(select(User).where(User.handle == ref))).first()
    if user is None:
        raise UnknownUser(f"no user {ref!r}")
    return user


async def lookup_user(factory: async_sessionmaker[AsyncSession], ref: str) -> User:
    async with factory() as session:
        return await find_user(session, ref)


async def list_users(
    factory: async_sessionmaker[AsyncSession], limit: int, after: str | None
) -> tuple[list[User], bool]:
    """Up to `limit` users after the id `after`, oldest first; and whether more follow."""
    query = select(User).order_by(col(User.id)).limit(limit + 1)
    if after:
        query = query.where(col(User.id) > after)
    async with factory() as session:
        users = list((await session.exec(query)).all())
    return users[:limit], len(users) > limit


async def create_user(
    factory: async_sessionmaker[AsyncSession],
    passwords: Passwords,
    handle: str,
    password: str,
    *,
    is_admin: bool = False,
    email: str | None = None,
    actor: Actor | None = None,
) -> User:
    check_handle(handle)
    if email is not None and (len(email) > 254 or "@" not in email or not email.isprintable()):
        raise UserError("email must be an address of at most 254 characters")
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
            _audit(session, audit.USER_CREATE, user, actor, is_admin=is_admin)
    except IntegrityError as exc:
        raise UserExists(f"user {handle!r} already exists") from exc
    return user


async def _revoke_all(session: AsyncSession, user_id: str) -> int:
    result = await session.exec(  # type: ignore[call-overload]
        update(RefreshSession)
        .where(col(RefreshSession.user_id) == user_id, col(RefreshSession.revoked_at).is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)


async def set_password(
    factory: async_sessionmaker[AsyncSession],
    passwords: Passwords,
    ref: str,
    password: str,
    *,
    actor: Actor | None = None,
) -> User:
    """A new password; every session of the user is revoked."""
    try:
        check_new_password(password)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    new_hash = await passwords.hash(password)
    async with transaction(factory) as session:
        user = await find_user(session, ref)
        user.password_hash = new_hash
        user.updated_at = utcnow()
        session.add(user)
        await _revoke_all(session, user.id)
        _audit(session, audit.USER_PASSWORD, user, actor)
    return user


async def disable_user(
    factory: async_sessionmaker[AsyncSession], ref: str, *, actor: Actor | None = None
) -> User:
    """Disabled users cannot log in; their sessions and access tokens stop working."""
    async with transaction(factory) as session:
        user = await find_user(session, ref)
        if actor is not None and user.id == actor.user_id:
            raise UserError("you cannot disable yourself")
        user.is_active = False
        user.updated_at = utcnow()
        session.add(user)
        await _revoke_all(session, user.id)
        _audit(session, audit.USER_DISABLE, user, actor)
    return user


async def enable_user(
    factory: async_sessionmaker[AsyncSession], ref: str, *, actor: Actor | None = None
) -> User:
    """A disabled user may log in again; sessions revoked when disabled stay revoked."""
    async with transaction(factory) as session:
        user = await find_user(session, ref)
        user.is_active = True
        user.updated_at = utcnow()
        session.add(user)
        _audit(session, audit.USER_ENABLE, user, actor)
    return user


async def revoke_sessions(
    factory: async_sessionmaker[AsyncSession], ref: str, *, actor: Actor | None = None
) -> tuple[User, int]:
    """Revokes every live session of the user; how many there were."""
    async with transaction(factory) as session:
        user = await find_user(session, ref)
        revoked = await _revoke_all(session, user.id)
        _audit(session, audit.USER_REVOKE_SESSIONS, user, actor, revoked=revoked)
    return user, revoked


MAX_WEIGHT = 1000.0
QUOTA_FIELDS = (
    "max_queued_tasks",
    "max_running_jobs",
    "max_task_timeout_seconds",
    "max_inference_requests",
)


async def update_user(
    factory: async_sessionmaker[AsyncSession],
    ref: str,
    *,
    weight: float | None = None,
    quotas: Mapping[str, int] | None = None,
    actor: Actor | None = None,
) -> User:
    """Sets the fair-share weight and own quota values given; a negative quota value
    clears it (the default applies again), 0 is no limit."""
    quotas = dict(quotas or {})
    unknown = sorted(set(quotas) - set(QUOTA_FIELDS))
    if unknown:
        raise UserError(f"unknown quota {unknown[0]!r}")
    if weight is not None and not (0 < weight <= MAX_WEIGHT):
        raise UserError(f"weight must be more than 0 and at most {MAX_WEIGHT:g}")
    changes: dict[str, Any] = {}
    async with transaction(factory) as session:
        user = await find_user(session, ref)
        if weight is not None:
            user.weight = changes["weight"] = weight
        for name, value in quotas.items():
            own = None if value < 0 else value
            setattr(user, name, own)
            changes[name] = own
        user.updated_at = utcnow()
        session.add(user)
        _audit(session, audit.USER_UPDATE, user, actor, **changes)
    return user


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
