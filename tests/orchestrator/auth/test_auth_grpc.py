"""AuthService over a real gRPC socket, on SQLite and Postgres."""

from __future__ import annotations

import grpc
import jwt
import pytest
from sqlmodel import col, select

from cynode.gateway.v1 import auth_pb2
from cynode.orchestrator.auth import create_user, disable_user, set_password
from cynode.orchestrator.store import AuditLog, RefreshSession
from tests.orchestrator.gatewaykit import PASSWORD, Served, bearer, trailers, unique, user_token


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value.code()


async def test_login_whoami_refresh_logout(served: Served) -> None:
    handle, pair = await user_token(served)
    assert pair.token_type == "Bearer" and pair.expires_in == 900
    me = await served.auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(pair.access_token)
    )
    assert me.handle == handle and me.is_active and not me.is_admin and len(me.id) == 26

    new = await served.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.refresh_token))
    assert new.refresh_token != pair.refresh_token
    # Rotation: the old refresh token no longer works ...
    code = await _code(
        served.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.refresh_token))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # ... and its reuse revoked the whole session, the new tokens included.
    code = await _code(
        served.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=new.refresh_token))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code = await _code(
        served.auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=bearer(new.access_token)
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    async with served.gateway.factory() as s:
        actions = list(await s.exec(select(AuditLog.action).where(AuditLog.handle == handle)))
    assert "login" in actions and "refresh" in actions


async def test_logout_revokes_access_and_refresh(served: Served) -> None:
    _, pair = await user_token(served)
    md = bearer(pair.access_token)
    await served.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=md)
    call = served.auth.Logout(auth_pb2.LogoutRequest(refresh_token=pair.refresh_token))
    await call
    assert trailers(await call.trailing_metadata())["x-http-status"] == "204"
    assert (
        await _code(served.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=md))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        await _code(served.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=pair.refresh_token)))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        await _code(served.auth.Logout(auth_pb2.LogoutRequest(refresh_token="nope")))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        await _code(served.auth.Logout(auth_pb2.LogoutRequest()))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        await _code(served.auth.Refresh(auth_pb2.RefreshRequest()))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_same_answer_for_unknown_user_and_wrong_password(served: Served) -> None:
    handle, _ = await user_token(served)
    answers = []
    for req in (
        auth_pb2.LoginRequest(handle=handle, password="wrong password"),
        auth_pb2.LoginRequest(handle=unique("ghost"), password=PASSWORD),
        auth_pb2.LoginRequest(handle="x" * 300, password=PASSWORD),
        auth_pb2.LoginRequest(handle=handle, password="p" * 5000),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await served.auth.Login(req)
        answers.append((err.value.code(), err.value.details()))
    assert len(set(answers)) == 1
    assert answers[0][0] == grpc.StatusCode.UNAUTHENTICATED
    async with served.gateway.factory() as s:
        rows = list(
            await s.exec(
                select(AuditLog).where(AuditLog.handle == handle, AuditLog.outcome == "failure")
            )
        )
    assert rows and rows[0].detail["reason"] == "bad_password"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic abc",
        "Bearer not.a.jwt",
    ],
)
async def test_missing_or_malformed_token_is_unauthenticated(
    served: Served, header: str | None
) -> None:
    md = (("authorization", header),) if header else None
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=md)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "missing or invalid access token"


async def test_tampered_and_foreign_tokens_refused(served: Served) -> None:
    _, pair = await user_token(served)
    claims = jwt.decode(pair.access_token, options={"verify_signature": False})
    forged = jwt.encode(claims, "another-secret-of-enough-length-" + "y" * 8, algorithm="HS256")
    expired = jwt.encode(
        {**claims, "exp": claims["iat"] - 10},
        served.gateway.settings.jwt_secret or "",
        algorithm="HS256",
    )
    not_access = jwt.encode(
        {**claims, "typ": "refresh"}, served.gateway.settings.jwt_secret or "", algorithm="HS256"
    )
    head, body, sig = pair.access_token.split(".")
    flipped = f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    for token in (forged, expired, not_access, flipped):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await served.auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=bearer(token)
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_disabled_user_and_password_change(served: Served) -> None:
    gw = served.gateway
    handle, pair = await user_token(served)
    await set_password(gw.factory, gw.passwords, handle, "a brand new password")
    gw.authenticator.forget()
    assert (
        await _code(
            served.auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=bearer(pair.access_token)
            )
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )
    again = await served.auth.Login(
        auth_pb2.LoginRequest(handle=handle, password="a brand new password")
    )
    await disable_user(gw.factory, handle)
    gw.authenticator.forget()
    assert (
        await _code(
            served.auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=bearer(again.access_token)
            )
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        await _code(
            served.auth.Login(auth_pb2.LoginRequest(handle=handle, password="a brand new password"))
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        await _code(served.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=again.refresh_token)))
        == grpc.StatusCode.UNAUTHENTICATED
    )


async def test_refresh_tokens_are_stored_hashed(served: Served) -> None:
    _, pair = await user_token(served)
    async with served.gateway.factory() as s:
        hashes = list(await s.exec(select(RefreshSession.token_hash)))
    assert pair.refresh_token not in hashes
    assert all(len(h) == 64 for h in hashes)


async def test_admin_flag_and_email(served: Served) -> None:
    gw = served.gateway
    handle = unique("mail")
    await create_user(gw.factory, gw.passwords, handle, PASSWORD, is_admin=True, email="a@b.c")
    pair = await served.auth.Login(auth_pb2.LoginRequest(handle=handle, password=PASSWORD))
    me = await served.auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(pair.access_token)
    )
    assert me.is_admin and me.email == "a@b.c"
    async with gw.factory() as s:
        audit = list(await s.exec(select(AuditLog.action).where(col(AuditLog.handle) == handle)))
    assert "user_create" in audit
