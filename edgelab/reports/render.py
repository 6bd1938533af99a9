"""Render a :class:`~edgelab.reports.content.ReportData` as HTML or Markdown.

HTML is one self-contained file: CSS in a ``<style>`` element, figures as inline
SVG, no script, no font, no link to anything — it opens from a USB stick on a
machine without network. Markdown is for papers: the same sections as text
tables, with each figure written beside it as PNG (referenced) and SVG (for a
journal that wants vector art).

Both come from templates in ``edgelab/reports/templates`` with the same filters,
so the two formats cannot drift apart in what they say.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from edgelab.analysis.model import FORMULA
from edgelab.analysis.records import METRICS
from edgelab.analysis.summary import PREDICT_NODES
from edgelab.reports import figures
from edgelab.reports.content import ReportData
from edgelab.units import (
    METRIC_KINDS,
    fmt_bps,
    fmt_bytes,
    fmt_kind,
    fmt_mean_ci,
    fmt_ms,
    fmt_time,
)

METRIC_TITLES = {
    "ttft_ms": "TTFT",
    "tpot_ms": "TPOT",
    "itl_p50_ms": "ITL p50",
    "itl_p99_ms": "ITL p99",
    "decode_tps": "decode",
    "e2el_ms": "E2EL",
}
PARAM_TITLES = {
    "base_ms": ("base", "ms"),
    "compute_ms": ("compute (split over N)", "ms"),
    "per_worker_ms": ("per worker", "ms"),
    "delay_factor": ("delay factor", ""),
    "transfer_factor": ("transfer factor", ""),
}


def rate(value: Any) -> str:
    return fmt_kind(value, "tok/s")


def mean_ci(summary: Any, metric: str) -> str:
    """'52.3 ± 1.2 ms' (± the 95 % CI half-width), or the mean alone when n < 2."""
    if summary is None or summary.mean is None:
        return "—"
    return fmt_mean_ci(summary.mean, summary.half_width, METRIC_KINDS.get(metric, "num"))


def interval(ci: Any, digits: int = 2) -> str:
    if not ci:
        return "—"
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{100 * value:.{digits}f} %"


def number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.{digits}f}"


def md_cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return str(value).replace("|", "\\|").replace("\n", " ")


FILTERS: dict[str, Callable[..., str]] = {
    "ms": fmt_ms,
    "rate": rate,
    "bytes": fmt_bytes,
    "bps": fmt_bps,
    "mean_ci": mean_ci,
    "interval": interval,
    "pct": pct,
    "number": number,
    "cell": md_cell,
    "when": fmt_time,
}


def _environment(autoescape: bool) -> Environment:
    env = Environment(
        loader=PackageLoader("edgelab.reports", "templates"),
        autoescape=select_autoescape(["html"]) if autoescape else False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    return env


HTML_ENV = _environment(autoescape=True)
MD_ENV = _environment(autoescape=False)


@dataclass(frozen=True)
class FigureSpec:
    """One drawn figure: file stem, caption and the matplotlib figure."""

    name: str
    caption: str
    figure: Any  # matplotlib.figure.Figure


def report_figures(data: ReportData) -> dict[str, FigureSpec]:
    """Every figure the report has, by section; sections without data have none."""
    out: dict[str, FigureSpec] = {}
    fig = figures.speedup_figure(data.analysis)
    if fig is not None:
        out["scaling"] = FigureSpec(
            "speedup",
            "Speedup S(N) = TPOT(baseline) / TPOT(N) and efficiency S(N)/N vs nodes, "
            "per one-way delay; bars are 95 % confidence intervals (delta method).",
            fig,
        )
    fig = figures.throughput_figure(data.analysis)
    if fig is not None:
        out["throughput"] = FigureSpec(
            "throughput",
            "Decode tokens/s vs one-way delay per link, per node count (mean, 95 % CI); "
            "the 1-node line has no links.",
            fig,
        )
    fig = figures.breakdown_figure(data.breakdowns)
    if fig is not None:
        out["breakdown"] = FigureSpec(
            "breakdown", "Where each configuration's time per token goes (ms per token).", fig
        )
    for i, fit in enumerate(data.analysis.fits):
        out[f"model-{i}"] = FigureSpec(
            f"model-{i + 1}",
            f"Measured TPOT (points, 95 % CI) and the fitted model (lines) for {fit.model}, "
            f"{fit.threads} thread(s); dashed lines are predictions for node counts "
            "that did not run.",
            figures.model_figure(fit, data.groups_of_fit(i)),
        )
    return out


def fit_views(data: ReportData) -> list[dict[str, Any]]:
    """Per model fit: its configurations, a prediction grid and the break-even latencies.

    The grid is every node count tried plus :data:`PREDICT_NODES` (the same counts the
    API's ``fits[].break_even`` lists) at every one-way delay tried, at the bandwidth
    the figure draws (:func:`~edgelab.reports.figures.drawn_bandwidth`).
    """
    views = []
    for i, fit in enumerate(data.analysis.fits):
        bw = figures.drawn_bandwidth(fit)
        groups = [g for g in data.groups_of_fit(i) if g.key.bandwidth_bps == bw]
        delays = sorted({g.rtt_delay_ms / 2 for g in groups if g.key.nodes > 1}) or [0.0]
        nodes = sorted({*fit.nodes_tried, *PREDICT_NODES})
        views.append(
            {
                "fit": fit,
                "index": i,
                "delays": delays,
                "nodes": nodes,
                "tried": set(fit.nodes_tried),
                "bandwidth_bps": bw,
                "predictions": {n: [fit.predict(n, d, bw) for d in delays] for n in nodes},
                "break_even": [fit.break_even(n, bw) for n in nodes if n > 1],
                "holdouts": data.holdouts[i] if i < len(data.holdouts) else (),
            }
        )
    return views


def _context(data: ReportData, figure_refs: dict[str, Any]) -> dict[str, Any]:
    analysis = data.analysis
    # A section without a figure reads None (templates are StrictUndefined otherwise).
    refs: defaultdict[str, Any] = defaultdict(lambda: None, figure_refs)
    return {
        "r": data,
        "sweep": data.sweep,
        "a": analysis,
        "metrics": METRICS,
        "metric_titles": METRIC_TITLES,
        "param_titles": PARAM_TITLES,
        "formula": FORMULA,
        "predict_nodes": PREDICT_NODES,
        "figures": refs,
        "hygiene": data.hygiene,
        "fits": fit_views(data),
        "breakdown_parts": list(dict.fromkeys(p for b in data.breakdowns for p in b.parts)),
    }


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document (figures inline as SVG)."""
    refs = {
        key: {"svg": Markup(figures.svg(spec.figure, inline=True)), "caption": spec.caption}
        for key, spec in report_figures(data).items()
    }
    return HTML_ENV.get_template("report.html").render(**_context(data, refs))


def render_markdown(data: ReportData, figure_dir: str) -> tuple[str, dict[str, bytes]]:
    """The report as Markdown plus its figure files (relative name -> bytes).

    Figures are referenced as ``figure_dir/<name>.png``; an SVG of each is written
    beside the PNG.
    """
    files: dict[str, bytes] = {}
    refs: dict[str, Any] = {}
    for key, spec in report_figures(data).items():
        png_name = f"{figure_dir}/{spec.name}.png"
        svg_name = f"{figure_dir}/{spec.name}.svg"
        files[png_name] = figures.png(spec.figure)
        files[svg_name] = figures.svg(spec.figure).encode()
        refs[key] = {"png": png_name, "svg": svg_name, "caption": spec.caption}
    return MD_ENV.get_template("report.md").render(**_context(data, refs)), files


def write_markdown(data: ReportData, path: Path) -> list[Path]:
    """Write ``path`` (Markdown) and its figures in ``<stem>-figures/`` beside it.

    Returns every file written. Files are written to temporary names first and
    renamed, so an interrupted run never leaves a half-written report.
    """
    figure_dir = f"{path.stem}-figures"
    text, files = render_markdown(data, figure_dir)
    written = []
    (path.parent / figure_dir).mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = path.parent / name
        _atomic_write(target, content)
        written.append(target)
    _atomic_write(path, text.encode())
    return [path, *written]


def _atomic_write(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_bytes(content)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_html(data: ReportData, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, render_html(data).encode())
    return [path]
