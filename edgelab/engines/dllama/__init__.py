"""The distributed-llama engine: ``dllama`` workers and an edgelab root around dllama's root.

Worker: :mod:`edgelab.engines.dllama.worker` (supervises ``dllama worker``).
Root: :mod:`edgelab.engines.dllama.root` (serves :mod:`edgelab.engines.rootapi`)
in one of two modes, chosen per run by the option ``dllama_mode``:

- ``api`` (default): one warm ``dllama-api`` for the cluster's life, so the model
  is loaded and the workers connected once per topology group, as with llama.cpp
  (:mod:`edgelab.engines.dllama.api`);
- ``inference``: one ``dllama inference`` per request, with dllama's own per-token
  compute/sync numbers, and a model load (weights streamed to every worker) per run.

The binaries are the user's own build (``--dllama-bin`` or ``EDGELAB_DLLAMA_BIN``;
``dllama-api`` beside it or ``EDGELAB_DLLAMA_API_BIN``); :func:`preflight` checks
binary and topology before anything starts.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from edgelab.catalog.dllama import default_tokenizer_path, read_dllama_header
from edgelab.catalog.info import CatalogError
from edgelab.engines.base import (
    ContainerFile,
    Engine,
    EngineError,
    RootLaunch,
    WorkerLaunch,
    module_argv,
    wrong_format,
)
from edgelab.engines.dllama.binary import API_ENV_VAR, ENV_VAR, resolve_api_binary, resolve_binary
from edgelab.engines.dllama.topology import valid_node_counts, validate_topology

if TYPE_CHECKING:
    from edgelab.catalog import ModelInfo


# Printed by the worker once it accepts connections. Defined here, not in the
# worker module, so importing the package never imports ``worker`` (which
# ``python -m edgelab.engines.dllama.worker`` would then warn about).
READY_MARKER = "dllama worker listening on"
# Where container backends mount the user's binary (and a tokenizer that does not
# lie next to its model): a fixed path, so the images need no dllama of their own.
CONTAINER_BINARY = PurePosixPath("/opt/dllama/dllama")
CONTAINER_API_BINARY = PurePosixPath("/opt/dllama/dllama-api")
CONTAINER_TOKENIZER_DIR = PurePosixPath("/opt/dllama/tokenizer")
#: How the root runs dllama (engine option ``dllama_mode``); the first is the default.
MODES = ("api", "inference")
DEFAULT_MODE = MODES[0]
MODE_OPTION = "dllama_mode"


def mode_problem(options: dict[str, object], engine: str) -> str | None:
    """Why ``options[MODE_OPTION]`` is wrong for ``engine``, or None when it is fine."""
    if MODE_OPTION not in options:
        return None
    value = options[MODE_OPTION]
    if engine != "dllama":
        return f"{MODE_OPTION} applies only to engine dllama, not {engine}"
    if value not in MODES:
        return f"{MODE_OPTION} must be one of {', '.join(MODES)}, got {value!r}"
    return None


class DllamaEngine(Engine):
    """distributed-llama (tensor parallel across all nodes).

    ``binary`` is ``--dllama-bin``; without it ``EDGELAB_DLLAMA_BIN`` is used.
    ``tokenizer`` is the model's ``.t`` (the catalog's ``extra["tokenizer"]``);
    without it the root looks next to the model. ``net_turbo`` stays off by
    default (see :mod:`edgelab.engines.dllama.worker`). ``mode`` is ``api`` (warm
    ``dllama-api`` root) or ``inference`` (one ``dllama inference`` per run);
    ``api_binary`` is the ``dllama-api`` to run in api mode (else found by
    :func:`resolve_api_binary`).
    """

    name = "dllama"

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        net_turbo: bool = False,
        tokenizer: Path | PurePosixPath | None = None,
        mode: str = DEFAULT_MODE,
        api_binary: str | os.PathLike[str] | None = None,
        _in_container: bool = False,
    ) -> None:
        if mode not in MODES:
            raise EngineError(f"{MODE_OPTION} must be one of {', '.join(MODES)}, got {mode!r}")
        self._binary = binary
        self._api_binary = api_binary
        self.net_turbo = net_turbo
        self.tokenizer = tokenizer
        self.mode = mode
        # Paths inside a node container cannot be checked from the host.
        self._in_container = _in_container

    def binary(self) -> Path:
        if self._in_container:
            return Path(str(self._binary))
        return resolve_binary(self._binary)

    def api_binary(self) -> Path:
        if self._in_container:
            return Path(str(self._api_binary))
        return resolve_api_binary(self._api_binary, self._binary)

    def worker_launch(self, host: str, port: int, threads: int) -> WorkerLaunch:
        return WorkerLaunch(
            argv=module_argv(
                "edgelab.engines.dllama.worker",
                dllama_bin=self.binary(),
                host=host,
                port=port,
                threads=threads,
                net_turbo=int(self.net_turbo),
            ),
            ready_marker=READY_MARKER,
        )

    def root_launch(
        self,
        host: str,
        port: int,
        model_path: Path,
        workers: list[str],
        threads: int,
    ) -> RootLaunch:
        return RootLaunch(
            argv=module_argv(
                "edgelab.engines.dllama.root",
                dllama_bin=self.binary(),
                host=host,
                port=port,
                model=model_path,
                workers=",".join(workers),
                threads=threads,
                net_turbo=int(self.net_turbo),
                tokenizer=self.tokenizer,
                mode=self.mode,
                dllama_api_bin=self.api_binary() if self.mode == "api" else None,
            )
        )

    def check_available(self) -> None:
        resolve_binary(self._binary)
        if self.mode == "api":
            resolve_api_binary(self._api_binary, self._binary)

    def for_containers(
        self, model_path: Path, model_target: PurePosixPath
    ) -> tuple[DllamaEngine, list[ContainerFile]]:
        # The host's binary is mounted into every node (workers run it too) and
        # found there through the same env var a local node reads.
        files = [ContainerFile(resolve_binary(self._binary), CONTAINER_BINARY, env=ENV_VAR)]
        if self.mode == "api":
            files.append(
                ContainerFile(
                    resolve_api_binary(self._api_binary, self._binary),
                    CONTAINER_API_BINARY,
                    roles=("root",),
                    env=API_ENV_VAR,
                )
            )
        tokenizer = Path(self.tokenizer) if self.tokenizer else default_tokenizer_path(model_path)
        if tokenizer is None or not tokenizer.is_file():
            raise EngineError(
                f"no tokenizer (.t) for {model_path}: register the model with its tokenizer "
                "(edgelab models add) or put the .t file next to it"
            )
        if tokenizer.resolve().parent == model_path.resolve().parent:
            # Already inside the mounted models directory.
            tokenizer_target = model_target.parent / tokenizer.name
        else:
            tokenizer_target = CONTAINER_TOKENIZER_DIR / tokenizer.name
            files.append(ContainerFile(tokenizer.resolve(), tokenizer_target, roles=("root",)))
        inside = DllamaEngine(
            CONTAINER_BINARY,
            net_turbo=self.net_turbo,
            tokenizer=tokenizer_target,
            mode=self.mode,
            api_binary=CONTAINER_API_BINARY if self.mode == "api" else None,
            _in_container=True,
        )
        return inside, files

    def run_problems(self, model: ModelInfo, nodes: int) -> dict[str, str]:
        # dllama slices tensors, not layers: its rules are about divisibility.
        problems: dict[str, str] = {}
        try:
            # First, whatever the model: a form that picks dllama learns at once
            # that a binary is missing and how to provide one.
            self.check_available()
        except EngineError as exc:
            problems["engine"] = str(exc)
        if model.format != "dllama":
            problems["model"] = wrong_format(model, self.name)
            return problems
        try:
            validate_topology(read_dllama_header(model.path), nodes)
        except (EngineError, CatalogError) as exc:
            problems["nodes"] = str(exc)
        return problems


def preflight(model_path: Path, nodes: int, binary: str | os.PathLike[str] | None = None) -> None:
    """Everything that can be checked before a dllama run starts: binary and topology.

    Raises ``EngineError`` naming the problem (and, for topologies, the rule broken
    and the node counts that work).
    """
    resolve_binary(binary)
    try:
        header = read_dllama_header(model_path)
    except CatalogError as exc:
        raise EngineError(str(exc)) from exc
    validate_topology(header, nodes)


__all__ = [
    "CONTAINER_API_BINARY",
    "CONTAINER_BINARY",
    "DEFAULT_MODE",
    "ENV_VAR",
    "MODES",
    "MODE_OPTION",
    "DllamaEngine",
    "mode_problem",
    "preflight",
    "resolve_binary",
    "valid_node_counts",
    "validate_topology",
]
