"""Who is calling: the bearer access token, checked against its signature, its expiry,
its session family (revoked on logout or reuse) and the user (still active)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator.auth.tokens import InvalidToken, TokenIssuer
from cynode.orchestrator.errors import Context, abort, metadata_value
from cynode.orchestrator.store import RefreshSession, User

log = logging.getLogger(__name__)

UNAUTHENTICATED_DETAIL = "missing or invalid access token"


@dataclass(frozen=True)
class Principal:
    user_id: str
    handle: str
    is_admin: bool
    # The user's own limit on inference requests in flight (SPEC §10.4); None: default.
    max_inference_requests: int | None = None


class Authenticator:
    """`authenticate(context)` answers the Principal or aborts UNAUTHENTICATED.

    The session and user check is cached for `cache_ttl` seconds per (user, family):
    a revocation made by this process takes effect at once, one made by another
    replica within `cache_ttl` (1 s: a disabled user's tokens stop working within
    about a second everywhere).

    An answer that is used past half its life is looked up again in the background
    (refresh-ahead), so a caller that keeps calling never waits for the database: a
    miss cost a chat request through the OpenAI door a few milliseconds before its
    first token, on every other request of a client calling about twice a second.
    No answer older than `cache_ttl` is ever used, so the guarantee above holds.
    """

    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        issuer: TokenIssuer,
        *,
        cache_ttl: float = 1.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._issuer = issuer
        self._cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, Principal | None]] = OrderedDict()
        # Background lookups under way, one per key (a reference keeps each task alive).
        self._refreshing: dict[tuple[str, str], asyncio.Task[None]] = {}

    def family_revoked(self, family_id: str) -> None:
        for key in [k for k in self._cache if k[1] == family_id]:
            self._cache[key] = (self._clock(), None)

    def forget(self) -> None:
        self._cache.clear()

    def forget_user(self, user_id: str) -> None:
        """Drops the user's cached checks: a disable or revoke made here applies to
        their next call."""
        for key in [k for k in self._cache if k[0] == user_id]:
            del self._cache[key]

    async def _lookup(self, user_id: str, family_id: str) -> Principal | None:
        async with self._factory() as session:
            user = await session.get(User, user_id)
            if user is None or not user.is_active:
                return None
            total, revoked = (
                await session.exec(
                    select(
                        func.count(col(RefreshSession.id)),
                        func.count(col(RefreshSession.revoked_at)),
                    ).where(
                        RefreshSession.family_id == family_id, RefreshSession.user_id == user_id
                    )
                )
            ).one()
        if total == 0 or revoked:
            return None
        return Principal(
            user_id=user.id,
            handle=user.handle,
            is_admin=user.is_admin,
            max_inference_requests=user.max_inference_requests,
        )

    async def principal_for_token(self, token: str) -> Principal | None:
        try:
            claims = self._issuer.decode_access(token)
        except InvalidToken:
            return None
        key = (claims.user_id, claims.session_family)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._cache_ttl:
            self._cache.move_to_end(key)
            if hit[1] is not None and now - hit[0] >= self._cache_ttl / 2:
                self._refresh_ahead(key, hit)
            return hit[1]
        principal = await self._lookup(*key)
        self._store(key, now, principal)
        return principal

    def _store(self, key: tuple[str, str], at: float, principal: Principal | None) -> None:
        self._cache[key] = (at, principal)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _refresh_ahead(self, key: tuple[str, str], hit: tuple[float, Principal | None]) -> None:
        if key in self._refreshing:
            return
        task = asyncio.get_running_loop().create_task(self._refresh(key, hit))
        self._refreshing[key] = task
        task.add_done_callback(lambda _t: self._refreshing.pop(key, None))

    async def _refresh(self, key: tuple[str, str], hit: tuple[float, Principal | None]) -> None:
        started = self._clock()
        try:
            principal = await self._lookup(*key)
        except Exception as exc:  # the entry expires; the next call looks it up itself
            log.warning("background session check failed: %s", type(exc).__name__)
            return
        # A revocation or forget() made here while the lookup ran wins: store only over
        # the very entry the refresh was started for.
        if self._cache.get(key) is hit:
            self._store(key, started, principal)

    async def authenticate(self, context: Context) -> Principal:
        header = metadata_value(context, "authorization") or ""
        scheme, _, token = header.strip().partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            principal = await self.principal_for_token(token.strip())
        if principal is None:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAIL)
        return principal
