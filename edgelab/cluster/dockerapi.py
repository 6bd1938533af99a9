"""Every Docker SDK call edgelab makes, behind one small typed wrapper.

Keeping the SDK in one module means the rest of the backend deals in plain
values (ids, dicts, strings), one place decides how Docker errors read, and one
place guarantees that everything edgelab creates carries its labels:

``edgelab.cluster``  the cluster id (all of a cluster's containers and its network)
``edgelab.run``      the run (or ad-hoc session) the cluster was started for
``edgelab.node``     root, worker1, ... (containers only)
``edgelab.owner``    ``host:pid`` of the process that created the resource
``edgelab.owner_start``  that process's start time, so a recycled pid is not
                     mistaken for a live owner

The labels let :meth:`DockerAPI.reap_orphans` remove leftovers of a process that
died before its ``finally`` ran (SIGKILL, OOM, a crashed Celery worker).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psutil
import requests

LABEL_CLUSTER = "edgelab.cluster"
LABEL_RUN = "edgelab.run"
LABEL_NODE = "edgelab.node"
LABEL_OWNER = "edgelab.owner"
LABEL_OWNER_START = "edgelab.owner_start"


class DockerUnavailable(RuntimeError):
    """No Docker engine answers; the message says where edgelab looked and how to fix it."""


class DockerAPIError(RuntimeError):
    """A Docker call failed; the message names the call and the resource."""


def owner_labels() -> dict[str, str]:
    """Labels naming this process as the owner of what it creates."""
    me = psutil.Process()
    return {
        LABEL_OWNER: f"{socket.gethostname()}:{me.pid}",
        LABEL_OWNER_START: f"{me.create_time():.2f}",
    }


def owner_alive(labels: Mapping[str, str]) -> bool | None:
    """Whether the owner named by ``labels`` still runs; ``None`` if it is on another host.

    A process on another host (or in another container) cannot be checked from
    here, so its resources are left alone rather than guessed dead.
    """
    owner = labels.get(LABEL_OWNER, "")
    host, _, pid_text = owner.rpartition(":")
    if not host or not pid_text.isdigit():
        return False  # labelled by edgelab but without a usable owner: nobody will clean it
    if host != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(pid_text))
        started = proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    recorded = labels.get(LABEL_OWNER_START)
    if recorded is None:
        return True
    try:
        return abs(float(recorded) - started) < 1.0
    except ValueError:
        return True


@dataclass(frozen=True)
class ContainerState:
    status: str  # created | running | exited | dead | ...
    running: bool
    oom_killed: bool
    exit_code: int
    error: str
    pid: int = 0  # the main process as the host sees it (0 when not running)


class DockerAPI:
    """A connection to one Docker engine (``DOCKER_HOST`` or the local socket)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def connect(cls, timeout_s: float = 30.0) -> DockerAPI:
        """Connect and ping, or raise ``DockerUnavailable`` saying why."""
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        try:
            client = docker.from_env(timeout=int(timeout_s))
            client.ping()
        except Exception as exc:  # the SDK raises several unrelated types here
            raise DockerUnavailable(
                f"no Docker engine reachable at {where} ({exc}); start dockerd "
                "(or run .ci/docker-setup.sh) or set DOCKER_HOST"
            ) from exc
        return cls(client)

    def close(self) -> None:
        self._client.close()

    def version(self) -> str:
        return str(self._client.version().get("Version", "unknown"))

    # --- images -----------------------------------------------------------

    def image_id(self, name: str) -> str | None:
        try:
            return str(self._client.images.get(name).id)
        except docker.errors.ImageNotFound:
            return None

    def prune_dangling_images(self) -> int:
        """Remove untagged images that edgelab built (install stages, replaced images).

        Every rebuild leaves the previous image and its install stage behind without a
        tag; only images carrying the ``edgelab.image`` label are touched, and Docker
        keeps any that a container still uses.
        """
        try:
            result = self._client.images.prune(filters={"dangling": True, "label": "edgelab.image"})
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            # A busy engine can take longer than the client's read timeout to prune
            # (seen on a loaded CI host): housekeeping, so the caller only warns.
            raise DockerAPIError(f"pruning old edgelab images failed: {exc}") from exc
        return len(result.get("ImagesDeleted") or [])

    def build_image(
        self,
        path: Path,
        tag: str,
        buildargs: Mapping[str, str],
        labels: Mapping[str, str],
        on_line: Callable[[str], None],
    ) -> str:
        """Build ``tag`` from the directory ``path``, passing each output line to ``on_line``.

        Returns the image id.
        """
        image_id: str | None = None
        try:
            for chunk in self._client.api.build(
                path=str(path),
                tag=tag,
                buildargs=dict(buildargs),
                labels=dict(labels),
                network_mode="host",  # apt inside RUN needs the host's network
                rm=True,
                forcerm=True,
                decode=True,
            ):
                if "error" in chunk:
                    raise DockerAPIError(f"building {tag} failed: {chunk['error'].strip()}")
                text = chunk.get("stream")
                if text:
                    for line in str(text).splitlines():
                        if line.strip():
                            on_line(line)
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
        except docker.errors.APIError as exc:
            raise DockerAPIError(f"building {tag} failed: {exc}") from exc
        return image_id or self.image_id(tag) or ""

    # --- networks ---------------------------------------------------------

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        try:
            net = self._client.networks.create(name, driver="bridge", labels=dict(labels))
        except docker.errors.APIError as exc:
            raise DockerAPIError(f"creating network {name} failed: {exc}") from exc
        return str(net.id)

    def remove_network(self, network_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._client.networks.get(network_id).remove()

    def connect_container(self, network_id: str, container: str) -> None:
        """Attach an existing container (e.g. the edgelab worker itself) to a network."""
        try:
            self._client.networks.get(network_id).connect(container)
        except docker.errors.APIError as exc:
            raise DockerAPIError(f"attaching {container} to {network_id} failed: {exc}") from exc

    def disconnect_container(self, network_id: str, container: str) -> None:
        with contextlib.suppress(docker.errors.APIError):
            self._client.networks.get(network_id).disconnect(container, force=True)

    # --- containers -------------------------------------------------------

    def run_container(
        self,
        *,
        image: str,
        name: str,
        command: list[str],
        network_id: str,
        labels: Mapping[str, str],
        entrypoint: list[str] | None = None,
        nano_cpus: int | None = None,
        mem_limit: str | None = None,
        volumes: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> str:
        """Start a detached container on ``network_id``; ``volumes`` map source -> read-only path.

        Swap is capped at the memory limit so a too-small limit is an OOM kill
        rather than a slow, swapping node.
        """
        kwargs: dict[str, Any] = {}
        if entrypoint is not None:
            kwargs["entrypoint"] = entrypoint
        if nano_cpus is not None:
            kwargs["nano_cpus"] = nano_cpus
        if mem_limit is not None:
            kwargs["mem_limit"] = mem_limit
            kwargs["memswap_limit"] = mem_limit
        # Create and start apart (``containers.run`` does both): when the engine creates
        # the container and then refuses to start it (an entrypoint missing from the
        # image, a device it cannot give), the caller never learns its id, so nobody
        # but this method can remove it.
        try:
            container = self._client.containers.create(
                image,
                command,
                name=name,
                hostname=name,
                detach=True,
                network=network_id,
                labels=dict(labels),
                volumes={src: {"bind": dst, "mode": "ro"} for src, dst in (volumes or {}).items()},
                environment=dict(environment or {}),
                **kwargs,
            )
        except docker.errors.APIError as exc:
            raise DockerAPIError(f"creating container {name} failed: {exc}") from exc
        try:
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            raise DockerAPIError(f"starting container {name} failed: {exc}") from exc
        return str(container.id)

    def _inspect(self, container_id: str) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = self._client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        return attrs

    def state(self, container_id: str) -> ContainerState | None:
        """The container's state, or ``None`` if it no longer exists."""
        attrs = self._inspect(container_id)
        if attrs is None:
            return None
        st = attrs.get("State", {})
        return ContainerState(
            status=str(st.get("Status", "unknown")),
            running=bool(st.get("Running", False)),
            oom_killed=bool(st.get("OOMKilled", False)),
            exit_code=int(st.get("ExitCode", 0)),
            error=str(st.get("Error", "")),
            pid=int(st.get("Pid") or 0),
        )

    def ip_address(self, container_id: str, network_id: str) -> str:
        attrs = self._inspect(container_id)
        if attrs is None:
            raise DockerAPIError(f"container {container_id[:12]} is gone")
        for net in attrs["NetworkSettings"]["Networks"].values():
            if net.get("NetworkID") == network_id and net.get("IPAddress"):
                return str(net["IPAddress"])
        raise DockerAPIError(f"container {container_id[:12]} has no address on {network_id[:12]}")

    def limits(self, container_id: str) -> dict[str, Any]:
        """What the engine enforces (not what was asked): CPU and memory limits, image id."""
        attrs = self._inspect(container_id) or {}
        host = attrs.get("HostConfig", {})
        return {
            "image_id": attrs.get("Image"),
            "nano_cpus": host.get("NanoCpus"),
            "memory_bytes": host.get("Memory") or None,
        }

    def logs(self, container_id: str, lines: int) -> list[str]:
        try:
            raw = self._client.api.logs(container_id, tail=lines, stdout=True, stderr=True)
        except docker.errors.NotFound:
            return []
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return text.splitlines()[-lines:]

    def stats_stream(self, container_id: str) -> Iterator[dict[str, Any]]:
        """Docker's stats stream (about one entry per second) until the container is gone."""
        try:
            yield from self._client.api.stats(container_id, stream=True, decode=True)
        except (docker.errors.NotFound, docker.errors.APIError):
            return

    def kill(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.APIError):
            self._client.api.kill(container_id)

    def remove_container(self, container_id: str) -> None:
        try:
            self._client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise DockerAPIError(
                    f"removing container {container_id[:12]} failed: {exc}"
                ) from exc

    # --- labelled resources -----------------------------------------------

    def labelled(
        self, label: str = LABEL_CLUSTER
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Containers and networks carrying ``label``, as ``{"id", "name", "labels"}``."""
        containers = [
            {"id": c.id, "name": c.name, "labels": c.labels}
            for c in self._client.containers.list(all=True, filters={"label": label})
        ]
        networks = [
            {"id": n.id, "name": n.name, "labels": n.attrs.get("Labels") or {}}
            for n in self._client.networks.list(filters={"label": label})
        ]
        return containers, networks

    def reap_orphans(self) -> list[str]:
        """Remove labelled containers and networks whose owner process is gone; return names."""
        containers, networks = self.labelled()
        removed: list[str] = []
        for c in containers:
            if owner_alive(c["labels"]) is False:
                self.remove_container(c["id"])
                removed.append(c["name"])
        for n in networks:
            if owner_alive(n["labels"]) is False:
                try:
                    self.remove_network(n["id"])
                except docker.errors.APIError:
                    continue  # still has endpoints of a live container; next reap gets it
                removed.append(n["name"])
        return removed


__all__ = [
    "LABEL_CLUSTER",
    "LABEL_NODE",
    "LABEL_OWNER",
    "LABEL_OWNER_START",
    "LABEL_RUN",
    "ContainerState",
    "DockerAPI",
    "DockerAPIError",
    "DockerUnavailable",
    "owner_alive",
    "owner_labels",
]
