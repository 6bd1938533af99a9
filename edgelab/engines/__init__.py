"""Inference engines: how to start worker and root nodes of one engine.

Every engine's root node speaks the same small HTTP API (see
:mod:`edgelab.engines.rootapi`), so clusters, the run executor and the queue never
need to know which engine they drive. Adding an engine means adding a package here
that implements :class:`edgelab.engines.base.Engine` and registering it in
:func:`get_engine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgelab.engines.base import Engine, EngineError

if TYPE_CHECKING:
    from edgelab.catalog import ModelInfo


def get_engine(
    name: str, model: ModelInfo | None = None, options: Mapping[str, Any] | None = None
) -> Engine:
    """Return the engine called ``name`` or raise ``EngineError`` listing the known ones.

    With ``model``, the engine is set up for that catalog entry (a dllama model's
    tokenizer may lie anywhere; the catalog remembers where). ``options`` are the
    run's options; the engine reads its own from them (dllama: ``dllama_mode``).
    """
    if name == "llamacpp":
        from edgelab.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine()
    if name == "dllama":
        from edgelab.engines.dllama import DEFAULT_MODE, MODE_OPTION, DllamaEngine

        tokenizer = model.extra.get("tokenizer") if model is not None else None
        mode = str((options or {}).get(MODE_OPTION, DEFAULT_MODE))
        return DllamaEngine(tokenizer=Path(tokenizer) if tokenizer else None, mode=mode)
    raise EngineError(f"unknown engine {name!r}; known engines: llamacpp, dllama")


__all__ = ["Engine", "EngineError", "get_engine"]
