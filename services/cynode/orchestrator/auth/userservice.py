"""cynode.gateway.v1.UserService: local accounts over the gateway, administrators only.
Every write goes through `auth.users` (the one home of user writes, shared with the
operator's shell) and is audited there; refusals and failures are audited here."""

from __future__ import annotations

import base64
import binascii
import json

import grpc
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.gateway.v1 import users_pb2, users_pb2_grpc
from cynode.orchestrator import audit
from cynode.orchestrator.auth.admins import require_admin
from cynode.orchestrator.auth.authenticator import Authenticator
from cynode.orchestrator.auth.passwords import Passwords
from cynode.orchestrator.auth.users import (
    QUOTA_FIELDS,
    Actor,
    UnknownUser,
    UserError,
    UserExists,
    create_user,
    disable_user,
    enable_user,
    list_users,
    lookup_user,
    revoke_sessions,
    set_password,
    update_user,
)
from cynode.orchestrator.errors import Context, abort, client_address, set_http_status
from cynode.orchestrator.quotas import QuotaDefaults, limits_of, usage
from cynode.orchestrator.store import User

DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 500
BAD_CURSOR = "cursor is not one this server handed out"


def _cursor(last_id: str) -> str:
    raw = json.dumps({"v": 1, "after": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> str | None:
    if not cursor:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        data = None
    after = data.get("after") if isinstance(data, dict) and data.get("v") == 1 else None
    if not isinstance(after, str) or len(after) != 26 or not after.isalnum():
        raise UserError(BAD_CURSOR)
    return after


class UserServicer(users_pb2_grpc.UserServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        authenticator: Authenticator,
        quotas: QuotaDefaults,
    ) -> None:
        self._factory = factory
        self._passwords = passwords
        self._authenticator = authenticator
        self._authenticate = authenticator.authenticate
        self._quotas = quotas

    async def _admin(self, context: Context, action: str, target: str = "") -> Actor:
        detail = {"target": target} if target else {}
        who = await require_admin(self._authenticate, context, self._factory, action, **detail)
        return Actor(who.user_id, who.handle, client_address(context))

    async def _failed(
        self, context: Context, actor: Actor, action: str, target: str, exc: UserError
    ) -> None:
        """Audits a refused act and aborts with the status its cause maps to."""
        await audit.record(
            self._factory,
            action,
            "failure",
            user_id=actor.user_id,
            handle=actor.handle,
            client=actor.client,
            target=target,
            reason=str(exc),
        )
        if isinstance(exc, UnknownUser):
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        if isinstance(exc, UserExists):
            await abort(context, grpc.StatusCode.ALREADY_EXISTS, str(exc))
        await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _view(self, user: User) -> users_pb2.User:
        async with self._factory() as session:
            used = await usage(await session.connection(), user.id)
        msg = users_pb2.User(
            id=user.id,
            handle=user.handle,
            email=user.email,
            is_active=user.is_active,
            is_admin=user.is_admin,
            weight=user.weight,
            limits=users_pb2.UserLimits(
                **limits_of(
                    self._quotas,
                    user.max_queued_tasks,
                    user.max_running_jobs,
                    user.max_task_timeout_seconds,
                    user.max_inference_requests,
                )._asdict()
            ),
            usage=users_pb2.UserUsage(**used._asdict()),
        )
        msg.quotas.SetInParent()  # shown as {} when the user has no own values
        for name in QUOTA_FIELDS:
            own = getattr(user, name)
            if own is not None:
                setattr(msg.quotas, name, own)
        msg.created_at.FromDatetime(user.created_at)
        return msg

    async def CreateUser(
        self, request: users_pb2.CreateUserRequest, context: Context
    ) -> users_pb2.User:
        actor = await self._admin(context, audit.USER_CREATE, request.handle)
        try:
            user = await create_user(
                self._factory,
                self._passwords,
                request.handle,
                request.password,
                is_admin=request.is_admin,
                email=request.email if request.HasField("email") else None,
                actor=actor,
            )
        except UserError as exc:
            await self._failed(context, actor, audit.USER_CREATE, request.handle, exc)
            raise
        set_http_status(context, 201)
        return await self._view(user)

    async def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: Context
    ) -> users_pb2.ListUsersResponse:
        await self._admin(context, audit.USER_LIST)
        if request.limit < 0:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "limit must not be negative")
        limit = min(request.limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        try:
            after = _after(request.cursor)
        except UserError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        users, more = await list_users(self._factory, limit, after)
        return users_pb2.ListUsersResponse(
            users=[await self._view(u) for u in users],
            next_cursor=_cursor(users[-1].id) if more and users else "",
        )

    async def GetUser(self, request: users_pb2.GetUserRequest, context: Context) -> users_pb2.User:
        await self._admin(context, audit.USER_GET, request.user_id)
        try:
            user = await lookup_user(self._factory, request.user_id)
        except UnknownUser as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        return await self._view(user)

    async def UpdateUser(
        self, request: users_pb2.UpdateUserRequest, context: Context
    ) -> users_pb2.User:
        actor = await self._admin(context, audit.USER_UPDATE, request.user_id)
        quotas = {
            name: getattr(request.quotas, name)
            for name in QUOTA_FIELDS
            if request.quotas.HasField(name)
        }
        try:
            user = await update_user(
                self._factory,
                request.user_id,
                weight=request.weight if request.HasField("weight") else None,
                quotas=quotas,
                actor=actor,
            )
        except UserError as exc:
            await self._failed(context, actor, audit.USER_UPDATE, request.user_id, exc)
            raise
        return await self._view(user)

    async def DisableUser(
        self, request: users_pb2.DisableUserRequest, context: Context
    ) -> users_pb2.DisableUserResponse:
        actor = await self._admin(context, audit.USER_DISABLE, request.user_id)
        try:
            user = await disable_user(self._factory, request.user_id, actor=actor)
        except UserError as exc:
            await self._failed(context, actor, audit.USER_DISABLE, request.user_id, exc)
            raise
        self._authenticator.forget_user(user.id)
        return users_pb2.DisableUserResponse(user_id=user.id, disabled=True)

    async def EnableUser(
        self, request: users_pb2.EnableUserRequest, context: Context
    ) -> users_pb2.EnableUserResponse:
        actor = await self._admin(context, audit.USER_ENABLE, request.user_id)
        try:
            user = await enable_user(self._factory, request.user_id, actor=actor)
        except UserError as exc:
            await self._failed(context, actor, audit.USER_ENABLE, request.user_id, exc)
            raise
        return users_pb2.EnableUserResponse(user_id=user.id, enabled=True)

    async def ResetPassword(
        self, request: users_pb2.ResetPasswordRequest, context: Context
    ) -> users_pb2.ResetPasswordResponse:
        actor = await self._admin(context, audit.USER_PASSWORD, request.user_id)
        try:
            user = await set_password(
                self._factory, self._passwords, request.user_id, request.password, actor=actor
            )
        except UserError as exc:
            await self._failed(context, actor, audit.USER_PASSWORD, request.user_id, exc)
            raise
        self._authenticator.forget_user(user.id)
        return users_pb2.ResetPasswordResponse(user_id=user.id, password_reset=True)

    async def RevokeSessions(
        self, request: users_pb2.RevokeSessionsRequest, context: Context
    ) -> users_pb2.RevokeSessionsResponse:
        actor = await self._admin(context, audit.USER_REVOKE_SESSIONS, request.user_id)
        try:
            user, revoked = await revoke_sessions(self._factory, request.user_id, actor=actor)
        except UserError as exc:
            await self._failed(context, actor, audit.USER_REVOKE_SESSIONS, request.user_id, exc)
            raise
        self._authenticator.forget_user(user.id)
        return users_pb2.RevokeSessionsResponse(user_id=user.id, revoked=revoked)
