"""Heterogeneous clusters: a device per node, a network per link.

* :mod:`edgelab.topology.spec`: :class:`NodeDevice`, :class:`LinkSpec`,
  :class:`Topology` and :func:`resolve_topology`, the one parser of topology input
  (CLI ``--device``/``--link``/``--topology``, API and sweep ``devices``/``links``);
* :mod:`edgelab.topology.presets`: named device presets and topologies in
  ``<models dir>/devices.yaml`` (``edgelab devices ...``);
* :mod:`edgelab.topology.linktrace`: delay-trace CSV files;
* :mod:`edgelab.topology.cgroups`: CPU quotas for local nodes;
* :mod:`edgelab.topology.support`: what backends cannot apply yet (refused).
"""

from __future__ import annotations

from edgelab.topology.spec import (
    LinkSpec,
    NodeDevice,
    Topology,
    TopologyError,
    node_names,
    resolve_topology,
)

__all__ = ["LinkSpec", "NodeDevice", "Topology", "TopologyError", "node_names", "resolve_topology"]
