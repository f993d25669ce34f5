"""The Authenticator's session cache: refresh-ahead keeps a steady caller off the
database without ever using an answer older than `cache_ttl` (real database)."""

from __future__ import annotations

import asyncio

from cynode.orchestrator.auth import Authenticator, disable_user
from tests.orchestrator.gatewaykit import Served, user_token

TTL = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fresh(served: Served, clock: Clock) -> Authenticator:
    gw = served.gateway
    return Authenticator(gw.factory, gw.authenticator._issuer, cache_ttl=TTL, clock=clock)


async def _settled(auth: Authenticator) -> None:
    while auth._refreshing:
        await asyncio.gather(*auth._refreshing.values())


async def test_an_answer_past_half_its_life_is_checked_again_in_the_background(
    served: Served,
) -> None:
    handle, pair = await user_token(served)
    clock = Clock()
    auth = _fresh(served, clock)
    who = await auth.principal_for_token(pair.access_token)
    assert who is not None and who.handle == handle
    # Disabled elsewhere (another replica): this process is not told.
    await disable_user(served.gateway.factory, handle)
    clock.now += TTL * 0.4
    assert await auth.principal_for_token(pair.access_token) == who  # young: no check
    assert not auth._refreshing
    clock.now += TTL * 0.2
    # Past half its life: still answered from the cache at once, and checked again.
    assert await auth.principal_for_token(pair.access_token) == who
    assert auth._refreshing
    await _settled(auth)
    # The check saw the disabled user: refused now, well before the first answer expired.
    assert await auth.principal_for_token(pair.access_token) is None


async def test_a_steady_caller_is_answered_from_the_cache_past_the_ttl(served: Served) -> None:
    _, pair = await user_token(served)
    clock = Clock()
    auth = _fresh(served, clock)
    first = await auth.principal_for_token(pair.access_token)
    key = next(iter(auth._cache))
    for _ in range(6):
        clock.now += TTL * 0.6
        assert await auth.principal_for_token(pair.access_token) == first
        await _settled(auth)
        # Refreshed as of when its lookup began: never older than the TTL when used.
        assert clock.now - auth._cache[key][0] < TTL


async def test_a_revocation_made_during_a_refresh_wins(served: Served) -> None:
    _, pair = await user_token(served)
    clock = Clock()
    auth = _fresh(served, clock)
    assert await auth.principal_for_token(pair.access_token) is not None
    clock.now += TTL * 0.7
    assert await auth.principal_for_token(pair.access_token) is not None
    assert auth._refreshing
    key = next(iter(auth._cache))
    auth.family_revoked(key[1])  # logout here while the lookup is under way
    await _settled(auth)
    assert await auth.principal_for_token(pair.access_token) is None
    # forget_user during a refresh: the refreshed answer is not put back either.
    _, other = await user_token(served)
    assert await auth.principal_for_token(other.access_token) is not None
    clock.now += TTL * 0.7
    assert await auth.principal_for_token(other.access_token) is not None
    user_id = next(k for k in auth._cache if k != key)[0]
    auth.forget_user(user_id)
    await _settled(auth)
    assert all(k[0] != user_id for k in auth._cache)
