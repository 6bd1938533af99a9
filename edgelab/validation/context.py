"""Does a prompt fit the model's context? Checked when a run is submitted, not after
a cluster has started (a 30 MB prompt once held a root at 2.8 GB for 90 s first).

The roots run with a context of ``CONTEXT_TOKENS`` tokens (or less if the model's
own context is smaller); a run needs its prompt's tokens, the chat template's
(:data:`TEMPLATE_MARGIN`, an upper bound) and ``max_tokens`` to fit in it.

The prompt is tokenised exactly with the model's own vocabulary when llama.cpp can
read it here (a GGUF file present on this host: ``vocab_only`` loads no weights).
Otherwise (dllama models, a models directory on another host) only the character
limit of the ``prompt`` field applies here and the root reports an over-long prompt
when the run starts.

**Off the event loop.** The first count per model and process imports llama.cpp and
reads the vocabulary: 0.1 s on a quiet machine with the file in the page cache,
seconds on a loaded one or a slow disk, and as long as it takes on a models
directory on a network share that hangs. All of it is C code, which gevent cannot
interrupt, so inside ``edgelab serve`` (gevent workers, see
:mod:`edgelab.service.streams`) it would stall every request and live stream of
that worker process meanwhile (its heartbeat too: after 30 s gunicorn kills it).
Under gevent every count therefore runs in one OS thread of this module
(:func:`_tokenizer_pool`); the request's greenlet waits for it and the others run
(ctypes releases the GIL for llama.cpp's calls). One thread, not gevent's shared
pool of ten: counts are serialised anyway (llama.cpp's vocabulary objects are not
documented as thread-safe), so more threads would only wait on the lock; a hung read
holds that one thread, and the submits behind it wait while pages, health and streams
go on. Elsewhere (Celery workers, the CLI, tests) counts run in the caller's thread.
While llama.cpp loads a vocabulary, llama-cpp-python points the process's stdout and
stderr at /dev/null (``verbose=False``): access-log lines of that moment are lost.

**Warm at start.** ``edgelab serve`` also loads the vocabulary of the model a run
gets by default (:func:`default_model`) in each web worker as it starts
(:func:`warm`, from :mod:`edgelab.service.wsgi`), in that same thread, so the first
submit of the common case does not wait for it. Only that one model: each
vocabulary costs ~18 MB of memory per worker process (SmolLM2's 49 k tokens;
larger vocabularies more), and :func:`_vocab` keeps at most four per process.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from edgelab.catalog import Catalog, CatalogError, ModelInfo
from edgelab.settings import Settings
from edgelab.validation.fields import RUN_RULES

#: The context both engines' roots allocate (``DEFAULT_CTX`` of the llama.cpp and dllama roots).
CONTEXT_TOKENS = 2048
#: Tokens the root's chat template may add around the prompt (SmolLM2's adds ~10).
TEMPLATE_MARGIN = 64

_T = TypeVar("_T")


def _os_lock() -> threading.Lock:
    """A lock of the OS even where gevent patched ``threading``: it is only ever taken off
    the event loop (in the tokenizer thread, or where there is no event loop at all)."""
    if "gevent" in sys.modules:
        from gevent.monkey import get_original

        lock: threading.Lock = get_original("_thread", "allocate_lock")()
        return lock
    return threading.Lock()


_lock = _os_lock()
#: The tokenizer thread of each process (a pool of one; by pid: it does not survive a fork).
_pools: dict[int, Any] = {}


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


def _under_gevent() -> bool:
    """True where gevent patched ``threading`` (the web workers of ``edgelab serve``)."""
    if "gevent" not in sys.modules:
        return False
    from gevent.monkey import is_module_patched

    return bool(is_module_patched("threading"))


def _tokenizer_pool() -> Any:
    """This process's tokenizer thread (a gevent ``ThreadPool`` of one), made on first use."""
    pool = _pools.get(os.getpid())
    if pool is None:
        from gevent.threadpool import ThreadPool

        pool = _pools[os.getpid()] = ThreadPool(1)
    return pool


def _off_the_event_loop(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)``, in the tokenizer thread under gevent (this greenlet waits, the others
    run), in the caller's thread otherwise."""
    if _under_gevent():
        result: _T = _tokenizer_pool().apply(fn, args)
        return result
    return fn(*args)


def _count(path: str, mtime_ns: int, prompt: str) -> int | None:
    try:
        import llama_cpp  # noqa: F401  (the extra may not be installed where the API runs)
    except ImportError:
        return None
    try:
        with _lock:
            llm = _vocab(path, mtime_ns)
            return len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False))
    except Exception:  # an unreadable file is reported by the run itself, not here
        return None


def _vocab_file(model: ModelInfo) -> tuple[str, int] | None:
    """The model's GGUF path and its mtime (the vocabulary's cache key), if it is here."""
    if model.format != "gguf":
        return None
    try:
        return str(model.path), Path(model.path).stat().st_mtime_ns
    except OSError:
        return None


def count_tokens(model: ModelInfo, prompt: str) -> int | None:
    """The prompt's token count with the model's vocabulary, or None if it cannot be read here."""
    found = _vocab_file(model)
    if found is None:
        return None
    return _off_the_event_loop(_count, *found, prompt)


def default_model(settings: Settings) -> ModelInfo | None:
    """The model a run that names none gets (the ``model`` field's default) if it is
    catalogued, else the first GGUF in the catalog (what the run form offers first)."""
    try:
        models = Catalog(settings).list()
    except CatalogError:
        return None
    name = RUN_RULES["model"].default
    named = [m for m in models if m.name == name] or [m for m in models if m.format == "gguf"]
    return named[0] if named else None


def warm(model: ModelInfo | None) -> None:
    """Load ``model``'s vocabulary now, so that its first count does not wait for it.

    Under gevent it is queued on the tokenizer thread and this returns at once (a
    count meanwhile waits in that queue, the rest of the worker runs); elsewhere it
    loads before returning. Nothing happens for a model that cannot be read here.
    """
    found = None if model is None else _vocab_file(model)
    if found is None:
        return
    if _under_gevent():
        _tokenizer_pool().spawn(_count, *found, "")
    else:
        _count(*found, "")


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


__all__ = [
    "CONTEXT_TOKENS",
    "TEMPLATE_MARGIN",
    "context_tokens",
    "count_tokens",
    "default_model",
    "prompt_problems",
    "warm",
]
