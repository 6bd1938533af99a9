"""When each chunk may leave the proxy: propagation delay, pacing and precise waits.

Kept free of sockets so ordering and pacing can be unit-tested with made-up
clocks. All times are ``time.perf_counter()`` seconds (CLOCK_MONOTONIC on Linux,
so they are comparable across processes on one machine).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time

# A thread blocked in sleep/cond-wait wakes ~50-100 us late on Linux (timer slack
# plus scheduling); the last stretch before a deadline is therefore spun with
# sleep(0), which yields the GIL on each turn so other proxy threads keep running.
SPIN_S = 0.0004
# Longer waits go through an Event so close() can interrupt them.
COARSE_S = 0.002


class TokenBucket:
    """Paces one direction of a link to ``rate_bps`` with a ``burst_bits`` allowance.

    Shared by every connection of the link (they share its bandwidth); callers
    hold no lock, the bucket has its own. ``reserve`` returns when the last bit
    of a chunk has been "sent", i.e. when its propagation delay starts.
    """

    def __init__(self, rate_bps: int, burst_bits: int = 0) -> None:
        if rate_bps <= 0:
            raise ValueError(f"rate_bps must be positive, got {rate_bps}")
        self.rate_bps = rate_bps
        self.burst_s = max(0, burst_bits) / rate_bps
        self._virtual = float("-inf")  # when the wire is next free
        self._lock = threading.Lock()

    def reserve(self, nbytes: int, now: float, rate_bps: int | None = None) -> float:
        """``rate_bps`` overrides the rate for this chunk (a trace's bandwidth now)."""
        with self._lock:
            start = max(self._virtual, now - self.burst_s)
            self._virtual = start + nbytes * 8 / (rate_bps or self.rate_bps)
            return max(self._virtual, now)


class ReleaseSchedule:
    """Release times for one direction of one connection, never out of order.

    A chunk is due at ``arrival + delay`` (after pacing, if any) but never before
    the chunk ahead of it: a TCP stream behind a jittery link is delayed, not
    reordered.
    """

    def __init__(self) -> None:
        self.last_release = float("-inf")

    def release_at(self, ready: float, delay_s: float) -> float:
        due = max(ready + delay_s, self.last_release)
        self.last_release = due
        return due


def sleep_until(deadline: float, cancelled: threading.Event) -> bool:
    """Wait until ``perf_counter() >= deadline``; False if ``cancelled`` was set first."""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return not cancelled.is_set()
        if cancelled.is_set():
            return False
        if remaining > COARSE_S:
            cancelled.wait(remaining - COARSE_S)
        elif remaining > SPIN_S:
            time.sleep(remaining - SPIN_S)
        else:
            time.sleep(0)


_PR_SET_TIMERSLACK = 29


def tighten_timer_slack() -> None:
    """Ask Linux to wake this thread within ~1 us of its timers instead of 50 us.

    Only affects the calling thread; harmless no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
