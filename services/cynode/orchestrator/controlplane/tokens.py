"""Node JWTs: HS256, `typ: node`, `sub` = node id.

The `typ` claim keeps node and user tokens apart even when both are signed with the
same secret: a node token is refused where a user token is expected and vice versa.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt

NODE_TOKEN_TYPE = "node"
ISSUER = "cynode-orchestrator"


class InvalidNodeToken(Exception):
    """Deliberately carries no detail: the reason could help an attacker."""


@dataclass(frozen=True)
class NodeClaims:
    node_id: str
    slug: str
    expires_at: datetime


def issue_node_token(
    secret: str, node_id: str, slug: str, ttl_seconds: int, now: datetime | None = None
) -> tuple[str, datetime]:
    issued = now or datetime.now(UTC)
    expires = issued + timedelta(seconds=ttl_seconds)
    claims = {
        "sub": node_id,
        "slug": slug,
        "typ": NODE_TOKEN_TYPE,
        "iss": ISSUER,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
    }
    return jwt.encode(claims, secret, algorithm="HS256"), expires.replace(microsecond=0)


def verify_node_token(secret: str, token: str) -> NodeClaims:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "typ"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidNodeToken() from exc
    if claims.get("typ") != NODE_TOKEN_TYPE or not isinstance(claims.get("sub"), str):
        raise InvalidNodeToken()
    return NodeClaims(
        node_id=claims["sub"],
        slug=str(claims.get("slug", "")),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


async def require_node(context: grpc.aio.ServicerContext[Any, Any], secret: str) -> NodeClaims:
    """The caller's node claims, or the call ends with UNAUTHENTICATED."""
    token = bearer_token(context.invocation_metadata())
    if token is None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "node token required")
    try:
        return verify_node_token(secret, token)
    except InvalidNodeToken:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid node token")
