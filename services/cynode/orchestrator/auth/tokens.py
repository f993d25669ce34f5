"""Access tokens (HS256 JWT, short-lived) and refresh tokens (opaque, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from cynode.orchestrator.store import new_id, utcnow

ALGORITHM = "HS256"
ACCESS_TYPE = "access"
ISSUER = "cynode-orchestrator"


class InvalidToken(Exception):
    """The token is missing, malformed, expired, or signed with another key."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    session_family: str
    jti: str
    expires_at: datetime


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenIssuer:
    def __init__(self, secret: str, access_ttl: timedelta) -> None:
        if len(secret) < 16:
            raise ValueError("the JWT secret needs at least 16 characters")
        self._secret = secret
        self.access_ttl = access_ttl

    def issue_access(self, user_id: str, session_family: str, now: datetime | None = None) -> str:
        now = now or utcnow()
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": user_id,
            "sid": session_family,
            "typ": ACCESS_TYPE,
            "jti": new_id(),
            "iat": int(now.timestamp()),
            "exp": int((now + self.access_ttl).timestamp()),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode_access(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "sid", "jti", "typ"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from exc
        if claims.get("typ") != ACCESS_TYPE:
            raise InvalidToken("not an access token")
        sub, sid, jti = claims["sub"], claims["sid"], claims["jti"]
        if not all(isinstance(v, str) and v for v in (sub, sid, jti)):
            raise InvalidToken("malformed claims")
        return AccessClaims(
            user_id=sub,
            session_family=sid,
            jti=jti,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=utcnow().tzinfo),
        )
