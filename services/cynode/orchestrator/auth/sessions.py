"""Login, refresh-token rotation with reuse detection, and logout.

A login starts a session family; each refresh rotates the family's current token.
Presenting a token that was already rotated means it leaked (or a client raced
itself): the whole family is revoked, and every access token carrying its id dies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator import audit
from cynode.orchestrator.auth.passwords import MAX_PASSWORD_BYTES, Passwords
from cynode.orchestrator.auth.throttle import LoginThrottle
from cynode.orchestrator.auth.tokens import TokenIssuer, hash_refresh_token, new_refresh_token
from cynode.orchestrator.store import RefreshSession, User, new_id, transaction, utcnow

TOKEN_TYPE = "Bearer"


class AuthFailed(Exception):
    """Credentials or a refresh token were not accepted. One message for every cause."""


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = TOKEN_TYPE


class SessionManager:
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        issuer: TokenIssuer,
        refresh_ttl: timedelta,
        throttle: LoginThrottle,
        on_family_revoked: Callable[[str], None] = lambda _family: None,
    ) -> None:
        self._factory = factory
        self.factory = factory
        self._passwords = passwords
        self._issuer = issuer
        self._refresh_ttl = refresh_ttl
        self.throttle = throttle
        self._on_family_revoked = on_family_revoked

    async def _start_session(
        self, session: AsyncSession, user_id: str, family_id: str
    ) -> TokenPair:
        token = new_refresh_token()
        now = utcnow()
        session.add(
            RefreshSession(
                user_id=user_id,
                family_id=family_id,
                token_hash=hash_refresh_token(token),
                created_at=now,
                expires_at=now + self._refresh_ttl,
            )
        )
        return TokenPair(
            access_token=self._issuer.issue_access(user_id, family_id, now),
            refresh_token=token,
            expires_in=int(self._issuer.access_ttl.total_seconds()),
        )

    async def login(self, handle: str, password: str, client: str) -> TokenPair:
        keys = (f"client:{client}", f"handle:{handle.lower()[:64]}")
        wait = self.throttle.retry_after(*keys)
        if wait:
            await audit.record(
                self._factory, audit.LOGIN, "throttled", handle=handle, client=client
            )
            raise LoginThrottled(wait)
        user: User | None = None
        if handle and len(handle) <= 64:
            async with self._factory() as session:
                user = (await session.exec(select(User).where(User.handle == handle))).first()
        ok = len(password.encode("utf-8", "surrogatepass")) <= MAX_PASSWORD_BYTES and (
            await self._passwords.verify(user.password_hash if user else None, password)
        )
        if not ok or user is None or not user.is_active:
            self.throttle.failure(*keys)
            reason = "no_such_user" if user is None else ("bad_password" if not ok else "disabled")
            await audit.record(
                self._factory,
                audit.LOGIN,
                "failure",
                user_id=user.id if user else None,
                handle=handle,
                client=client,
                reason=reason,
            )
            raise AuthFailed()
        self.throttle.success(*keys)
        rehash = (
            await self._passwords.hash(password)
            if self._passwords.needs_rehash(user.password_hash)
            else None
        )
        async with transaction(self._factory) as session:
            pair = await self._start_session(session, user.id, new_id())
            if rehash is not None:
                user.password_hash = rehash
                session.add(user)
            audit.add_audit(
                session, audit.LOGIN, "ok", user_id=user.id, handle=user.handle, client=client
            )
        return pair

    async def _revoke_family(self, session: AsyncSession, family_id: str) -> None:
        await session.exec(  # type: ignore[call-overload]
            update(RefreshSession)
            .where(
                col(RefreshSession.family_id) == family_id,
                col(RefreshSession.revoked_at).is_(None),
            )
            .values(revoked_at=utcnow())
        )

    async def refresh(self, token: str, client: str) -> TokenPair:
        token_hash = hash_refresh_token(token)
        reused: RefreshSession | None = None
        async with transaction(self._factory) as session:
            row = (
                await session.exec(
                    select(RefreshSession).where(RefreshSession.token_hash == token_hash)
                )
            ).first()
            if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
                raise AuthFailed()
            user = await session.get(User, row.user_id)
            if user is None or not user.is_active:
                raise AuthFailed()
            now = utcnow()
            if row.rotated_at is None:
                # Conditional update: of two concurrent refreshes with one token, exactly
                # one wins; the loser is treated as reuse.
                result = await session.exec(  # type: ignore[call-overload]
                    update(RefreshSession)
                    .where(
                        col(RefreshSession.id) == row.id,
                        col(RefreshSession.rotated_at).is_(None),
                        col(RefreshSession.revoked_at).is_(None),
                    )
                    .values(rotated_at=now)
                )
                if result.rowcount == 1:
                    pair = await self._start_session(session, row.user_id, row.family_id)
                    audit.add_audit(
                        session,
                        audit.REFRESH,
                        "ok",
                        user_id=row.user_id,
                        handle=user.handle,
                        client=client,
                        family=row.family_id,
                    )
                    return pair
            reused = row
        # Reuse of a rotated token: revoke the family in a transaction of its own so the
        # revocation sticks even though this request fails.
        async with transaction(self._factory) as session:
            await self._revoke_family(session, reused.family_id)
            audit.add_audit(
                session,
                audit.REFRESH_REUSE,
                "revoked",
                user_id=reused.user_id,
                client=client,
                family=reused.family_id,
            )
        self._on_family_revoked(reused.family_id)
        raise AuthFailed()

    async def logout(self, token: str, client: str) -> None:
        token_hash = hash_refresh_token(token)
        async with transaction(self._factory) as session:
            row = (
                await session.exec(
                    select(RefreshSession).where(RefreshSession.token_hash == token_hash)
                )
            ).first()
            if row is None:
                await audit.record(
                    self._factory, audit.LOGOUT, "failure", client=client, reason="unknown_token"
                )
                raise AuthFailed()
            await self._revoke_family(session, row.family_id)
            user = await session.get(User, row.user_id)
            audit.add_audit(
                session,
                audit.LOGOUT,
                "ok",
                user_id=row.user_id,
                handle=user.handle if user is not None else None,
                client=client,
                family=row.family_id,
            )
        self._on_family_revoked(row.family_id)
