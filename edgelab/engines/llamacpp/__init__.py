"""The llama.cpp engine: ggml RPC workers and a llama-cpp-python root.

Worker: :mod:`edgelab.engines.llamacpp.worker` (the ggml RPC server on the CPU).
Root: :mod:`edgelab.engines.llamacpp.root` (registers the workers as RPC devices,
loads the GGUF, serves :mod:`edgelab.engines.rootapi`). Both run as
``[python, *argv]`` locally and inside the engine images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgelab.engines.base import (
    Engine,
    EngineError,
    RootLaunch,
    WorkerLaunch,
    module_argv,
    wrong_format,
)

if TYPE_CHECKING:
    from edgelab.catalog import ModelInfo


# Printed by the worker once it accepts connections. Defined here, not in the
# worker module, so importing the package never imports ``worker`` (which
# ``python -m edgelab.engines.llamacpp.worker`` would then warn about).
READY_MARKER = "worker listening on"


class LlamaCppEngine(Engine):
    """llama.cpp through llama-cpp-python built with ``GGML_RPC=ON``."""

    name = "llamacpp"

    def worker_launch(self, host: str, port: int, threads: int) -> WorkerLaunch:
        return WorkerLaunch(
            argv=module_argv(
                "edgelab.engines.llamacpp.worker", host=host, port=port, threads=threads
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
                "edgelab.engines.llamacpp.root",
                host=host,
                port=port,
                model=model_path,
                workers=",".join(workers),
                threads=threads,
            )
        )

    def check_available(self) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise EngineError(
                f"llama-cpp-python cannot be imported ({exc}); install it with "
                'CMAKE_ARGS="-DGGML_RPC=ON" pip install llama-cpp-python'
            ) from exc
        if not llama_cpp.llama_supports_rpc():
            raise EngineError(
                "llama-cpp-python was built without GGML_RPC; reinstall it with "
                'CMAKE_ARGS="-DGGML_RPC=ON" pip install --force-reinstall llama-cpp-python'
            )
        from edgelab.engines.llamacpp.ggml import load_ggml

        load_ggml()

    def run_problems(self, model: ModelInfo, nodes: int) -> dict[str, str]:
        # Layers are the unit llama.cpp places on devices: every node needs one.
        if model.format != "gguf":
            return {"model": wrong_format(model, self.name)}
        if model.n_layers and nodes > model.n_layers:
            return {
                "nodes": f"must be at most {model.n_layers} (the layers of {model.name}), "
                f"got {nodes}"
            }
        return {}


__all__ = ["LlamaCppEngine"]
