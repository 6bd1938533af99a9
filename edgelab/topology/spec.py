"""The topology of a cluster: a device per node and a network per link.

A uniform cluster (every node the same, every link the run's ``latency``) is the
empty :class:`Topology`; a heterogeneous one names only what differs:

* ``devices``: node name (``root``, ``worker1``, ...) -> :class:`NodeDevice`
  (``threads``, ``cpus`` as a CPU quota in cores, ``mem`` such as ``1g``); a
  field left ``None`` is the cluster-wide value (``--threads``, no quota, no
  memory limit or the Docker ``options``);
* ``links``: worker name -> :class:`LinkSpec` for the link root<->that worker
  (its own :class:`~edgelab.netem.profile.LatencyProfile`, packet loss, a delay
  trace, a queue bound);
* ``loss_pct``: the cluster-wide packet loss (the run's ``loss``), the loss of every
  link that does not set its own, as ``latency`` is every link's profile.

This is the one structure the CLI, the API, the forms and the sweeps build
(:func:`resolve_topology` is the one parser of their input) and the backends read.
It is canonical: a device or link equal to the cluster-wide defaults is dropped,
so a uniform cluster given the old way and one spelled out node by node are the
same experiment with the same fingerprint.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgelab.netem.profile import LatencyProfile, ProfileError, format_bandwidth
from edgelab.validation import fields
from edgelab.validation.values import FieldError

#: ``root`` or ``worker<N>`` (N from 1); anything else is not a node name.
NODE_NAME = re.compile(r"root|worker([1-9][0-9]{0,2})")
DEVICE_KEYS = ("threads", "cpus", "mem")
#: Keys of a link, as typed after ``--link NODE=`` and in JSON. ``latency`` is the
#: profile (the bare first item on the command line).
LINK_KEYS = ("latency", "bandwidth", "loss", "trace", "queue")
MAX_LOSS_PCT = fields.MAX_LOSS_PCT
MAX_QUEUE_BYTES = 1 << 30
#: The bounds of the cluster-wide latency field, for a link's own profile.
MAX_LINK_DELAY_MS = 10_000.0
MIN_LINK_BANDWIDTH_BPS = 100_000
_SIZE = re.compile(r"([0-9]{1,12})\s*([kKmMgG]?)[bB]?")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class TopologyError(ValueError):
    """Invalid topology input; ``errors`` maps a field (``devices``, ``links``,
    ``topology``) to a message naming the node and key."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def host_cores() -> int:
    return os.cpu_count() or 1


def node_names(nodes: int) -> list[str]:
    """The nodes of an ``nodes``-device cluster, as named in samples, errors and here."""
    return ["root", *(f"worker{i}" for i in range(1, nodes))]


def worker_index(name: str) -> int:
    """1 for ``worker1``; 0 for ``root``."""
    match = NODE_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"not a node name: {name!r}")
    return int(match.group(1) or 0)


mem_bytes = fields.mem_bytes


@dataclass(frozen=True)
class NodeDevice:
    """What one node may use. ``None`` = the cluster-wide value.

    ``preset`` records which named preset the values came from (shown, not
    compared: the values are the experiment, and editing the preset file later
    must not change what a stored run was).
    """

    threads: int | None = None
    cpus: float | None = None
    mem: str | None = None
    preset: str | None = field(default=None, compare=False)

    @property
    def is_default(self) -> bool:
        return self.threads is None and self.cpus is None and self.mem is None

    def values(self) -> dict[str, Any]:
        """The set limits only (what the fingerprint and the backends see)."""
        return {k: getattr(self, k) for k in DEVICE_KEYS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        out = self.values()
        if self.preset is not None:
            out["preset"] = self.preset
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeDevice:
        cpus = data.get("cpus")
        return cls(
            threads=data.get("threads"),
            cpus=None if cpus is None else float(cpus),
            mem=data.get("mem"),
            preset=data.get("preset"),
        )

    @property
    def label(self) -> str:
        parts = [
            f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.values().items()
        ]
        text = ", ".join(parts) or "cluster defaults"
        return f"{self.preset} ({text})" if self.preset else text


@dataclass(frozen=True)
class LinkSpec:
    """One root<->worker link.

    ``profile`` is the link's delay and bandwidth (asymmetric up/down as
    ``LatencyProfile`` supports), already resolved: a link given without a profile
    carries the cluster-wide ``latency``. ``loss_pct`` drops that share of packets
    (0-50), ``trace`` is the path of a delay-trace CSV (see
    :mod:`edgelab.topology.linktrace`), ``queue_bytes`` bounds each direction's
    queue (``None``: the backend's default).
    """

    profile: LatencyProfile
    loss_pct: float = 0.0
    trace: str | None = None
    queue_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.to_dict(),
            "latency": self.profile.label,
            "loss_pct": self.loss_pct,
            "trace": self.trace,
            "queue_bytes": self.queue_bytes,
        }

    def fingerprint_dict(self) -> dict[str, Any]:
        data = self.to_dict()
        del data["latency"]  # derived from the profile
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinkSpec:
        return cls(
            profile=LatencyProfile.from_dict(data["profile"]),
            loss_pct=float(data.get("loss_pct") or 0.0),
            trace=data.get("trace"),
            queue_bytes=data.get("queue_bytes"),
        )

    @property
    def label(self) -> str:
        parts = [self.profile.label]
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g}%")
        if self.trace:
            parts.append(f"trace {Path(self.trace).name}")
        if self.queue_bytes is not None:
            parts.append(f"queue {self.queue_bytes} B")
        return ", ".join(parts)


@dataclass(frozen=True)
class Topology:
    """Devices and links that differ from the cluster-wide defaults (see the module doc).

    ``name`` is a named topology's name (``one-slow-worker``), for display only.
    ``loss_pct`` is the loss of every link not in ``links`` (0 in a cluster of one node,
    which has no links).
    """

    devices: Mapping[str, NodeDevice] = field(default_factory=dict)
    links: Mapping[str, LinkSpec] = field(default_factory=dict)
    name: str | None = field(default=None, compare=False)
    loss_pct: float = 0.0

    @property
    def is_uniform(self) -> bool:
        return not self.devices and not self.links and not self.loss_pct

    def device(self, node: str) -> NodeDevice:
        return self.devices.get(node, NodeDevice())

    def link(self, worker: str, latency: LatencyProfile) -> LinkSpec:
        """The link to ``worker``: its own spec, else the cluster-wide ``latency`` and loss."""
        return self.links.get(worker) or LinkSpec(profile=latency, loss_pct=self.loss_pct)

    def threads_of(self, node: str, default: int) -> int:
        threads = self.device(node).threads
        return default if threads is None else threads

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "devices": {n: d.to_dict() for n, d in self.devices.items()},
            "links": {n: link.to_dict() for n, link in self.links.items()},
            "loss_pct": self.loss_pct,
        }
        if self.name is not None:
            out["name"] = self.name
        return out

    def fingerprint_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "devices": {n: d.values() for n, d in self.devices.items()},
            "links": {n: link.fingerprint_dict() for n, link in self.links.items()},
        }
        if self.loss_pct:
            # Only then: a topology without cluster-wide loss keeps its fingerprint.
            out["loss_pct"] = self.loss_pct
        return out

    def cluster_key(self) -> dict[str, Any]:
        """What decides whether two runs can share one started cluster: the devices
        and each link's trace and queue bound. Delays and packet loss change between
        runs of a warm cluster (the proxies take a new profile, the loss rules in a
        worker's namespace are replaced), so they are not part of it; a backend that
        cannot start dropping packets on a warm cluster adds the loss itself
        (:meth:`edgelab.cluster.spec.ClusterSpec.topology_key`)."""
        return {
            "devices": {n: d.values() for n, d in self.devices.items()},
            "links": {
                n: {"trace": link.trace, "queue_bytes": link.queue_bytes}
                for n, link in self.links.items()
                if link.trace or link.queue_bytes is not None
            },
        }

    def as_flags(self) -> tuple[list[str], list[str]]:
        """The ``--device`` and ``--link`` values that give this topology back."""
        devices = [
            f"{n}="
            + ",".join(
                f"{k}:{v:g}" if isinstance(v, float) else f"{k}:{v}" for k, v in d.values().items()
            )
            for n, d in self.devices.items()
        ]
        links = []
        for n, link in self.links.items():
            parts = [link.profile.label]
            if link.loss_pct != self.loss_pct:  # else it is the cluster-wide --loss
                parts.append(f"loss:{link.loss_pct:g}%")
            if link.trace:
                parts.append(f"trace:{link.trace}")
            if link.queue_bytes is not None:
                parts.append(f"queue:{link.queue_bytes}")
            links.append(f"{n}={','.join(parts)}")
        return devices, links

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Topology:
        if not data:
            return cls()
        return cls(
            devices={n: NodeDevice.from_dict(d) for n, d in (data.get("devices") or {}).items()},
            links={n: LinkSpec.from_dict(v) for n, v in (data.get("links") or {}).items()},
            name=data.get("name"),
            loss_pct=float(data.get("loss_pct") or 0.0),
        )

    @property
    def label(self) -> str:
        if self.is_uniform:
            return self.name or "uniform"
        parts = [f"{n}: {d.label}" for n, d in self.devices.items()]
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g}% on every link")
        for n, link in self.links.items():
            text = link.label
            if self.loss_pct and not link.loss_pct:
                text += ", no loss"  # its own 0 % beside the cluster-wide loss
            parts.append(f"{n} link: {text}")
        text = "; ".join(parts)
        return f"{self.name} ({text})" if self.name else text


# --- parsing the input ---------------------------------------------------------------


def split_items(text: str) -> tuple[list[str], dict[str, str]]:
    """``"slow,cpus:0.25"`` -> (["slow"], {"cpus": "0.25"}): bare items and key:value pairs."""
    bare: list[str] = []
    pairs: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition(":")
        if sep:
            pairs[key.strip().lower()] = value.strip()
        else:
            bare.append(item)
    return bare, pairs


def parse_assignments(values: list[str] | tuple[str, ...], option: str) -> dict[str, str]:
    """``["worker2=slow", "worker1=cpus:1"]`` -> {node: text} (repeated CLI options).

    A node given more than once gets the items of each, merged: ``--link worker1=1ms
    --link worker1=loss:2%`` is ``worker1=1ms,loss:2%``, as one would expect of
    repeatable options. Only a real contradiction is refused: the same key twice, or
    two profiles (presets), which one of them would silently have to win over.
    """
    out: dict[str, str] = {}
    for value in values:
        node, sep, rest = value.partition("=")
        node, rest = node.strip(), rest.strip()
        if not sep or not node:
            raise TopologyError({option: f"expected NODE=VALUE (e.g. worker2=...), got {value!r}"})
        if node in out:
            (bare_a, pairs_a), (bare_b, pairs_b) = split_items(out[node]), split_items(rest)
            if bare_a and bare_b:
                raise TopologyError(
                    {
                        option: f"{node} is given twice with a {_BARE.get(option, 'value')} "
                        f"({', '.join(bare_a)} and {', '.join(bare_b)}); give one"
                    }
                )
            twice = sorted(set(pairs_a) & set(pairs_b))
            if twice:
                key = twice[0]
                raise TopologyError(
                    {
                        option: f"{node}: {key} is given twice "
                        f"({pairs_a[key]} and {pairs_b[key]}); give one"
                    }
                )
            rest = ",".join(i for i in (out[node], rest) if i)
        out[node] = rest
    return out


#: What the bare item of an option's value is, for messages.
_BARE = {"link": "profile", "links": "profile", "device": "preset", "devices": "preset"}


def _check_node(name: Any, nodes: int, *, workers_only: bool) -> str | None:
    """A problem with a node name, or None."""
    names = node_names(nodes)
    if not isinstance(name, str) or NODE_NAME.fullmatch(name) is None:
        return (
            f"unknown node name {name!r}: nodes are named root, worker1, worker2, ... "
            f"(this cluster: {', '.join(names)})"
        )
    if workers_only and name == "root":
        return "root has no link of its own: links join root to each worker (worker1, ...)"
    if name not in names:
        return (
            f"{name} does not exist: the cluster has {nodes} node(s) "
            f"({', '.join(names)}); raise nodes or remove {name}"
        )
    return None


def _device(
    node: str,
    raw: Any,
    presets: Mapping[str, Mapping[str, Any]],
    threads_default: int,
) -> NodeDevice:
    """One node's device from a preset name, ``key:value,...`` text or an object."""
    preset: str | None = None
    values: dict[str, Any] = {}
    if isinstance(raw, str):
        bare, pairs = split_items(raw)
        if len(bare) > 1:
            raise ValueError(f"at most one preset name, got {', '.join(bare)}")
        if bare:
            preset = bare[0]
        values.update(pairs)
    elif isinstance(raw, Mapping):
        values.update(raw)
        if "preset" in values:
            preset = values.pop("preset")
    elif raw is None:
        return NodeDevice()
    else:
        raise ValueError(f"give a preset name, key:value text or an object, got {raw!r}")
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            known = ", ".join(sorted(presets)) or "none"
            raise ValueError(
                f"unknown device preset {preset!r} (presets: {known}; "
                "see `edgelab devices list`, add one with `edgelab devices add`)"
            )
        merged.update(presets[preset])
    merged.update(values)
    unknown = sorted(set(merged) - set(DEVICE_KEYS))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)}; a device has {', '.join(DEVICE_KEYS)}"
        )
    cores = host_cores()
    threads = merged.get("threads")
    if threads is not None:
        threads = _whole(threads, "threads")
        if not 1 <= threads <= cores:
            raise ValueError(
                f"threads must be between 1 and this host's {cores} cores, got {threads}"
            )
        if threads == threads_default:
            threads = None  # the cluster-wide value spelled out
    cpus = merged.get("cpus")
    if cpus is not None:
        cpus = _number(cpus, "cpus")
        if cpus < 0.01:
            raise ValueError(f"cpus must be at least 0.01 (a CPU quota in cores), got {cpus:g}")
        if cpus > cores:
            raise ValueError(f"cpus {cpus:g} is above this host's {cores} cores")
    mem = merged.get("mem")
    if mem is not None:
        mem = str(mem).strip()
        try:
            fields.check_mem_text(mem)
        except FieldError as exc:
            raise ValueError(f"mem {exc}") from exc
    return NodeDevice(threads=threads, cpus=cpus, mem=mem, preset=preset)


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}", value.strip()):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{name} must be a whole number, got {value!r}")


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, str) and re.fullmatch(
        r"[0-9]{1,6}(\.[0-9]{1,6})?|\.[0-9]{1,6}", value.strip()
    ):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    raise ValueError(f"{name} must be a number, got {value!r}")


def _check_bounds(profile: LatencyProfile) -> None:
    """The run-wide latency field's bounds, for a link's own profile."""
    for direction in ("up", "down"):
        one = profile.direction(direction)
        for what, value in (
            ("delay", one.delay_ms),
            ("max", one.max_ms),
            ("jitter", one.jitter_ms),
        ):
            if value > MAX_LINK_DELAY_MS:
                raise ValueError(
                    f"{what} of {value:g} ms is above the maximum of {MAX_LINK_DELAY_MS:g} ms"
                )
        if one.bandwidth_bps is not None and one.bandwidth_bps < MIN_LINK_BANDWIDTH_BPS:
            raise ValueError(
                f"{one.bandwidth_bps} bit/s is below the minimum of "
                f"{MIN_LINK_BANDWIDTH_BPS // 1000} kbit/s"
            )


def parse_loss(value: Any) -> float:
    """Percent from ``"2%"``, ``"2"`` or ``2``: the loss rule of
    :func:`edgelab.validation.fields.loss_percent` (0-50 %), its message prefixed ``loss``."""
    try:
        return fields.loss_percent(value)
    except ValueError as exc:
        raise ValueError(f"loss {exc}") from None


def parse_size(value: Any) -> int:
    """Bytes from ``65536``, ``"64k"``, ``"1m"``, ``"256kb"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        match = _SIZE.fullmatch(str(value).strip())
        if match is None:
            raise ValueError(
                f"queue must be a size in bytes such as 65536, 64k or 1m, got {value!r}"
            )
        n = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if not 1024 <= n <= MAX_QUEUE_BYTES:
        raise ValueError(f"queue must be between 1k and 1g bytes, got {n}")
    return n


def _rate_text(profile: LatencyProfile) -> str | None:
    """The cluster-wide rate as ``--bandwidth`` text (``UP/DOWN`` when they differ)."""
    up, down = (profile.direction(d).bandwidth_bps for d in ("up", "down"))
    if up is None and down is None:
        return None
    if up is None or down is None:
        raise ValueError("a link cannot inherit a rate given for one direction only")
    return (
        format_bandwidth(up) if up == down else f"{format_bandwidth(up)}/{format_bandwidth(down)}"
    )


def _link(
    raw: Any, cluster: LatencyProfile, base_dir: Path | None, cluster_loss: float = 0.0
) -> LinkSpec:
    """One link from ``PROFILE,bandwidth:RATE,loss:P%,trace:FILE,queue:SIZE`` or an object.

    A missing profile is the cluster-wide one (``cluster``); a profile without a rate
    keeps the cluster-wide rate (``--bandwidth``) unless the link gives ``bandwidth``;
    a missing loss is the cluster-wide ``cluster_loss`` (``loss:0%`` turns it off).
    """
    values: dict[str, Any]
    if isinstance(raw, str):
        bare, pairs = split_items(raw)
        if len(bare) > 1:
            raise ValueError(
                f"at most one latency profile, got {', '.join(bare)} "
                "(write UP/DOWN for an asymmetric link, e.g. 20ms/5ms)"
            )
        values = dict(pairs)
        if bare:
            if "latency" in values:
                raise ValueError("latency given twice (bare and as latency:)")
            values["latency"] = bare[0]
    elif isinstance(raw, Mapping):
        values = dict(raw)
    else:
        raise ValueError(f"give PROFILE,key:value text or an object, got {raw!r}")
    unknown = sorted(set(values) - set(LINK_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; a link has {', '.join(LINK_KEYS)}")
    own_latency = values.get("latency")
    own_bandwidth = values.get("bandwidth")
    seed = cluster.seed
    rate: str | None
    if own_latency in (None, ""):
        if own_bandwidth in (None, ""):
            text, rate = cluster.label, None
        else:
            # The cluster's delays with the link's own rate.
            text = "/".join(half.partition("@")[0] for half in cluster.label.split("/"))
            rate = str(own_bandwidth)
    else:
        text = str(own_latency)
        if own_bandwidth not in (None, ""):
            rate = str(own_bandwidth)
        elif "@" in text:
            rate = None
        else:
            rate = _rate_text(cluster)
    try:
        profile = LatencyProfile.parse(text, bandwidth=rate, seed=seed)
    except ProfileError as exc:
        raise ValueError(str(exc)[:300]) from None
    _check_bounds(profile)
    loss = parse_loss(values["loss"]) if values.get("loss") not in (None, "") else cluster_loss
    trace = values.get("trace")
    trace_path: str | None = None
    if trace not in (None, ""):
        from edgelab.topology.linktrace import load_trace

        path = Path(str(trace)).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        load_trace(path)  # raises ValueError naming the line
        trace_path = str(path.resolve())
    queue = parse_size(values["queue"]) if values.get("queue") not in (None, "") else None
    return LinkSpec(profile=profile, loss_pct=loss, trace=trace_path, queue_bytes=queue)


def resolve_topology(
    *,
    devices: Any,
    links: Any,
    nodes: int,
    threads: int,
    latency: LatencyProfile,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    topologies: Mapping[str, Mapping[str, Any]] | None = None,
    base_dir: Path | None = None,
    loss: float = 0.0,
) -> Topology:
    """The canonical :class:`Topology` of a run's input, or ``TopologyError``.

    ``devices`` is ``{node: preset | "key:value,..." | {key: value}}`` or the name of
    a named topology (``topologies``: name -> such a map); ``links`` is
    ``{worker: "PROFILE,key:value,..." | {key: value}}``. ``latency`` is the
    cluster-wide profile with the run's seed (a link without a profile gets it), and
    ``loss`` the cluster-wide loss in per cent (a link without its own gets it; a
    one-node cluster has no links, so no loss). Every problem is reported, per field.
    """
    loss = loss if nodes > 1 else 0.0
    presets = presets or {}
    errors: dict[str, list[str]] = {}
    name: str | None = None
    if isinstance(devices, str):
        name = devices
        if topologies is None or devices not in topologies:
            known = ", ".join(sorted(topologies or {})) or "none"
            raise TopologyError(
                {"devices": f"unknown named topology {devices!r} (named topologies: {known})"}
            )
        # A named topology describes the devices it knows of; in a cluster with fewer
        # nodes (a sweep over node counts) the ones it does not have are left out.
        devices = {
            n: d
            for n, d in topologies[devices].items()
            if not (isinstance(n, str) and NODE_NAME.fullmatch(n) and n not in node_names(nodes))
        }
    out_devices: dict[str, NodeDevice] = {}
    if devices not in (None, {}):
        if not isinstance(devices, Mapping):
            raise TopologyError(
                {
                    "devices": "must map node names to devices (e.g. {worker2: slow}) "
                    "or name a topology"
                }
            )
        for node, raw in devices.items():
            problem = _check_node(node, nodes, workers_only=False)
            if problem is not None:
                errors.setdefault("devices", []).append(problem)
                continue
            try:
                device = _device(node, raw, presets, threads)
            except ValueError as exc:
                errors.setdefault("devices", []).append(f"{node}: {exc}")
                continue
            if not device.is_default:
                out_devices[node] = device
    out_links: dict[str, LinkSpec] = {}
    if links not in (None, {}):
        if not isinstance(links, Mapping):
            raise TopologyError({"links": "must map worker names to links (e.g. {worker2: 30ms})"})
        for node, raw in links.items():
            problem = _check_node(node, nodes, workers_only=True)
            if problem is not None:
                errors.setdefault("links", []).append(problem)
                continue
            try:
                link = _link(raw, latency, base_dir, loss)
            except ValueError as exc:
                errors.setdefault("links", []).append(f"{node}: {exc}")
                continue
            if link != LinkSpec(profile=latency, loss_pct=loss):
                out_links[node] = link
    if errors:
        raise TopologyError({k: "; ".join(v) for k, v in errors.items()})
    order = {n: i for i, n in enumerate(node_names(nodes))}
    return Topology(
        devices=dict(sorted(out_devices.items(), key=lambda kv: order[kv[0]])),
        links=dict(sorted(out_links.items(), key=lambda kv: order[kv[0]])),
        name=name,
        loss_pct=loss,
    )


def cluster_view(
    nodes: int, threads: int, latency: LatencyProfile, topology: Topology
) -> dict[str, Any]:
    """Every node and link of a cluster as plain data (run JSON, run page picture).

    Unlike :meth:`Topology.to_dict` this lists *all* nodes and links, each with its
    effective values (the cluster-wide ones where the topology says nothing).
    """
    node_list = []
    for name in node_names(nodes):
        device = topology.device(name)
        node_list.append(
            {
                "node": name,
                "threads": topology.threads_of(name, threads),
                "cpus": device.cpus,
                "mem": device.mem,
                "preset": device.preset,
                "own_device": name in topology.devices,
            }
        )
    link_list = []
    for name in node_names(nodes)[1:]:
        link = topology.link(name, latency)
        link_list.append(
            {
                "link": f"root<->{name}",
                "node": name,
                "latency": link.profile.label,
                "profile": link.profile.to_dict(),
                "loss_pct": link.loss_pct,
                "trace": link.trace,
                "queue_bytes": link.queue_bytes,
                "own_link": name in topology.links,
            }
        )
    return {
        "name": topology.name,
        "uniform": topology.is_uniform,
        "label": topology.label,
        "loss_pct": topology.loss_pct,
        "nodes": node_list,
        "links": link_list,
    }
