"""A per-process memo of what a sweep's views compute, one entry per sweep.

The sweep page and the analysis API remember their work for a sweep until it
changes: the key is ``(database URL, sweep id, version)``, where the version is one
aggregate query's row that changes whenever anything the view reads does. Only a
sweep's latest version is worth keeping (a running sweep's older ones can never be
asked for again), and the whole memo is bounded, oldest use first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: ``(database URL, sweep id, version...)``.
SweepKey = tuple[Any, ...]


class SweepMemo(Generic[T]):
    """At most ``size`` remembered values, the latest version of each sweep only."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[SweepKey, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: SweepKey) -> T | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: SweepKey, value: T) -> None:
        """Remember ``value``, dropping the sweep's older versions and the least used."""
        with self._lock:
            for older in [k for k in self._entries if k[:2] == key[:2]]:
                del self._entries[older]
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self, sweep_id: int | None = None) -> None:
        """Forget one sweep's entry, or all (tests and benchmarks time cold views)."""
        with self._lock:
            for key in [k for k in self._entries if sweep_id is None or k[1] == sweep_id]:
                del self._entries[key]

    def __iter__(self) -> Iterator[SweepKey]:
        with self._lock:
            return iter(list(self._entries))
