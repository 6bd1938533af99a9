"""The run-history filter: one parser and one query for ``GET /api/runs``, the
history page and its exports.

Query parameters: ``status`` (comma-separated or repeated), ``model``, ``nodes``,
``threads``, ``latency`` (a profile label such as ``10ms..50ms``), ``backend``,
``topology`` (``uniform``, or text of the devices/links label such as ``cpus 0.25``
or a named topology), ``sweep``,
``since``, ``until``, ``sort`` (one of :data:`SORTABLE`, ``-`` for descending),
``page`` and ``per_page``. So a URL copied from the history page works against the
API and gives the same runs. A bare date in ``until`` includes that whole day, as
a "to" date reads. Bad values are reported per field, never a 500.

It lives in ``edgelab/service`` rather than ``web/`` because both blueprints use it
and the API must not depend on the viewer's package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from edgelab.models import RUN_STATUSES, Run
from edgelab.validation.fields import (
    DEFAULT_PER_PAGE,
    ID,
    PAGE,
    PER_PAGE,
    RUN_RULES,
    Rule,
)
from edgelab.validation.values import DB_INT_MAX, FieldError, clean_text, quote

SORTABLE = (
    "id",
    "created_at",
    "started_at",
    "finished_at",
    "status",
    "model",
    "nodes",
    "threads",
    "latency_label",
    "max_tokens",
    "ttft_ms",
    "e2el_ms",
    "tpot_ms",
    "decode_tps",
    "repetition",
)
PER_PAGE_CHOICES = (25, 50, 100, 200)
FILTER_KEYS = (
    "status",
    "model",
    "nodes",
    "threads",
    "latency",
    "backend",
    "topology",
    "sweep",
    "since",
    "until",
)


@dataclass
class HistoryFilter:
    """A parsed filter: what to select, how to order it, which page; ``errors`` per field."""

    args: dict[str, str] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)
    model: str = ""
    nodes: int | None = None
    threads: int | None = None
    latency: str = ""
    backend: str = ""
    #: ``uniform``, or text the topology label contains (``cpus 0.25``, ``worker2``, a name).
    topology: str = ""
    sweep: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    sort: str = "-id"
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    errors: dict[str, str] = field(default_factory=dict)

    def statement(self) -> Select[Run]:
        stmt = select(Run)
        if self.statuses:
            stmt = stmt.where(Run.status.in_(self.statuses))
        if self.model:
            stmt = stmt.where(Run.model == self.model)
        if self.nodes is not None:
            stmt = stmt.where(Run.nodes == self.nodes)
        if self.threads is not None:
            stmt = stmt.where(Run.threads == self.threads)
        if self.latency:
            stmt = stmt.where(Run.latency_label == self.latency)
        if self.backend:
            stmt = stmt.where(Run.backend == self.backend)
        if self.topology == "uniform":
            # Runs from before topologies existed have no label.
            stmt = stmt.where(or_(Run.topology_label.is_(None), Run.topology_label == "uniform"))
        elif self.topology:
            stmt = stmt.where(Run.topology_label.contains(self.topology, autoescape=True))
        if self.sweep is not None:
            stmt = stmt.where(Run.sweep_id == self.sweep)
        if self.since is not None:
            stmt = stmt.where(Run.created_at >= self.since)
        if self.until is not None:
            stmt = stmt.where(Run.created_at < self.until)
        return stmt

    def ordered(self) -> Select[Run]:
        key = self.sort.lstrip("-")
        column = getattr(Run, key)
        order = column.desc() if self.sort.startswith("-") else column.asc()
        tiebreak = Run.id.desc() if self.sort.startswith("-") else Run.id.asc()
        stmt = self.statement().order_by(order)
        return stmt if key == "id" else stmt.order_by(tiebreak)

    def count(self, session: Session) -> int:
        stmt = self.statement().with_only_columns(func.count(Run.id)).order_by(None)
        return int(session.scalar(stmt) or 0)

    def page_of(self, session: Session) -> list[Run]:
        stmt = self.ordered().offset((self.page - 1) * self.per_page).limit(self.per_page)
        return list(session.scalars(stmt))

    def query_args(self, **changes: Any) -> dict[str, str]:
        """The current filter as URL arguments, with ``changes`` applied (None drops one)."""
        out = dict(self.args)
        for key, value in changes.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = str(value)
        return {k: v for k, v in out.items() if v != ""}


def _when(raw: str, name: str, errors: dict[str, str], *, end: bool) -> datetime | None:
    """A date (midnight UTC, or the next midnight if ``end``) or a date-time, UTC if no zone."""
    try:
        if len(raw) > 40 or not raw.isascii():
            raise ValueError(raw)
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            when = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return when + timedelta(days=1) if end else when
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        errors[name] = (
            f"must be a date (2026-01-31) or date-time (2026-01-31T12:00), got {quote(raw)}"
        )
        return None


def _int(raw: str, name: str, errors: dict[str, str], lo: int, hi: int) -> int | None:
    try:
        return int(Rule(name, "integer", "", minimum=lo, maximum=hi).from_text(raw))
    except FieldError as exc:
        errors[name] = str(exc)
        return None


def text_filter(raw: str, name: str, errors: dict[str, str]) -> str:
    """A free-text filter: one line, no control characters (PostgreSQL refuses NUL)."""
    if not raw:
        return ""
    try:
        return clean_text(raw, max_chars=200)
    except FieldError as exc:
        errors[name] = str(exc)
        return ""


def _strict_problem(args: MultiDict[str, str], name: str, *, empty_ok: bool) -> str | None:
    """What the API refuses that the pages forgive: empty values, surrounding spaces."""
    if name not in args:
        return None
    raw = args.get(name, "")
    if raw == "" and not empty_ok:
        return "must not be empty"
    if raw != raw.strip():
        return "must not have spaces around it"
    return None


def parse_paging(
    args: MultiDict[str, str], errors: dict[str, str], *, strict: bool = False
) -> tuple[int, int]:
    """``page`` and ``per_page`` by their rules (:data:`PAGE`, :data:`PER_PAGE`).

    A bad value is an error (the API answers 400), never silently the default; the
    default is returned alongside so a page can still render. ``strict`` (the API)
    also refuses an empty value, which a page's form submits for "no choice".
    """
    values = []
    for rule in (PAGE, PER_PAGE):
        raw = args.get(rule.name, "").strip()
        value = rule.default
        problem = _strict_problem(args, rule.name, empty_ok=False) if strict else None
        if problem:
            errors[rule.name] = problem
        elif raw:
            try:
                value = rule.from_text(raw)
            except FieldError as exc:
                errors[rule.name] = str(exc)
        values.append(int(value))
    return values[0], values[1]


def parse_history(args: MultiDict[str, str], *, strict: bool = False) -> HistoryFilter:
    """Parse the query arguments; problems go to ``errors``, the bad value is ignored.

    ``strict`` is the API's reading (what its OpenAPI document says): a number or a
    sort key that is present must not be empty or padded with spaces. The pages read
    their own forms, which submit every field, leniently.
    """
    f = HistoryFilter()
    keep = (*FILTER_KEYS, "sort", "per_page")
    f.args = {k: args.get(k, "").strip() for k in keep if args.get(k, "").strip()}
    errors = f.errors
    statuses = [part for value in args.getlist("status") for part in value.split(",") if part]
    bad = [s for s in statuses if s not in RUN_STATUSES]
    if bad:
        shown = ", ".join(b[:40] for b in bad[:5])
        errors["status"] = f"unknown status {shown}; one of {', '.join(RUN_STATUSES)}"
    else:
        f.statuses = statuses
    if statuses:
        f.args["status"] = ",".join(statuses)
    f.model = text_filter(args.get("model", "").strip(), "model", errors)
    f.latency = text_filter(args.get("latency", "").strip(), "latency", errors)
    f.backend = text_filter(args.get("backend", "").strip(), "backend", errors)
    f.topology = text_filter(args.get("topology", "").strip(), "topology", errors)
    bounds = {"nodes": RUN_RULES["nodes"].bounds(), "threads": (1, DB_INT_MAX)}
    bounds["sweep"] = ID.bounds()
    for name, (lo, hi) in bounds.items():
        raw = args.get(name, "").strip()
        if raw:
            setattr(f, name, _int(raw, name, errors, lo=lo, hi=hi))
    raw = args.get("since", "").strip()
    if raw:
        f.since = _when(raw, "since", errors, end=False)
    raw = args.get("until", "").strip()
    if raw:
        f.until = _when(raw, "until", errors, end=True)
    sort = args.get("sort", "").strip() or "-id"
    if sort.lstrip("-") not in SORTABLE or sort.startswith("--"):
        errors["sort"] = f"must be one of {', '.join(SORTABLE)} (prefix - for descending)"
        sort = "-id"
    f.sort = sort
    f.page, f.per_page = parse_paging(args, errors, strict=strict)
    if strict:
        for name in ("nodes", "threads", "sweep", "sort", "since", "until"):
            problem = _strict_problem(args, name, empty_ok=False)
            if problem:
                errors[name] = problem
    return f
