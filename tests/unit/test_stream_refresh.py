"""How often a live stream refreshes its slot (edgelab/service/streams.py ``every``, ``sse``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edgelab.service.streams import every, sse


def test_every_calls_at_most_once_per_interval() -> None:
    now = [100.0]
    calls: list[float] = []
    tick = every(20.0, lambda: calls.append(now[0]), clock=lambda: now[0])
    for t in (100.0, 110.0, 119.9, 120.0, 125.0, 139.0, 141.0, 200.0):
        now[0] = t
        tick()
    assert calls == [120.0, 141.0, 200.0]


def test_sse_calls_on_event_for_every_event_and_ping() -> None:
    seen: list[int] = []

    def events() -> Iterator[dict[str, Any]]:
        yield {"type": "ping"}
        yield {"type": "token", "index": 0}
        yield {"type": "ping"}

    chunks = list(sse(events(), on_event=lambda: seen.append(len(seen))))
    assert seen == [0, 1, 2]
    assert chunks[0] == "retry: 2000\n\n"
    assert len(chunks) == 4
