"""The Docker backend on a real engine: runs, limits, failures and cleanup.

Needs a reachable Docker engine and the edgelab images (``.ci/docker-setup.sh``
provides both here); without them every test skips and says why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sweep_db import store_sweep

from edgelab.catalog import Catalog
from edgelab.cluster.dockerapi import (
    LABEL_CLUSTER,
    LABEL_NODE,
    LABEL_OWNER,
    LABEL_OWNER_START,
    LABEL_RUN,
    DockerAPI,
    DockerAPIError,
    owner_labels,
)
from edgelab.cluster.images import ROOT_IMAGE, WORKER_IMAGE
from edgelab.models.db import session_scope
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings
from edgelab.tasks.runner import run_group

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PROMPT = "Name three planets."
LONG_PROMPT = "Write a long story about a dragon who learns to bake bread."


def _mine(api: DockerAPI) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Labelled containers and networks owned by this test process."""
    owner = owner_labels()[LABEL_OWNER]
    containers, networks = api.labelled(LABEL_CLUSTER)
    return (
        [c for c in containers if c["labels"].get(LABEL_OWNER) == owner],
        [n for n in networks if n["labels"].get(LABEL_OWNER) == owner],
    )


def _submit(settings: Settings, **fields: Any) -> int:
    raw: dict[str, Any] = {
        "prompt": PROMPT,
        "nodes": 3,
        "threads": 1,
        "latency": "0ms",
        "max_tokens": 8,
        "backend": "docker",
    }
    raw.update(fields)
    config, _ = parse_config(raw, Catalog(settings))
    with session_scope(settings.database_url) as s:
        return create_run(s, config).id


@pytest.mark.usefixtures("smollm2")
def test_three_node_run_samples_docker_stats_and_names_images(
    settings: Settings, docker_api: DockerAPI
) -> None:
    run_id = _submit(settings, latency="10ms..30ms", max_tokens=16, options={"mem": "512m"})
    result = execute_run(settings, run_id)
    assert result.status == "succeeded", result.error

    data = run_detail(settings.database_url, run_id)
    assert 1 <= data["metrics"]["output_tokens"] <= 16
    assert data["nodes"] == ["root", "worker1", "worker2"]
    # Samples come from the Docker stats stream: every container moved bytes.
    for node in ("root", "worker1", "worker2"):
        rows = [s for s in data["samples"] if s["node"] == node]
        assert rows, f"no samples for {node}"
        assert max(s["net_rx_bytes"] or 0 for s in rows) > 0, node
        assert max(s["net_tx_bytes"] or 0 for s in rows) > 0, node
        assert max(s["rss_bytes"] for s in rows) > 0, node
    # Every root<->worker byte crossed the worker's proxy inside its container.
    assert {link["link"] for link in data["links"]} == {"root<->worker1", "root<->worker2"}
    assert all(link["bytes_up"] > 0 and link["bytes_down"] > 0 for link in data["links"])

    docker = data["provenance"]["image_ids"]
    assert docker["backend"] == "docker"
    assert docker["images"]["root"]["id"] == docker_api.image_id(ROOT_IMAGE)
    assert docker["images"]["worker"]["id"] == docker_api.image_id(WORKER_IMAGE)
    worker1 = docker["containers"]["worker1"]
    assert worker1["nano_cpus"] == 1_000_000_000
    assert worker1["memory_bytes"] == 512 * 1024 * 1024
    assert _mine(docker_api) == ([], [])


@pytest.mark.usefixtures("smollm2")
def test_memory_limit_too_small_for_the_model_fails_saying_so(
    settings: Settings, docker_api: DockerAPI
) -> None:
    run_id = _submit(settings, options={"mem": "64m"})
    result = execute_run(settings, run_id)
    assert result.status == "failed"
    assert result.error is not None
    assert "ran out of memory" in result.error
    assert "64m is too small" in result.error
    assert _mine(docker_api) == ([], [])


@pytest.mark.usefixtures("smollm2")
def test_docker_kill_of_a_worker_fails_the_run_within_10s_naming_it(
    settings: Settings, docker_api: DockerAPI
) -> None:
    run_id = _submit(settings, prompt=LONG_PROMPT, latency="20ms", max_tokens=400)
    killed_at: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") != "token" or event.get("index") != 2 or killed_at:
            return
        containers, _ = _mine(docker_api)
        (worker2,) = [c for c in containers if c["labels"].get(LABEL_NODE) == "worker2"]
        docker_api.kill(worker2["id"])  # what `docker kill` does: SIGKILL the container
        killed_at.append(time.monotonic())

    result = execute_run(settings, run_id, sink=on_event)
    failed_at = time.monotonic()

    assert killed_at, "the run ended before the worker could be killed"
    assert result.status == "failed"
    assert result.error is not None
    assert "node worker2" in result.error
    assert failed_at - killed_at[0] < 10.0
    data = run_detail(settings.database_url, run_id)
    assert data["status"] == "failed"
    assert data["node_logs"], "the last log lines of each container are stored with the run"
    assert _mine(docker_api) == ([], [])


@pytest.fixture
def unstartable_worker_image(docker_api: DockerAPI) -> Iterator[str]:
    """The worker image with an entrypoint that does not exist: the engine creates a
    container from it and then refuses to start it (a real Docker API error, not a mock)."""
    import io

    import docker

    tag = f"edgelab-test-no-entrypoint:{os.getpid()}"
    dockerfile = f'FROM {WORKER_IMAGE}\nENTRYPOINT ["/no/such/entrypoint"]\n'
    client = docker.from_env()
    try:
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
        yield tag
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(tag, force=True)
        client.close()


@pytest.mark.usefixtures("smollm2")
def test_a_container_the_engine_refuses_to_start_fails_the_whole_group_and_leaves_nothing(
    settings: Settings,
    docker_api: DockerAPI,
    unstartable_worker_image: str,
    test_redis: Any,
) -> None:
    settings = settings.with_overrides(worker_image=unstartable_worker_image)
    catalog = Catalog(settings)
    spec = {
        "name": "refused",
        "nodes": 2,
        "threads": 1,
        "backend": "docker",
        "latency": ["0ms", "5ms"],  # two cells, one topology: one group, one start
        "max_tokens": 4,
        "prompts": [PROMPT],
    }
    sweep = store_sweep(settings, spec, catalog, max_cells=10)
    (ids,) = sweep.groups
    result = run_group(settings, test_redis, ids, sweep_id=sweep.id, catalog=catalog)

    assert result.model_loads == 0
    for run_id in ids:
        data = run_detail(settings.database_url, run_id)
        assert data["status"] == "failed"
        error = data["error"]
        # The reason is the engine's own: which call, which container, what it said.
        assert error.startswith(
            "the cluster could not start: DockerAPIError: starting container"
        ), error
        assert "-worker1 failed" in error
        assert "/no/such/entrypoint" in error
    # The container the engine created but would not start is removed too.
    assert _mine(docker_api) == ([], [])


@pytest.mark.usefixtures("smollm2")
def test_a_container_the_engine_refuses_to_create_fails_the_start_naming_it(
    settings: Settings, docker_api: DockerAPI
) -> None:
    """Below Docker's 6 MB floor the engine refuses the create itself. Validation
    refuses such a run first (tests/unit/test_run_config.py); a cluster spec made by
    hand bypasses it, so the Docker API error path runs for real."""
    from edgelab.cluster.docker import DockerCluster
    from edgelab.cluster.spec import ClusterSpec
    from edgelab.netem.profile import LatencyProfile

    model = Catalog(settings).get("smollm2-135m")
    spec = ClusterSpec(
        model="smollm2-135m", nodes=2, threads=1, latency=LatencyProfile.parse("0ms"),
        backend="docker", options={"mem": "5m"},
    )  # fmt: skip
    cluster = DockerCluster(spec, settings.data_dir / "cluster", model.path)
    with pytest.raises(DockerAPIError) as info:
        cluster.start()
    message = str(info.value)
    assert message.startswith(f"creating container {cluster.network_name}-worker1 failed: ")
    assert "Minimum memory limit allowed is 6MB" in message
    assert _mine(docker_api) == ([], [])


def test_reaper_removes_resources_whose_owner_died(docker_api: DockerAPI) -> None:
    # A real process that owned the resources and is gone now.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_start = psutil.Process(dead.pid).create_time()
    dead.wait()
    host = owner_labels()[LABEL_OWNER].rpartition(":")[0]
    orphan = {
        LABEL_CLUSTER: "reaper-test",
        LABEL_RUN: "reaper-test",
        LABEL_NODE: "worker1",
        LABEL_OWNER: f"{host}:{dead.pid}",
        LABEL_OWNER_START: f"{dead_start:.2f}",
    }
    alive = {**orphan, LABEL_CLUSTER: "reaper-test-alive", **owner_labels()}
    net_id = docker_api.create_network("edgelab-reaper-test", orphan)
    live_net_id = docker_api.create_network("edgelab-reaper-test-alive", alive)
    try:
        docker_api.run_container(
            image=WORKER_IMAGE,
            name="edgelab-reaper-test-worker1",
            command=["--threads", "1"],
            network_id=net_id,
            labels=orphan,
        )
        removed = docker_api.reap_orphans()
        assert "edgelab-reaper-test-worker1" in removed
        assert "edgelab-reaper-test" in removed
        assert "edgelab-reaper-test-alive" not in removed  # its owner (this test) lives
        containers, networks = docker_api.labelled(LABEL_CLUSTER)
        assert not [c for c in containers if c["labels"][LABEL_CLUSTER] == "reaper-test"]
        assert not [n for n in networks if n["labels"][LABEL_CLUSTER] == "reaper-test"]
    finally:
        docker_api.remove_network(live_net_id)
        for c in docker_api.labelled(LABEL_CLUSTER)[0]:
            if c["labels"].get(LABEL_CLUSTER) == "reaper-test":
                docker_api.remove_container(c["id"])
        docker_api.remove_network(net_id)


@pytest.mark.usefixtures("smollm2")
def test_latency_change_on_a_warm_docker_cluster(settings: Settings, docker_api: DockerAPI) -> None:
    from edgelab.cluster.docker import DockerCluster
    from edgelab.cluster.spec import ClusterSpec
    from edgelab.netem.profile import LatencyProfile

    model = Catalog(settings).get("smollm2-135m")
    spec = ClusterSpec(
        model="smollm2-135m", nodes=2, threads=1, latency=LatencyProfile.parse("0ms"),
        backend="docker",
    )  # fmt: skip
    cluster = DockerCluster(spec, settings.data_dir / "cluster", model.path)
    try:
        cluster.start()
        assert cluster.link_stats()["root<->worker1"].profile == "0ms"
        cluster.set_latency(LatencyProfile.parse("25ms"))
        before = cluster.link_stats()["root<->worker1"]
        assert before.profile == "25ms"
        tokens = [e for e in cluster.client.generate(PROMPT, 4) if e["type"] == "token"]
        assert tokens
        after = cluster.link_stats()["root<->worker1"]
        chunks = after.up.chunks - before.up.chunks
        assert chunks > 0
        # Every chunk sent after the change waited the new delay.
        assert after.up.delay_total_s - before.up.delay_total_s >= chunks * 0.025 * 0.99
    finally:
        cluster.close()
    assert _mine(docker_api) == ([], [])


def test_images_are_recorded_by_build(docker_api: DockerAPI) -> None:
    """`edgelab images show` reports both images from the engine."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "edgelab"), "images", "show"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for image in (ROOT_IMAGE, WORKER_IMAGE):
        line = next(row for row in done.stdout.splitlines() if image in row)
        assert f"engine={docker_api.image_id(image)}" in line


def test_builds_leave_no_untagged_edgelab_images() -> None:
    """Rebuilding (CI builds before the tests) prunes replaced images and install stages."""
    import docker

    client = docker.from_env()
    try:
        leftovers = client.images.list(filters={"dangling": True, "label": "edgelab.image"})
    finally:
        client.close()
    assert leftovers == [], [image.id for image in leftovers]


def test_compose_file_describes_the_stack_safely(tmp_path: Path) -> None:
    """docker-compose.yml validates and keeps its promises: full stack, web on loopback,
    the socket only where experiments are started, a token required."""
    import shutil

    import yaml

    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (.ci/docker-setup.sh installs it)")
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "EDGELAB_API_TOKEN"}
    # An empty env file: a developer's own .env must not decide the outcome.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = [compose, "--env-file", str(empty)]
    refused = subprocess.run(
        [*base, "config", "-q"], cwd=repo, env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0
    assert "EDGELAB_API_TOKEN" in refused.stderr
    done = subprocess.run(
        [*base, "config"],
        cwd=repo,
        env={**env, "EDGELAB_API_TOKEN": "test-token"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {"redis", "postgres", "migrate", "web", "worker"} <= set(services)
    ports = services["web"]["ports"]
    assert all(str(p).startswith("127.0.0.1:") or "127.0.0.1" in str(p) for p in ports), ports
    sockets = {
        name
        for name, svc in services.items()
        if any("docker.sock" in str(v) for v in svc.get("volumes", []))
    }
    assert sockets == {"worker"}
    assert services["worker"]["environment"]["EDGELAB_BACKEND"] == "docker"
    # A durable broker: queued work survives a restart of the redis container.
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") or "/data" in str(v) for v in services["redis"]["volumes"])
