"""Every input field edgelab accepts, with its type, bounds and meaning: the one place.

A :class:`Rule` is used three ways, so they cannot disagree:

* ``check(value)`` validates a JSON value strictly (no coercion; booleans are not
  numbers, ``"32"`` is not a number);
* ``from_text(text)`` turns form, query-string or command-line text into that
  value first (ASCII digits only), then checks it the same way;
* ``schema()`` is the field's JSON Schema in the OpenAPI document.

**Adding a field**: add a ``Rule`` to :data:`RUN_RULES` (a run's fields; they are
also sweep axes when listed in :data:`SWEEP_AXES`), :data:`OPTION_RULES` (backend
extras under ``options``) or :data:`SWEEP_RULES` (sweep-only fields such as
``repetitions``). Unknown fields are refused with the list of the known ones, which
comes from these registries, so a field that is not registered here cannot be sent.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from edgelab.validation.values import (
    CONTROL_CHARS,
    DB_INT_MAX,
    LINE_CONTROL_CHARS,
    FieldError,
    clean_text,
    got,
    int_text,
    number,
    number_text,
    quote,
    whole_number,
)

Kind = Literal[
    "integer",
    "number",
    "string",
    "enum",
    "latency",
    "bandwidth",
    "loss",
    "object",
    "json",
    "memory",
]
Bound = int | float | Callable[[], int | float]

# --- documented limits ---------------------------------------------------------------

MAX_NODES = 64
MAX_TOKENS_LIMIT = 1024
MAX_REPETITIONS = 100
MAX_WARMUP = 10
#: Prompts above this never fit a small edge model's context; checked before tokenising.
MAX_PROMPT_CHARS = 65_536
#: One-way delay of a simulated link, per direction (also the uniform upper bound and
#: a normal profile's mean and standard deviation): a slow satellite hop is ~0.6 s.
MAX_DELAY_MS = 10_000.0
#: Slowest simulated link: llama.cpp's RPC sends every weight to the workers when a
#: cluster starts, so 100 kbit/s already means minutes of loading for the small model.
MIN_BANDWIDTH_BPS = 100_000
MAX_BANDWIDTH_BPS = 100_000_000_000
#: Packet loss of a link, per cent of its packets each way. Past half of them TCP
#: hardly moves at all (and nftables drops in steps of 0.01 %).
MAX_LOSS_PCT = 50.0
MAX_PAGE = 1_000_000
MAX_PER_PAGE = 500
DEFAULT_PER_PAGE = 50
ENGINES = ("llamacpp", "dllama")
BACKENDS = ("local", "docker")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
#: A memory limit as Docker writes it: bytes, or a number with b, k, m or g.
MEM_TEXT = re.compile(r"[0-9]{1,15}[bkmgBKMG]?")
#: The smallest memory limit Docker accepts ("Minimum memory limit allowed is 6MB");
#: the same floor for a local node's cgroup, so a device means the same on both.
MIN_MEM_BYTES = 6 * 1024**2
MEM_HELP = "must be a size such as 512m, 2g or a number of bytes"
#: distributed-llama's run modes (``edgelab.engines.dllama.MODES``; a test checks they agree).
DLLAMA_MODE_OPTION = "dllama_mode"
DLLAMA_MODES = ("api", "inference")


def host_cores() -> int:
    """Threads per node are bounded by this host's cores: more only oversubscribes
    (and 100,000 threads crashed the root)."""
    return os.cpu_count() or 1


_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Rule:
    """One field: its kind, bounds, default and description (see the module docstring)."""

    name: str
    kind: Kind
    description: str
    default: Any = _NO_DEFAULT
    minimum: Bound | None = None
    maximum: Bound | None = None
    choices: tuple[str, ...] = ()
    max_chars: int = 200
    multiline: bool = False
    nullable: bool = False
    pattern: re.Pattern[str] | None = None
    pattern_help: str = ""
    #: For ``object`` fields: the rules of their members.
    members: Mapping[str, Rule] = field(default_factory=dict)

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    def bounds(self) -> tuple[Any, Any]:
        lo = self.minimum() if callable(self.minimum) else self.minimum
        hi = self.maximum() if callable(self.maximum) else self.maximum
        return lo, hi

    # --- checking ---------------------------------------------------------------

    def check(self, value: Any) -> Any:
        """The value if valid (ints for integers, floats for numbers); else FieldError."""
        if value is None and self.nullable:
            return None
        lo, hi = self.bounds()
        if self.kind == "integer":
            return whole_number(value, lo, hi)
        if self.kind == "number":
            return number(value, lo, hi)
        if self.kind == "enum":
            if not isinstance(value, str) or value not in self.choices:
                raise FieldError(f"must be one of {', '.join(self.choices)}, got {got(value)}")
            return value
        if self.kind == "object":
            return check_object(value, self.members)
        if self.kind == "loss":
            return format_loss(loss_percent(value))
        if self.kind == "json":
            # Structured input another module checks in full (a run's devices and links:
            # edgelab.topology); here only its shape and size.
            if not isinstance(value, str | dict):
                raise FieldError(f"must be a name or an object, got {got(value)}")
            if len(json.dumps(value)) > self.max_chars:
                raise FieldError(f"must be at most {self.max_chars} characters as JSON")
            if isinstance(value, str):
                clean_text(value, max_chars=self.max_chars)
            return value
        text = clean_text(value, max_chars=self.max_chars, multiline=self.multiline)
        if self.pattern is not None and not self.pattern.fullmatch(text):
            raise FieldError(f"{self.pattern_help}, got {quote(text)}")
        if self.kind == "latency":
            check_latency_text(text)
        elif self.kind == "bandwidth":
            check_bandwidth_text(text)
        elif self.kind == "memory":
            check_mem_text(text)
        return text

    def from_text(self, text: str) -> Any:
        """Form/query/CLI text as this field's value (empty text means the default)."""
        if self.kind == "integer":
            return self.check(int_text(text))
        if self.kind == "number":
            return self.check(number_text(text))
        return self.check(text)

    # --- documenting ------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of this field (what the OpenAPI document shows)."""
        lo, hi = self.bounds()
        out: dict[str, Any]
        if self.kind in ("integer", "number"):
            out = {"type": self.kind, "minimum": lo, "maximum": hi}
        elif self.kind == "enum":
            out = {"type": "string", "enum": list(self.choices)}
        elif self.kind == "json":
            out = {"type": ["string", "object"]}
        elif self.kind == "loss":
            # Minimum/maximum apply to a number, the pattern to text (JSON Schema).
            out = {
                "type": ["string", "number"],
                "minimum": 0,
                "maximum": MAX_LOSS_PCT,
                "pattern": f"^{LOSS_TEXT.pattern}$",
            }
        elif self.kind == "object":
            out = {
                "type": "object",
                "properties": {k: r.schema() for k, r in self.members.items()},
                "additionalProperties": False,
            }
        else:
            out = {"type": "string", "minLength": 1, "maxLength": self.max_chars}
            if self.pattern is not None:
                out["pattern"] = f"^{self.pattern.pattern}$"
            else:
                # No control characters. That the text is not blank is said in words
                # only: a pattern for it made schemathesis' data generation too slow.
                controls = CONTROL_CHARS if self.multiline else LINE_CONTROL_CHARS
                out["pattern"] = f"^[^{controls}]*$"
        if self.nullable:
            kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*kinds, "null"]
        if self.has_default:
            out["default"] = self.default
        out["description"] = self.description
        if self.kind in ("string", "latency", "bandwidth") and self.pattern is None:
            out["description"] += " (not blank; no control characters)"
        return out


def mem_bytes(text: str) -> int:
    """Bytes of a Docker-style size (``512m``, ``1g``, ``1048576``)."""
    unit = text[-1].lower() if text[-1].isalpha() else ""
    amount = int(text[:-1] if unit else text)
    return amount * {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def check_mem_text(text: str) -> None:
    """A size (:data:`MEM_TEXT`) of at least :data:`MIN_MEM_BYTES`; else FieldError."""
    if not MEM_TEXT.fullmatch(text):
        raise FieldError(f"{MEM_HELP}, got {quote(text)}")
    if mem_bytes(text) < MIN_MEM_BYTES:
        raise FieldError(
            f"must be at least 6m (the smallest memory limit Docker accepts), got {quote(text)}"
        )


def check_latency_text(text: str) -> None:
    """Parseable and within the documented bounds (delay <= MAX_DELAY_MS, rate bounds)."""
    from edgelab.netem.profile import LatencyProfile, ProfileError

    try:
        profile = LatencyProfile.parse(text)
    except ProfileError as exc:
        raise FieldError(_short(str(exc))) from None
    check_profile(profile)


def check_profile(profile: Any) -> None:
    """A parsed ``LatencyProfile``'s delays and rates against the documented bounds."""
    for direction in ("up", "down"):
        one = profile.direction(direction)
        delays = (("delay", one.delay_ms), ("max", one.max_ms), ("jitter", one.jitter_ms))
        for name, value in delays:
            if value > MAX_DELAY_MS:
                raise FieldError(
                    f"{name} of {value:g} ms is above the maximum of {MAX_DELAY_MS:g} ms per link"
                )
        if one.bandwidth_bps is not None:
            _check_rate(one.bandwidth_bps)


#: Loss as text: a percentage with an optional ``%`` (``2%``, ``0.5 %``, ``1``). Spaces
#: only (not ``\s``): the OpenAPI pattern must refuse exactly what this refuses.
LOSS_TEXT = re.compile(r" *[0-9]{1,2}(\.[0-9]{1,2})? *%? *")


def loss_percent(value: Any) -> float:
    """Per cent of packets lost from ``"2%"``, ``"0.5 %"``, ``"2"``, ``2`` or ``0.5``.

    The one rule for loss, cluster-wide (``loss``) and per link (``links: {w: "loss:2%"}``):
    0-50 %, at most two decimals (nftables drops N in 10,000). ``FieldError`` otherwise.
    """
    if isinstance(value, str):
        text = value.strip(" ")
        if not LOSS_TEXT.fullmatch(value):
            raise FieldError(
                f"must be a percentage between 0 and {MAX_LOSS_PCT:g} such as 1% or 0.5%, "
                f"got {quote(value)}"
            )
        pct = float(text.rstrip("%").strip())
    else:
        pct = number(value, -math.inf, math.inf)
        if round(pct, 2) != pct:
            raise FieldError(f"must have at most two decimals (0.01 % steps), got {pct!r}")
    if not 0.0 <= pct <= MAX_LOSS_PCT:
        raise FieldError(f"must be between 0 and {MAX_LOSS_PCT:g} %, got {pct:g} %")
    return pct


def format_loss(pct: float) -> str:
    """The canonical text of a loss (``1%``, ``0.5%``): equal losses are equal values."""
    return f"{pct:g}%"


def check_bandwidth_text(text: str) -> None:
    from edgelab.netem.profile import ProfileError, parse_bandwidth

    parts = text.split("/")
    if len(parts) > 2:
        raise FieldError(f"at most one '/' (UP/DOWN), got {quote(text)}")
    for part in parts:
        try:
            bps = parse_bandwidth(part)
        except ProfileError:
            raise FieldError(
                f"cannot parse {quote(part)}; use e.g. 500kbit, 100mbit, 1gbit "
                "(byte units such as mbps are ambiguous)"
            ) from None
        _check_rate(bps)


def _check_rate(bps: int) -> None:
    if not MIN_BANDWIDTH_BPS <= bps <= MAX_BANDWIDTH_BPS:
        raise FieldError(
            f"{bps} bit/s is outside {MIN_BANDWIDTH_BPS // 1000} kbit/s .. "
            f"{MAX_BANDWIDTH_BPS // 10**9} gbit/s"
        )


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def unknown_fields(data: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, str]:
    """One error per unknown key (at most 10, then a summary), listing the known fields."""
    unknown = [k for k in data if k not in known]
    errors: dict[str, str] = {}
    listed = ", ".join(known)
    for key in unknown[:10]:
        name = key if len(key) <= 40 else quote(key)
        errors[name] = f"unknown field; known fields: {listed}"
    if len(unknown) > 10:
        errors["body"] = f"{len(unknown)} unknown fields in all; known fields: {listed}"
    return errors


def check_object(value: Any, members: Mapping[str, Rule]) -> dict[str, Any]:
    """An object whose keys are all known members, each valid (errors joined in one)."""
    if not isinstance(value, dict):
        raise FieldError(f"must be an object, got {got(value)}")
    problems = unknown_fields(value, tuple(members))
    out: dict[str, Any] = {}
    for key, rule in members.items():
        if key in value:
            try:
                out[key] = rule.check(value[key])
            except FieldError as exc:
                problems[key] = str(exc)
    if problems:
        raise FieldError("; ".join(f"{k}: {v}" for k, v in problems.items()))
    return out


# --- the registries ------------------------------------------------------------------

#: Backend extras of a run (``options``). Images are not here on purpose: which image
#: a container runs is the server's choice (EDGELAB_ROOT_IMAGE/EDGELAB_WORKER_IMAGE).
OPTION_RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "cpus",
            "number",
            "Docker: CPU limit per node container (default: threads)",
            minimum=0.01,
            maximum=host_cores,
        ),
        Rule(
            "mem",
            "memory",
            "Docker: memory limit per node container, e.g. 512m or 2g (at least 6m)",
            max_chars=16,
            pattern=MEM_TEXT,
            pattern_help=MEM_HELP,
        ),
        Rule(
            DLLAMA_MODE_OPTION,
            "enum",
            "dllama only: api = warm dllama-api root (the default); inference = one dllama "
            "inference per run",
            choices=DLLAMA_MODES,
        ),
    )
}

#: A run's fields, in the order forms show them.
RUN_RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "prompt",
            "string",
            "The prompt; tab and newlines allowed, no other control characters. Its tokens "
            "plus max_tokens must fit the model's context (checked when it is submitted)",
            max_chars=MAX_PROMPT_CHARS,
            multiline=True,
        ),
        Rule(
            "model",
            "string",
            "A model name from the catalog (GET /api/models)",
            default="smollm2-135m",
            pattern=_MODEL_NAME,
            pattern_help="must be a catalog model name (letters, digits, '.', '_', '-')",
        ),
        Rule(
            "nodes",
            "integer",
            "Devices including the root; the engine may refuse counts the model cannot split into",
            default=1,
            minimum=1,
            maximum=MAX_NODES,
        ),
        Rule(
            "threads",
            "integer",
            "CPU threads per node, at most this host's cores",
            default=1,
            minimum=1,
            maximum=host_cores,
        ),
        Rule(
            "latency",
            "latency",
            "Per-link one-way delay: 20ms, 10ms..50ms (uniform), 20ms~5ms (normal), optionally "
            f"@RATE and UP/DOWN; every delay at most {MAX_DELAY_MS:g} ms",
            default="0ms",
            max_chars=100,
        ),
        Rule(
            "bandwidth",
            "bandwidth",
            f"Per-link cap such as 100mbit (UP/DOWN allowed), at least {MIN_BANDWIDTH_BPS // 1000}"
            " kbit; null = unlimited",
            default=None,
            max_chars=40,
            nullable=True,
        ),
        Rule(
            "loss",
            "loss",
            f"Packet loss on every link, per cent each way (0-{MAX_LOSS_PCT:g}, e.g. 1% or "
            "0.5); a link's own loss in links wins. Real loss: nftables drops packets in each "
            "worker's network namespace (Docker, or local nodes as root), TCP retransmits",
            default="0%",
            max_chars=16,
        ),
        Rule(
            "max_tokens",
            "integer",
            "Tokens to generate",
            default=64,
            minimum=1,
            maximum=MAX_TOKENS_LIMIT,
        ),
        Rule(
            "seed",
            "integer",
            "Seed for sampling and link delays",
            default=0,
            minimum=0,
            maximum=DB_INT_MAX,
        ),
        Rule(
            "temperature",
            "number",
            "Sampling temperature; 0 = greedy",
            default=0.0,
            minimum=0.0,
            maximum=2.0,
        ),
        Rule("engine", "enum", "Inference engine", default="llamacpp", choices=ENGINES),
        Rule(
            "backend",
            "enum",
            "Where nodes run (null or left out: EDGELAB_BACKEND)",
            default=None,
            choices=BACKENDS,
            nullable=True,
        ),
        Rule(
            "repetition",
            "integer",
            "Repetition index (sweeps set it)",
            default=0,
            minimum=0,
            maximum=MAX_REPETITIONS - 1,
        ),
        Rule(
            "devices",
            "json",
            "Per node (root, worker1, ...): a device preset name, 'key:value,...' text or an "
            "object with threads, cpus (CPU quota in cores), mem; or the name of a named "
            "topology. Nodes not named keep threads and the options' cpus/mem",
            default=None,
            nullable=True,
            max_chars=20_000,
        ),
        Rule(
            "links",
            "json",
            "Per worker: 'PROFILE,bandwidth:RATE,loss:P%,trace:FILE,queue:SIZE' text or an "
            "object with latency, bandwidth, loss, trace, queue; a missing profile is the "
            "run's latency, a missing loss the run's loss. loss (0-50 %) is real packet "
            "loss and needs edgelab as root with nftables (local backend: iproute2 too; each "
            "worker then gets a network namespace); it is refused, saying why, where it "
            "cannot be applied",
            default=None,
            nullable=True,
            max_chars=20_000,
        ),
        Rule(
            "options",
            "object",
            "Backend extras (docker: cpus, mem)",
            default={},
            members=OPTION_RULES,
        ),
    )
}

#: Run fields that a sweep spec may give as a list (its axes), in grid order: the
#: slowest-changing first. ``prompts`` is the axis of a run's ``prompt``.
SWEEP_AXES: tuple[str, ...] = (
    "engine",
    "model",
    "backend",
    "nodes",
    "threads",
    "devices",
    "bandwidth",
    "latency",
    "loss",
    "links",
    "max_tokens",
    "prompts",
)
#: Run fields shared by every cell of a sweep (one value each).
SWEEP_FIXED: tuple[str, ...] = ("seed", "temperature", "options")
#: Axis name -> the run field its values go to.
AXIS_FIELD = {"prompts": "prompt"}
#: At most this many values per axis (the cell limit bounds the product anyway).
MAX_AXIS_VALUES = 1000

#: Sweep-only fields.
SWEEP_RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "name",
            "string",
            "A name for the sweep",
            default="sweep",
            max_chars=200,
        ),
        Rule(
            "repetitions",
            "integer",
            "Repetitions of the whole grid (a break-even search: 3 by default)",
            default=1,
            minimum=1,
            maximum=MAX_REPETITIONS,
        ),
        Rule(
            "warmup",
            "integer",
            "Warm-up runs per topology: executed and stored, not counted in statistics",
            default=0,
            minimum=0,
            maximum=MAX_WARMUP,
        ),
        Rule(
            "order",
            "enum",
            "random: cells in a seeded random order within each topology; grid: as listed",
            default="random",
            choices=("random", "grid"),
        ),
        Rule(
            "order_seed",
            "integer",
            "Seed of the random cell order",
            default=0,
            minimum=0,
            maximum=DB_INT_MAX,
        ),
    )
}
#: A ``search: break_even`` spec's own fields, checked by :mod:`edgelab.sweeps.search`.
SWEEP_SEARCH_FIELDS: tuple[str, ...] = ("search", "latency_range", "tolerance")
#: Every field a sweep spec may contain (``prompt`` is accepted for ``prompts``).
SWEEP_FIELDS: tuple[str, ...] = (
    *SWEEP_RULES,
    *SWEEP_AXES,
    *SWEEP_FIXED,
    "prompt",
    *SWEEP_SEARCH_FIELDS,
)


def axis_rule(axis: str) -> Rule:
    """The run rule a sweep axis's values follow."""
    return RUN_RULES[AXIS_FIELD.get(axis, axis)]


#: Query parameters shared by the list endpoints.
PAGE = Rule("page", "integer", "Page number, from 1", default=1, minimum=1, maximum=MAX_PAGE)
PER_PAGE = Rule(
    "per_page",
    "integer",
    "Page size",
    default=DEFAULT_PER_PAGE,
    minimum=1,
    maximum=MAX_PER_PAGE,
)
#: Path ids: the database's integer range (a larger id cannot exist).
ID = Rule("id", "integer", "An id", minimum=1, maximum=DB_INT_MAX)


__all__ = [
    "AXIS_FIELD",
    "BACKENDS",
    "DEFAULT_PER_PAGE",
    "ENGINES",
    "ID",
    "MAX_BANDWIDTH_BPS",
    "MAX_DELAY_MS",
    "MAX_LOSS_PCT",
    "MAX_NODES",
    "MAX_PAGE",
    "MAX_PER_PAGE",
    "MAX_PROMPT_CHARS",
    "MAX_REPETITIONS",
    "MAX_TOKENS_LIMIT",
    "MIN_BANDWIDTH_BPS",
    "OPTION_RULES",
    "PAGE",
    "PER_PAGE",
    "RUN_RULES",
    "SWEEP_AXES",
    "SWEEP_FIELDS",
    "SWEEP_FIXED",
    "SWEEP_RULES",
    "SWEEP_SEARCH_FIELDS",
    "Rule",
    "axis_rule",
    "check_object",
    "check_profile",
    "format_loss",
    "host_cores",
    "loss_percent",
    "unknown_fields",
]
