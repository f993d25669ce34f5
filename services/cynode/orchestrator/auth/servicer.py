"""cynode.gateway.v1.AuthService."""

from __future__ import annotations

import grpc

from cynode.gateway.v1 import auth_pb2, auth_pb2_grpc, users_pb2
from cynode.orchestrator.auth.authenticator import Authenticator
from cynode.orchestrator.auth.sessions import AuthFailed, LoginThrottled, SessionManager
from cynode.orchestrator.errors import (
    RETRY_AFTER_KEY,
    Context,
    abort,
    client_address,
    set_http_status,
)
from cynode.orchestrator.quotas import QuotaDefaults, limits_of, usage
from cynode.orchestrator.store import User

BAD_CREDENTIALS = "invalid handle or password"
BAD_REFRESH = "invalid or expired refresh token"


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        sessions: SessionManager,
        authenticator: Authenticator,
        quotas: QuotaDefaults | None = None,
    ) -> None:
        self._sessions = sessions
        self._authenticator = authenticator
        self._quotas = quotas or QuotaDefaults()

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        try:
            pair = await self._sessions.login(
                request.handle, request.password, client_address(context)
            )
        except LoginThrottled as exc:
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many failed logins; try again later",
                http_status=429,
                trailing=((RETRY_AFTER_KEY, str(exc.retry_after)),),
            )
        except AuthFailed:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, BAD_CREDENTIALS)
        return auth_pb2.LoginResponse(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=pair.token_type,
            expires_in=pair.expires_in,
        )

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: Context
    ) -> auth_pb2.RefreshResponse:
        if not request.refresh_token:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "refresh_token is required")
        try:
            pair = await self._sessions.refresh(request.refresh_token, client_address(context))
        except AuthFailed:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, BAD_REFRESH)
        return auth_pb2.RefreshResponse(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=pair.token_type,
            expires_in=pair.expires_in,
        )

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        if not request.refresh_token:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "refresh_token is required")
        try:
            await self._sessions.logout(request.refresh_token, client_address(context))
        except AuthFailed:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, BAD_REFRESH)
        set_http_status(context, 204)
        return auth_pb2.LogoutResponse()

    async def GetCurrentUser(
        self, request: auth_pb2.GetCurrentUserRequest, context: Context
    ) -> auth_pb2.GetCurrentUserResponse:
        principal = await self._authenticator.authenticate(context)
        async with self._sessions.factory() as session:
            user = await session.get(User, principal.user_id)
            used = await usage(await session.connection(), principal.user_id)
        if user is None:  # deleted between the check and now
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid access token")
        limits = limits_of(
            self._quotas,
            user.max_queued_tasks,
            user.max_running_jobs,
            user.max_task_timeout_seconds,
            user.max_inference_requests,
        )
        return auth_pb2.GetCurrentUserResponse(
            id=user.id,
            handle=user.handle,
            email=user.email,
            is_active=user.is_active,
            is_admin=user.is_admin,
            weight=user.weight,
            limits=users_pb2.UserLimits(**limits._asdict()),
            usage=users_pb2.UserUsage(**used._asdict()),
        )
