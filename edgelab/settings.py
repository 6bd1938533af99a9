"""The one settings object of edgelab, read from ``EDGELAB_*`` environment variables.

Every process (CLI, web app, Celery worker, node processes) builds its settings
here, so a value means the same thing everywhere. Defaults are safe for a laptop:
SQLite under ``./var``, an embedded Redis-compatible server, the local backend,
and a web bind on loopback only.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

Backend = Literal["local", "docker"]
BACKENDS: tuple[Backend, ...] = ("local", "docker")
KeepWorkDirs = Literal["on-failure", "always", "never"]
KEEP_WORK_DIRS: tuple[KeepWorkDirs, ...] = ("on-failure", "always", "never")


LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
_HOST_NAME = re.compile(r"\*|[a-z0-9]([a-z0-9.:-]{0,252}[a-z0-9])?", re.ASCII)


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the variable."""


def default_allowed_hosts(bind: str) -> tuple[str, ...]:
    """The loopback names, plus the bind host unless it is a wildcard (0.0.0.0, ::)."""
    host = bind.rsplit(":", 1)[0].strip("[]").lower()
    if host and host not in ("0.0.0.0", "::") and host not in LOOPBACK_NAMES:
        return (*LOOPBACK_NAMES, host)
    return LOOPBACK_NAMES


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")
    database_url: str = ""
    # Empty means "start the embedded server" (``edgelab up``); anything else is used as is.
    redis_url: str = ""
    models_dir: Path = Path("var/models")
    backend: Backend = "local"
    bind: str = "127.0.0.1:8080"
    api_token: str = ""
    dllama_bin: str = ""
    # distributed-llama's API server for warm dllama roots; empty: beside dllama_bin.
    dllama_api_bin: str = ""
    max_sweep_cells: int = 1000
    # Watchdogs (seconds): a generation or a cluster start that shows no progress
    # (no token, no byte over any link, no node using CPU) for this long fails,
    # naming the node that went silent, instead of holding the worker until the
    # task's time limit. Long enough for a slow but working cluster: any link
    # traffic or node CPU counts as progress.
    stall_timeout_s: float = 60.0
    start_stall_timeout_s: float = 60.0
    # Cluster work dirs (node logs, see edgelab/cluster/workdirs.py): removed with
    # the cluster unless it failed; failed ones kept this long / up to this size.
    keep_work_dirs: KeepWorkDirs = "on-failure"
    work_dir_keep_hours: float = 72.0
    work_dir_keep_mb: float = 200.0
    #: Queue fault tolerance (seconds, see edgelab/tasks/locks.py and reconcile.py): how
    #: long the host lock and run leases of a dead worker outlive it (renewed every
    #: third of it while the worker lives), how often each worker's reconciler looks for
    #: lost or abandoned runs, and how long lock calls retry through a broker outage.
    lock_ttl_s: float = 30.0
    reconcile_s: float = 5.0
    broker_retry_s: float = 300.0
    #: Queue time budgets (seconds, see edgelab/tasks/celery_app.py ``QueueOptions``): the
    #: soft limit of one run (cluster start included; a group gets one per run), the
    #: margin after it for cleanup in ``finally`` (the hard limit), and how long the
    #: broker waits before it redelivers an unacknowledged message.
    run_time_limit_s: float = 1800.0
    cleanup_grace_s: float = 60.0
    visibility_timeout_s: float = 3600.0
    #: The name of this host's experiment lock: workers with the same id take turns
    #: (one experiment per machine). Empty means the machine's host name; tests give
    #: workers on one machine different ids to act as several hosts.
    host_id: str = ""
    #: When edgelab itself runs in a container (the compose ``worker`` service): its
    #: container name, attached to every cluster network so it reaches the nodes.
    docker_self: str = ""
    #: Then the Docker engine cannot see edgelab's paths: the volume (or host path)
    #: holding the same models directory, mounted at /models in root containers.
    docker_models_source: str = ""
    #: Link proxies pass bytes through with splice(2) when they can (see
    #: edgelab/netem/proxy.py); False copies through a buffer (for comparisons).
    netem_splice: bool = True
    #: Host names the web app answers to (the ``Host`` header, and ``Origin`` of writes).
    #: Empty means the default: the loopback names plus the bind address (see
    #: :func:`default_allowed_hosts`); ``*`` allows any (only behind a proxy that checks).
    allowed_hosts: tuple[str, ...] = ()
    #: Live event streams one client (IP address) may hold open on the whole server, all
    #: web worker processes together (counted in Redis: edgelab/service/streams.py).
    max_streams_per_client: int = 20
    #: A live event stream that carried only keep-alive pings this long is closed (the
    #: browser reconnects and replays): a forgotten tab does not hold a connection forever.
    stream_idle_s: float = 300.0
    #: Images the Docker backend runs: the server's choice, never a request's.
    root_image: str = "edgelab-root:latest"
    worker_image: str = "edgelab-worker:latest"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.database_url:
            db = (self.data_dir / "edgelab.db").resolve()
            object.__setattr__(self, "database_url", f"sqlite:///{db}")
        if not self.allowed_hosts:
            object.__setattr__(self, "allowed_hosts", default_allowed_hosts(self.bind))
        if not self.host_id:
            object.__setattr__(self, "host_id", socket.gethostname())

    @property
    def bind_host(self) -> str:
        return self.bind.rsplit(":", 1)[0]

    @property
    def bind_port(self) -> int:
        return int(self.bind.rsplit(":", 1)[1])

    @property
    def catalog_path(self) -> Path:
        return self.models_dir / "catalog.json"

    @property
    def devices_path(self) -> Path:
        """Device presets and named topologies, beside the model catalog."""
        return self.models_dir / "devices.yaml"

    def node_env(self) -> dict[str, str]:
        """The settings a node container needs, as the variables ``from_env`` reads.

        A worker container's link proxy (:mod:`edgelab.cluster.worker_node`) builds
        its own ``Settings`` from its environment; this is what edgelab writes there,
        so a value set for edgelab holds on every link of a Docker cluster too.
        """
        return {"EDGELAB_NETEM_SPLICE": "1" if self.netem_splice else "0"}

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; raise ``SettingsError`` naming a bad variable."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str = "") -> str:
            return env.get(f"EDGELAB_{name}", default).strip()

        data_dir = Path(get("DATA_DIR", "var"))
        models_dir = Path(get("MODELS_DIR") or str(data_dir / "models"))

        database_url = get("DATABASE_URL")
        if database_url and not database_url.startswith(("sqlite:", "postgresql")):
            raise SettingsError(
                "EDGELAB_DATABASE_URL must start with sqlite:/// or postgresql://, "
                f"got {database_url!r}"
            )
        if database_url.startswith("postgresql://"):
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]

        redis_url = get("REDIS_URL")
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"EDGELAB_REDIS_URL must be a redis:// or unix:// URL, got {redis_url!r}"
            )

        backend = get("BACKEND", "local")
        if backend not in BACKENDS:
            raise SettingsError(
                f"EDGELAB_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}"
            )

        bind = get("BIND", "127.0.0.1:8080")
        host, sep, port = bind.rpartition(":")
        if (
            not sep
            or not host
            or not re.fullmatch(r"[0-9]{1,5}", port)
            or not 0 < int(port) < 65536
        ):
            raise SettingsError(
                f"EDGELAB_BIND must be HOST:PORT (e.g. 127.0.0.1:8080), got {bind!r}"
            )

        cells = get("MAX_SWEEP_CELLS", "1000")
        if not re.fullmatch(r"[0-9]{1,9}", cells) or int(cells) < 1:
            raise SettingsError(
                f"EDGELAB_MAX_SWEEP_CELLS must be a positive integer, got {cells!r}"
            )

        def number(name: str, default: float) -> tuple[str, float]:
            raw = get(name, f"{default:g}")
            try:
                return raw, float(raw)
            except ValueError:
                return raw, float("nan")  # refused by every bound below

        def positive(name: str, default: float, unit: str = "seconds") -> float:
            raw, value = number(name, default)
            if not value > 0 or value == float("inf"):
                raise SettingsError(f"EDGELAB_{name} must be a number of {unit} > 0, got {raw!r}")
            return value

        def at_least(name: str, default: float, minimum: float) -> float:
            # A floor, not just > 0: a lease renewed every ttl/3 or a reconciler pass
            # every few ms would only load the broker.
            raw, value = number(name, default)
            if not value >= minimum or value == float("inf"):
                raise SettingsError(
                    f"EDGELAB_{name} must be a number of seconds >= {minimum:g}, got {raw[:60]!r}"
                )
            return value

        keep = get("KEEP_WORK_DIRS", cls.keep_work_dirs)
        if keep not in KEEP_WORK_DIRS:
            raise SettingsError(
                f"EDGELAB_KEEP_WORK_DIRS must be one of {', '.join(KEEP_WORK_DIRS)}, got {keep!r}"
            )

        hosts = tuple(
            h.strip().lower().rstrip(".") for h in get("ALLOWED_HOSTS").split(",") if h.strip()
        )
        bad = [h for h in hosts if not _HOST_NAME.fullmatch(h)]
        if bad:
            raise SettingsError(
                "EDGELAB_ALLOWED_HOSTS must be comma-separated host names or IP addresses "
                f"(or *), got {bad[0][:60]!r}"
            )

        streams = get("MAX_STREAMS_PER_CLIENT", "20")
        if not re.fullmatch(r"[0-9]{1,6}", streams) or int(streams) < 1:
            raise SettingsError(
                f"EDGELAB_MAX_STREAMS_PER_CLIENT must be a positive integer, got {streams[:60]!r}"
            )

        idle = get("STREAM_IDLE_S", "300")
        if not re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,3})?", idle) or float(idle) < 1:
            raise SettingsError(
                f"EDGELAB_STREAM_IDLE_S must be a number of seconds >= 1, got {idle[:60]!r}"
            )

        host_id = get("HOST_ID")
        if host_id and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}", host_id):
            raise SettingsError(
                "EDGELAB_HOST_ID must be letters, digits and . _ : @ - (at most 128), "
                f"got {host_id[:60]!r}"
            )

        docker_self = get("DOCKER_SELF")
        if docker_self and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", docker_self):
            raise SettingsError(
                f"EDGELAB_DOCKER_SELF must be a container name or id, got {docker_self[:60]!r}"
            )

        splice = get("NETEM_SPLICE", "1")
        if splice not in ("0", "1"):
            raise SettingsError(f"EDGELAB_NETEM_SPLICE must be 0 or 1, got {splice[:60]!r}")

        images: dict[str, str] = {}
        for name in ("ROOT_IMAGE", "WORKER_IMAGE"):
            value = get(name)
            if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}", value):
                raise SettingsError(
                    f"EDGELAB_{name} must be a Docker image name, got {value[:60]!r}"
                )
            if value:
                images[name.lower()] = value

        return cls(
            allowed_hosts=hosts,
            max_streams_per_client=int(streams),
            stream_idle_s=float(idle),
            root_image=images.get("root_image", cls.root_image),
            worker_image=images.get("worker_image", cls.worker_image),
            data_dir=data_dir,
            database_url=database_url,
            redis_url=redis_url,
            models_dir=models_dir,
            backend=backend,
            bind=bind,
            api_token=get("API_TOKEN"),
            dllama_bin=get("DLLAMA_BIN"),
            dllama_api_bin=get("DLLAMA_API_BIN"),
            max_sweep_cells=int(cells),
            stall_timeout_s=positive("STALL_TIMEOUT", cls.stall_timeout_s),
            start_stall_timeout_s=positive("START_STALL_TIMEOUT", cls.start_stall_timeout_s),
            keep_work_dirs=keep,
            work_dir_keep_hours=positive("WORK_DIR_KEEP_HOURS", cls.work_dir_keep_hours, "hours"),
            work_dir_keep_mb=positive("WORK_DIR_KEEP_MB", cls.work_dir_keep_mb, "MB"),
            lock_ttl_s=at_least("LOCK_TTL", cls.lock_ttl_s, 2.0),
            reconcile_s=at_least("RECONCILE_S", cls.reconcile_s, 0.5),
            broker_retry_s=at_least("BROKER_RETRY_S", cls.broker_retry_s, 1.0),
            run_time_limit_s=positive("RUN_TIME_LIMIT", cls.run_time_limit_s),
            cleanup_grace_s=positive("CLEANUP_GRACE", cls.cleanup_grace_s),
            visibility_timeout_s=positive("VISIBILITY_TIMEOUT", cls.visibility_timeout_s),
            host_id=host_id,
            docker_self=docker_self,
            docker_models_source=get("DOCKER_MODELS_SOURCE"),
            netem_splice=splice == "1",
        )
