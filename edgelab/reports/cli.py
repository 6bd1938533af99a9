"""``edgelab report SWEEP_ID``: write a sweep up as HTML (one file) or Markdown + figures."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgelab.cli import load_settings


@click.command("report")
@click.argument("sweep_id", type=int)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: sweep-ID-report.html or .md in the current directory).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md"]),
    default=None,
    help="html: one self-contained file; md: Markdown with PNG and SVG figures in "
    "<name>-figures/ beside it. Default: from the -o suffix, else html.",
)
def report_command(sweep_id: int, output: Path | None, fmt: str | None) -> None:
    """Write the report of sweep SWEEP_ID: results table, speedup, breakdown, model fit,
    break-even latencies and measurement-hygiene flags."""
    from edgelab.models.db import session_scope
    from edgelab.reports.content import build_report
    from edgelab.reports.render import write_html, write_markdown

    if fmt is None:
        fmt = (
            "md" if output is not None and output.suffix.lower() in (".md", ".markdown") else "html"
        )
    if output is None:
        output = Path(f"sweep-{sweep_id}-report.{fmt}")
    settings = load_settings()
    started = time.perf_counter()
    with session_scope(settings.database_url) as s:
        try:
            data = build_report(s, sweep_id)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(
        f"sweep {sweep_id}: {len(data.runs)} runs, {len(data.analysis.groups)} configurations",
        err=True,
    )
    written = write_markdown(data, output) if fmt == "md" else write_html(data, output)
    total = sum(p.stat().st_size for p in written)
    extra = f" and {len(written) - 1} figure files" if len(written) > 1 else ""
    click.echo(
        f"wrote {output}{extra} ({total / 1000:,.0f} kB) in {time.perf_counter() - started:.1f} s"
    )
