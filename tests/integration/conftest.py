"""Fixtures for integration tests that need real services.

Queue fixtures (issue 5) are prefixed ``queue_``: a dedicated Redis database, a
throw-away PostgreSQL database, and real ``edgelab worker`` processes that are
always stopped (and their node processes checked) at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from available import CHROMIUM, CHROMIUM_ARGS

from edgelab.models.db import upgrade
from edgelab.settings import Settings

REPO = Path(__file__).resolve().parents[2]
QUEUE_REDIS_URL = os.environ.get("EDGELAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
QUEUE_PG_SERVER = os.environ.get("EDGELAB_TEST_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture
def queue_redis_url() -> Iterator[str]:
    """A Redis database of our own (DB 5 by default), flushed before and after."""
    import redis

    r = redis.Redis.from_url(QUEUE_REDIS_URL)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the queue tests need Redis at {QUEUE_REDIS_URL}: {exc}")
    r.flushdb()
    yield QUEUE_REDIS_URL
    r.flushdb()
    r.close()


@pytest.fixture
def test_redis() -> Iterator[Any]:
    """A client of the test Redis (not flushed: for run events and locks), or a skip."""
    import redis

    url = os.environ.get("EDGELAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    r = redis.Redis.from_url(url)
    try:
        r.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"no Redis at {url}: {exc}")
    yield r
    r.close()


@pytest.fixture
def docker_images() -> tuple[str, ...]:
    """The images ``docker_api`` needs (the backend's defaults; a module may override)."""
    from edgelab.cluster.images import ROOT_IMAGE, WORKER_IMAGE

    return (ROOT_IMAGE, WORKER_IMAGE)


def docker_leftovers(api: Any) -> list[str]:
    """Labelled containers and networks this test process owns (by name)."""
    from edgelab.cluster.dockerapi import LABEL_CLUSTER, LABEL_OWNER, owner_labels

    owner = owner_labels()[LABEL_OWNER]
    containers, networks = api.labelled(LABEL_CLUSTER)
    return [r["name"] for r in containers + networks if r["labels"].get(LABEL_OWNER) == owner]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright, one per test module (or a skip)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def docker_api(docker_images: tuple[str, ...]) -> Iterator[Any]:
    """A live engine with ``docker_images``, or a skip saying what is missing.

    After the test nothing labelled as this process's may be left: no container, no
    network. (Only ours: the engine is shared, other clusters on it are not ours.)
    """
    from edgelab.cluster.dockerapi import DockerAPI, DockerUnavailable

    try:
        api = DockerAPI.connect(timeout_s=10)
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    missing = [image for image in docker_images if api.image_id(image) is None]
    if missing:
        api.close()
        pytest.skip(
            f"Docker images {', '.join(missing)} missing; build them with .ci/docker-setup.sh "
            "or `edgelab images build`"
        )
    try:
        yield api
        left = docker_leftovers(api)
        assert not left, f"labelled Docker resources left: {left}"
    finally:
        api.close()


ThrowawayPostgres = Callable[[str], contextlib.AbstractContextManager[str]]


@contextlib.contextmanager
def _throwaway_postgres(prefix: str) -> Iterator[str]:
    """A uniquely named PostgreSQL database on the test server, dropped afterwards.

    Yields its SQLAlchemy URL. The one place tests create PostgreSQL databases, so
    every test that uses one cleans up the same way.
    """
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{QUEUE_PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{QUEUE_PG_SERVER.split('://', 1)[1]}/{name}"
    finally:
        from edgelab.models.db import engine_for

        engine_for.cache_clear()
        with psycopg.connect(f"{QUEUE_PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def throwaway_postgres() -> ThrowawayPostgres:
    """``with throwaway_postgres("prefix") as url:`` a database that is dropped after."""
    return _throwaway_postgres


@pytest.fixture
def queue_postgres_url(throwaway_postgres: ThrowawayPostgres) -> Iterator[str]:
    """A throw-away PostgreSQL database for one queue test."""
    with throwaway_postgres("edgelab_queue") as url:
        yield url


def queue_settings_for(
    tmp_path: Path, models_dir: Path, redis_url: str, db_url: str = ""
) -> Settings:
    settings = Settings(
        data_dir=tmp_path / "data",
        models_dir=models_dir,
        redis_url=redis_url,
        database_url=db_url,
    )
    upgrade(settings.database_url)
    return settings


@pytest.fixture
def queue_settings_factory(
    tmp_path: Path, models_dir: Path, smollm2: object
) -> Callable[[str, str], Settings]:
    """Settings for (redis_url, database_url); "" database means SQLite under tmp_path."""
    return lambda redis_url, db_url="": queue_settings_for(tmp_path, models_dir, redis_url, db_url)


@pytest.fixture
def queue_nodes_of() -> Callable[[Path], list[psutil.Process]]:
    """Find the node processes started under a data dir (see ``node_processes_of``)."""
    return node_processes_of


@pytest.fixture
def queue_settings(
    tmp_path: Path, models_dir: Path, smollm2: object, queue_redis_url: str
) -> Settings:
    """SQLite + the test Redis + the real small model."""
    return queue_settings_for(tmp_path, models_dir, queue_redis_url)


def node_processes_of(data_dir: Path) -> list[psutil.Process]:
    """Node processes started under ``data_dir`` (other engineers' runs are ignored)."""
    want = str(data_dir)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if "edgelab.engines." not in cmdline:
            continue
        try:
            if proc.environ().get("EDGELAB_DATA_DIR") == want:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@dataclass
class QueueWorker:
    """One ``edgelab worker`` process (a Celery main process and its pool child)."""

    settings: Settings
    log_path: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELAB_")}
        env.update(
            EDGELAB_DATA_DIR=str(self.settings.data_dir),
            EDGELAB_MODELS_DIR=str(self.settings.models_dir),
            EDGELAB_DATABASE_URL=self.settings.database_url.replace(
                "postgresql+psycopg://", "postgresql://"
            ),
            EDGELAB_REDIS_URL=self.settings.redis_url,
            EDGELAB_LOCK_TTL="4",
        )
        env.update(self.env_extra)
        return env

    def start(self, timeout_s: float = 90.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgelab", "worker", "--loglevel", "INFO"],
                env=self.env(),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            with self.log_path.open("rb") as f:
                f.seek(offset)
                if b" ready." in f.read():
                    return
            time.sleep(0.3)
        pytest.fail(f"worker not ready within {timeout_s:.0f} s:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        """The main process and its children (the pool process)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            main = psutil.Process(self.proc.pid)
            return [main.pid, *(c.pid for c in main.children(recursive=False))]
        except psutil.NoSuchProcess:
            return []

    def kill9(self) -> None:
        """SIGKILL every process of the worker at once, like a crashed machine would."""
        assert self.proc is not None
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture
def queue_worker_factory(tmp_path: Path) -> Iterator[Callable[..., QueueWorker]]:
    """Start real worker processes; all are stopped and their nodes checked at teardown."""
    workers: list[QueueWorker] = []

    def start(settings: Settings, **env_extra: str) -> QueueWorker:
        worker = QueueWorker(
            settings, tmp_path / f"worker{len(workers)}.log", env_extra=dict(env_extra)
        )
        workers.append(worker)
        worker.start()
        return worker

    yield start
    for worker in workers:
        worker.stop()
    data_dirs = {w.settings.data_dir for w in workers}
    deadline = time.monotonic() + 15
    left: list[psutil.Process] = []
    while time.monotonic() < deadline:
        left = [p for d in data_dirs for p in node_processes_of(d)]
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"node processes left behind: {[p.pid for p in left]}"


STANDIN = REPO / "tests" / "standins" / "dllama_standin.py"


def install_dllama_standin(directory: Path, interpreter: str) -> Path:
    """Copy the stand-in into ``directory`` as executables ``dllama`` and ``dllama-api``.

    Both names, as a distributed-llama build produces both binaries side by side
    (edgelab finds ``dllama-api`` next to ``dllama``); the stand-in picks its role
    by the name it was started under. ``interpreter`` goes into its ``#!`` line:
    this test process's Python for the local backend, the image's ``python3`` for
    containers. See the stand-in's docstring for why a stand-in is used at all.
    Returns the ``dllama`` path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    text = STANDIN.read_text()
    first, rest = text.split("\n", 1)
    assert first.startswith("#!"), first
    for name in ("dllama-api", "dllama"):
        binary = directory / name
        binary.write_text(f"#!{interpreter}\n{rest}")
        binary.chmod(0o755)
    return binary


@pytest.fixture
def dllama_standin() -> Callable[[Path, str], Path]:
    """``dllama_standin(directory, interpreter)``: install the stand-in ``dllama`` there."""
    return install_dllama_standin
