"""The admin gate of every administrative RPC: the caller must be an administrator;
anyone else gets PERMISSION_DENIED (403), and the refusal is audited like the act."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator import audit
from cynode.orchestrator.errors import Context, abort, client_address

ADMINS_ONLY = "administrators only"


class AdminLike(Protocol):
    """The gateway's Principal, or anything with `is_admin` (and, for the audit row,
    `user_id` and `handle` where it has them)."""

    @property
    def is_admin(self) -> bool: ...


P = TypeVar("P", bound=AdminLike)

# The gateway's Authenticator.authenticate: aborts UNAUTHENTICATED itself; plain or async.
Authenticate = Callable[[Context], "AdminLike | Awaitable[AdminLike]"]


async def require_admin(
    authenticate: Callable[[Context], P | Awaitable[P]],
    context: Context,
    factory: async_sessionmaker[AsyncSession],
    action: str,
    **detail: Any,
) -> P:
    principal = authenticate(context)
    if inspect.isawaitable(principal):
        principal = await principal
    if not principal.is_admin:
        await audit.record(
            factory,
            action,
            "denied",
            user_id=getattr(principal, "user_id", None),
            handle=getattr(principal, "handle", None),
            client=client_address(context),
            **detail,
        )
        await abort(context, grpc.StatusCode.PERMISSION_DENIED, ADMINS_ONLY)
    return principal
