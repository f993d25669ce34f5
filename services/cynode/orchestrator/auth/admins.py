"""The admin gate of every administrative RPC: the caller must be an administrator;
anyone else gets PERMISSION_DENIED (403), and the refusal is audited like the act."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator import audit
from cynode.orchestrator.errors import Context, abort, client_address

ADMINS_ONLY = "administrators only"


class AdminLike(Protocol):
    @property
    def user_id(self) -> str: ...
    @property
    def handle(self) -> str: ...
    @property
    def is_admin(self) -> bool: ...


# The gateway's Authenticator.authenticate: aborts UNAUTHENTICATED itself; plain or async.
Authenticate = Callable[[Context], "AdminLike | Awaitable[AdminLike]"]


async def require_admin(
    authenticate: Authenticate,
    context: Context,
    factory: async_sessionmaker[AsyncSession],
    action: str,
    **detail: Any,
) -> AdminLike:
    principal = authenticate(context)
    if inspect.isawaitable(principal):
        principal = await principal
    if not principal.is_admin:
        await audit.record(
            factory,
            action,
            "denied",
            user_id=principal.user_id,
            handle=principal.handle,
            client=client_address(context),
            **detail,
        )
        await abort(context, grpc.StatusCode.PERMISSION_DENIED, ADMINS_ONLY)
    return principal
