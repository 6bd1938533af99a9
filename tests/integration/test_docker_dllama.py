"""A dllama run on the Docker backend, with a stand-in for the dllama binary.

Why a stand-in: no distributed-llama build exists where these tests run and
edgelab may never build one (see tests/integration/test_dllama_standin.py). The
stand-in (tests/standins/dllama_standin.py, plain Python, which the node images
have) is mounted exactly where a user's binary would be, so this checks what
the Docker backend adds for dllama: the binary and the tokenizer mounted
read-only and named by the paths the nodes are told, ``EDGELAB_DLLAMA_BIN`` set
in every container, the worker entrypoint starting the dllama worker
supervisor, and worker-to-worker connections through the per-worker proxies.
Whether a real build runs in the images (its shared libraries, its CPU
features) cannot be checked here; issue 8 lists that.

``EDGELAB_TEST_ROOT_IMAGE``/``EDGELAB_TEST_WORKER_IMAGE`` name other images than
the default tags (e.g. ones built from a working tree while the defaults are in
use by someone else).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edgelab.catalog import Catalog
from edgelab.catalog.dllama import describe_dllama
from edgelab.cluster.dockerapi import (
    DockerAPI,
)
from edgelab.cluster.images import ROOT_IMAGE, WORKER_IMAGE
from edgelab.engines.dllama import CONTAINER_API_BINARY, CONTAINER_BINARY
from edgelab.engines.dllama.synthetic import write_synthetic_model
from edgelab.models.db import session_scope, upgrade
from edgelab.runs.config import parse_config
from edgelab.runs.executor import cluster_for, create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.docker]

IMAGES = {
    "root_image": os.environ.get("EDGELAB_TEST_ROOT_IMAGE", ROOT_IMAGE),
    "worker_image": os.environ.get("EDGELAB_TEST_WORKER_IMAGE", WORKER_IMAGE),
}


@pytest.fixture
def docker_images() -> tuple[str, ...]:
    return tuple(IMAGES.values())


@pytest.fixture
def standin_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dllama_standin: Callable[[Path, str], Path],
) -> Settings:
    """Own dirs; the tokenizer lies outside the models dir so it needs a mount of its own."""
    binary = dllama_standin(tmp_path / "bin", "/usr/bin/env python3")
    monkeypatch.setenv("EDGELAB_DLLAMA_BIN", str(binary))
    # Images are the server's settings (EDGELAB_ROOT_IMAGE/WORKER_IMAGE), never run options.
    settings = Settings(
        data_dir=tmp_path / "data",
        models_dir=tmp_path / "models",
        root_image=IMAGES["root_image"],
        worker_image=IMAGES["worker_image"],
    )
    upgrade(settings.database_url)
    model, tokenizer = write_synthetic_model(settings.models_dir)
    moved = tmp_path / "tokenizers" / "synthetic.t"
    moved.parent.mkdir()
    tokenizer.rename(moved)
    Catalog(settings).register(describe_dllama(model, "synthetic", tokenizer=moved))
    return settings


@pytest.mark.parametrize("mode", ["api", "inference"])
def test_three_node_dllama_run_in_containers(
    standin_settings: Settings, docker_api: DockerAPI, mode: str
) -> None:
    settings = standin_settings
    catalog = Catalog(settings)
    config, model = parse_config(
        {
            "prompt": "Hello the world",
            "model": "synthetic",
            "engine": "dllama",
            "backend": "docker",
            "nodes": 3,
            "threads": 1,
            "latency": "2ms",
            "max_tokens": 6,
            "options": {"dllama_mode": mode},
        },
        catalog,
    )
    with session_scope(settings.database_url) as s:
        run_id = create_run(s, config).id

    with cluster_for(settings, config, model, name=f"run{run_id}") as cluster:
        result = execute_run(settings, run_id, cluster=cluster, catalog=catalog)
        worker_logs = {
            name: lines for name, lines in cluster.node_logs(200).items() if name != "root"
        }
    assert result.status == "succeeded", result.error

    data = run_detail(settings.database_url, run_id)
    assert data["output_text"] == " stand-in token\n more text"
    assert data["provenance"]["measurement"]["mode"] == mode
    mounts = {m["target"]: m for m in data["provenance"]["image_ids"]["mounts"]}
    if mode == "inference":
        for token in data["tokens"]:
            assert token["detail"]["sent_kb"] == 4, token
            assert token["detail"]["recv_kb"] == 4, token
        assert data["tokens"][0]["detail"]["load_ms"] is not None
        assert str(data["provenance"]["engine_version"]).startswith("dllama sha256:")
        assert str(CONTAINER_API_BINARY) not in mounts
    else:
        # The warm root runs dllama-api, mounted into the root container only.
        assert str(data["provenance"]["engine_version"]).startswith("dllama-api sha256:")
        assert mounts[str(CONTAINER_API_BINARY)]["roles"] == ["root"]

    links = {link["link"]: link for link in data["links"]}
    assert set(links) == {"root<->worker1", "root<->worker2"}
    assert all(link["bytes_up"] > 0 and link["bytes_down"] > 0 for link in links.values())
    # worker1 -> worker2 went through worker2's proxy (its container name and proxy port).
    assert links["root<->worker2"]["bytes_up"] > links["root<->worker1"]["bytes_up"]

    assert mounts[str(CONTAINER_BINARY)]["roles"] == ["root", "worker"]
    assert mounts["/opt/dllama/tokenizer/synthetic.t"]["roles"] == ["root"]

    assert set(worker_logs) == {"worker1", "worker2"}
    for name, lines in worker_logs.items():
        text = "\n".join(lines)
        assert "dllama worker listening on" in text, (name, text)
        assert "worker node ready" in text, (name, text)
        # Readiness came from the ready line, not a probe connection (fatal to dllama).
        assert "dllama exited" not in text, (name, text)
