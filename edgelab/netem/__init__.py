"""User-space network emulation: latency profiles and the per-link delay proxy.

The kernel here has no netem qdisc, so every root<->worker link is a
:class:`LinkProxy` applying a :class:`LatencyProfile`.
"""

from edgelab.netem.profile import (
    ACCEPTED_FORMS,
    DelaySampler,
    LatencyProfile,
    ProfileError,
    parse_bandwidth,
)
from edgelab.netem.proxy import DirectionStats, LinkProxy, LinkStats

__all__ = [
    "ACCEPTED_FORMS",
    "DelaySampler",
    "DirectionStats",
    "LatencyProfile",
    "LinkProxy",
    "LinkStats",
    "ProfileError",
    "parse_bandwidth",
]
