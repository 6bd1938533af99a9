"""Find and check the user's ``dllama`` binary.

edgelab never builds distributed-llama: the user builds it (``make dllama`` in
their checkout of b4rtaz/distributed-llama) and points edgelab at the result
with ``--dllama-bin PATH`` or ``EDGELAB_DLLAMA_BIN``. Every way this can be
wrong gets a message that says how to fix it, because it is the first thing a
new user of the engine meets.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from functools import cache
from pathlib import Path

from edgelab.engines.base import EngineError
from edgelab.settings import Settings

ENV_VAR = "EDGELAB_DLLAMA_BIN"
HOW_TO = (
    "build distributed-llama yourself (git clone https://github.com/b4rtaz/distributed-llama "
    "&& make dllama) and pass the binary with --dllama-bin PATH or set "
    f"{ENV_VAR}=/path/to/dllama"
)


def resolve_binary(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The dllama binary to run: ``explicit`` (``--dllama-bin``) first, then the env var.

    A bare name (``dllama``) is looked up on ``PATH``. Raises ``EngineError`` when
    nothing is configured or the file is missing, not a file, or not executable.
    """
    # Settings read at each call, not once: the viewer picks up a binary set for the
    # service, and node processes find the one their environment was given
    # (a container's ContainerFile variable, see engines/dllama/__init__.py).
    value = str(explicit) if explicit else Settings.from_env().dllama_bin
    source = "--dllama-bin" if explicit else ENV_VAR
    if not value:
        raise EngineError(f"no dllama binary configured: {HOW_TO}")
    path = Path(value).expanduser()
    if os.sep not in value and not path.exists():
        found = shutil.which(value)
        if found is None:
            raise EngineError(f"{source}={value!r} is not on PATH; {HOW_TO}")
        path = Path(found)
    if not path.exists():
        raise EngineError(f"{source} points at {path}, which does not exist; {HOW_TO}")
    if not path.is_file():
        raise EngineError(f"{source} points at {path}, which is not a file; {HOW_TO}")
    if not os.access(path, os.X_OK):
        raise EngineError(
            f"{source} points at {path}, which is not executable (chmod +x {path}); {HOW_TO}"
        )
    return path.resolve()


API_ENV_VAR = "EDGELAB_DLLAMA_API_BIN"
API_HOW_TO = (
    "build it with `make dllama-api` in your distributed-llama checkout; edgelab looks for "
    f"dllama-api next to the dllama binary, or set {API_ENV_VAR}=/path/to/dllama-api "
    "(or run with the engine option dllama_mode: inference, which needs only dllama)"
)


def resolve_api_binary(
    explicit: str | os.PathLike[str] | None = None,
    dllama: str | os.PathLike[str] | None = None,
) -> Path:
    """The ``dllama-api`` binary warm clusters run on the root.

    ``explicit`` (``--dllama-api-bin``) first, then ``EDGELAB_DLLAMA_API_BIN``,
    then ``dllama-api`` beside the dllama binary (``dllama``, or the one
    :func:`resolve_binary` finds): ``make dllama dllama-api`` builds both in one
    directory, so a user who configured one has usually configured both.
    """
    value = str(explicit) if explicit else Settings.from_env().dllama_api_bin
    if value:
        source = "--dllama-api-bin" if explicit else API_ENV_VAR
        path = Path(value).expanduser()
        if os.sep not in value and not path.exists():
            found = shutil.which(value)
            if found is None:
                raise EngineError(f"{source}={value!r} is not on PATH; {API_HOW_TO}")
            path = Path(found)
    else:
        source = "dllama-api beside the dllama binary"
        path = resolve_binary(dllama).parent / "dllama-api"
    if not path.is_file():
        raise EngineError(f"no dllama-api at {path} ({source}); {API_HOW_TO}")
    if not os.access(path, os.X_OK):
        raise EngineError(f"{path} is not executable (chmod +x {path}); {API_HOW_TO}")
    return path.resolve()


@cache
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def binary_version(path: Path, name: str = "dllama") -> str:
    """An engine version string for provenance.

    dllama prints no version, so the binary's sha256 identifies the build a run used.
    """
    st = path.stat()
    return f"{name} sha256:{_digest(str(path), st.st_size, st.st_mtime_ns)[:16]}"


__all__ = [
    "API_ENV_VAR",
    "ENV_VAR",
    "HOW_TO",
    "binary_version",
    "resolve_api_binary",
    "resolve_binary",
]
