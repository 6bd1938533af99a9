"""Does a prompt fit the model's context? Checked when a run is submitted, not after
a cluster has started (a 30 MB prompt once held a root at 2.8 GB for 90 s first).

The roots run with a context of ``CONTEXT_TOKENS`` tokens (or less if the model's
own context is smaller); a run needs its prompt's tokens, the chat template's
(:data:`TEMPLATE_MARGIN`, an upper bound) and ``max_tokens`` to fit in it.

The prompt is tokenised exactly with the model's own vocabulary when llama.cpp can
read it here (a GGUF file present on this host: ``vocab_only`` loads no weights,
tens of milliseconds once per model and process). Otherwise (dllama models, a
models directory on another host) only the character limit of the ``prompt`` field
applies here and the root reports an over-long prompt when the run starts.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgelab.catalog import ModelInfo

#: The context both engines' roots allocate (``DEFAULT_CTX`` of the llama.cpp and dllama roots).
CONTEXT_TOKENS = 2048
#: Tokens the root's chat template may add around the prompt (SmolLM2's adds ~10).
TEMPLATE_MARGIN = 64

_lock = threading.Lock()


def context_tokens(model: ModelInfo) -> int:
    """The context a run of ``model`` gets: the roots' default, or less if the model says so."""
    own = model.extra.get("context_length")
    header = model.extra.get("dllama_header")
    if own is None and isinstance(header, dict):
        own = header.get("seq_len")
    if isinstance(own, int) and not isinstance(own, bool) and 0 < own < CONTEXT_TOKENS:
        return own
    return CONTEXT_TOKENS


@lru_cache(maxsize=4)
def _vocab(path: str, mtime_ns: int) -> Any:
    import llama_cpp

    return llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)


def count_tokens(model: ModelInfo, prompt: str) -> int | None:
    """The prompt's token count with the model's vocabulary, or None if it cannot be read here."""
    if model.format != "gguf":
        return None
    path = Path(model.path)
    try:
        mtime = path.stat().st_mtime_ns
        import llama_cpp  # noqa: F401  (the extra may not be installed where the API runs)
    except (OSError, ImportError):
        return None
    try:
        with _lock:  # llama.cpp's vocabulary objects are not documented as thread-safe
            llm = _vocab(str(path), mtime)
            return len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False))
    except Exception:  # an unreadable file is reported by the run itself, not here
        return None


def prompt_problems(model: ModelInfo, prompt: str, max_tokens: int) -> dict[str, str]:
    """Errors for ``prompt``/``max_tokens`` that do not fit ``model``'s context (empty if fine)."""
    ctx = context_tokens(model)
    if max_tokens + TEMPLATE_MARGIN >= ctx:
        return {
            "max_tokens": f"{max_tokens} does not leave room for a prompt in the context of "
            f"{ctx} tokens of {model.name}"
        }
    tokens = count_tokens(model, prompt)
    if tokens is not None and tokens + TEMPLATE_MARGIN + max_tokens > ctx:
        return {
            "prompt": f"is {tokens} tokens; with max_tokens {max_tokens} (and up to "
            f"{TEMPLATE_MARGIN} of the chat template) it exceeds the context of {ctx} tokens "
            f"of {model.name}: at most {ctx - TEMPLATE_MARGIN - max_tokens} prompt tokens"
        }
    return {}


__all__ = ["CONTEXT_TOKENS", "TEMPLATE_MARGIN", "context_tokens", "count_tokens", "prompt_problems"]
