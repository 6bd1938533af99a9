"""Static figures of a report, drawn with matplotlib's object API.

No ``pyplot``: it keeps global state and is not thread-safe, and the report is
also rendered inside the web app's worker threads. Each function returns a
:class:`~matplotlib.figure.Figure` (or ``None`` when the sweep has nothing to
draw) built only from :mod:`edgelab.analysis` results; :func:`svg` and
:func:`png` serialise one. SVG output is deterministic (fixed id salt, no date)
so the same sweep gives the same file, and text stays text (searchable, small).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from edgelab.analysis import Group, ModelFit, SweepAnalysis
from edgelab.analysis.config_breakdown import ConfigBreakdown
from edgelab.analysis.summary import PREDICT_NODES

STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "edgelab-report",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
}
WIDTH, HEIGHT = 7.0, 3.4  # inches: fits an A4 column and a 1280 px page
#: One color per node count (1..10), the same in every figure of a report.
NODE_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
PART_COLORS = ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#937860")


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        yield


def _color(nodes: int) -> str:
    return NODE_COLORS[(nodes - 1) % len(NODE_COLORS)]


def _err(mean: float, ci: tuple[float, float] | None) -> tuple[float, float]:
    """(below, above) error-bar lengths of a CI around ``mean`` (0 without a CI)."""
    if ci is None:
        return 0.0, 0.0
    return max(mean - ci[0], 0.0), max(ci[1] - mean, 0.0)


def _profile_label(latency: str | None, bandwidth_bps: int | None) -> str:
    label = latency or "no links"
    if bandwidth_bps:
        label += f" @ {bandwidth_bps / 1e6:g} Mbit/s"
    return label


def speedup_figure(analysis: SweepAnalysis) -> Figure | None:
    """Speedup and efficiency vs nodes, one line per latency profile, 95 % CI bars.

    Points measured on an oversubscribed host are drawn hollow and unconnected:
    the nodes shared cores, so the value is contention, not a speedup.
    """
    series = [s for s in analysis.scaling if s.points]
    if not series:
        return None
    with _style():
        fig = Figure(figsize=(WIDTH, HEIGHT), layout="constrained")
        ax_s, ax_e = fig.subplots(1, 2)
        all_nodes: set[int] = set()
        oversubscribed = False
        for i, s in enumerate(series):
            color = NODE_COLORS[i % len(NODE_COLORS)]
            label = _profile_label(s.latency, s.bandwidth_bps)
            if len({(x.model, x.threads) for x in series}) > 1:
                label = f"{s.model}, {s.threads} thr · {label}"
            good = [p for p in s.points if not p.oversubscribed]
            bad = [p for p in s.points if p.oversubscribed]
            all_nodes.update(p.nodes for p in s.points)
            for ax, value, ci in (
                (ax_s, "speedup", "speedup_ci"),
                (ax_e, "efficiency", "efficiency_ci"),
            ):
                if good:
                    errs = [_err(getattr(p, value), getattr(p, ci)) for p in good]
                    ax.errorbar(
                        [p.nodes for p in good],
                        [getattr(p, value) for p in good],
                        yerr=[[e[0] for e in errs], [e[1] for e in errs]],
                        marker="o",
                        capsize=3,
                        color=color,
                        label=label if ax is ax_s else None,
                    )
                if bad:
                    oversubscribed = True
                    ax.scatter(
                        [p.nodes for p in bad],
                        [getattr(p, value) for p in bad],
                        facecolors="none",
                        edgecolors=color,
                        marker="o",
                        s=40,
                        label=(f"{label} (oversubscribed)" if ax is ax_s and not good else None),
                    )
        nodes = sorted(all_nodes)
        base = min(s.baseline_nodes for s in series)
        ax_s.plot(nodes, [n / base for n in nodes], "k--", lw=0.8, label="ideal")
        ax_e.axhline(1.0, color="k", ls="--", lw=0.8)
        ax_s.set(xlabel="nodes", ylabel=f"speedup vs {base} node(s)", xticks=nodes)
        ax_e.set(xlabel="nodes", ylabel="efficiency S(N)/N", xticks=nodes)
        ax_e.set_ylim(bottom=0)
        ax_s.set_ylim(bottom=0)
        ax_s.legend(fontsize=7, title="one-way delay", title_fontsize=7)
        if oversubscribed:
            fig.suptitle(
                "hollow points: oversubscribed host (threads > cores) — not a speedup",
                fontsize=8,
            )
    return fig


def throughput_figure(analysis: SweepAnalysis) -> Figure | None:
    """Decode tokens/s vs one-way delay, one line per node count (mean, 95 % CI)."""
    groups = [g for g in analysis.groups if g.stats["decode_tps"].mean is not None]
    multi = [g for g in groups if g.key.nodes > 1]
    if not groups or not multi:
        return None
    families = {(g.key.model, g.key.threads) for g in groups}
    with _style():
        fig = Figure(figsize=(WIDTH, HEIGHT), layout="constrained")
        ax = fig.subplots()
        delays = sorted({g.rtt_delay_ms / 2 for g in multi})
        lines: dict[tuple[Any, ...], list[Group]] = {}
        for g in groups:
            lines.setdefault((g.key.model, g.key.threads, g.key.bandwidth_bps, g.key.nodes), [])
            lines[(g.key.model, g.key.threads, g.key.bandwidth_bps, g.key.nodes)].append(g)
        for (model, threads, bandwidth, nodes), members in sorted(lines.items(), key=str):
            label = f"{nodes} node{'s' if nodes != 1 else ''}"
            if bandwidth:
                label += f" @ {bandwidth / 1e6:g} Mbit/s"
            if len(families) > 1:
                label = f"{model}, {threads} thr · {label}"
            color = _color(nodes)
            if nodes == 1:
                st = members[0].stats["decode_tps"]
                assert st.mean is not None
                ax.axhline(st.mean, color=color, lw=1.2, label=f"{label} (no links)")
                if st.ci_low is not None and st.ci_high is not None:
                    ax.axhspan(st.ci_low, st.ci_high, color=color, alpha=0.15, lw=0)
                continue
            members.sort(key=lambda g: g.rtt_delay_ms)
            xs = [g.rtt_delay_ms / 2 for g in members]
            ys = [g.stats["decode_tps"].mean or 0.0 for g in members]
            errs = [_ci_of(g, "decode_tps") for g in members]
            ax.errorbar(
                xs,
                ys,
                yerr=[[e[0] for e in errs], [e[1] for e in errs]],
                marker="o",
                capsize=3,
                color=color,
                label=label,
            )
        ax.set(xlabel="one-way delay per link (ms)", ylabel="decode tokens/s", xticks=delays)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    return fig


def _ci_of(group: Group, metric: str) -> tuple[float, float]:
    st = group.stats[metric]
    if st.mean is None or st.ci_low is None or st.ci_high is None:
        return (0.0, 0.0)
    return (max(st.mean - st.ci_low, 0.0), max(st.ci_high - st.mean, 0.0))


def drawn_bandwidth(fit: ModelFit) -> int | None:
    """The bandwidth the model is drawn and tabled at: uncapped links when the sweep
    has them, else the first cap it tried (as the sweep page draws it)."""
    tried = fit.bandwidths_tried
    return None if not tried or None in tried else tried[0]


def model_figure(fit: ModelFit, groups: Sequence[Group]) -> Figure:
    """Measured TPOT (mean, 95 % CI) vs one-way delay per node count, with the fitted
    model drawn through them; node counts that did not run are the model's
    prediction (dashed). One bandwidth: :func:`drawn_bandwidth`."""
    bw = drawn_bandwidth(fit)
    measured = [
        g
        for g in groups
        if g.stats["tpot_ms"].mean is not None and (g.key.nodes == 1 or g.key.bandwidth_bps == bw)
    ]
    max_delay = max([fit.max_delay_tried_ms, *(g.rtt_delay_ms / 2 for g in measured)], default=0)
    top = max(max_delay * 1.25, 1.0)
    grid = [top * i / 40 for i in range(41)]
    with _style():
        fig = Figure(figsize=(WIDTH, HEIGHT), layout="constrained")
        ax = fig.subplots()
        tried = sorted({g.key.nodes for g in measured} | set(fit.nodes_tried))
        predicted = [n for n in PREDICT_NODES if n not in tried]
        for nodes in [*tried, *predicted]:
            color = _color(nodes)
            ys = [fit.predict(nodes, d, bw) for d in grid]
            dashed = nodes not in tried
            ax.plot(
                grid,
                ys,
                ls="--" if dashed else "-",
                lw=1.0,
                color=color,
                alpha=0.8,
                label=f"{nodes} node{'s' if nodes != 1 else ''}"
                + (" (predicted)" if dashed else ""),
            )
            points = sorted(
                (g for g in measured if g.key.nodes == nodes), key=lambda g: g.rtt_delay_ms
            )
            if points:
                errs = [_ci_of(g, "tpot_ms") for g in points]
                ax.errorbar(
                    [g.rtt_delay_ms / 2 for g in points],
                    [g.stats["tpot_ms"].mean or 0.0 for g in points],
                    yerr=[[e[0] for e in errs], [e[1] for e in errs]],
                    fmt="o",
                    capsize=3,
                    color=color,
                )
        r2 = "n/a" if fit.r2_means is None else f"{fit.r2_means:.3f}"
        links = f", links capped at {bw / 1e6:g} Mbit/s" if bw else ""
        ax.set_title(
            f"{fit.model}, {fit.threads} thread(s), {fit.engine}{links}: points measured, "
            f"lines fitted (R² of the means = {r2})",
            fontsize=8,
        )
        ax.set(xlabel="one-way delay per link (ms)", ylabel="TPOT (ms/token)")
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, top)
        ax.legend(fontsize=7, ncol=2)
    return fig


def breakdown_figure(breakdowns: Sequence[ConfigBreakdown]) -> Figure | None:
    """Stacked bars: where each configuration's time per token goes."""
    if not breakdowns:
        return None
    names = list(dict.fromkeys(p for b in breakdowns for p in b.parts))
    with _style():
        height = max(HEIGHT, 0.35 * len(breakdowns) + 1.2)
        fig = Figure(figsize=(WIDTH, height), layout="constrained")
        ax = fig.subplots()
        ys = list(range(len(breakdowns)))
        left = [0.0] * len(breakdowns)
        for i, name in enumerate(names):
            widths = [b.parts.get(name, 0.0) for b in breakdowns]
            ax.barh(
                ys,
                widths,
                left=left,
                color=PART_COLORS[i % len(PART_COLORS)],
                label=name.replace("_", " "),
            )
            left = [a + w for a, w in zip(left, widths, strict=True)]
        tpot = [b.tpot_ms for b in breakdowns]
        ax.scatter(
            [t if t is not None else 0 for t in tpot],
            ys,
            marker="|",
            color="k",
            s=200,
            label="TPOT",
        )
        ax.set_yticks(ys, [b.label for b in breakdowns])
        ax.invert_yaxis()
        ax.set(xlabel="ms per token")
        # Below the axes: inside it would cover the longest bars.
        fig.legend(fontsize=7, loc="outside lower center", ncol=len(names) + 1)
    return fig


_PROLOG = re.compile(r"<\?xml[^>]*\?>\s*|<!DOCTYPE[^>]*>\s*", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


def svg(fig: Figure, *, inline: bool = False) -> str:
    """The figure as SVG text.

    ``inline``: for embedding in HTML5 — without the XML prolog, DOCTYPE, RDF
    metadata and namespace declarations (the HTML parser knows ``<svg>`` and
    ``xlink:href``), so the report carries no URL at all, not even namespace names.
    """
    buf = io.StringIO()
    with _style():
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    if inline:
        text = _XMLNS.sub("", _METADATA.sub("", _PROLOG.sub("", text)))
    return text


def png(fig: Figure, dpi: int = 200) -> bytes:
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
