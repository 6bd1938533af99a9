"""The root API: the one small HTTP protocol every engine's root node serves.

Clusters, the run executor and the benchmark talk to a root node only through
this protocol (client side: :mod:`edgelab.engines.client`), so they never need to
know which engine runs behind it. It uses the standard library only because it
also runs inside slim engine images.

Protocol (all bodies are JSON, UTF-8):

``GET /health``
    ``200 {"status": "ok"}`` once the model is loaded, ``503 {"status":
    "loading"}`` before. The server listens *before* the model loads so a cluster
    can tell "still loading" from "not started"; a root whose load fails logs
    the reason to stderr and exits non-zero.

``GET /info``
    ``200`` with what the generator reports (``engine``, ``engine_version``,
    ``model_path``, ``n_layers``, ``layer_split``, ``nodes``, ``threads``, ...)
    plus ``load_ms``; ``503`` while loading.

``POST /generate`` ``{"prompt": str, "max_tokens": int, "temperature": float = 0,
"seed": int = 0, "chat": bool = true}``
    ``200 application/x-ndjson``, one JSON object per line, flushed as produced::

        {"type": "start", "prompt_tokens": N, "offset_ms": t,
         "clock": {"received": r, "origin": o}}
        {"type": "token", "index": i, "offset_ms": t, "text": piece}   (one per token)
        {"type": "end", "output_tokens": n, "stop_reason": "length"|"stop", "offset_ms": t}

    or, when generation fails after the stream started, a last line
    ``{"type": "error", "message": ...}``. ``offset_ms`` is root-side
    ``time.monotonic()`` since the request was received, so the timeline does not
    include the client's network path. A stream that ends without an ``end`` or
    ``error`` line means the root died. The body is delimited by closing the
    connection (HTTP/1.0), which keeps streaming trivial for every client.
    ``clock`` gives the phase boundaries on the root's CLOCK_MONOTONIC (seconds,
    the clock of ``time.monotonic()`` and of the link proxies on the same host):
    when the request arrived and the origin token offsets count from. Between
    the two the engine loaded (dllama streams weights per request); from the
    origin to the first token is prefill; after it, decode. Link traffic is split
    into those phases by these times.
    Errors before the stream starts are plain JSON ``{"error": message}``: ``400``
    bad request, ``503`` still loading, ``409`` another generation is running
    (one generation at a time: timings of concurrent requests would be meaningless).

``POST /shutdown``
    ``200 {"status": "stopping"}``; the server stops and the root process exits 0.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

StopReason = Literal["length", "stop"]

NDJSON = "application/x-ndjson"
# A root refuses absurd requests itself; callers validate tighter limits earlier.
MAX_TOKENS_LIMIT = 8192


class RequestError(ValueError):
    """A ``/generate`` body is malformed; the message is sent back with a 400."""


@dataclass(frozen=True)
class GenerateRequest:
    """One generation as the root API receives it."""

    prompt: str
    max_tokens: int
    temperature: float = 0.0
    seed: int = 0
    # Wrap the prompt in the model's chat template when it has one: researchers
    # submit questions, and a raw completion of a question rarely answers it.
    chat: bool = True

    @classmethod
    def from_json(cls, body: Any) -> GenerateRequest:
        """Validate a decoded request body, raising ``RequestError`` naming the bad field."""
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        unknown = set(body) - {"prompt", "max_tokens", "temperature", "seed", "chat"}
        if unknown:
            raise RequestError(f"unknown fields: {', '.join(sorted(unknown))}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RequestError("prompt must be a non-empty string")
        max_tokens = body.get("max_tokens")
        if (
            not isinstance(max_tokens, int)
            or isinstance(max_tokens, bool)
            or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
        ):
            raise RequestError(f"max_tokens must be an integer in 1..{MAX_TOKENS_LIMIT}")
        temperature = body.get("temperature", 0.0)
        if (
            not isinstance(temperature, int | float)
            or isinstance(temperature, bool)
            or temperature < 0
        ):
            raise RequestError("temperature must be a number >= 0")
        seed = body.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
            raise RequestError("seed must be an integer in 0..2**32-1")
        chat = body.get("chat", True)
        if not isinstance(chat, bool):
            raise RequestError("chat must be true or false")
        return cls(prompt, max_tokens, float(temperature), seed, chat)


@dataclass
class Generation:
    """A generation in progress: iterate it for text pieces, one per output token.

    A piece may be empty (a token that ends inside a multi-byte character); it is
    still one token. The engine sets ``stop_reason`` to ``"stop"`` before the
    iterator ends early on an end-of-generation token.
    """

    prompt_tokens: int
    pieces: Iterator[str]
    stop_reason: StopReason = "length"
    # time.monotonic() from which token offsets count, once the engine sets it; an
    # engine that loads weights per request (dllama) sets it after the load so the
    # load does not inflate TTFT. None: from the moment the request arrived.
    origin: float | None = None
    # Engine facts about this generation, sent with the start event (e.g. load ms).
    detail: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[str]:
        return self.pieces


class Generator(ABC):
    """What an engine's root node implements to be served by :class:`RootServer`."""

    @abstractmethod
    def load(self) -> None:
        """Load the model (and connect to the workers); called once, before any request."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """Describe the loaded engine and model: ``engine``, ``engine_version``,
        ``model_path``, ``n_layers``, ``layer_split``, ``nodes``, ``threads``.
        """

    @abstractmethod
    def generate(self, request: GenerateRequest) -> Generation:
        """Tokenize the prompt and return the lazily produced output.

        Tokens must be produced as the iterator is advanced (not all at once), so
        the server can timestamp each one when it exists.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most engines need nothing
        """Release the model; called when the server stops."""


class _RootHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    root: RootServer


class RootServer:
    """Serve one :class:`Generator` over the root API.

    The server answers ``/health`` while :meth:`load_model` runs, so a launcher
    can watch the load instead of guessing how long it takes.
    """

    def __init__(self, generator: Generator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.generator = generator
        self._httpd = _RootHTTPServer((host, port), _Handler)
        self._httpd.root = self
        self._loaded = threading.Event()
        self._stopped = threading.Event()
        self._busy = threading.Lock()
        self._thread: threading.Thread | None = None
        self.load_ms: float | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def start(self) -> None:
        """Start answering requests in a background thread."""
        # A short poll interval keeps shutdown() quick; the cost is negligible.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="rootapi", daemon=True
        )
        self._thread.start()

    def load_model(self) -> None:
        """Run the generator's load and switch ``/health`` to ok."""
        started = time.monotonic()
        self.generator.load()
        self.load_ms = round((time.monotonic() - started) * 1000.0, 3)
        self._loaded.set()

    def wait_stopped(self) -> None:
        """Block until ``/shutdown`` or :meth:`shutdown`."""
        while not self._stopped.wait(1.0):
            pass

    def shutdown(self) -> None:
        """Stop serving and release the model; safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.generator.close()

    def info(self) -> dict[str, Any]:
        return {**self.generator.info(), "load_ms": self.load_ms}


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, and the end of a stream is the close.
    protocol_version = "HTTP/1.0"
    server: _RootHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        # Access lines go to stderr like the engine's own log, so one file holds both.
        # Health polls are left out: they would push the reason for a failed load
        # out of the log tail that errors show.
        if self.path == "/health":
            return
        sys.stderr.write(f"rootapi: {self.address_string()} {format % args}\n")

    def _send_json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        root = self.server.root
        if self.path == "/health":
            if root.loaded:
                self._send_json(HTTPStatus.OK, {"status": "ok"})
            else:
                self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "loading"})
        elif self.path == "/info":
            if root.loaded:
                self._send_json(HTTPStatus.OK, root.info())
            else:
                self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "model is loading"})
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:
        received = time.monotonic()
        root = self.server.root
        if self.path == "/shutdown":
            self._send_json(HTTPStatus.OK, {"status": "stopping"})
            # shutdown() waits for serve_forever, which waits for this handler.
            threading.Thread(target=root.shutdown, daemon=True).start()
            return
        if self.path != "/generate":
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            request = GenerateRequest.from_json(json.loads(self.rfile.read(length) or b"null"))
        except (ValueError, RequestError) as exc:
            # json.JSONDecodeError and RequestError are both ValueErrors.
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        if not root.loaded:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "model is loading"})
            return
        if not root._busy.acquire(blocking=False):
            self._send_json(HTTPStatus.CONFLICT, {"error": "another generation is running"})
            return
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                root._busy.release()

        try:
            self._stream(root.generator, request, received, release)
        finally:
            release()

    def _stream(
        self,
        generator: Generator,
        request: GenerateRequest,
        received: float,
        release: Callable[[], None],
    ) -> None:
        def offset_ms() -> float:
            origin = generation.origin if generation.origin is not None else received
            return round((time.monotonic() - origin) * 1000.0, 3)

        def emit(event: dict[str, Any]) -> None:
            self.wfile.write(json.dumps(event).encode() + b"\n")
            self.wfile.flush()

        try:
            generation = generator.generate(request)
        except RequestError as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", NDJSON)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        count = 0
        pieces = iter(generation)
        last: dict[str, Any] | None = None
        try:
            start: dict[str, Any] = {"type": "start", "prompt_tokens": generation.prompt_tokens}
            if generation.detail:
                start["detail"] = generation.detail
            origin = generation.origin if generation.origin is not None else received
            start["clock"] = {"received": received, "origin": origin}
            emit({**start, "offset_ms": offset_ms()})
            for piece in pieces:
                event = {"type": "token", "index": count, "offset_ms": offset_ms(), "text": piece}
                # Pieces may be str subclasses carrying per-token engine numbers.
                detail = getattr(piece, "detail", None)
                if detail is not None:
                    event["detail"] = detail
                emit(event)
                count += 1
            last = {
                "type": "end",
                "output_tokens": count,
                "stop_reason": generation.stop_reason,
                "offset_ms": offset_ms(),
            }
        except (BrokenPipeError, ConnectionResetError):
            # The client went away: stop generating so the next run is not blocked.
            sys.stderr.write("rootapi: client disconnected, generation abandoned\n")
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            last = {"type": "error", "message": f"{type(exc).__name__}: {exc}"}
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            # Free the root *before* the last line: a client that has read "end"
            # may send the next run at once and must not be told "busy".
            release()
        if last is not None:
            with contextlib.suppress(OSError):
                emit(last)


def run_root(generator: Generator, host: str, port: int) -> int:
    """Serve ``generator`` until ``/shutdown``; the body of every engine's root process.

    SIGTERM keeps its default action (immediate exit): a generation may sit in a
    C call for long, and nothing needs flushing.
    """
    server = RootServer(generator, host, port)
    server.start()
    print(f"rootapi listening on {server.url}", file=sys.stderr, flush=True)
    try:
        server.load_model()
    except Exception:
        traceback.print_exc(file=sys.stderr)
        print("rootapi: model load failed", file=sys.stderr, flush=True)
        server.shutdown()
        return 1
    print(f"rootapi ready: model loaded in {server.load_ms} ms", file=sys.stderr, flush=True)
    try:
        server.wait_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


__all__ = [
    "NDJSON",
    "GenerateRequest",
    "Generation",
    "Generator",
    "RequestError",
    "RootServer",
    "StopReason",
    "run_root",
]
