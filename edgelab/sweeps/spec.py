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

``backend``, ``devices``, ``links`` and ``loss`` are axes as well (see
``edgelab.topology``): ``devices`` takes named topologies or per-node maps, ``links``
per-worker maps, ``loss`` the packet loss of every link that does not set its own::

    devices: [uniform, one-slow-worker]
    links: [null, {worker2: 30ms}]
    loss: [0%, 1%, 2%]

Cells that differ only in link delays share a warm cluster; devices do not. Cells that
differ only in loss share one too (a worker's nftables rules are replaced between runs,
as link delays are), on Docker always; local nodes get their namespaces only when
their cluster starts lossy, so there the 0 % cells start a cluster of their own.

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
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgelab.catalog import Catalog, CatalogError, ModelInfo
from edgelab.netem.profile import LatencyProfile
from edgelab.runs.config import ConfigError, RunConfig, parse_config
from edgelab.validation.documents import DocumentError, load_yaml
from edgelab.validation.fields import (
    AXIS_FIELD,
    MAX_AXIS_VALUES,
    RUN_RULES,
    SWEEP_AXES,
    SWEEP_FIELDS,
    SWEEP_FIXED,
    SWEEP_RULES,
    SWEEP_SEARCH_FIELDS,
    axis_rule,
    unknown_fields,
)
from edgelab.validation.values import FieldError, InvalidInput, quote

#: Axes in grid order, fields shared by every cell, and sweep-only fields: all
#: registered in :mod:`edgelab.validation.fields` (add new spec fields there).
AXES: tuple[str, ...] = SWEEP_AXES
FIXED: tuple[str, ...] = SWEEP_FIXED
OTHER: tuple[str, ...] = (*SWEEP_RULES, "prompt")
#: The fields of a ``search`` spec (edgelab.sweeps.search) besides the axes.
SEARCH_FIELDS: tuple[str, ...] = SWEEP_SEARCH_FIELDS
ORDERS = SWEEP_RULES["order"].choices
MAX_WARMUP = int(SWEEP_RULES["warmup"].bounds()[1])
DEFAULTS: dict[str, Any] = {
    axis: axis_rule(axis).default for axis in AXES if axis_rule(axis).has_default
}
#: parse_config's field name -> the spec field a user wrote.
_FIELD_OF = {v: k for k, v in AXIS_FIELD.items()}


class SpecError(InvalidInput):
    """The spec is invalid; ``errors`` maps each field to its message (like ``ConfigError``).

    ``axes`` holds the axes that did parse, so the sweep form can still count them.
    """

    def __init__(self, errors: dict[str, str], axes: dict[str, list[Any]] | None = None) -> None:
        super().__init__(errors)
        self.axes = axes or {}


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
    """A spec document (YAML, of which JSON is a subset) as a dict, within the limits of
    :mod:`edgelab.validation.documents` (size, depth, alias expansion)."""
    try:
        data = load_yaml(text, field="spec")
    except DocumentError as exc:
        raise SpecError(exc.errors) from None
    if not isinstance(data, dict):
        raise SpecError({"spec": "must be a mapping of fields (name, nodes, latency, ...)"})
    return data


def _label(value: Any) -> str:
    """Which value of an axis a message is about: short strings as typed, else a quote."""
    return value if isinstance(value, str) and len(value) <= 40 else quote(value)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _axis_values(axis: str, raw: Any, errors: dict[str, str]) -> list[Any] | None:
    """One axis's values, each checked by its run field's rule; duplicates dropped."""
    values = _as_list(raw)
    if not values:
        errors[axis] = "must have at least one value"
        return None
    if len(values) > MAX_AXIS_VALUES:
        errors[axis] = f"has {len(values)} values, more than {MAX_AXIS_VALUES}"
        return None
    rule = axis_rule(axis)
    checked: list[Any] = []
    for value in values:
        try:
            value = rule.check(value)
        except FieldError as exc:
            prefix = f"{_label(value)}: " if len(values) > 1 else ""
            errors[axis] = prefix + str(exc)
            return None
        # Duplicates would make two identical cells that resume cannot tell apart.
        if value not in checked:
            checked.append(value)
    return checked


def parse_spec(data: dict[str, Any], *, max_cells: int) -> SweepSpec:
    """Check a spec's fields and its size; rules that join fields are checked in ``expand``.

    Every field follows its rule in :mod:`edgelab.validation.fields` (an axis's
    values follow the run field's rule), unknown fields are refused with the list of
    known ones, and every problem is reported at once.
    """
    if not isinstance(data, dict):
        raise SpecError({"spec": "must be a mapping of fields (name, nodes, latency, ...)"})
    errors: dict[str, str] = unknown_fields(data, SWEEP_FIELDS)
    search: dict[str, Any] | None = None
    if data.get("search") is not None:
        from edgelab.sweeps.search import parse_search

        search = parse_search(data, errors)
        data = {k: v for k, v in data.items() if k not in SEARCH_FIELDS}
        data.setdefault("latency", "0ms")
        data.setdefault("repetitions", 3)  # a search needs repetitions to decide
    else:
        for key in SEARCH_FIELDS:
            if key in data:
                errors[key] = "only for a search spec (search: break_even)"
    if "prompt" in data and "prompts" in data:
        errors["prompt"] = "give prompts or prompt, not both"

    other: dict[str, Any] = {}
    for key, rule in SWEEP_RULES.items():
        try:
            other[key] = rule.check(data[key]) if key in data else rule.default
        except FieldError as exc:
            errors[key] = str(exc)
            other[key] = rule.default

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
                continue
        else:
            raw = data.get(axis, DEFAULTS.get(axis))
        values = _axis_values(axis, raw, errors)
        if values is not None:
            axes[axis] = values

    fixed: dict[str, Any] = {}
    for key in FIXED:
        if key in data:
            try:
                fixed[key] = RUN_RULES[key].check(data[key])
            except FieldError as exc:
                errors[key] = str(exc)
    if errors:
        raise SpecError(errors, axes)

    spec = SweepSpec(
        name=other["name"],
        axes=axes,
        repetitions=other["repetitions"],
        fixed=fixed,
        models_by_engine=models_by_engine,
        warmup=other["warmup"],
        order=other["order"],
        order_seed=other["order_seed"],
        search=search,
    )
    if spec.total_cells > max_cells:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in axes.items() if len(v) > 1)
        raise SpecError(
            {
                "spec": f"the sweep has {spec.total_cells} cells ({sizes or '1'} x "
                f"{spec.repetitions} repetitions), more than the limit of {max_cells}; "
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
    default = axis_rule("engine").default
    given = _as_list(engines if engines is not None else default)
    wanted = [e for e in given if isinstance(e, str)]
    unknown = [_label(k) for k in mapping if k not in wanted]
    missing = [e for e in wanted if e not in mapping]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"{', '.join(unknown[:5])} not in the sweep's engines")
        if missing:
            parts.append(f"no model for {', '.join(missing)}")
        errors["model"] = (
            f"a model per engine ({'; '.join(parts)}): give one entry for each of "
            f"{', '.join(wanted)}"
        )
        return None
    out: dict[str, list[Any]] = {}
    for engine, raw in mapping.items():
        values = _axis_values("model", raw, errors)
        if values is None:
            errors["model"] = f"{engine}: {errors['model']}"
            return None
        out[str(engine)] = values
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
    raw = {**spec.fixed, **{AXIS_FIELD.get(a, a): v for a, v in values.items()}}
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
            values = {AXIS_FIELD.get(a, a): v for a, v in zip(AXES, combo, strict=True)}
            raw = {**spec.fixed, **values}
            raw["repetition"] = repetition
            try:
                config, _model = parse_config(raw, cached, default_backend=default_backend)
            except ConfigError as exc:
                for field, message in exc.errors.items():
                    key = _FIELD_OF.get(field, field)
                    shown = raw.get(field)
                    prefix = f"{_label(shown)}: " if key in AXES and len(spec.axes[key]) > 1 else ""
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
    profiles = math.prod(len(spec.axes.get(a, [None])) for a in ("latency", "bandwidth", "loss"))
    if spec.search is None and 1 in spec.axes.get("nodes", []) and profiles > 1:
        found.append(
            f"1-node cells cannot differ in latency, bandwidth or loss (one node has no "
            f"links): its {profiles} latency/bandwidth/loss profiles are one configuration, "
            "run once per repetition with no delay"
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
