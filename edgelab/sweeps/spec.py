"""Sweep specs: parsing (YAML or JSON), validation, grid expansion and topology groups.

A spec names axes; every axis takes one value or a list. The sweep is the full
cartesian product of the axes times ``repetitions``. Everything here is a plain
function over plain data so the API, the CLI and the tests share it.

Example (YAML)::

    name: latency-scaling
    model: smollm2-135m
    nodes: [2, 3]
    threads: 1
    latency: ["0ms", "20ms", "10ms..50ms"]
    bandwidth: null
    max_tokens: 16
    prompts: ["Name three planets."]
    repetitions: 3

``engine`` is an axis too. Each engine runs its own model format, so with several
engines ``model`` may map each engine to its model(s); every other axis (latency
profiles, prompts, ...) applies to all engines alike::

    engine: [llamacpp, dllama]
    model: {llamacpp: smollm2-135m, dllama: tiny}

``backend``, ``devices`` and ``links`` are axes as well (see ``edgelab.topology``):
``devices`` takes named topologies or per-node maps, ``links`` per-worker maps::

    devices: [uniform, one-slow-worker]
    links: [null, {worker2: 30ms}]

Cells that differ only in link delays share a warm cluster; devices do not.

Cells of different engines never share a cluster (the engine is part of the
topology key), so each engine's cells form their own topology groups.

Measurement hygiene::

    warmup: 1               # warm-up runs per topology: executed, stored, not counted
    order: random           # cells in a seeded random order within each topology
    order_seed: 0

Cells that cannot differ are not run twice: a 1-node cluster has no links, so its
cells for several latency or bandwidth profiles are one configuration (run once
per repetition, with no delay); :func:`notes` says so for the sweep's detail.

A ``search: break_even`` spec is not a grid: see :mod:`edgelab.sweeps.search`.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from edgelab.catalog import Catalog, CatalogError, ModelInfo
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import ConfigError, RunConfig, parse_config

#: Axes in grid order: the slowest-changing first. ``prompts`` maps to a run's ``prompt``.
AXES: tuple[str, ...] = (
    "engine",
    "model",
    "backend",
    "nodes",
    "threads",
    "devices",
    "bandwidth",
    "latency",
    "links",
    "max_tokens",
    "prompts",
)
#: Axes whose values may be objects (a per-node map of devices or links), not scalars.
OBJECT_AXES: tuple[str, ...] = ("latency", "devices", "links")
#: Fields shared by every cell.
FIXED: tuple[str, ...] = ("seed", "temperature", "options")
OTHER: tuple[str, ...] = ("name", "repetitions", "prompt", "warmup", "order", "order_seed")
#: The fields of a ``search`` spec (edgelab.sweeps.search) besides the axes.
SEARCH_FIELDS: tuple[str, ...] = ("search", "latency_range", "tolerance")
ORDERS = ("random", "grid")
MAX_WARMUP = 10
MAX_REPETITIONS = 100
DEFAULTS: dict[str, Any] = {
    "engine": "llamacpp",
    "model": "smollm2-135m",
    "backend": None,  # the server's EDGELAB_BACKEND
    "devices": None,  # every node the cluster-wide threads
    "links": None,  # every link the cluster-wide latency
    "nodes": 1,
    "threads": 1,
    "bandwidth": None,
    "latency": "0ms",
    "max_tokens": 64,
}
#: parse_config's field name -> the spec field a user wrote.
_FIELD_OF = {"prompt": "prompts"}


class SpecError(ValueError):
    """The spec is invalid; ``errors`` maps each field to its message (like ``ConfigError``)."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


@dataclass(frozen=True)
class SweepSpec:
    name: str
    axes: dict[str, list[Any]]
    repetitions: int
    fixed: dict[str, Any]
    #: ``model`` given per engine ({engine: [models]}); ``axes["model"]`` then
    #: lists every model once, in order.
    models_by_engine: dict[str, list[Any]] | None = None
    warmup: int = 0
    order: str = "random"
    order_seed: int = 0
    # A break-even search (edgelab.sweeps.search): {"search", "latency_range", "tolerance"}.
    search: dict[str, Any] | None = None

    def models_for(self, engine: Any) -> list[Any]:
        """The model axis of ``engine``'s cells."""
        if self.models_by_engine is not None:
            return self.models_by_engine.get(engine, [])
        return self.axes["model"]

    @property
    def total_cells(self) -> int:
        if self.search is not None:
            from edgelab.sweeps.search import max_cells

            return max_cells(self)
        rest = math.prod(len(v) for k, v in self.axes.items() if k not in ("engine", "model"))
        per_pass = sum(len(self.models_for(e)) for e in self.axes["engine"]) * rest
        return per_pass * self.repetitions

    def to_dict(self) -> dict[str, Any]:
        """The canonical spec, stored with the sweep and re-expanded on resume."""
        axes: dict[str, Any] = dict(self.axes)
        if self.models_by_engine is not None:
            axes["model"] = {e: list(m) for e, m in self.models_by_engine.items()}
        data = {"name": self.name, **axes, "repetitions": self.repetitions, **self.fixed}
        data.update(warmup=self.warmup, order=self.order, order_seed=self.order_seed)
        if self.search is not None:
            data.update(self.search)
            data.pop("latency", None)  # the search chooses the delays
        return data


@dataclass(frozen=True)
class Cell:
    """One grid point: the configuration of one run."""

    index: int
    config: RunConfig

    @property
    def key(self) -> tuple[str, int]:
        """What identifies a cell across resumes: same experiment, same repetition."""
        return (self.config.fingerprint(), self.config.repetition)

    @property
    def topology(self) -> str:
        return self.config.cluster_spec.topology_key()


def load_spec_text(text: str) -> dict[str, Any]:
    """A spec document (YAML, of which JSON is a subset) as a dict."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError({"spec": f"not valid YAML or JSON: {exc}"}) from exc
    if not isinstance(data, dict):
        raise SpecError({"spec": "must be a mapping of fields (name, nodes, latency, ...)"})
    return data


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def parse_spec(data: dict[str, Any], *, max_cells: int) -> SweepSpec:
    """Check the shape of a spec and its size; per-value checks happen in ``expand``."""
    errors: dict[str, str] = {}
    search: dict[str, Any] | None = None
    if data.get("search") is not None:
        from edgelab.sweeps.search import parse_search

        search = parse_search(data, errors)
        data = {k: v for k, v in data.items() if k not in SEARCH_FIELDS}
        data.setdefault("latency", "0ms")
    unknown = sorted(set(data) - set(AXES) - set(FIXED) - set(OTHER))
    if unknown:
        known = ", ".join((*AXES, *FIXED, "name", "repetitions"))
        errors["spec"] = f"unknown field(s) {', '.join(unknown)}; known fields: {known}"

    name = data.get("name") or "sweep"
    if not isinstance(name, str) or len(name) > 200:
        errors["name"] = "must be a string of at most 200 characters"
        name = "sweep"

    axes: dict[str, list[Any]] = {}
    models_by_engine: dict[str, list[Any]] | None = None
    for axis in AXES:
        if axis == "model" and isinstance(data.get("model"), dict):
            models_by_engine = _models_by_engine(data["model"], data.get("engine"), errors)
            axes["model"] = _unique([m for ms in (models_by_engine or {}).values() for m in ms])
            continue
        if axis == "prompts":
            raw = data.get("prompts", data.get("prompt"))
            if raw is None:
                errors["prompts"] = "give at least one prompt (prompts: [...])"
                raw = []
        else:
            raw = data.get(axis, DEFAULTS[axis])
        values = _as_list(raw)
        if not values:
            errors.setdefault(axis, "must have at least one value")
        elif any(isinstance(v, list) for v in values) or (
            any(isinstance(v, dict) for v in values) and axis not in OBJECT_AXES
        ):
            errors[axis] = (
                "values must be scalars"
                if axis not in OBJECT_AXES
                else "give one value or a list of values (a name or a per-node map each)"
            )
        else:
            # Duplicates would make two identical cells that resume cannot tell apart.
            axes[axis] = _unique(values)

    repetitions = data.get("repetitions", 1 if search is None else 3)
    if isinstance(repetitions, bool) or not isinstance(repetitions, int):
        errors["repetitions"] = f"must be a whole number, got {repetitions!r}"
        repetitions = 1
    elif not 1 <= repetitions <= MAX_REPETITIONS:
        errors["repetitions"] = f"must be between 1 and {MAX_REPETITIONS}, got {repetitions}"
        repetitions = 1

    warmup = data.get("warmup", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= MAX_WARMUP:
        errors["warmup"] = f"must be a whole number of runs from 0 to {MAX_WARMUP}, got {warmup!r}"
        warmup = 0
    order = data.get("order", "random")
    if order not in ORDERS:
        errors["order"] = f"must be one of {', '.join(ORDERS)}, got {order!r}"
        order = "random"
    order_seed = data.get("order_seed", 0)
    if isinstance(order_seed, bool) or not isinstance(order_seed, int):
        errors["order_seed"] = f"must be a whole number, got {order_seed!r}"
        order_seed = 0

    fixed = {k: data[k] for k in FIXED if k in data}
    if errors:
        raise SpecError(errors)

    spec = SweepSpec(
        name=name,
        axes=axes,
        repetitions=repetitions,
        fixed=fixed,
        models_by_engine=models_by_engine,
        warmup=warmup,
        order=order,
        order_seed=order_seed,
        search=search,
    )
    if spec.total_cells > max_cells:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in axes.items() if len(v) > 1)
        raise SpecError(
            {
                "spec": f"the sweep has {spec.total_cells} cells ({sizes or '1'} x "
                f"{repetitions} repetitions), more than the limit of {max_cells}; "
                "shrink an axis or raise EDGELAB_MAX_SWEEP_CELLS"
            }
        )
    return spec


def _unique(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _models_by_engine(
    mapping: dict[Any, Any], engines: Any, errors: dict[str, str]
) -> dict[str, list[Any]] | None:
    """Check ``model: {engine: model or [models]}`` against the sweep's engines."""
    wanted = [str(e) for e in _as_list(engines if engines is not None else DEFAULTS["engine"])]
    unknown = [str(k) for k in mapping if str(k) not in wanted]
    missing = [e for e in wanted if e not in mapping]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"{', '.join(unknown)} not in the sweep's engines")
        if missing:
            parts.append(f"no model for {', '.join(missing)}")
        errors["model"] = (
            f"a model per engine ({'; '.join(parts)}): give one entry for each of "
            f"{', '.join(wanted)}"
        )
        return None
    out: dict[str, list[Any]] = {}
    for engine, raw in mapping.items():
        values = _as_list(raw)
        if not values or any(isinstance(v, dict | list) for v in values):
            errors["model"] = f"{engine}: give a model name or a list of them"
            return None
        out[str(engine)] = _unique(values)
    return out


class _CachedCatalog(Catalog):
    """Reads the catalog file once per expansion instead of once per cell."""

    def __init__(self, inner: Catalog) -> None:
        super().__init__(path=inner.path, models_dir=inner.models_dir)
        self._cache: dict[str, ModelInfo | CatalogError] = {}

    def get(self, name: str) -> ModelInfo:
        if name not in self._cache:
            try:
                self._cache[name] = super().get(name)
            except CatalogError as exc:
                self._cache[name] = exc
        found = self._cache[name]
        if isinstance(found, CatalogError):
            raise found
        return found


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def expand(spec: SweepSpec, catalog: Catalog, *, default_backend: str = "local") -> list[Cell]:
    """Every cell of the grid, validated; all problems are reported at once.

    Order: axes as in ``AXES``, repetitions outermost, so a sweep's first pass
    covers every configuration once before any is repeated (drift on the host then
    spreads over all configurations instead of hitting the last ones). The order
    runs execute in is :func:`execution_order`'s. 1-node cells are collapsed (see
    the module docstring). A search spec expands to its first probes.
    """
    if spec.search is not None:
        from edgelab.sweeps.search import initial_cells

        return initial_cells(spec, catalog, default_backend=default_backend)
    return _expand_grid(spec, catalog, default_backend=default_backend)


def config_cell(
    spec: SweepSpec,
    values: dict[str, Any],
    repetition: int,
    catalog: Catalog,
    *,
    default_backend: str = "local",
) -> RunConfig:
    """The validated configuration of one cell from its axis ``values`` (``ConfigError``)."""
    values = dict(values)
    raw = {**spec.fixed, **values, "prompt": values.pop("prompts")}
    raw["repetition"] = repetition
    config, _model = parse_config(raw, catalog, default_backend=default_backend)
    return config


def _expand_grid(spec: SweepSpec, catalog: Catalog, *, default_backend: str) -> list[Cell]:
    cached = _CachedCatalog(catalog)
    seen: set[tuple[str, int]] = set()
    errors: dict[str, str] = {}
    cells: list[Cell] = []
    rest = AXES[2:]  # after engine and model, which may depend on the engine
    combos = [
        (engine, model, *others)
        for engine in spec.axes["engine"]
        for model in spec.models_for(engine)
        for others in itertools.product(*(spec.axes[a] for a in rest))
    ]
    several_engines = len(spec.axes["engine"]) > 1
    for repetition in range(spec.repetitions):
        for combo in combos:
            values = dict(zip(AXES, combo, strict=True))
            raw = {**spec.fixed, **values, "prompt": values.pop("prompts")}
            raw["repetition"] = repetition
            try:
                config, _model = parse_config(raw, cached, default_backend=default_backend)
            except ConfigError as exc:
                for field, message in exc.errors.items():
                    key = _FIELD_OF.get(field, field)
                    shown = raw.get(field)
                    prefix = f"{_show(shown)}: " if key in AXES and len(spec.axes[key]) > 1 else ""
                    if several_engines and key != "engine":
                        # Which engine's cells are wrong matters as much as the value.
                        engine = f"engine {raw['engine']}"
                        prefix = f"{engine}, {prefix}" if prefix else f"{engine}: "
                    if key == "model" and several_engines and spec.models_by_engine is None:
                        message += " (give each engine its model: model: {engine: model, ...})"
                    errors.setdefault(key, prefix + message)
                continue
            if config.nodes == 1:
                # No links: every latency/bandwidth profile is the same experiment.
                config = replace(config, latency=LatencyProfile.parse("0ms"))
                cell_key = (config.fingerprint(), repetition)
                if cell_key in seen:
                    continue
                seen.add(cell_key)
            cells.append(Cell(index=len(cells), config=config))
    if errors:
        raise SpecError(errors)
    return cells


def notes(spec: SweepSpec) -> list[str]:
    """What the sweep does differently from the literal grid, for its detail page."""
    found: list[str] = []
    profiles = len(spec.axes.get("latency", [])) * len(spec.axes.get("bandwidth", []))
    if spec.search is None and 1 in spec.axes.get("nodes", []) and profiles > 1:
        found.append(
            f"1-node cells cannot differ in latency or bandwidth (one node has no links): "
            f"its {profiles} latency/bandwidth profiles are one configuration, run once per "
            "repetition with no delay"
        )
    if spec.warmup:
        found.append(
            f"{spec.warmup} warm-up run(s) per topology before its cells: stored, flagged "
            "warmup, not counted in statistics"
        )
    if spec.order == "random":
        found.append(
            f"cells run in a random order within each topology and repetition (seed "
            f"{spec.order_seed}), so drift on the host does not line up with one axis"
        )
    return found


def execution_order(spec: SweepSpec, cells: Sequence[Cell]) -> list[Cell]:
    """Cells in the order their runs are created, which is the order they execute in.

    Topology groups keep the order of their first cell; within a group, each
    repetition's block is shuffled with a generator seeded by ``order_seed``, the
    topology and the repetition, so the same spec always gives the same order and
    every repetition pass still covers every configuration once.
    """
    if spec.order != "random":
        return list(cells)
    ordered: list[Cell] = []
    for group in group_by_topology(cells):
        blocks: dict[int, list[Cell]] = {}
        for cell in group:
            blocks.setdefault(cell.config.repetition, []).append(cell)
        for repetition, block in blocks.items():
            rng = random.Random(f"{spec.order_seed}:{group[0].topology}:{repetition}")
            shuffled = list(block)
            rng.shuffle(shuffled)
            ordered.extend(shuffled)
    return ordered


def group_by_topology(cells: Sequence[Cell]) -> list[list[Cell]]:
    """Cells that can share one warm cluster, in order of their first cell.

    Each group costs one model load; inside a group only the latency profile changes.
    """
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.topology, []).append(cell)
    return list(groups.values())
