"""The run page's picture of a cluster: nodes with their device, links with their network.

Drawn on the server as inline SVG from the run's JSON (``config.topology``,
``provenance.node_limits``, ``links``, ``samples``), so it needs no script, shows the
same numbers as the API and can be checked in a test. Root on the left, one box per
worker on the right, one line per link labelled with its profile, loss and what was
measured on it (bytes, decode round trips).
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

from edgelab.units import fmt_bytes

BOX_W, BOX_H, ROW_H = 230, 74, 96
#: A white outline behind link labels, so a label that crosses a line stays readable.
HALO = 'paint-order="stroke" stroke="#fff" stroke-width="4"'
LEFT_X, RIGHT_X = 10, 470


def _device_text(node: dict[str, Any], applied: dict[str, Any] | None) -> list[str]:
    lines = []
    wanted = [f"{node['threads']} thread{'s' if node['threads'] != 1 else ''}"]
    if node.get("cpus") is not None:
        wanted.append(f"cpus {node['cpus']:g}")
    if node.get("mem"):
        wanted.append(f"mem {node['mem']}")
    head = ", ".join(wanted)
    if node.get("preset"):
        head = f"{node['preset']}: {head}"
    lines.append(head)
    if applied:
        cpus = applied.get("cpus")
        mem = applied.get("mem")
        parts = ["no CPU quota" if cpus is None else f"{cpus:g} CPU"]
        if isinstance(mem, int):
            parts.append(fmt_bytes(mem))
        elif mem:
            parts.append(str(mem))
        lines.append("applied: " + ", ".join(parts))
    return lines


def cluster_svg(run: dict[str, Any]) -> Markup:
    """The picture of ``run`` (a ``run_detail`` dict) as an ``<svg>`` element."""
    topo = (run.get("config") or {}).get("topology") or {}
    nodes = topo.get("nodes") or []
    links = {link["node"]: link for link in topo.get("links") or []}
    limits = (run.get("provenance") or {}).get("node_limits") or {}
    measured = {m["link"]: m for m in run.get("links") or []}
    peak: dict[str, float] = {}
    for sample in run.get("samples") or []:
        peak[sample["node"]] = max(peak.get(sample["node"], 0.0), sample["cpu_percent"] or 0.0)
    workers = [n for n in nodes if n["node"] != "root"]
    rows = max(1, len(workers))
    height = rows * ROW_H + 10
    root_y = (height - BOX_H) / 2
    out = [
        f'<svg class="cluster" id="cluster-svg" role="img" viewBox="0 0 {RIGHT_X + BOX_W + 10} '
        f'{height}" width="100%" style="max-width:{RIGHT_X + BOX_W + 10}px" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">',
        f"<title>cluster of {len(nodes)} node(s): {escape(topo.get('label') or 'uniform')}</title>",
    ]

    def box(node: dict[str, Any], x: float, y: float) -> None:
        name = node["node"]
        special = node.get("own_device")
        fill = "#fff4e0" if special else "#eef4fb"
        out.append(
            f'<g class="node" data-node="{escape(name)}"><rect x="{x}" y="{y}" width="{BOX_W}" '
            f'height="{BOX_H}" rx="8" fill="{fill}" stroke="#456" />'
        )
        out.append(f'<text x="{x + 10}" y="{y + 18}" font-weight="bold">{escape(name)}</text>')
        lines = _device_text(node, limits.get(name))
        if name in peak:
            lines.append(f"peak CPU {peak[name]:.0f} %")
        for k, line in enumerate(lines[:3]):
            out.append(f'<text x="{x + 10}" y="{y + 36 + 15 * k}">{escape(line)}</text>')
        out.append("</g>")

    for i, worker in enumerate(workers):
        y = 5 + i * ROW_H + (ROW_H - BOX_H) / 2 - 5
        link = links.get(worker["node"]) or {}
        stats = measured.get(f"root<->{worker['node']}") or {}
        x1, y1 = LEFT_X + BOX_W, root_y + BOX_H / 2
        x2, y2 = RIGHT_X, y + BOX_H / 2
        loss = link.get("loss_pct") or 0
        colour = "#c0392b" if loss else ("#d68910" if link.get("own_link") else "#567")
        out.append(
            f'<g class="link" data-link="{escape(worker["node"])}"><line x1="{x1}" y1="{y1}" '
            f'x2="{x2}" y2="{y2}" stroke="{colour}" stroke-width="2" />'
        )
        label = [link.get("latency") or "?"]
        if loss:
            label.append(f"loss {loss:g} %")
        if link.get("trace"):
            label.append("trace")
        mid_x, mid_y = (x1 + x2) / 2, (y1 + y2) / 2
        out.append(
            f'<text x="{mid_x}" y="{mid_y - 6}" text-anchor="middle" {HALO}'
            f'font-weight="bold">{escape(", ".join(label))}</text>'
        )
        if stats:
            total = (stats.get("bytes_up") or 0) + (stats.get("bytes_down") or 0)
            trips = stats.get("round_trips_decode")
            text = fmt_bytes(total) + (f", {trips} round trips" if trips is not None else "")
            out.append(
                f'<text x="{mid_x}" y="{mid_y + 12}" text-anchor="middle" {HALO}'
                f'fill="#555">{escape(text)}</text>'
            )
        out.append("</g>")
        box(worker, RIGHT_X, y)
    root = next((n for n in nodes if n["node"] == "root"), None)
    if root is not None:
        box(root, LEFT_X, root_y)
    out.append("</svg>")
    return Markup("".join(out))
