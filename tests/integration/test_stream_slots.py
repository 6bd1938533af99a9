"""The server-wide stream cap's bookkeeping on a real Redis (edgelab/service/streams.py).

What the two-worker test in test_live_api.py cannot show in seconds: the slots of a
worker that died with its streams open (nobody releases them) free themselves once
their TTL has passed, while a stream that refreshes keeps its slot. A TTL of 1 s
stands in for the 60 s of ``SLOT_TTL_S``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from edgelab.service.streams import StreamSlots

pytestmark = pytest.mark.integration


@pytest.fixture
def client(test_redis: Any) -> Iterator[str]:
    """A client address of this test only; its key is removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    test_redis.delete(StreamSlots.key(name))


def test_the_cap_is_exact_and_a_release_frees_one_slot(test_redis: Any, client: str) -> None:
    slots = StreamSlots(test_redis)
    taken = [slots.acquire(client, 3) for _ in range(3)]
    assert None not in taken
    assert len(set(taken)) == 3
    assert slots.acquire(client, 3) is None
    assert slots.count(client) == 3
    slots.release(client, str(taken[0]))
    assert slots.count(client) == 2
    assert slots.acquire(client, 3) is not None
    assert slots.acquire(client, 3) is None
    assert slots.acquire("another-" + client, 3) is not None  # per client
    test_redis.delete(StreamSlots.key("another-" + client))


def test_a_dead_workers_slots_expire_and_a_live_stream_keeps_its_own(
    test_redis: Any, client: str
) -> None:
    slots = StreamSlots(test_redis, ttl_s=1.0)
    live = slots.acquire(client, 2)
    dead = slots.acquire(client, 2)  # its worker is "killed": never refreshed or released
    assert live is not None
    assert dead is not None
    assert slots.acquire(client, 2) is None
    for _ in range(4):  # 1.2 s, refreshing the live one every 0.3 s
        time.sleep(0.3)
        slots.refresh(client, live)
    assert slots.count(client) == 1
    assert slots.acquire(client, 2) is not None  # the dead one's slot is free again
    assert slots.acquire(client, 2) is None
    # The client's key itself goes away once all of its slots have expired.
    assert 0 < test_redis.pttl(StreamSlots.key(client)) <= 1000


def test_a_refresh_does_not_bring_back_a_released_slot(test_redis: Any, client: str) -> None:
    slots = StreamSlots(test_redis)
    slot = slots.acquire(client, 1)
    assert slot is not None
    slots.release(client, slot)
    slots.refresh(client, slot)  # a late ping after the close
    assert slots.count(client) == 0
