"""The two node images of the Docker backend, and the wheelhouse they are built from.

llama-cpp-python must be compiled with ``GGML_RPC=ON`` (minutes of C++), and a
build host may have no PyPI inside ``docker build``. So the images never compile
or download anything: the host builds a *wheelhouse* once (edgelab's own wheel,
its dependencies, and the RPC-enabled llama-cpp-python wheel pip already cached
when the venv was set up), each image directory gets a hard-linked copy of it
(``root_image/wheelhouse``, ``worker_image/wheelhouse``, gitignored), and the
Dockerfiles install with ``pip --no-index``. The same directories therefore work
with ``docker build`` and ``docker compose up --build``.

``edgelab images build`` records what it built in ``DATA_DIR/images.json`` so
provenance and benchmarks can name the exact image ids.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import click

ROOT_IMAGE = "edgelab-root:latest"
WORKER_IMAGE = "edgelab-worker:latest"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
# The oldest Python the images run (Debian bookworm's python3), for marker evaluation.
TARGET_PYTHON = "3.11.2"
# image directory (relative to the project) -> tag
IMAGES: dict[str, tuple[str, str]] = {
    "root": ("root_image", ROOT_IMAGE),
    "worker": ("worker_image", WORKER_IMAGE),
}

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """The wheelhouse or an image could not be built; the message says what to do."""


def project_dir() -> Path:
    """The source checkout edgelab runs from (images are built from its files)."""
    here = Path(__file__).resolve().parents[2]
    if not (here / "pyproject.toml").is_file() or not (here / "worker_image").is_dir():
        raise ImageBuildError(
            f"{here} is not an edgelab checkout (no pyproject.toml/worker_image); "
            "images are built from a source checkout: pip install -e ."
        )
    return here


def _has_rpc(wheel: Path) -> bool:
    with zipfile.ZipFile(wheel) as zf:
        return any("libggml-rpc.so" in name for name in zf.namelist())


def _pip(*args: str, progress: Progress, env: dict[str, str] | None = None) -> str:
    cmd = [sys.executable, "-m", "pip", *args]
    progress("$ pip " + " ".join(args))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ImageBuildError(f"pip {args[0]} failed:\n{tail}")
    return done.stdout


def llama_wheel(dest: Path, progress: Progress) -> Path:
    """Put the RPC-enabled llama-cpp-python wheel of the installed version into ``dest``.

    Prefers the wheel pip cached when the venv was built; only if it is missing
    does it rebuild one (which compiles llama.cpp once).
    """
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError as exc:
        raise ImageBuildError(
            "llama-cpp-python is not installed here; run `make setup` (it builds it with RPC)"
        ) from exc
    prefix = f"llama_cpp_python-{version}-"
    existing = [w for w in dest.glob(f"{prefix}*.whl") if _has_rpc(w)]
    if existing:
        return existing[0]
    listed = _pip("cache", "list", "llama_cpp_python", "--format=abspath", progress=progress)
    for line in listed.splitlines():
        wheel = Path(line.strip())
        if wheel.name.startswith(prefix) and wheel.is_file() and _has_rpc(wheel):
            shutil.copy2(wheel, dest / wheel.name)
            progress(f"using cached llama-cpp-python wheel {wheel.name}")
            return dest / wheel.name
    progress(f"no cached RPC wheel of llama-cpp-python {version}; compiling one (minutes)...")
    env = dict(os.environ, CMAKE_ARGS="-DGGML_RPC=ON")
    _pip(
        "wheel", "--no-deps", "--no-binary", "llama-cpp-python", "-w", str(dest),
        f"llama-cpp-python=={version}", progress=progress, env=env,
    )  # fmt: skip
    built = [w for w in dest.glob(f"{prefix}*.whl") if _has_rpc(w)]
    if not built:
        raise ImageBuildError("the llama-cpp-python wheel built has no libggml-rpc")
    return built[0]


def _marker_only_requirements(wheelhouse: Path, python_full_version: str) -> list[str]:
    """Requirements of the wheels in ``wheelhouse`` that apply on ``python_full_version``
    but that no wheel there provides."""
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {
        "python_full_version": python_full_version,
        "python_version": ".".join(python_full_version.split(".")[:2]),
        "extra": "",
    }
    wheels = list(wheelhouse.glob("*.whl"))
    have = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
    missing: set[str] = set()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            metadata_names = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
            if not metadata_names:
                continue
            text = zf.read(metadata_names[0]).decode(errors="replace")
        for line in text.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or canonicalize_name(req.name) in have:
                continue
            if Marker(str(req.marker)).evaluate(env):
                req.marker = None
                missing.add(str(req))
    return sorted(missing)


def build_wheelhouse(project: Path, dest: Path, progress: Progress) -> list[Path]:
    """Wheels for ``edgelab[llama]`` and all its dependencies, for this Python and platform.

    The node images run Debian bookworm's Python 3.11, the same ABI as the
    host venv this is meant to run from.
    """
    if sys.version_info[:2] != (3, 11):
        progress(
            f"warning: building wheels with Python {sys.version_info[0]}.{sys.version_info[1]}; "
            "the images run Python 3.11 and may not accept them"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("edgelab-*.whl"):
        old.unlink()  # always repackage edgelab: its source is what changes
    llama = llama_wheel(dest, progress)
    version = llama.name.split("-")[1]
    _pip(
        "wheel", "-q", "-w", str(dest), "--find-links", str(dest),
        f"{project}[llama]", f"llama-cpp-python=={version}", progress=progress,
    )  # fmt: skip
    # pip evaluates environment markers for the Python running it, so dependencies
    # that only older 3.11 releases need (redis wants async-timeout below 3.11.3)
    # are missing for Debian bookworm's 3.11.2: add them explicitly.
    for _ in range(3):
        missing = _marker_only_requirements(dest, TARGET_PYTHON)
        if not missing:
            break
        _pip(
            "download", "-q", "-d", str(dest), "--find-links", str(dest),
            "--only-binary=:all:", *missing, progress=progress,
        )  # fmt: skip
    wheels = sorted(dest.glob("*.whl"))
    progress(f"wheelhouse {dest}: {len(wheels)} wheels")
    return wheels


def stage_wheelhouse(wheelhouse: Path, image_dir: Path) -> None:
    """Mirror ``wheelhouse`` into ``image_dir/wheelhouse``; hard links cost no disk space."""
    target = image_dir / "wheelhouse"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for wheel in wheelhouse.glob("*.whl"):
        try:
            os.link(wheel, target / wheel.name)
        except OSError:
            shutil.copy2(wheel, target / wheel.name)


def images_record(data_dir: Path) -> Path:
    return data_dir / "images.json"


def load_record(data_dir: Path) -> dict[str, Any]:
    path = images_record(data_dir)
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def build_images(
    base_image: str,
    data_dir: Path,
    progress: Progress,
    only: tuple[str, ...] = ("root", "worker"),
    wheelhouse: Path | None = None,
) -> dict[str, Any]:
    """Build the wheelhouse and the node images; record and return their ids."""
    from edgelab.cluster.dockerapi import DockerAPI, DockerAPIError, DockerUnavailable

    project = project_dir()
    wheelhouse = wheelhouse or project / "wheelhouse"
    try:
        api = DockerAPI.connect()
    except DockerUnavailable as exc:
        raise ImageBuildError(str(exc)) from exc
    try:
        progress(f"== wheelhouse -> {wheelhouse}")
        build_wheelhouse(project, wheelhouse, progress)
        record = load_record(data_dir)
        for role in only:
            directory, tag = IMAGES[role]
            image_dir = project / directory
            stage_wheelhouse(wheelhouse, image_dir)
            progress(f"== {tag} from {directory}/ on {base_image}")
            started = time.monotonic()
            try:
                image_id = api.build_image(
                    image_dir,
                    tag,
                    buildargs={"BASE_IMAGE": base_image},
                    labels={"edgelab.image": role},
                    on_line=lambda line: progress("   " + line),
                )
            except DockerAPIError as exc:
                raise ImageBuildError(str(exc)) from exc
            record[role] = {
                "tag": tag,
                "id": image_id,
                "base_image": base_image,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_s": round(time.monotonic() - started, 1),
            }
            progress(f"== {tag} = {image_id}")
        data_dir.mkdir(parents=True, exist_ok=True)
        images_record(data_dir).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        try:
            pruned = api.prune_dangling_images()
        except DockerAPIError as exc:
            progress(f"== warning: {exc}")
        else:
            progress(f"== removed {pruned} old untagged edgelab image layers")
        return record
    finally:
        api.close()


@click.group("images")
def images() -> None:
    """Build and inspect the Docker node images (and clean up Docker leftovers)."""


@images.command("build")
@click.option(
    "--base-image",
    default=DEFAULT_BASE_IMAGE,
    show_default=True,
    help="FROM image; must be Debian-based with Python 3.11 (e.g. edgelab-base:bookworm).",
)
@click.option(
    "--only", type=click.Choice(["root", "worker"]), multiple=True, help="Build just this image."
)
def images_build(base_image: str, only: tuple[str, ...]) -> None:
    """Build the wheelhouse and both node images, showing the build as it runs."""
    from edgelab.cli import load_settings

    settings = load_settings()
    try:
        record = build_images(
            base_image, settings.data_dir, lambda line: click.echo(line), only or ("root", "worker")
        )
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"recorded in {images_record(settings.data_dir)}")
    for role, entry in sorted(record.items()):
        click.echo(f"{role:7} {entry['tag']:24} {entry['id']}")


@images.command("wheelhouse")
def images_wheelhouse() -> None:
    """Only build the wheelhouse and stage it into both image directories (for docker compose)."""
    try:
        project = project_dir()
        build_wheelhouse(project, project / "wheelhouse", lambda line: click.echo(line))
        for directory, _tag in IMAGES.values():
            stage_wheelhouse(project / "wheelhouse", project / directory)
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from exc


@images.command("show")
def images_show() -> None:
    """Show the recorded images and whether the Docker engine still has them."""
    from edgelab.cli import load_settings
    from edgelab.cluster.dockerapi import DockerAPI, DockerUnavailable

    record = load_record(load_settings().data_dir)
    try:
        api: DockerAPI | None = DockerAPI.connect()
    except DockerUnavailable as exc:
        click.echo(str(exc), err=True)
        api = None
    for role, (_directory, tag) in IMAGES.items():
        entry = record.get(role, {})
        present = api.image_id(tag) if api is not None else None
        click.echo(f"{role:7} {tag:24} recorded={entry.get('id', '-')} engine={present or '-'}")
    if api is not None:
        api.close()


@images.command("reap")
def images_reap() -> None:
    """Remove edgelab containers and networks whose owning process is gone."""
    from edgelab.cluster.dockerapi import DockerAPI, DockerUnavailable

    try:
        api = DockerAPI.connect()
    except DockerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        removed = api.reap_orphans()
    finally:
        api.close()
    click.echo("removed: " + (", ".join(removed) if removed else "nothing"))
