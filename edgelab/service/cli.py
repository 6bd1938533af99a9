"""``edgelab serve`` (the web app under gunicorn) and ``edgelab up`` (everything, one machine)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import click

from edgelab.cli import load_settings
from edgelab.settings import Settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_argv(settings: Settings, workers: int = 1, threads: int = 16) -> list[str]:
    """gunicorn with threads: server-sent event streams hold a thread each."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        settings.bind,
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--graceful-timeout",
        "5",
        "--access-logfile",
        "-",
        "edgelab.service.wsgi:app",
    ]


def check_bind(settings: Settings) -> None:
    """The service can start clusters (and containers): refuse to expose it unprotected."""
    if not _is_loopback(settings.bind_host) and not settings.api_token:
        raise click.ClickException(
            f"EDGELAB_BIND={settings.bind} is not a loopback address: set EDGELAB_API_TOKEN "
            "so that every API call must carry it"
        )


@click.command("serve")
@click.option("--workers", default=1, show_default=True, help="gunicorn worker processes.")
def serve_command(workers: int) -> None:
    """Serve the web app and API on EDGELAB_BIND with gunicorn."""
    settings = load_settings()
    check_bind(settings)
    argv = serve_argv(settings, workers)
    os.execv(argv[0], argv)


class _Stop(Exception):
    pass


def _stop_process(proc: subprocess.Popen[bytes], name: str, grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL it after ``grace_s``."""
    if proc.poll() is not None:
        return
    click.echo(f"stopping {name}...", err=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own process group: Ctrl-C reaches `edgelab up` only, which then stops the
    # children in order. The launcher ties each child's life to ours (SIGKILL-safe).
    return subprocess.Popen(
        [sys.executable, "-m", "edgelab.cluster.launch", str(os.getpid()), "--", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


@click.command("up")
def up_command() -> None:
    """Everything on this machine: database, broker, one worker and the web app.

    Uses EDGELAB_REDIS_URL if set, else an embedded Redis-compatible server; the
    database is EDGELAB_DATABASE_URL (default SQLite under EDGELAB_DATA_DIR).
    Ctrl-C (or SIGTERM) stops everything.
    """
    from edgelab.embedded import EmbeddedError, EmbeddedRedis, url_file
    from edgelab.models.db import upgrade
    from edgelab.tasks.cli import worker_argv

    settings = load_settings()
    check_bind(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    embedded: EmbeddedRedis | None = None
    children: list[tuple[str, subprocess.Popen[bytes], float]] = []
    try:
        upgrade(settings.database_url)
        click.echo(f"database: {settings.database_url}", err=True)
        redis_url = settings.redis_url
        if not redis_url:
            embedded = EmbeddedRedis(settings.data_dir / "redis")
            try:
                embedded.start()
            except EmbeddedError as exc:
                raise click.ClickException(str(exc)) from exc
            redis_url = embedded.url
            url_file(settings).write_text(redis_url + "\n")
            click.echo(f"broker: embedded server at {redis_url}", err=True)
        else:
            click.echo(f"broker: {redis_url}", err=True)
        env = dict(os.environ, EDGELAB_REDIS_URL=redis_url)
        env["EDGELAB_DATA_DIR"] = str(settings.data_dir)
        env["EDGELAB_MODELS_DIR"] = str(settings.models_dir)
        env["EDGELAB_DATABASE_URL"] = settings.database_url
        # Cold-stop grace for the worker: a run in progress is redelivered later.
        children.append(("worker", _start(worker_argv(settings, "INFO"), env), 15.0))
        children.append(("web", _start(serve_argv(settings), env), 10.0))
        url = f"http://{settings.bind}/"
        click.echo(f"edgelab is up: {url}  (API: {url}api/health; Ctrl-C stops everything)")
        while True:
            for name, proc, _grace in children:
                if proc.poll() is not None:
                    raise click.ClickException(f"the {name} exited with status {proc.returncode}")
            time.sleep(0.5)
    except _Stop as stop:
        click.echo(f"{stop}: shutting down", err=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name, proc, grace in reversed(children):
            _stop_process(proc, name, grace)
        if embedded is not None:
            with contextlib.suppress(OSError):
                url_file(settings).unlink()
            embedded.stop()
        click.echo("stopped", err=True)
