"""``edgelab serve`` (the web app under gunicorn) and ``edgelab up`` (everything, one machine)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

from edgelab.cli import load_settings
from edgelab.cluster.local import tail
from edgelab.settings import Settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: Open connections (streams included) one web worker process serves at once.
WORKER_CONNECTIONS = 1000


def serve_argv(settings: Settings, workers: int = 1) -> list[str]:
    """gunicorn with gevent workers: a waiting event stream is a parked greenlet, not a
    thread of a fixed pool (why: :mod:`edgelab.service.streams`)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        settings.bind,
        "--workers",
        str(workers),
        "--worker-class",
        "gevent",
        "--worker-connections",
        str(WORKER_CONNECTIONS),
        "--graceful-timeout",
        "5",
        "--access-logfile",
        "-",
        *_no_control_socket(),
        "edgelab.service.wsgi:app",
    ]


def _no_control_socket() -> list[str]:
    """gunicorn >= 24 opens a control socket in ~/.gunicorn by default: nothing of
    ours uses it, and a file outside the data dir is a leftover. Older ones have none."""
    from gunicorn.config import KNOWN_SETTINGS

    names = {setting.name for setting in KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in names else []


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


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Own process group: Ctrl-C reaches `edgelab up` only, which then stops the
    # children in order. The launcher ties each child's life to ours (SIGKILL-safe).
    # Output goes to the component's log file, never to the terminal directly.
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edgelab.cluster.launch", str(os.getpid()), "--", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class _Follow(threading.Thread):
    """``--verbose``: copy new lines of the component logs to the terminal, prefixed."""

    def __init__(self, logs: dict[str, Path]) -> None:
        super().__init__(name="follow-logs", daemon=True)
        self.logs = logs
        self.offsets = {name: (p.stat().st_size if p.exists() else 0) for name, p in logs.items()}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            for name, path in self.logs.items():
                try:
                    with path.open("rb") as f:
                        f.seek(self.offsets[name])
                        data = f.read()
                except OSError:
                    continue
                end = data.rfind(b"\n") + 1  # whole lines only
                if not end:
                    continue
                self.offsets[name] += end
                for line in data[:end].decode("utf-8", "replace").splitlines():
                    click.echo(f"[{name}] {line}", err=True)


def _log_has(path: Path, needle: bytes, since: int) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(since)
            return needle in f.read()
    except OSError:
        return False


def _answers(url: str, token: str) -> bool:
    request = urllib.request.Request(url, headers={"X-Edgelab-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return int(resp.status) == 200
    except (OSError, ValueError):
        return False


def _wait_ready(
    what: str,
    ready: Callable[[], bool],
    children: list[tuple[str, subprocess.Popen[bytes], float]],
    logs: dict[str, Path],
    timeout_s: float,
) -> None:
    """Wait until ``ready()``; a child that exits meanwhile is an error quoting its log."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        for name, proc, _grace in children:
            if proc.poll() is not None:
                last = "\n".join(tail(logs[name], 15))
                raise click.ClickException(
                    f"the {name} exited with status {proc.returncode} while starting; "
                    f"last lines of {logs[name]}:\n{last}"
                )
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"the {what} did not become ready within {timeout_s:.0f} s; see {logs[what]}"
            )
        time.sleep(0.2)


def _shown(path: Path) -> str:
    """A path as short as it reads: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _models_line(settings: Settings) -> str:
    from edgelab.catalog import Catalog, CatalogError

    try:
        names = [m.name for m in Catalog(settings).list()]
    except CatalogError as exc:
        return f"unreadable catalog ({exc})"
    where = _shown(settings.models_dir)
    if not names:
        return f"none in {where} (edgelab models fetch smollm2-135m)"
    return f"{', '.join(names)} (in {where})"


@click.command("up")
@click.option("--verbose", is_flag=True, help="Also show the component logs live.")
def up_command(verbose: bool) -> None:
    """Everything on this machine: database, broker, one worker and the web app.

    Uses EDGELAB_REDIS_URL if set, else an embedded Redis-compatible server; the
    database is EDGELAB_DATABASE_URL (default SQLite under EDGELAB_DATA_DIR).
    Prints a short summary once the web app answers; the worker's and web app's
    output goes to log files under EDGELAB_DATA_DIR/logs (--verbose shows them
    live too). Ctrl-C (or SIGTERM) stops everything.
    """
    from edgelab import __version__
    from edgelab.embedded import EmbeddedError, EmbeddedRedis, url_file
    from edgelab.models.db import upgrade
    from edgelab.tasks.cli import worker_argv

    settings = load_settings()
    check_bind(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_dir = settings.data_dir / "logs"
    logs = {"worker": log_dir / "worker.log", "web": log_dir / "web.log"}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    embedded: EmbeddedRedis | None = None
    follow: _Follow | None = None
    children: list[tuple[str, subprocess.Popen[bytes], float]] = []
    summary: list[str] = []
    click.echo(
        f"edgelab {__version__} starting; component logs go to {_shown(log_dir)}/"
        + ("" if verbose else " (--verbose shows them here)"),
        err=True,
    )
    try:
        upgrade(settings.database_url)
        summary.append(f"  database  {settings.database_url} (migrations applied)")
        redis_url = settings.redis_url
        if not redis_url:
            embedded = EmbeddedRedis(settings.data_dir / "redis")
            try:
                embedded.start()
            except EmbeddedError as exc:
                raise click.ClickException(str(exc)) from exc
            redis_url = embedded.url
            url_file(settings).write_text(redis_url + "\n")
            server_log = _shown(embedded.data_dir / "server.log")
            summary.append(f"  broker    embedded server at {redis_url} (log {server_log})")
        else:
            summary.append(f"  broker    {redis_url}")
        summary.append(f"  models    {_models_line(settings)}")
        env = dict(os.environ, EDGELAB_REDIS_URL=redis_url)
        env["EDGELAB_DATA_DIR"] = str(settings.data_dir)
        env["EDGELAB_MODELS_DIR"] = str(settings.models_dir)
        env["EDGELAB_DATABASE_URL"] = settings.database_url
        if verbose:
            follow = _Follow(logs)
            follow.start()
        marks = {name: (p.stat().st_size if p.exists() else 0) for name, p in logs.items()}
        node = f"edgelab-{os.getpid()}@{socket.gethostname()}"
        # Cold-stop grace for the worker: a run in progress is redelivered later.
        children.append(
            ("worker", _start(worker_argv(settings, "INFO", node), env, logs["worker"]), 15.0)
        )
        children.append(("web", _start(serve_argv(settings), env, logs["web"]), 10.0))
        url = f"http://{settings.bind}/"
        _wait_ready(
            "worker",
            lambda: _log_has(logs["worker"], b" ready.", marks["worker"]),
            children,
            logs,
            120,
        )
        summary.append(f"  worker    {node} ready (log {_shown(logs['worker'])})")
        _wait_ready(
            "web", lambda: _answers(url + "api/health", settings.api_token), children, logs, 60
        )
        summary.append(f"  web       answering on {settings.bind} (log {_shown(logs['web'])})")
        summary.append(f"edgelab is up: {url}  (Ctrl-C stops everything)")
        click.echo("\n".join(summary))
        while True:
            for name, proc, _grace in children:
                if proc.poll() is not None:
                    last = "\n".join(tail(logs[name], 15))
                    raise click.ClickException(
                        f"the {name} exited with status {proc.returncode}; "
                        f"last lines of {logs[name]}:\n{last}"
                    )
            time.sleep(0.5)
    except _Stop as stop:
        click.echo(f"{stop}: shutting down", err=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name, proc, grace in reversed(children):
            _stop_process(proc, name, grace)
        if follow is not None:
            follow.stopped.set()
        if embedded is not None:
            with contextlib.suppress(OSError):
                url_file(settings).unlink()
            embedded.stop()
        click.echo("stopped", err=True)
