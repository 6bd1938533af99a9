"""What this machine offers the integration tests: a Docker engine with edgelab's
images, Debian's chromium. Imported by test modules (``from available import ...``,
pytest puts this folder on sys.path) and by conftest.py's fixtures.
"""

from __future__ import annotations


def docker_problem(images: tuple[str, ...] | None = None) -> str | None:
    """Why Docker tests cannot run here (no engine, images missing), or ``None``.

    For tests that combine it with other conditions before skipping; a test that
    only needs the engine takes the ``docker_api`` fixture instead.
    """
    from edgelab.cluster.dockerapi import DockerAPI, DockerUnavailable
    from edgelab.cluster.images import ROOT_IMAGE, WORKER_IMAGE

    try:
        api = DockerAPI.connect(timeout_s=10)
    except DockerUnavailable as exc:
        return f"no Docker engine: {exc}"
    try:
        missing = [i for i in images or (ROOT_IMAGE, WORKER_IMAGE) if api.image_id(i) is None]
    finally:
        api.close()
    return f"Docker images {', '.join(missing)} missing" if missing else None


CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections are refused by
# this machine's closed network, many at a time.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
