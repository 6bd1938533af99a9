"""The distributed-llama engine: ``dllama`` workers and an edgelab root around ``dllama inference``.

Worker: :mod:`edgelab.engines.dllama.worker` (supervises ``dllama worker``).
Root: :mod:`edgelab.engines.dllama.root` (serves :mod:`edgelab.engines.rootapi`,
runs one ``dllama inference`` per request and parses its timing lines).
The binary is the user's own build (``--dllama-bin`` or ``EDGELAB_DLLAMA_BIN``);
:func:`preflight` checks binary and topology before anything starts.
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
)
from edgelab.engines.dllama.binary import ENV_VAR, resolve_binary
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
CONTAINER_TOKENIZER_DIR = PurePosixPath("/opt/dllama/tokenizer")


class DllamaEngine(Engine):
    """distributed-llama (tensor parallel across all nodes).

    ``binary`` is ``--dllama-bin``; without it ``EDGELAB_DLLAMA_BIN`` is used.
    ``tokenizer`` is the model's ``.t`` (the catalog's ``extra["tokenizer"]``);
    without it the root looks next to the model. ``net_turbo`` stays off by
    default (see :mod:`edgelab.engines.dllama.worker`).
    """

    name = "dllama"

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        net_turbo: bool = False,
        tokenizer: Path | PurePosixPath | None = None,
        _in_container: bool = False,
    ) -> None:
        self._binary = binary
        self.net_turbo = net_turbo
        self.tokenizer = tokenizer
        # Paths inside a node container cannot be checked from the host.
        self._in_container = _in_container

    def binary(self) -> Path:
        if self._in_container:
            return Path(str(self._binary))
        return resolve_binary(self._binary)

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
            )
        )

    def check_available(self) -> None:
        resolve_binary(self._binary)

    def for_containers(
        self, model_path: Path, model_target: PurePosixPath
    ) -> tuple[DllamaEngine, list[ContainerFile]]:
        # The host's binary is mounted into every node (workers run it too) and
        # found there through the same env var a local node reads.
        files = [ContainerFile(resolve_binary(self._binary), CONTAINER_BINARY, env=ENV_VAR)]
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
            _in_container=True,
        )
        return inside, files

    def run_problems(self, model: ModelInfo, nodes: int) -> dict[str, str]:
        # dllama slices tensors, not layers: its rules are about divisibility.
        problems: dict[str, str] = {}
        try:
            # First, whatever the model: a form that picks dllama learns at once
            # that a binary is missing and how to provide one.
            resolve_binary(self._binary)
        except EngineError as exc:
            problems["engine"] = str(exc)
        if model.format != "dllama":
            problems["model"] = f"{model.name} is a {model.format} model; dllama needs a .m model"
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
    "CONTAINER_BINARY",
    "ENV_VAR",
    "DllamaEngine",
    "preflight",
    "resolve_binary",
    "valid_node_counts",
    "validate_topology",
]
