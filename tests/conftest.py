"""Fixtures shared by unit and integration tests.

The small real model (SmolLM2-135M, 98 MB) is fetched once into the repository's
``var/models`` (or ``EDGELAB_TEST_MODELS_DIR``) and shared by every test; each test
gets its own data directory and SQLite database.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from edgelab.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def models_dir() -> Path:
    path = Path(os.environ.get("EDGELAB_TEST_MODELS_DIR", REPO / "var" / "models"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def smollm2(models_dir: Path):  # type: ignore[no-untyped-def]
    """The real small model, registered in the shared test catalog."""
    from edgelab.catalog import Catalog

    return Catalog(models_dir=models_dir, path=models_dir / "catalog.json").fetch("smollm2-135m")


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    """Settings with a fresh SQLite database (schema applied) and the shared models dir."""
    from edgelab.models.db import upgrade

    s = Settings(data_dir=tmp_path / "data", models_dir=models_dir)
    upgrade(s.database_url)
    return s


def node_processes() -> list[psutil.Process]:
    """Every edgelab node process on this machine (worker or root of any engine) run by
    this checkout's interpreter: on a machine shared by several checkouts, nodes of
    the others come and go and are none of this test's business."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info.get("cmdline") or []
        cmdline = " ".join(argv)
        if (
            "edgelab.engines." in cmdline
            and ("worker" in cmdline or "root" in cmdline)
            and argv[0].startswith(sys.prefix)
        ):
            found.append(proc)
    return found


def owned_leftovers() -> list[str]:
    """cgroups and network namespaces of local nodes owned by this test process (their
    names carry the owner's pid), which its clusters must have removed on close."""
    from edgelab.topology import cgroups, netns

    groups = [
        str(p)
        for base in {cgroups.CGROUP_ROOT, *(cgroups.CGROUP_ROOT / c for c in cgroups.CONTROLLERS)}
        if base.is_dir()
        for p in base.glob(f"{cgroups.PREFIX}{os.getpid()}-*")
    ]
    return groups + netns.owned_namespaces(os.getpid())


@pytest.fixture
def no_leftover_nodes() -> Iterator[None]:
    """Fail the test if it leaves node processes behind that were not there before, or
    any cgroup or network namespace of a local node."""
    before = {p.pid for p in node_processes()}
    yield
    leftover = []
    for proc in node_processes():
        if proc.pid in before:
            continue
        try:
            proc.wait(timeout=5)  # a node may still be exiting after SIGTERM
        except psutil.TimeoutExpired:
            leftover.append(proc)
        except psutil.NoSuchProcess:
            pass
    assert not leftover, f"node processes left running: {[p.info['cmdline'] for p in leftover]}"
    assert owned_leftovers() == [], "cgroups or network namespaces left behind"
