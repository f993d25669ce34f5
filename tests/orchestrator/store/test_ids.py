"""new_id / new_ids: ULID strings that sort in the order they were made."""

from __future__ import annotations

import random
import time

from ulid import ULID

from cynode.orchestrator.store import models
from cynode.orchestrator.store.models import new_id, new_ids


def test_ids_are_ulids_of_now() -> None:
    before = time.time_ns() // 1_000_000
    one = new_id()
    after = time.time_ns() // 1_000_000
    parsed = ULID.from_str(one)
    assert str(parsed) == one and len(one) == 26
    assert before <= parsed.milliseconds <= after


def test_ids_sort_in_the_order_they_were_made() -> None:
    made = [new_id() for _ in range(2000)]
    made += new_ids(500)
    made.append(new_id())
    made += new_ids(1)
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    # A run from new_ids is consecutive: the same millisecond, the randomness + 1.
    run = [int(ULID.from_str(i)) for i in new_ids(3)]
    assert run == [run[0], run[0] + 1, run[0] + 2]
    assert new_ids(0) == []


def test_a_clock_step_back_or_a_full_millisecond_still_sorts() -> None:
    source = models._ULIDS
    saved = source.last
    # The last id is far in the future (a clock that stepped back since) and its random
    # part is at its maximum: the next ones carry into the timestamp and keep sorting.
    future = (time.time_ns() // 1_000_000 + 60_000) << 80 | ((1 << 80) - 1)
    source.last = future
    try:
        after = [int(ULID.from_str(new_id())), int(ULID.from_str(new_ids(2)[1]))]
    finally:
        source.last = saved  # later ids in this process carry today's time again
    assert after == [future + 1, future + 3]
    assert ULID.from_int(after[0]).milliseconds == (future >> 80) + 1


def test_encoding_matches_python_ulid() -> None:
    rng = random.Random(7)
    for value in [0, 1, (1 << 128) - 1, *(rng.getrandbits(128) for _ in range(2000))]:
        assert models._encode(value) == str(ULID.from_int(value))
