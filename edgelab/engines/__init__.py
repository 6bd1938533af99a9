"""Inference engines: how to start worker and root nodes of one engine.

Every engine's root node speaks the same small HTTP API (see
:mod:`edgelab.engines.rootapi`), so clusters, the run executor and the queue never
need to know which engine they drive. Adding an engine means adding a package here
that implements :class:`edgelab.engines.base.Engine` and registering it in
:func:`get_engine`.
"""

from __future__ import annotations

from edgelab.engines.base import Engine, EngineError


def get_engine(name: str) -> Engine:
    """Return the engine called ``name`` or raise ``EngineError`` listing the known ones."""
    if name == "llamacpp":
        from edgelab.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine()
    if name == "dllama":
        from edgelab.engines.dllama import DllamaEngine

        return DllamaEngine()
    raise EngineError(f"unknown engine {name!r}; known engines: llamacpp, dllama")


__all__ = ["Engine", "EngineError", "get_engine"]
