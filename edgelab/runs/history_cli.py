"""``edgelab runs list|show|compare|export``: the run history from the terminal.

Every command reads what the viewer reads, through the same code: the filter is
:func:`edgelab.service.history.parse_history` (so ``--status failed --nodes 3``
selects exactly the runs of ``/runs?status=failed&nodes=3``), rows are
:func:`edgelab.runs.views.run_summary`, exports are :mod:`edgelab.runs.export`
(byte-identical to the web download), and ``compare`` groups and tests with
:mod:`edgelab.analysis`. Tables show numbers with units; ``--json`` gives the
API's shapes for scripts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from edgelab.cli import load_settings

F = TypeVar("F", bound=Callable[..., Any])

#: The history filters as options: (option name, query key, help). The keys are the
#: history page's query arguments, parsed by the one parser in service/history.py.
FILTER_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--status", "status", "Run status; repeat or comma-separate (queued, succeeded, ...)."),
    ("--model", "model", "Catalog model name."),
    ("--nodes", "nodes", "Node count (root included)."),
    ("--threads", "threads", "Threads per node."),
    ("--latency", "latency", "Latency profile label, e.g. 20ms or 10ms..50ms."),
    ("--backend", "backend", "local or docker."),
    ("--topology", "topology", "uniform, or text of the devices/links (e.g. 'cpus 0.25')."),
    ("--sweep", "sweep", "Runs of this sweep id."),
    ("--since", "since", "Created on/after this date or date-time (UTC)."),
    ("--until", "until", "Created on/before this date (whole day) or before this date-time."),
)


def filter_options(func: F) -> F:
    """Add the history filters and ``--sort`` to a command (as ``filters`` kwargs)."""
    func = click.option(
        "--sort",
        default="-id",
        show_default=True,
        help="Column to sort by (id, created_at, ttft_ms, tpot_ms, decode_tps, ...); "
        "prefix - for descending.",
    )(func)
    for option, key, help_text in reversed(FILTER_OPTIONS):
        func = click.option(option, key, multiple=key == "status", default=None, help=help_text)(
            func
        )
    return func


def _history_filter(options: dict[str, Any], page: int = 1, per_page: int | None = None) -> Any:
    """The :class:`HistoryFilter` of the command-line options; errors name the option."""
    from werkzeug.datastructures import MultiDict

    from edgelab.service.history import parse_history

    args: MultiDict[str, str] = MultiDict()
    for _option, key, _help in FILTER_OPTIONS:
        value = options.get(key)
        for item in value if isinstance(value, tuple) else [value]:
            if item not in (None, ""):
                args.add(key, str(item))
    args.add("sort", str(options.get("sort") or "-id"))
    args.add("page", str(page))
    if per_page is not None:
        args.add("per_page", str(per_page))
    f = parse_history(args)
    if f.errors:
        lines = "\n".join(f"  --{k.replace('_', '-')}: {v}" for k, v in f.errors.items())
        raise click.ClickException(f"invalid filter:\n{lines}")
    return f


# --- formatting -------------------------------------------------------------------


def _num(value: Any, digits: int = 1) -> str:
    from edgelab.units import fmt_num

    return fmt_num(value, digits)


def ms(value: Any) -> str:
    """A duration in ms as a person reads it ("62.5 ms", "183 ms", "12.4 s")."""
    from edgelab.units import fmt_ms

    return "-" if value is None else fmt_ms(value)


def rate(value: Any) -> str:
    from edgelab.units import fmt_kind

    return "-" if value is None else fmt_kind(value, "tok/s")


def size(value: Any) -> str:
    from edgelab.units import fmt_bytes

    return "-" if value is None else fmt_bytes(value)


def bandwidth(value: Any) -> str:
    from edgelab.units import fmt_bps

    return fmt_bps(value)


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A plain aligned text table; columns in ``right`` are right-aligned (numbers)."""
    right = right or set()
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _when(value: str | None) -> str:
    from edgelab.units import fmt_time

    return "-" if value is None else fmt_time(value)


# --- commands ---------------------------------------------------------------------


@click.group("runs")
def runs_group() -> None:
    """Browse, inspect, compare and export stored runs."""


LIST_HEADERS = [
    "id",
    "status",
    "sweep",
    "model",
    "nodes",
    "thr",
    "latency",
    "bandwidth",
    "tokens",
    "TTFT",
    "TPOT",
    "decode",
    "created (UTC)",
]


def list_row(run: dict[str, Any]) -> list[str]:
    c, m = run["config"], run["metrics"]
    return [
        str(run["id"]),
        run["status"],
        "-" if run["sweep_id"] is None else str(run["sweep_id"]),
        c["model"],
        str(c["nodes"]),
        str(c["threads"]),
        c["latency"],
        "-" if c["bandwidth_bps"] is None else bandwidth(c["bandwidth_bps"]),
        "-" if m["output_tokens"] is None else str(m["output_tokens"]),
        ms(m["ttft_ms"]),
        ms(m["tpot_ms"]),
        rate(m["decode_tps"]),
        _when(run["created_at"]),
    ]


@runs_group.command("list")
@filter_options
@click.option("--page", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--per-page", default=50, show_default=True, type=click.IntRange(1, 500), help="Rows per page."
)
@click.option("--json", "as_json", is_flag=True, help="Print GET /api/runs's JSON.")
def runs_list(page: int, per_page: int, as_json: bool, **filters: Any) -> None:
    """Stored runs, newest first, with the history page's filters."""
    from edgelab.models.db import session_scope
    from edgelab.runs.views import run_summary

    settings = load_settings()
    f = _history_filter(filters, page, per_page)
    with session_scope(settings.database_url) as s:
        total = f.count(s)
        runs = [run_summary(r) for r in f.page_of(s)]
    if as_json:
        out = {"runs": runs, "total": total, "page": f.page, "per_page": f.per_page}
        click.echo(json.dumps(out, indent=2, default=str))
        return
    if not runs:
        click.echo("no runs match" if total == 0 else f"page {page} is empty ({total} runs)")
        return
    click.echo(table(LIST_HEADERS, [list_row(r) for r in runs], right={0, 4, 5, 8, 9, 10, 11}))
    first = (f.page - 1) * f.per_page + 1
    more = f"; --page {f.page + 1} for more" if first + len(runs) - 1 < total else ""
    click.echo(f"runs {first}-{first + len(runs) - 1} of {total}{more}")


def _detail(database_url: str, run_id: int) -> dict[str, Any]:
    from edgelab.runs.views import run_detail

    try:
        return run_detail(database_url, run_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc


def topology_lines(topology: dict[str, Any] | None, limits: dict[str, Any] | None) -> list[str]:
    """A heterogeneous cluster node by node: device, what was applied, its link."""
    if not topology or topology.get("uniform", True):
        return []
    lines = [f"  topology {topology['label']}"]
    links = {link["node"]: link for link in topology.get("links") or []}
    for node in topology.get("nodes") or []:
        name = node["node"]
        want = [f"{node['threads']} thread(s)"]
        want += [
            f"{k} {node[k]:g}" if k == "cpus" else f"{k} {node[k]}"
            for k in ("cpus", "mem")
            if node.get(k) is not None
        ]
        applied = (limits or {}).get(name) or {}
        got = ""
        if applied:
            cpus = applied.get("cpus")
            got = " · applied " + ("no CPU quota" if cpus is None else f"{cpus:g} CPU")
            if applied.get("mem"):
                got += f", {size(applied['mem'])}" if isinstance(applied["mem"], int) else ""
        link = links.get(name)
        via = f" · link {link['latency']}" if link else ""
        lines.append(f"    {name}: {', '.join(want)}{got}{via}")
    return lines


def show_text(run: dict[str, Any]) -> str:
    """A stored run as a person reads it: configuration, metrics, network, nodes."""
    c, m, p = run["config"], run["metrics"], run["provenance"]
    sweep = f" (sweep {run['sweep_id']}, repetition {c['repetition']})" if run["sweep_id"] else ""
    lines = [f"run {run['id']} {run['status']}{sweep}"]
    if run.get("error"):
        lines.append(f"  error: {run['error']}")
    lines += [
        "configuration",
        f"  model {c['model']} · engine {c['engine']} · backend {c['backend']}",
        f"  {c['nodes']} node(s) x {c['threads']} thread(s) · latency {c['latency']} · "
        f"bandwidth {bandwidth(c['bandwidth_bps'])}",
        f"  max tokens {c['max_tokens']} · temperature {c['temperature']} · seed {c['seed']}",
        *topology_lines(c.get("topology"), p.get("node_limits")),
        f"  prompt {c['prompt']!r}",
        f"  created {_when(run['created_at'])} · started {_when(run['started_at'])} · "
        f"finished {_when(run['finished_at'])} (UTC)",
        "metrics",
        f"  TTFT {ms(m['ttft_ms'])} · TPOT {ms(m['tpot_ms'])} · E2EL {ms(m['e2el_ms'])} · "
        f"start-up {ms(m['load_ms'])}",
        f"  ITL mean {ms(m['itl_mean_ms'])} · p50 {ms(m['itl_p50_ms'])} · "
        f"p90 {ms(m['itl_p90_ms'])} · p99 {ms(m['itl_p99_ms'])}",
        f"  decode {rate(m['decode_tps'])} · prefill {rate(m['prefill_tps'])} · "
        f"tokens {_num(m['prompt_tokens'])} in, {_num(m['output_tokens'])} out",
        f"  network {size(m['net_bytes_per_token'])}/token in decode"
        + (
            f" · {m['round_trips_per_token']:.2f} round trips/token"
            if m.get("round_trips_per_token") is not None
            else ""
        )
        + (
            f" · load {size(m.get('net_load_bytes'))}, prefill {size(m.get('net_prefill_bytes'))}"
            f", decode {size(m.get('net_decode_bytes'))}"
            if m.get("net_decode_bytes") is not None
            else ""
        ),
    ]
    lines += hygiene_lines(run.get("hygiene"))
    breakdown = run.get("breakdown")
    if breakdown:
        lines += breakdown_lines(breakdown)
    if run["links"]:
        lines.append("links")
        for link in run["links"]:
            # No per-link delay sums: messages overlap, so a sum reads like time on the
            # critical path that it is not (issue 16); the effective delays follow.
            lines.append(
                f"  {link['link']}: {size(link['bytes_up'])} up / {size(link['bytes_down'])} "
                f"down · {link['chunks_up']}/{link['chunks_down']} messages"
            )
            if link.get("eff_delay_p50_ms_up") is not None:
                lines.append(
                    f"    effective one-way delay up p50/p99/max {ms(link['eff_delay_p50_ms_up'])}"
                    f"/{ms(link.get('eff_delay_p99_ms_up'))}/{ms(link.get('eff_delay_max_ms_up'))}"
                    f" · down {ms(link.get('eff_delay_p50_ms_down'))}"
                    f"/{ms(link.get('eff_delay_p99_ms_down'))}"
                    f"/{ms(link.get('eff_delay_max_ms_down'))}"
                )
    nodes: dict[str, list[dict[str, Any]]] = {}
    for sample in run["samples"]:
        nodes.setdefault(sample["node"], []).append(sample)
    if nodes:
        lines.append("nodes")
        for name, samples in nodes.items():
            cpu = max(s["cpu_percent"] for s in samples)
            rss = max(s["rss_bytes"] for s in samples)
            lines.append(
                f"  {name}: peak CPU {cpu:.0f} % · peak RSS {size(rss)} ({len(samples)} samples)"
            )
    for node, log in (run.get("node_logs") or {}).items():
        tail = log if isinstance(log, list) else str(log).splitlines()
        lines.append(f"log of {node} (last lines)")
        lines += [f"  {line}" for line in tail[-10:]]
    lines.append("provenance")
    lines.append(
        f"  engine {p['engine_version'] or '-'} · edgelab {p['edgelab_version'] or '-'} · "
        f"host {p['host_cpu'] or '-'} ({p['host_cores'] or '-'} cores)"
    )
    lines.append(f"  model sha256 {p['model_sha256'] or '-'}")
    for part in p["layer_split"] or []:
        lines.append(f"  layers: {json.dumps(part, sort_keys=True)}")
    for role, image in (p["image_ids"] or {}).items():
        lines.append(f"  image {role}: {image}")
    return "\n".join(lines)


def breakdown_lines(b: dict[str, Any]) -> list[str]:
    """A run's per-token time breakdown (``run_detail``'s ``breakdown``), one part a line."""
    tpot = b.get("tpot_ms") or 0.0

    def share(value: float | None) -> str:
        return f" ({100 * value / tpot:.0f} %)" if tpot and value is not None else ""

    source = "the link proxies" if b.get("source") == "proxy" else "dllama's own timing"
    lines = [
        f"time per decode token: {ms(tpot)} over {b.get('decode_tokens')} tokens "
        f"(from {source}; parts add up to {ms(b.get('parts_ms'))})"
    ]
    parts: list[tuple[str, float | None]] = [("root compute", b.get("root_compute_ms"))]
    parts += [(f"{w} compute", v) for w, v in (b.get("worker_compute_ms") or {}).items()]
    parts += [("injected delay", b.get("injected_ms")), ("transfer", b.get("transfer_ms"))]
    if b.get("other_ms"):
        parts.append(("other", b.get("other_ms")))
    lines += [f"  {name} {ms(value)}{share(value)}" for name, value in parts]
    if b.get("round_trips_per_token") is not None:
        lines.append(
            f"  {b['round_trips_per_token']:.2f} round trips and "
            f"{size(b.get('bytes_per_token'))} per token over all links"
        )
    if b.get("complete") is False:
        lines.append("  (a link's trace ring overflowed: the earliest tokens are not counted)")
    return lines


def hygiene_lines(hygiene: dict[str, Any] | None) -> list[str]:
    """The run's flags (warm-up, contended with the reason, oversubscribed) and what
    else the host did during generation (``hygiene.host_contention``)."""
    if not hygiene:
        return []
    lines = []
    contention = hygiene.get("host_contention") or {}
    flags = []
    if hygiene.get("warmup"):
        flags.append("warm-up run (not counted in statistics)")
    if hygiene.get("contended"):
        reasons = "; ".join(contention.get("reasons") or [])
        flags.append(f"contended ({reasons})" if reasons else "contended")
    if hygiene.get("oversubscribed"):
        flags.append("oversubscribed (threads over all nodes > host cores)")
    if flags:
        lines.append(f"  flags: {', '.join(flags)}")
    if contention:
        load = contention.get("load_avg_1m")
        lines.append(
            f"  host during generation: other processes {contention.get('other_cpu_cores', 0):.2f}"
            f" cores · steal {contention.get('steal_percent', 0):.1f} % · "
            f"load {load if load is not None else '-'} ({contention.get('cores', '?')} cores)"
        )
    return lines


@runs_group.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print GET /api/runs/<id>'s JSON.")
def runs_show(run_id: int, as_json: bool) -> None:
    """Everything stored about one run: metrics, configuration, provenance."""
    settings = load_settings()
    data = _detail(settings.database_url, run_id)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(show_text(data))


def _pm(summary: Any, kind: str) -> str:
    """'52.3 ± 1.2 ms': mean ± 95 % CI half-width (the mean alone when n < 2)."""
    from edgelab.units import fmt_mean_ci

    if summary is None or summary.mean is None:
        return "-"
    return fmt_mean_ci(summary.mean, summary.half_width, kind)


def _p_value(p: float | None) -> str:
    if p is None:
        return "-"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def verdict_text(test: Any, fmt: Callable[[Any], str]) -> str:
    """One metric's verdict with its numbers: 'slower by 9.9 ms (+37.8 %, 95 % CI ...)'.

    The CI of the difference is plain ms with one decimal on both ends, so its two
    ends never read in different units."""
    if test.verdict == "too few runs":
        return f"too few runs ({test.n_a} vs {test.n_b}; a test needs 2 on each side)"
    diff = fmt(abs(test.diff)) if test.diff is not None else "-"
    rel = f"{100 * test.relative:+.1f} %" if test.relative is not None else "-"
    ci = ""
    if test.diff_ci is not None:
        lo, hi = test.diff_ci
        ci = f", 95 % CI of B-A [{lo:,.1f}, {hi:,.1f}] ms"
    g = f", g = {test.effect_size:+.2f}" if test.effect_size is not None else ""
    head = (
        test.verdict if test.verdict == "no significant difference" else f"{test.verdict} by {diff}"
    )
    return f"{head} ({rel}{ci}), {_p_value(test.p_value)}{g}"


def compare_text(result: Any) -> str:
    """Groups of the compared runs and the verdict of every pair, as a person reads them.

    Groups are lettered by :attr:`CompareAnalysis.letters`, as the compare page
    letters them, so "B vs A" means the same pair in the terminal and the browser.
    """
    names = {id(g): letter for g, letter in zip(result.groups, result.letters, strict=True)}
    counts = result.counts
    lines = [
        f"{len(result.groups)} configuration(s) from {counts.runs} run(s)"
        + (
            f" ({counts.runs - counts.counted} not counted)"
            if counts.runs != counts.counted
            else ""
        )
        + (f"; differing: {', '.join(result.differing)}" if result.differing else "")
    ]
    rows = [
        [
            names[id(g)],
            g.key.label,
            str(g.n),
            ",".join(map(str, g.run_ids)) or "-",
            _pm(g.stats["ttft_ms"], "ms"),
            _pm(g.stats["tpot_ms"], "ms"),
            _pm(g.stats["decode_tps"], "tok/s"),
            ", ".join(g.flag_labels) or "-",
        ]
        for g in result.groups
    ]
    headers = ["", "configuration", "n", "runs", "TTFT", "TPOT", "decode", "flags"]
    lines.append(table(headers, rows, right={2, 4, 5, 6}))
    if not result.comparisons:
        lines.append("one configuration: nothing to compare (its runs are repetitions)")
        return "\n".join(lines)
    lines.append("")
    lines.append("B against A, Welch's t-test per metric (alpha 0.05; g = Hedges' effect size):")
    for letter_a, letter_b, fields, c in result.pairs:
        differ = f" ({', '.join(fields)} differ)" if fields else ""
        lines.append(f"  {letter_b} vs {letter_a}{differ}: {c.verdict}")
        for metric, test in c.tests.items():
            title = {"tpot_ms": "TPOT", "ttft_ms": "TTFT"}.get(metric, metric)
            lines.append(f"    {title}: {verdict_text(test, ms)}")
    return "\n".join(lines)


@runs_group.command("compare")
@click.argument("run_ids", nargs=-1, required=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def runs_compare(run_ids: tuple[int, ...], as_json: bool) -> None:
    """Group runs by configuration and test every pair of groups for a difference.

    Repetitions of one configuration form one group; each pair of groups gets a
    verdict on TPOT and TTFT (faster / slower / no significant difference / too
    few runs) with the p-value and effect size.
    """
    from edgelab.analysis.summary import compare_runs
    from edgelab.models.db import session_scope

    if len(set(run_ids)) < 2:
        raise click.UsageError("give at least two run ids")
    settings = load_settings()
    with session_scope(settings.database_url) as s:
        try:
            result = compare_runs(s, sorted(set(run_ids)))
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    click.echo(compare_text(result))


@runs_group.command("export")
@filter_options
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: stdout).",
)
def runs_export(fmt: str, output: Path | None, **filters: Any) -> None:
    """Every run the filters select, as the web export writes it (CSV or JSON)."""
    from edgelab.models.db import session_scope
    from edgelab.runs.export import BATCH, csv_chunks, json_chunks
    from edgelab.runs.views import run_summary

    settings = load_settings()
    f = _history_filter(filters)
    written = 0
    with session_scope(settings.database_url) as s:
        stmt = f.ordered().execution_options(yield_per=BATCH)

        def rows() -> Iterator[dict[str, Any]]:
            nonlocal written
            for run in s.scalars(stmt):
                written += 1
                yield run_summary(run)

        if fmt == "csv":
            chunks = csv_chunks(rows())
        else:
            chunks = json_chunks({"filter": f.query_args(page=None), "total": f.count(s)}, rows())
        write_chunks(chunks, output)
    if output is not None:
        click.echo(f"wrote {written} run(s) to {output}", err=True)


def write_chunks(chunks: Iterator[str], output: Path | None) -> None:
    """Write text chunks to ``output`` or stdout.

    A file is written beside its final name and renamed at the end, so an export
    interrupted half-way never leaves a truncated file that looks complete.
    """
    if output is None:
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return
    tmp = output.with_name(output.name + ".part")
    try:
        with tmp.open("w", newline="") as fh:
            for chunk in chunks:
                fh.write(chunk)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
