"""Latency profiles: what a simulated link does to every chunk that crosses it.

A :class:`LatencyProfile` is a small immutable value stored with every run (as
``to_dict()`` JSON plus its compact ``label``), so it must round-trip exactly
and reproduce the same delay sequence from the same seed. The compact syntax is
the one users type on the command line and in the web form::

    20ms                 fixed 20 ms each way
    10ms..50ms           uniform between 10 and 50 ms (the original seed's model)
    20ms~5ms             normal, mean 20 ms, standard deviation 5 ms, truncated at 0
    20ms@100mbit         any of the above plus a bandwidth cap (token bucket)
    20ms/5ms             asymmetric: up (root -> worker) / down (worker -> root)
    10ms..50ms@1gbit/5ms each side of "/" is a full one-direction profile

Delays accept ``us``, ``ms`` and ``s``; a bare ``0`` means no delay. Rates
accept ``bit``, ``kbit``, ``mbit``, ``gbit`` (powers of 1000) or a plain number
of bits per second.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

DelayKind = Literal["fixed", "uniform", "normal"]
DELAY_KINDS: tuple[DelayKind, ...] = ("fixed", "uniform", "normal")
DIRECTIONS: tuple[str, ...] = ("up", "down")

ACCEPTED_FORMS = (
    "accepted latency forms: '20ms' (fixed), '10ms..50ms' (uniform), "
    "'20ms~5ms' (normal mean~stddev, truncated at 0), each optionally followed by "
    "'@RATE' for a bandwidth cap, and 'UP/DOWN' for different up (root->worker) and "
    "down (worker->root) profiles, e.g. '20ms@100mbit/5ms'; units us, ms, s ('0' alone "
    "is allowed); rates like '500kbit', '100mbit', '1gbit' or a number of bits/s"
)

_DELAY_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s)?\s*$", re.IGNORECASE)
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(bit|kbit|mbit|gbit)?\s*$", re.IGNORECASE)
_DELAY_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}


class ProfileError(ValueError):
    """A latency profile or rate that edgelab cannot understand; the message says why."""


def _parse_delay_ms(text: str, whole: str) -> float:
    match = _DELAY_RE.match(text)
    if match is None:
        raise ProfileError(f"cannot parse delay {text.strip()!r} in {whole!r}; {ACCEPTED_FORMS}")
    number, unit = match.groups()
    value = float(number)
    if unit is None and value != 0:
        raise ProfileError(f"delay {text.strip()!r} in {whole!r} needs a unit; {ACCEPTED_FORMS}")
    return value * _DELAY_UNITS_MS[(unit or "ms").lower()]


def parse_bandwidth(text: str) -> int:
    """Bits per second from ``'100mbit'``, ``'1gbit'``, ``'500kbit'`` or ``'2000000'``.

    Byte-based units (``mbps``, ``MB/s``) are rejected rather than guessed,
    because ``tc`` reads ``mbps`` as megabytes and most people read it as megabits.
    """
    match = _RATE_RE.match(text)
    if match is None:
        raise ProfileError(
            f"cannot parse bandwidth {text.strip()!r}; use '500kbit', '100mbit', '1gbit' or "
            "a number of bits per second (byte units such as 'mbps' are ambiguous)"
        )
    number, unit = match.groups()
    bits = round(float(number) * _RATE_UNITS[(unit or "bit").lower()])
    if bits <= 0:
        raise ProfileError(f"bandwidth {text.strip()!r} must be more than 0 bits per second")
    return bits


def format_ms(ms: float) -> str:
    """Shortest decimal text for a delay in ms that parses back to the same value."""
    if ms == int(ms):
        return f"{int(ms)}ms"
    text = repr(ms)
    if "e" in text:  # sub-nanosecond or huge: fall back to fixed notation
        text = f"{ms:.9f}".rstrip("0").rstrip(".")
    return f"{text}ms"


def format_bandwidth(bps: int) -> str:
    """Compact rate text, using the largest unit that represents ``bps`` exactly."""
    for unit, factor in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps % factor == 0:
            return f"{bps // factor}{unit}"
    return f"{bps}bit"


class DelaySampler:
    """An endless, reproducible stream of per-chunk delays in seconds.

    Each (seed, direction, stream) triple gets its own generator so that the up
    and down directions, and different connections on one link, are
    independent yet each reproducible from the profile's seed alone.
    """

    def __init__(self, profile: LatencyProfile, rng: random.Random) -> None:
        self.profile = profile
        self._rng = rng

    def __iter__(self) -> Iterator[float]:
        return self

    def __next__(self) -> float:
        return self.next_delay_s()

    def next_delay_s(self) -> float:
        p = self.profile
        if p.kind == "fixed":
            return p.delay_ms / 1000.0
        if p.kind == "uniform":
            return self._rng.uniform(p.delay_ms, p.max_ms) / 1000.0
        if p.jitter_ms == 0:
            return p.delay_ms / 1000.0
        # Rejection keeps the shape of a truncated normal (clamping would pile
        # probability mass on exactly 0); the mean is >= 0 so at least half the
        # draws are accepted.
        while True:
            value = self._rng.gauss(p.delay_ms, p.jitter_ms)
            if value >= 0:
                return value / 1000.0


@dataclass(frozen=True)
class LatencyProfile:
    """How one link delays and paces traffic, per direction.

    ``delay_ms`` is the fixed delay, the lower bound of a uniform profile or
    the mean of a normal one; ``max_ms`` is the uniform upper bound and
    ``jitter_ms`` the normal standard deviation. ``down`` overrides the
    worker->root direction (it carries no seed and no ``down`` of its own);
    when it is ``None`` both directions behave alike, independently sampled.
    """

    kind: DelayKind = "fixed"
    delay_ms: float = 0.0
    max_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_bps: int | None = None
    down: LatencyProfile | None = field(default=None)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in DELAY_KINDS:
            raise ProfileError(f"unknown latency kind {self.kind!r}; expected one of {DELAY_KINDS}")
        for name in ("delay_ms", "max_ms", "jitter_ms"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ProfileError(f"{name} must be a number of milliseconds, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ProfileError(f"{name} must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.kind == "uniform" and self.max_ms < self.delay_ms:
            raise ProfileError(
                f"uniform latency needs min <= max, got {format_ms(self.delay_ms)}.."
                f"{format_ms(self.max_ms)}"
            )
        if self.kind != "uniform" and self.max_ms != 0:
            raise ProfileError("max_ms only applies to a uniform profile")
        if self.kind != "normal" and self.jitter_ms != 0:
            raise ProfileError("jitter_ms only applies to a normal profile")
        if self.bandwidth_bps is not None and (
            isinstance(self.bandwidth_bps, bool)
            or not isinstance(self.bandwidth_bps, int)
            or self.bandwidth_bps <= 0
        ):
            raise ProfileError(
                f"bandwidth_bps must be a positive integer, got {self.bandwidth_bps!r}"
            )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ProfileError(f"seed must be an integer or None, got {self.seed!r}")
        if self.down is not None:
            if self.down.down is not None or self.down.seed is not None:
                raise ProfileError("the down profile cannot have its own down profile or seed")
            if self.down == self._one_way():
                # One canonical form, so equal links compare and label equal.
                object.__setattr__(self, "down", None)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def fixed(cls, ms: float, **kw: Any) -> LatencyProfile:
        return cls(kind="fixed", delay_ms=ms, **kw)

    @classmethod
    def uniform(cls, min_ms: float, max_ms: float, **kw: Any) -> LatencyProfile:
        return cls(kind="uniform", delay_ms=min_ms, max_ms=max_ms, **kw)

    @classmethod
    def normal(cls, mean_ms: float, jitter_ms: float, **kw: Any) -> LatencyProfile:
        return cls(kind="normal", delay_ms=mean_ms, jitter_ms=jitter_ms, **kw)

    @classmethod
    def parse(
        cls, text: str, bandwidth: str | None = None, seed: int | None = None
    ) -> LatencyProfile:
        """Parse the compact syntax in the module docstring.

        ``bandwidth`` (e.g. from a separate ``--bandwidth`` option) applies to
        both directions, or per direction as ``UP/DOWN``; giving a rate both
        there and with ``@`` in ``text`` is an error rather than a silent pick.
        """
        if not isinstance(text, str) or not text.strip():
            raise ProfileError(f"empty latency profile; {ACCEPTED_FORMS}")
        halves = text.split("/")
        if len(halves) > 2:
            raise ProfileError(f"at most one '/' (UP/DOWN) in {text!r}; {ACCEPTED_FORMS}")
        parts = [cls._parse_one_way(half, text) for half in halves]
        if bandwidth is not None:
            rates = [parse_bandwidth(r) for r in bandwidth.split("/")]
            if len(rates) > 2:
                raise ProfileError(f"at most one '/' (UP/DOWN) in bandwidth {bandwidth!r}")
            if any(p.bandwidth_bps is not None for p in parts):
                raise ProfileError(
                    f"bandwidth given twice: in {text!r} (after '@') and as {bandwidth!r}"
                )
            if len(rates) == 2 and len(parts) == 1:
                parts.append(parts[0])
            if len(rates) == 1:
                rates = rates * len(parts)
            parts = [replace(p, bandwidth_bps=r) for p, r in zip(parts, rates, strict=True)]
        up = parts[0]
        down = parts[1] if len(parts) == 2 else None
        return replace(up, down=down, seed=seed)

    @classmethod
    def _parse_one_way(cls, text: str, whole: str) -> LatencyProfile:
        delay_text, at, rate_text = text.partition("@")
        bandwidth_bps = parse_bandwidth(rate_text) if at else None
        if ".." in delay_text:
            lo, _, hi = delay_text.partition("..")
            lo_ms, hi_ms = _parse_delay_ms(lo, whole), _parse_delay_ms(hi, whole)
            if hi_ms < lo_ms:
                raise ProfileError(f"uniform latency {delay_text.strip()!r} needs min <= max")
            if hi_ms == lo_ms:
                return cls.fixed(lo_ms, bandwidth_bps=bandwidth_bps)
            return cls.uniform(lo_ms, hi_ms, bandwidth_bps=bandwidth_bps)
        if "~" in delay_text:
            mean, _, jitter = delay_text.partition("~")
            mean_ms, jitter_ms = _parse_delay_ms(mean, whole), _parse_delay_ms(jitter, whole)
            if jitter_ms == 0:
                return cls.fixed(mean_ms, bandwidth_bps=bandwidth_bps)
            return cls.normal(mean_ms, jitter_ms, bandwidth_bps=bandwidth_bps)
        return cls.fixed(_parse_delay_ms(delay_text, whole), bandwidth_bps=bandwidth_bps)

    # -- views --------------------------------------------------------------------------------

    def _one_way(self) -> LatencyProfile:
        return replace(self, down=None, seed=None)

    def direction(self, name: str) -> LatencyProfile:
        """The one-way profile of ``"up"`` (root -> worker) or ``"down"`` (worker -> root)."""
        if name not in DIRECTIONS:
            raise ValueError(f"direction must be 'up' or 'down', got {name!r}")
        if name == "down" and self.down is not None:
            return self.down
        return self._one_way()

    @property
    def is_passthrough(self) -> bool:
        """True when neither direction delays or paces anything (the proxy's fast path)."""
        return all(
            self.direction(d).kind == "fixed"
            and self.direction(d).delay_ms == 0
            and self.direction(d).bandwidth_bps is None
            for d in DIRECTIONS
        )

    @property
    def label(self) -> str:
        """Compact text that :meth:`parse` turns back into this profile (seed aside)."""
        up = self._one_way_label()
        if self.down is None:
            return up
        return f"{up}/{self.down._one_way_label()}"

    def _one_way_label(self) -> str:
        if self.kind == "uniform":
            text = f"{format_ms(self.delay_ms)}..{format_ms(self.max_ms)}"
        elif self.kind == "normal":
            text = f"{format_ms(self.delay_ms)}~{format_ms(self.jitter_ms)}"
        else:
            text = format_ms(self.delay_ms)
        if self.bandwidth_bps is not None:
            text += f"@{format_bandwidth(self.bandwidth_bps)}"
        return text

    def __str__(self) -> str:
        return self.label

    def sampler(self, direction: str, stream: int = 0) -> DelaySampler:
        """Delays for one direction of one connection (``stream``: its index on the link).

        The same seed, direction and stream always give the same sequence; with
        ``seed=None`` the sequence comes from OS entropy.
        """
        one_way = self.direction(direction)
        rng = (
            random.Random()
            if self.seed is None
            else random.Random(f"edgelab-netem:{self.seed}:{direction}:{stream}")
        )
        return DelaySampler(one_way, rng)

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form stored in ``Run.latency``."""
        return {
            "kind": self.kind,
            "delay_ms": self.delay_ms,
            "max_ms": self.max_ms,
            "jitter_ms": self.jitter_ms,
            "bandwidth_bps": self.bandwidth_bps,
            "down": None if self.down is None else self.down.to_dict(),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyProfile:
        if not isinstance(data, dict):
            raise ProfileError(f"a latency profile dict is expected, got {type(data).__name__}")
        known = {"kind", "delay_ms", "max_ms", "jitter_ms", "bandwidth_bps", "down", "seed"}
        unknown = set(data) - known
        if unknown:
            raise ProfileError(f"unknown latency profile keys: {sorted(unknown)}")
        down = data.get("down")
        return cls(
            kind=cast(DelayKind, data.get("kind", "fixed")),
            delay_ms=data.get("delay_ms", 0.0),
            max_ms=data.get("max_ms", 0.0),
            jitter_ms=data.get("jitter_ms", 0.0),
            bandwidth_bps=data.get("bandwidth_bps"),
            down=None if down is None else cls.from_dict(down),
            seed=data.get("seed"),
        )
