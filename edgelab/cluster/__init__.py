"""Clusters: one root node and N-1 workers, with a latency proxy on every root<->worker link.

:class:`edgelab.cluster.base.Cluster` is the contract; ``local`` starts nodes as
processes on this host, ``docker`` as containers. :func:`open_cluster` picks one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgelab.cluster.base import Cluster, ClusterError, NodeFailure
from edgelab.cluster.spec import ClusterSpec

if TYPE_CHECKING:
    from edgelab.engines.base import Engine
    from edgelab.settings import Settings


def open_cluster(
    spec: ClusterSpec,
    work_dir: str,
    model_path: str,
    name: str | None = None,
    engine: Engine | None = None,
    settings: Settings | None = None,
) -> Cluster:
    """A not-yet-started cluster for ``spec`` on the backend it names.

    ``name`` says what the cluster is for (``run12``, ``sweep3-group1``); Docker
    labels its containers with it so leftovers can be traced to their run.
    ``engine`` is the engine set up for the model (``get_engine(name, model)``);
    by default the backend makes a plain ``get_engine(spec.engine)``. ``settings``
    give the Docker backend the server's images (``Settings.root_image`` and
    ``worker_image``: never part of a request's options) and how edgelab reaches
    the engine; default: ``Settings()``.
    """
    from pathlib import Path

    if spec.backend == "local":
        from edgelab.cluster.local import LocalCluster

        splice = settings.netem_splice if settings is not None else True
        return LocalCluster(spec, Path(work_dir), Path(model_path), engine, splice=splice)
    if spec.backend == "docker":
        from edgelab.cluster.docker import DockerCluster

        return DockerCluster(
            spec, Path(work_dir), Path(model_path), run=name, engine=engine, settings=settings
        )
    raise ClusterError(f"unknown backend {spec.backend!r}; known backends: local, docker")


__all__ = ["Cluster", "ClusterError", "ClusterSpec", "NodeFailure", "open_cluster"]
