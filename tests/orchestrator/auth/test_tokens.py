"""TokenIssuer: a verified access token is remembered until it expires, so a caller's
every request does not pay for the signature and claims again; expiry and forgery
are still refused."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from cynode.orchestrator.auth.tokens import InvalidToken, TokenIssuer

SECRET = "s" * 32
TTL = timedelta(minutes=15)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token PyJWT is asked to verify."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: object, **kwargs: object) -> object:
        seen.append(token)
        return real(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


def test_a_token_is_verified_once_then_remembered(decodes: list[str]) -> None:
    issuer = TokenIssuer(SECRET, TTL)
    token = issuer.issue_access("u1", "f1")
    first = issuer.decode_access(token)
    again = issuer.decode_access(token)
    assert again == first
    assert first.user_id == "u1" and first.session_family == "f1"
    assert decodes == [token]


def test_a_remembered_token_is_refused_once_it_expires(decodes: list[str]) -> None:
    clock = Clock(0.0)
    issuer = TokenIssuer(SECRET, TTL, clock=clock)
    token = issuer.issue_access("u1", "f1")
    claims = issuer.decode_access(token)
    exp = claims.expires_at.timestamp()
    clock.now = exp - 1
    assert issuer.decode_access(token) == claims
    clock.now = exp
    with pytest.raises(InvalidToken, match="Expired"):
        issuer.decode_access(token)
    # Forgotten, not kept: checked in full again (and refused again).
    with pytest.raises(InvalidToken, match="Expired"):
        issuer.decode_access(token)
    assert decodes == [token, token]


def test_tokens_past_their_expiry_by_the_issuers_clock_are_never_remembered() -> None:
    clock = Clock(0.0)
    issuer = TokenIssuer(SECRET, TTL, clock=clock)
    token = issuer.issue_access("u1", "f1")
    clock.now = 1e12
    with pytest.raises(InvalidToken, match="Expired"):
        issuer.decode_access(token)


def test_a_changed_token_is_verified_not_matched(decodes: list[str]) -> None:
    issuer = TokenIssuer(SECRET, TTL)
    token = issuer.issue_access("u1", "f1")
    issuer.decode_access(token)
    head, body, sig = token.split(".")
    forged = f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    with pytest.raises(InvalidToken):
        issuer.decode_access(forged)
    other = TokenIssuer("t" * 32, TTL)
    with pytest.raises(InvalidToken):
        other.decode_access(token)
    assert decodes == [token, forged, token]


def test_the_memory_is_bounded_least_recently_used_first(decodes: list[str]) -> None:
    issuer = TokenIssuer(SECRET, TTL, cache_size=2)
    a, b, c = (issuer.issue_access(u, "f") for u in ("a", "b", "c"))
    issuer.decode_access(a)
    issuer.decode_access(b)
    issuer.decode_access(a)  # a is used again: b is the oldest now
    issuer.decode_access(c)
    issuer.decode_access(a)
    issuer.decode_access(b)
    assert decodes == [a, b, c, b]
