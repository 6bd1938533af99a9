"""Per-node resource sampling during generation.

A :class:`NodeSampler` thread reads every node's :class:`SampleSource` about every
200 ms and stamps each reading with its offset from the generation start, on the
same monotonic clock as the token timeline, so CPU and memory charts line up with
tokens. Sources are backend-specific (a local process via psutil, a container via
Docker stats) but produce the same :class:`Sample`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from edgelab.metrics.host import HostMonitor


@dataclass(frozen=True)
class Reading:
    cpu_percent: float
    rss_bytes: int
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None


@dataclass(frozen=True)
class Sample:
    node: str
    role: str
    offset_ms: float
    cpu_percent: float
    rss_bytes: int
    net_rx_bytes: int | None
    net_tx_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SampleSource(ABC):
    """Where one node's resource usage is read from."""

    def __init__(self, name: str, role: str) -> None:
        self.name = name
        self.role = role

    @abstractmethod
    def read(self) -> Reading | None:
        """A reading, or ``None`` if the node is gone (the sampler skips it)."""


class ProcessSource(SampleSource):
    """A local node process (and its children) read through psutil.

    CPU % is over the interval since the previous read, as ``top`` shows it (100 =
    one core busy). Network bytes are not attributable per process on Linux
    without privileges; the link proxies count them instead.
    """

    def __init__(self, name: str, role: str, pid: int) -> None:
        super().__init__(name, role)
        self._proc = psutil.Process(pid)
        self._proc.cpu_percent(None)  # prime: the first call always returns 0.0

    def read(self) -> Reading | None:
        try:
            with self._proc.oneshot():
                return Reading(
                    cpu_percent=self._proc.cpu_percent(None),
                    rss_bytes=self._proc.memory_info().rss,
                )
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return None


class NodeSampler:
    """Samples sources on a background thread between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        sources: list[SampleSource],
        interval_s: float = 0.2,
        host: HostMonitor | None = None,
    ) -> None:
        """``host`` is read over the same window: what else used the host meanwhile."""
        self.sources = sources
        self.host = host
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self, t0: float | None = None) -> None:
        """Begin sampling; offsets are measured from ``t0`` (``time.monotonic()``)."""
        self._t0 = time.monotonic() if t0 is None else t0
        if self.host is not None:
            self.host.start()
        for source in self.sources:
            source.read()  # reset each source's CPU interval to "now"
        self._thread = threading.Thread(target=self._loop, name="node-sampler", daemon=True)
        self._thread.start()

    def _sample_once(self) -> None:
        if self.host is not None:
            self.host.sample()
        for source in self.sources:
            reading = source.read()
            if reading is None:
                continue
            self.samples.append(
                Sample(
                    node=source.name,
                    role=source.role,
                    offset_ms=(time.monotonic() - self._t0) * 1000,
                    cpu_percent=reading.cpu_percent,
                    rss_bytes=reading.rss_bytes,
                    net_rx_bytes=reading.net_rx_bytes,
                    net_tx_bytes=reading.net_tx_bytes,
                )
            )

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self._sample_once()
            next_at += self.interval_s

    def stop(self) -> list[Sample]:
        """Stop, take one final sample (so short runs still have one), return all samples."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample_once()
            if self.host is not None:
                self.host.stop()
        return self.samples
