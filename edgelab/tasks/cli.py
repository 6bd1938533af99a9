"""``edgelab worker`` and ``edgelab sweep submit|status|cancel|resume``."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click

from edgelab.cli import load_settings
from edgelab.settings import Settings
from edgelab.store.status import RunStatus, SweepStatus


def _redis_url(settings: Settings) -> str:
    from edgelab.embedded import resolve_redis_url

    url = resolve_redis_url(settings)
    if not url:
        raise click.ClickException(
            "EDGELAB_REDIS_URL is not set and no `edgelab up` is running here; "
            "set it (e.g. redis://127.0.0.1:6379/0) or start `edgelab up`"
        )
    return url


def worker_argv(settings: Settings, loglevel: str, name: str | None = None) -> list[str]:
    """The Celery worker command: experiments and control queues, one process.

    Concurrency 1 is not negotiable: two experiments sharing the CPU would corrupt
    each other's timings. Scale out with one worker per host instead.
    """
    node = name or f"edgelab-{os.getpid()}@{socket.gethostname()}"
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "edgelab.tasks.make_celery",
        "worker",
        "--queues",
        "experiments,control",
        "--concurrency",
        "1",
        "--pool",
        "prefork",
        "--hostname",
        node,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]


@click.command("worker")
@click.option("--loglevel", default="INFO", show_default=True)
def worker_command(loglevel: str) -> None:
    """Start a Celery worker for this host (one experiment at a time).

    Several hosts = one `edgelab worker` per host, all with the same
    EDGELAB_REDIS_URL and EDGELAB_DATABASE_URL (PostgreSQL).
    """
    settings = load_settings()
    env = dict(os.environ, EDGELAB_REDIS_URL=_redis_url(settings))
    argv = worker_argv(settings, loglevel)
    os.execve(argv[0], argv, env)


@click.group("sweep")
def sweep_group() -> None:
    """Submit and follow sweeps (grids of runs)."""


def _actions(settings: Settings) -> Any:
    """The same actions the API and the pages use (edgelab.store.actions)."""
    from edgelab.service import create_app
    from edgelab.store.actions import open_actions

    redis_url = _redis_url(settings)
    app = create_app(settings.with_overrides(redis_url=redis_url))
    return open_actions(settings, redis_url, app.extensions["celery"])


def _refused(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _detail(settings: Settings, sweep_id: int) -> dict[str, Any]:
    from edgelab.models.db import session_scope
    from edgelab.sweeps import control

    with session_scope(settings.database_url) as s:
        try:
            return control.sweep_detail(s, sweep_id)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc


def _progress_line(data: dict[str, Any]) -> str:
    p = data["progress"]
    return (
        f"sweep {data['id']} {data['name']!r} {data['status']}: {p['done']}/{p['total']} done "
        f"({p[RunStatus.SUCCEEDED]} succeeded, {p[RunStatus.FAILED]} failed, "
        f"{p[RunStatus.CANCELLED]} cancelled, "
        f"{p[RunStatus.RUNNING] + p[RunStatus.STARTING]} running, {p[RunStatus.QUEUED]} queued), "
        f"model loads {data['model_loads']}"
    )


def _wait(settings: Settings, sweep_id: int, *, echo_final: bool = True) -> dict[str, Any]:
    """Poll until the sweep ends, printing its progress line whenever it changes.

    ``echo_final=False`` leaves the final line to the caller, which prints it once
    as the summary (a finished sweep would otherwise show it twice).
    """
    last = ""
    while True:
        data = _detail(settings, sweep_id)
        line = _progress_line(data)
        final = SweepStatus(data["status"]).terminal
        if line != last and (echo_final or not final):
            click.echo(line, err=True)
            last = line
        if final:
            return data
        time.sleep(1.0)


@sweep_group.command("submit")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow progress until the sweep ends.")
def sweep_submit(spec_file: Path, wait: bool) -> None:
    """Queue the sweep described in SPEC_FILE (YAML or JSON)."""
    from edgelab.catalog import Catalog
    from edgelab.models.db import upgrade
    from edgelab.store import StoreError
    from edgelab.sweeps import SpecError, expand, load_spec_text, parse_spec

    settings = load_settings()
    try:
        spec = parse_spec(load_spec_text(spec_file.read_text()), max_cells=settings.max_sweep_cells)
        cells = expand(spec, Catalog(settings), default_backend=settings.backend)
    except SpecError as exc:
        lines = "\n".join(f"  {k}: {v}" for k, v in exc.errors.items())
        raise click.ClickException(f"invalid sweep spec {spec_file}:\n{lines}") from exc
    actions = _actions(settings)
    upgrade(settings.database_url)
    try:
        sweep_id = actions.submit_sweep(spec, cells).id
    except StoreError as exc:
        raise _refused(exc) from exc
    click.echo(f"sweep {sweep_id} queued: {len(cells)} cells")
    if wait:
        data = _wait(settings, sweep_id)
        if data["status"] != SweepStatus.SUCCEEDED:
            raise click.ClickException(f"sweep {sweep_id} {data['status']}")


@sweep_group.command("status")
@click.argument("sweep_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the sweep as JSON.")
@click.option("--wait", is_flag=True, help="Follow progress until the sweep ends.")
def sweep_status(sweep_id: int, as_json: bool, wait: bool) -> None:
    """Progress of sweep SWEEP_ID and the state of each cell."""
    settings = load_settings()
    data = _wait(settings, sweep_id, echo_final=False) if wait else _detail(settings, sweep_id)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(_progress_line(data))
    for cell in data["cells"]:
        tps = f"{cell['decode_tps']:.1f} tok/s" if cell["decode_tps"] else ""
        click.echo(
            f"  run {cell['run_id']:>6} {cell['status']:<10} nodes={cell['nodes']} "
            f"threads={cell['threads']} latency={cell['latency']} rep={cell['repetition']} {tps}"
        )


@sweep_group.command("list")
@click.option("--status", default=None, help="Only sweeps in this status (queued, running, ...).")
@click.option("--name", default=None, help="Only sweeps whose name contains this text.")
@click.option("--page", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--per-page", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="Print GET /api/sweeps's JSON.")
def sweep_list(
    status: str | None, name: str | None, page: int, per_page: int, as_json: bool
) -> None:
    """Sweeps, newest first, with their progress."""
    from sqlalchemy import func, select

    from edgelab.models import SWEEP_STATUSES, Sweep
    from edgelab.models.db import session_scope
    from edgelab.runs.history_cli import table
    from edgelab.sweeps import control
    from edgelab.units import fmt_time

    if status and status not in SWEEP_STATUSES:
        raise click.BadParameter(f"one of {', '.join(SWEEP_STATUSES)}", param_hint="--status")
    settings = load_settings()
    stmt = select(Sweep)
    if status:
        stmt = stmt.where(Sweep.status == status)
    if name:
        stmt = stmt.where(Sweep.name.contains(name, autoescape=True))
    with session_scope(settings.database_url) as s:
        total = s.scalar(stmt.with_only_columns(func.count(Sweep.id))) or 0
        sweeps = [
            control.sweep_summary(s, sw)
            for sw in s.scalars(
                stmt.order_by(Sweep.id.desc()).offset((page - 1) * per_page).limit(per_page)
            )
        ]
    if as_json:
        out = {"sweeps": sweeps, "total": total, "page": page, "per_page": per_page}
        click.echo(json.dumps(out, indent=2, default=str))
        return
    if not sweeps:
        click.echo("no sweeps match" if total == 0 else f"page {page} is empty ({total} sweeps)")
        return
    rows = []
    for sw in sweeps:
        p = sw["progress"]
        rows.append(
            [
                str(sw["id"]),
                sw["name"],
                sw["status"],
                f"{p['done']}/{p['total']}",
                str(p[RunStatus.SUCCEEDED]),
                str(p[RunStatus.FAILED]),
                str(p[RunStatus.CANCELLED]),
                str(sw["model_loads"]),
                fmt_time(sw["created_at"]),
            ]
        )
    headers = ["id", "name", "status", "done", "ok", RunStatus.FAILED, RunStatus.CANCELLED]
    headers += ["loads", "created"]
    click.echo(table(headers, rows, right={0, 3, 4, 5, 6, 7}))
    first = (page - 1) * per_page + 1
    more = f"; --page {page + 1} for more" if first + len(rows) - 1 < total else ""
    click.echo(f"sweeps {first}-{first + len(rows) - 1} of {total}{more}")


@sweep_group.command("cancel")
@click.argument("sweep_id", type=int)
def sweep_cancel(sweep_id: int) -> None:
    """Cancel queued cells and stop the running one (refused for a finished sweep)."""
    from edgelab.store import StoreError

    settings = load_settings()
    try:
        result = _actions(settings).cancel_sweep(sweep_id)
    except StoreError as exc:
        raise _refused(exc) from exc
    click.echo(f"sweep {sweep_id} cancelled ({len(result.stopping)} running run(s) stopping)")


@sweep_group.command("resume")
@click.argument("sweep_id", type=int)
def sweep_resume(sweep_id: int) -> None:
    """Re-queue only the cells without a succeeded run."""
    from edgelab.catalog import Catalog
    from edgelab.store import StoreError
    from edgelab.sweeps import SpecError

    settings = load_settings()
    try:
        result = _actions(settings).resume_sweep(sweep_id, Catalog(settings), settings)
    except SpecError as exc:
        lines = "\n".join(f"  {k}: {v}" for k, v in exc.errors.items())
        raise click.ClickException(f"sweep {sweep_id} cannot be resumed:\n{lines}") from exc
    except StoreError as exc:
        raise _refused(exc) from exc
    click.echo(f"sweep {sweep_id}: {len(result.requeue)} cell(s) queued again")
