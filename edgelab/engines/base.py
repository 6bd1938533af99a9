"""The contract every engine implements.

A cluster is one root node plus ``nodes - 1`` worker nodes. The cluster backend
(local processes or Docker containers) starts the processes that an engine
describes here, puts a latency proxy in front of every worker, and then talks to
the root only through the root API (:mod:`edgelab.engines.rootapi`).

Commands are argument vectors *without* the Python interpreter or container
entrypoint, so the same description runs as a local process
(``[sys.executable, "-m", *argv]``) and inside an image.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgelab.catalog import ModelInfo


class EngineError(RuntimeError):
    """An engine cannot run as asked (missing binary, bad topology, ...)."""


#: Which engine runs a catalog model of each format (``ModelInfo.format``).
ENGINE_FOR_FORMAT = {"gguf": "llamacpp", "dllama": "dllama"}
_FORMAT_LABEL = {"gguf": "GGUF (llama.cpp)", "dllama": "distributed-llama (.m)"}


def wrong_format(model: ModelInfo, engine: str) -> str:
    """The ``model`` field's message when ``engine`` cannot load ``model``'s format.

    It names the engine that can, because the usual cause is a form or a sweep
    that kept the other engine's model (or engine) by mistake.
    """
    label = _FORMAT_LABEL.get(model.format, model.format)
    other = ENGINE_FOR_FORMAT.get(model.format)
    hint = f"; run it with engine {other}" if other and other != engine else ""
    return f"{model.name} is a {label} model, which engine {engine} cannot run{hint}"


def module_argv(module: str, **options: object) -> list[str]:
    """The argv of a node that runs as ``python -m module --option value ...``.

    Option names take dashes for underscores (``dllama_bin`` -> ``--dllama-bin``);
    options that are ``None`` are left out, so optional flags need no special case.
    """
    argv = ["-m", module]
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


@dataclass(frozen=True)
class WorkerLaunch:
    """How to start one worker node listening on ``host:port`` with ``threads`` threads."""

    argv: list[str]
    # A line the worker prints on stdout/stderr once it accepts connections.
    ready_marker: str | None = None


@dataclass(frozen=True)
class RootLaunch:
    """How to start a root node whose root API listens on ``host:port``."""

    argv: list[str]


@dataclass(frozen=True)
class ContainerFile:
    """A host file an engine's nodes need inside their containers (mounted read-only).

    ``source`` is the path the Docker engine sees; ``env`` names an environment
    variable set to ``target`` in those containers (how a node finds the file).
    """

    source: Path
    target: PurePosixPath
    roles: tuple[str, ...] = ("root", "worker")
    env: str | None = None


class Engine(ABC):
    """One inference engine (llama.cpp, distributed-llama)."""

    name: str

    @abstractmethod
    def worker_launch(self, host: str, port: int, threads: int) -> WorkerLaunch:
        """Describe the worker node process."""

    @abstractmethod
    def root_launch(
        self,
        host: str,
        port: int,
        model_path: Path,
        workers: list[str],
        threads: int,
    ) -> RootLaunch:
        """Describe the root node process; ``workers`` are ``host:port`` strings (proxies)."""

    @abstractmethod
    def check_available(self) -> None:
        """Raise ``EngineError`` with a how-to-fix message if the engine cannot run here."""

    def run_problems(self, model: ModelInfo, nodes: int) -> dict[str, str]:
        """Why this engine cannot run ``model`` on ``nodes`` nodes, by form field.

        Called while a run is validated, before anything starts; an empty dict
        means the topology is fine. Engines override it with their own rules.
        """
        return {}

    def for_containers(
        self, model_path: Path, model_target: PurePosixPath
    ) -> tuple[Engine, list[ContainerFile]]:
        """The engine as its nodes see it inside containers, and the host files to mount.

        ``model_target`` is where the container backend puts ``model_path``. The
        default suits engines whose code is all in the images (llama.cpp); an
        engine that runs a user-supplied binary returns the mounts it needs and a
        copy of itself whose launch commands name the in-container paths. Raises
        ``EngineError`` when a needed host file is missing, before anything starts.
        """
        return self, []
