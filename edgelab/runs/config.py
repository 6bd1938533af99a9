"""A run's configuration, its validation and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgelab.catalog import Catalog, CatalogError, ModelInfo
from edgelab.cluster.spec import ClusterSpec
from edgelab.engines import get_engine
from edgelab.engines.dllama import DEFAULT_MODE, MODE_OPTION, mode_problem
from edgelab.netem.profile import LatencyProfile, ProfileError, parse_bandwidth
from edgelab.topology.presets import DeviceBook, load_book
from edgelab.topology.spec import Topology, TopologyError, resolve_topology
from edgelab.topology.support import topology_problems

MAX_TOKENS_LIMIT = 1024
ENGINES = ("llamacpp", "dllama")
BACKENDS = ("local", "docker")


class ConfigError(ValueError):
    """One or more fields are invalid; ``errors`` maps each field to its message."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; equal configs (repetition aside) are the same experiment."""

    prompt: str
    model: str
    nodes: int
    threads: int
    latency: LatencyProfile
    max_tokens: int
    seed: int = 0
    temperature: float = 0.0
    engine: str = "llamacpp"
    backend: str = "local"
    repetition: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    #: Devices and links that differ from the cluster-wide values (empty: uniform).
    topology: Topology = field(default_factory=Topology)

    @property
    def cluster_spec(self) -> ClusterSpec:
        return ClusterSpec(
            model=self.model,
            nodes=self.nodes,
            threads=self.threads,
            latency=self.latency,
            engine=self.engine,
            backend=self.backend,
            options=dict(self.options),
            topology=self.topology,
        )

    def fingerprint(self) -> str:
        """sha256 over the canonical configuration without the repetition index."""
        data = asdict(self)
        data.pop("repetition")
        data["latency"] = self.latency.to_dict()
        # A uniform cluster keeps the fingerprint it had before topologies existed.
        data.pop("topology")
        if not self.topology.is_uniform:
            data["topology"] = self.topology.fingerprint_dict()
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency.label
        data["topology"] = self.topology.to_dict()
        return data


def _int(raw: Any, name: str, errors: dict[str, str]) -> int | None:
    if isinstance(raw, bool):
        errors[name] = "must be a whole number"
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        errors[name] = f"must be a whole number, got {raw!r}"
        return None
    if isinstance(raw, float) and raw != value:
        errors[name] = f"must be a whole number, got {raw!r}"
        return None
    return value


def parse_config(
    data: dict[str, Any], catalog: Catalog, *, default_backend: str = "local"
) -> tuple[RunConfig, ModelInfo]:
    """Validate raw input (CLI options, API JSON, form fields) into a ``RunConfig``.

    Every field is checked and every problem reported at once, so a form can show
    a message beside each field; nothing is started for an invalid config.
    """
    errors: dict[str, str] = {}

    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        errors["prompt"] = "must not be empty"

    model_name = str(data.get("model") or "smollm2-135m")
    model: ModelInfo | None = None
    try:
        model = catalog.get(model_name)
    except CatalogError as exc:
        errors["model"] = str(exc)

    engine = str(data.get("engine") or "llamacpp")
    if engine not in ENGINES:
        errors["engine"] = f"must be one of {', '.join(ENGINES)}, got {engine!r}"
    backend = str(data.get("backend") or default_backend)
    if backend not in BACKENDS:
        errors["backend"] = f"must be one of {', '.join(BACKENDS)}, got {backend!r}"

    options = data.get("options") or {}
    if not isinstance(options, dict):
        errors["options"] = "must be an object"
        options = {}
    options = dict(options)
    if engine in ENGINES:
        problem = mode_problem(options, engine)
        if problem is not None:
            errors["options"] = problem
        elif options.get(MODE_OPTION) == DEFAULT_MODE:
            # The default spelled out is the same experiment as the default left out.
            del options[MODE_OPTION]

    nodes = _int(data.get("nodes", 1), "nodes", errors)
    if nodes is not None and nodes < 1:
        errors["nodes"] = f"must be at least 1, got {nodes}"
    elif nodes is not None and model is not None and engine in ENGINES and "options" not in errors:
        # Which models and topologies an engine can run is the engine's rule (format,
        # then layers for llama.cpp or tensor divisibility for dllama), checked
        # before anything starts.
        errors.update(get_engine(engine, options=options).run_problems(model, nodes))
    threads = _int(data.get("threads", 1), "threads", errors)
    if threads is not None and threads < 1:
        errors["threads"] = f"must be at least 1, got {threads}"
    max_tokens = _int(data.get("max_tokens", 64), "max_tokens", errors)
    if max_tokens is not None and not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        errors["max_tokens"] = f"must be between 1 and {MAX_TOKENS_LIMIT}, got {max_tokens}"
    seed = _int(data.get("seed", 0), "seed", errors)
    repetition = _int(data.get("repetition", 0), "repetition", errors)

    try:
        temperature = float(data.get("temperature", 0.0))
        if not 0.0 <= temperature <= 2.0:
            errors["temperature"] = f"must be between 0 and 2, got {temperature}"
    except (TypeError, ValueError):
        errors["temperature"] = f"must be a number, got {data.get('temperature')!r}"
        temperature = 0.0

    latency: LatencyProfile | None = None
    raw_latency = data.get("latency", "0ms")
    bandwidth = str(data["bandwidth"]) if data.get("bandwidth") else None
    if bandwidth is not None:
        try:
            parse_bandwidth(bandwidth)
        except ProfileError as exc:
            errors["bandwidth"] = str(exc)
            bandwidth = None
    try:
        if isinstance(raw_latency, dict):
            latency = LatencyProfile.from_dict(raw_latency)
        else:
            latency = LatencyProfile.parse(str(raw_latency), bandwidth=bandwidth, seed=seed or 0)
    except (ProfileError, KeyError, TypeError) as exc:
        errors["latency"] = str(exc)

    topology = Topology()
    devices_raw, links_raw = data.get("devices"), data.get("links")
    if (
        (devices_raw or links_raw)
        and latency is not None
        and nodes is not None
        and threads is not None
        and not {"nodes", "threads", "latency"} & set(errors)
    ):
        try:
            book = load_book(catalog.devices_path)
        except TopologyError as exc:
            errors.update(exc.errors)
            book = DeviceBook(catalog.devices_path)
        try:
            topology = resolve_topology(
                devices=devices_raw,
                links=links_raw,
                nodes=nodes,
                threads=threads,
                latency=latency,
                presets=book.presets,
                topologies=book.topologies,
            )
        except TopologyError as exc:
            errors.update(exc.errors)
            # Every problem at once: what the backend cannot apply of the part that parsed.
            for part in ("devices", "links"):
                if part in exc.errors:
                    continue
                try:
                    alone = resolve_topology(
                        devices=devices_raw if part == "devices" else None,
                        links=links_raw if part == "links" else None,
                        nodes=nodes,
                        threads=threads,
                        latency=latency,
                        presets=book.presets,
                        topologies=book.topologies,
                    )
                except TopologyError:
                    continue
                for key, message in topology_problems(alone, backend).items():
                    errors.setdefault(key, message)
        else:
            errors.update(topology_problems(topology, backend))

    if errors:
        raise ConfigError(errors)
    # No error recorded means every field parsed; these narrow the types for mypy.
    assert model is not None
    assert latency is not None
    assert nodes is not None
    assert threads is not None
    assert max_tokens is not None
    config = RunConfig(
        prompt=str(prompt),
        model=model.name,
        nodes=nodes,
        threads=threads,
        latency=latency,
        max_tokens=max_tokens,
        seed=seed or 0,
        temperature=temperature,
        engine=engine,
        backend=backend,
        repetition=repetition or 0,
        options=options,
        topology=topology,
    )
    return config, model
