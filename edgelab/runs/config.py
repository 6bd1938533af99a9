"""A run's configuration, its validation and its fingerprint."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgelab.catalog import Catalog, CatalogError, ModelInfo
from edgelab.cluster.spec import ClusterSpec
from edgelab.engines import get_engine
from edgelab.engines.dllama import DEFAULT_MODE, MODE_OPTION, mode_problem
from edgelab.netem.profile import LatencyProfile, ProfileError
from edgelab.topology.presets import DeviceBook, load_book
from edgelab.topology.spec import Topology, TopologyError, resolve_topology
from edgelab.topology.support import topology_problems
from edgelab.validation.context import prompt_problems
from edgelab.validation.fields import (
    BACKENDS,
    ENGINES,
    MAX_TOKENS_LIMIT,
    RUN_RULES,
    check_profile,
    loss_percent,
    unknown_fields,
)
from edgelab.validation.values import FieldError, InvalidInput, quote

__all__ = [
    "BACKENDS",
    "ENGINES",
    "MAX_TOKENS_LIMIT",
    "ConfigError",
    "RunConfig",
    "config_from_text",
    "parse_config",
]


class ConfigError(InvalidInput):
    """One or more fields of a run are invalid; ``errors`` maps each field to its message."""


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
    #: Devices and links that differ from the cluster-wide values, and the cluster-wide
    #: packet loss (``topology.loss_pct``, the run's ``loss``); empty: uniform.
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


def parse_config(
    data: dict[str, Any], catalog: Catalog, *, default_backend: str = "local"
) -> tuple[RunConfig, ModelInfo]:
    """Validate raw input (CLI options, API JSON, form fields) into a ``RunConfig``.

    Values must already have their JSON types (forms and the CLI convert text with
    :func:`config_from_text`); each field follows its rule in
    :data:`edgelab.validation.fields.RUN_RULES`, unknown fields are refused, and
    every problem is reported at once so a form can show a message beside each
    field. Then the rules that join fields: the engine's topology rule for the
    model and node count, and the prompt against the model's context. Nothing is
    started for an invalid config.
    """
    if not isinstance(data, dict):
        raise ConfigError({"body": f"must be an object with the run's fields, got {quote(data)}"})
    errors: dict[str, str] = unknown_fields(data, tuple(RUN_RULES))
    values: dict[str, Any] = {}
    for name, rule in RUN_RULES.items():
        if name == "backend" and data.get("backend") is None:
            raw = default_backend  # left out or null: the server's EDGELAB_BACKEND
        elif name in data:
            raw = data[name]
        elif rule.has_default:
            raw = rule.default
        else:
            errors[name] = "is required"
            continue
        try:
            values[name] = rule.check(raw)
        except FieldError as exc:
            errors[name] = str(exc)

    model: ModelInfo | None = None
    if "model" in values:
        try:
            model = catalog.get(values["model"])
        except CatalogError as exc:
            errors["model"] = str(exc)[:300]

    engine = values.get("engine")
    options = dict(values.get("options") or {})
    if engine is not None and "options" in values:
        problem = mode_problem(options, engine)
        if problem is not None:
            errors["options"] = problem
        elif options.get(MODE_OPTION) == DEFAULT_MODE:
            # The default spelled out is the same experiment as the default left out.
            del options[MODE_OPTION]
        values["options"] = options
    if model is not None and engine is not None and "nodes" in values and "options" not in errors:
        # Which models and topologies an engine can run is the engine's rule (format,
        # then layers for llama.cpp or tensor divisibility for dllama), checked
        # before anything starts.
        problems = get_engine(engine, options=options).run_problems(model, values["nodes"])
        for key, message in problems.items():
            errors.setdefault(key, message)
    if model is not None and "prompt" in values and "max_tokens" in values:
        for key, message in prompt_problems(model, values["prompt"], values["max_tokens"]).items():
            errors.setdefault(key, message)

    latency: LatencyProfile | None = None
    if "latency" in values and "bandwidth" in values and "seed" in values:
        try:
            latency = LatencyProfile.parse(
                values["latency"], bandwidth=values["bandwidth"], seed=values["seed"]
            )
            check_profile(latency)
        except (ProfileError, FieldError) as exc:
            errors["latency"] = str(exc)[:300]

    topology = Topology()
    devices_raw, links_raw = values.get("devices"), values.get("links")
    # The cluster-wide loss is the loss of every link that does not set its own: the
    # topology resolves it like the cluster-wide latency (already checked text: "1%").
    loss = loss_percent(values["loss"]) if "loss" in values else 0.0
    if (
        (devices_raw or links_raw or loss)
        and latency is not None
        and not {"nodes", "threads", "latency", "devices", "links", "loss"} & set(errors)
    ):
        # Devices and links are checked by the topology module (presets, per-node keys).
        try:
            book = load_book(catalog.devices_path)
        except TopologyError as exc:
            errors.update(exc.errors)
            book = DeviceBook(catalog.devices_path)
        resolve = functools.partial(
            resolve_topology,
            nodes=values["nodes"],
            threads=values["threads"],
            latency=latency,
            presets=book.presets,
            topologies=book.topologies,
            loss=loss,
        )
        try:
            topology = resolve(devices=devices_raw, links=links_raw)
        except TopologyError as exc:
            errors.update({k: str(v)[:300] for k, v in exc.errors.items()})
            # Every problem at once: what the backend cannot apply of the part that parsed.
            for part in ("devices", "links"):
                if part in exc.errors:
                    continue
                try:
                    alone = resolve(
                        devices=devices_raw if part == "devices" else None,
                        links=links_raw if part == "links" else None,
                    )
                except TopologyError:
                    continue
                for key, message in topology_problems(alone, values["backend"]).items():
                    errors.setdefault(key, message)
        else:
            errors.update(topology_problems(topology, values["backend"]))

    if errors:
        raise ConfigError(errors)
    # No error recorded means every field parsed; these narrow the types for mypy.
    assert model is not None
    assert latency is not None
    config = RunConfig(
        prompt=values["prompt"],
        model=model.name,
        nodes=values["nodes"],
        threads=values["threads"],
        latency=latency,
        max_tokens=values["max_tokens"],
        seed=values["seed"],
        temperature=values["temperature"],
        engine=values["engine"],
        backend=values["backend"],
        repetition=values["repetition"],
        options=values["options"],
        topology=topology,
    )
    return config, model


def config_from_text(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Form or command-line text as ``parse_config`` input, with the fields' own rules.

    Numbers are parsed from ASCII text (``int_text``/``number_text``); other values
    pass unchanged. Returns the typed values and the errors of text that is not a
    value of its field's type (``parse_config`` then checks the values).
    """
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, text in data.items():
        rule = RUN_RULES.get(name)
        if rule is None or not isinstance(text, str) or rule.kind not in ("integer", "number"):
            out[name] = text  # strings are strings; parse_config checks them
        elif not text.strip():
            kind = "a whole number" if rule.kind == "integer" else "a number"
            errors[name] = f"must not be empty ({kind})"
        else:
            try:
                out[name] = rule.from_text(text)
            except FieldError as exc:
                errors[name] = str(exc)
    return out, errors
