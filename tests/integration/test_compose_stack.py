"""`docker compose up` on local images, then README's first API run (issue 16).

The whole stack for real: Redis, PostgreSQL, migrations, the one-shot ``models``
service (the small model copied from the host's models dir), web and worker, with
the run's nodes as sibling containers. Needs the images that
``.ci/docker-setup.sh --compose-images`` builds; skipped, saying which is missing,
otherwise. The stack is torn down (containers, network, volumes) in every case.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LOCAL_IMAGES = {
    "EDGELAB_BASE_IMAGE": "edgelab-base:bookworm",
    "EDGELAB_REDIS_IMAGE": "edgelab-redis:local",
    "EDGELAB_POSTGRES_IMAGE": "edgelab-postgres:local",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _docker_ok(*args: str) -> bool:
    return (
        subprocess.run(["docker", *args], capture_output=True, timeout=30, check=False).returncode
        == 0
    )


def _api(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_compose_up_then_the_readme_run_succeeds(
    tmp_path: Path, models_dir: Path, smollm2: object
) -> None:
    compose = shutil.which("docker-compose")
    if compose is None or shutil.which("docker") is None or not _docker_ok("info"):
        pytest.skip("needs a Docker engine and docker-compose (.ci/docker-setup.sh)")
    missing = [i for i in LOCAL_IMAGES.values() if not _docker_ok("image", "inspect", i)]
    if missing:
        pytest.skip(f"local images missing: {missing} (.ci/docker-setup.sh --compose-images)")
    if not any((REPO / "root_image" / "wheelhouse").glob("edgelab-*.whl")):
        pytest.skip("no wheelhouse staged in root_image/ (edgelab images wheelhouse)")
    if _docker_ok("container", "inspect", "edgelab-worker"):
        pytest.skip("a compose stack (container edgelab-worker) is already running here")

    token = secrets.token_hex(8)
    env_file = tmp_path / "compose.env"
    env_file.write_text(f"EDGELAB_API_TOKEN={token}\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELAB_")}
    env.update(LOCAL_IMAGES, EDGELAB_HOST_MODELS_DIR=str(models_dir), EDGELAB_WEB_PORT=str(port))
    project = f"edgelabtest{secrets.token_hex(3)}"
    base = [compose, "--env-file", str(env_file), "-p", project]

    def run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )

    url = f"http://127.0.0.1:{port}/api"
    try:
        # The images are the ones .ci/docker-setup.sh built from this checkout; `--build`
        # would rebuild them and leave the replaced ones dangling.
        up = run("up", "-d", timeout=900)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        deadline = time.monotonic() + 180
        while True:
            try:
                health = _api("GET", f"{url}/health", token)
                if health.get("ok") and health.get("workers"):
                    break
            except (OSError, urllib.error.HTTPError):
                pass
            if time.monotonic() > deadline:
                logs = run("logs", "--tail", "30", timeout=60)
                pytest.fail(f"stack not healthy in 180 s:\n{logs.stdout[-4000:]}")
            time.sleep(2)
        models = [m["name"] for m in _api("GET", f"{url}/models", token)["models"]]
        assert models == ["smollm2-135m"]  # catalogued with no manual step
        # README's first run, as written there.
        queued = _api(
            "POST",
            f"{url}/runs",
            token,
            {"prompt": "Name three planets.", "nodes": 2, "max_tokens": 8},
        )
        deadline = time.monotonic() + 300
        while True:
            run_data = _api("GET", f"{url}/runs/{queued['id']}", token)
            if run_data["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, run_data
            time.sleep(2)
        assert run_data["status"] == "succeeded", run_data["error"]
        assert run_data["metrics"]["output_tokens"] >= 1
    finally:
        down = run("down", "-v", "--remove-orphans", timeout=300)
        # Anything compose built (it builds missing images) must not linger as a
        # dangling edgelab image: test_docker checks that builds leave none.
        subprocess.run(
            ["docker", "image", "prune", "-f", "--filter", "label=edgelab.image"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert down.returncode == 0, down.stderr[-2000:]
