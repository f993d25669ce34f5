"""Access tokens (HS256 JWT, short-lived) and refresh tokens (opaque, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from cynode.orchestrator.store import new_id, utcnow

ALGORITHM = "HS256"
ACCESS_TYPE = "access"
ISSUER = "cynode-orchestrator"
# Access tokens already verified, remembered per issuer (see TokenIssuer.decode_access).
VERIFIED_CACHE_SIZE = 10_000


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
    """Issues access tokens and verifies them.

    A token that verified once is remembered (by its SHA-256, never the token itself)
    until it expires: its signature and claims cannot change, so checking them again
    on every call only cost time (about a quarter of a millisecond per request in the
    OpenAI door's time to first token, docs/openai-door.md). Its expiry is still
    checked on every call, against `clock` (wall time, as PyJWT's own check); whether
    its session and user are still good is the Authenticator's cache, not this one.
    """

    def __init__(
        self,
        secret: str,
        access_ttl: timedelta,
        *,
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the JWT secret needs at least 16 characters")
        self._secret = secret
        self.access_ttl = access_ttl
        self._clock = clock
        self._cache_size = cache_size
        # SHA-256 of a verified token -> (its exp as a timestamp, its claims).
        self._verified: OrderedDict[bytes, tuple[int, AccessClaims]] = OrderedDict()

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
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        hit = self._verified.get(key)
        if hit is not None:
            if hit[0] > self._clock():
                self._verified.move_to_end(key)
                return hit[1]
            del self._verified[key]
            raise InvalidToken("ExpiredSignatureError")
        exp, claims = self._verify(token)
        # PyJWT checked exp against its own clock; this keeps the two checks one rule.
        if exp <= self._clock():
            raise InvalidToken("ExpiredSignatureError")
        self._verified[key] = (exp, claims)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> tuple[int, AccessClaims]:
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
        exp = int(claims["exp"])
        return exp, AccessClaims(
            user_id=sub,
            session_family=sid,
            jti=jti,
            expires_at=datetime.fromtimestamp(exp, tz=utcnow().tzinfo),
        )
