"""What `edgelab up` (and so `make up`) prints: a short ordered summary, URL last,
only once the web app answers; component output in log files under the data dir.

Real processes: the embedded Redis-compatible server, a Celery worker, gunicorn.
HOME is a temporary directory, so a control socket gunicorn might open in
``~/.gunicorn`` would be seen.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UP_LINE = re.compile(r"^edgelab is up: (http://127\.0\.0\.1:\d+/) ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _up(tmp_path: Path, models_dir: Path, *args: str) -> tuple[list[str], Path, Path]:
    """Start `edgelab up`, read its terminal until the URL line, check, stop it.

    Returns the terminal lines up to the URL line, the data dir and HOME.
    """
    home = tmp_path / "home"
    home.mkdir()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELAB_")}
    env.update(
        HOME=str(home),
        EDGELAB_DATA_DIR=str(data_dir),
        EDGELAB_MODELS_DIR=str(models_dir),
        EDGELAB_BIND=f"127.0.0.1:{_free_port()}",
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgelab", "up", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one terminal
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            match = UP_LINE.match(lines[-1])
            if match:
                # Printed only after the web app answers: it must answer right now.
                assert _answers(match.group(1) + "api/health"), lines
                break
        else:
            pytest.fail("no 'edgelab is up' line:\n" + "\n".join(lines))
    finally:
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, "\n".join(lines) + (rest or "")
    return lines, data_dir, home


def test_up_prints_a_short_summary_url_last_and_logs_to_files(
    tmp_path: Path, models_dir: Path, smollm2: object
) -> None:
    lines, data_dir, home = _up(tmp_path, models_dir)
    assert UP_LINE.match(lines[-1]), lines
    assert len(lines) <= 10, lines
    text = "\n".join(lines)
    # ordered: database, broker, worker ready, web, then the URL
    order = [text.index(word) for word in ("database", "broker", "worker", "web ", "edgelab is up")]
    assert order == sorted(order), lines
    assert "ready" in text.split("worker", 1)[1].splitlines()[0]
    assert "data/logs" in text or str(data_dir / "logs") in text
    # component output is in the log files, not on the terminal
    for noise in ("SecurityWarning", "celery@", "[tasks]", "Booting worker", '"GET /api/health'):
        assert noise not in text, noise
    worker_log = (data_dir / "logs" / "worker.log").read_text()
    web_log = (data_dir / "logs" / "web.log").read_text()
    assert " ready." in worker_log
    assert "GET /api/health" in web_log
    assert not (home / ".gunicorn").exists()


def test_up_verbose_shows_the_component_logs_live(
    tmp_path: Path, models_dir: Path, smollm2: object
) -> None:
    lines, _data_dir, _home = _up(tmp_path, models_dir, "--verbose")
    assert any(line.startswith("[worker] ") for line in lines), lines
    assert UP_LINE.match(lines[-1]), lines
