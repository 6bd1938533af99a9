"""Warm distributed-llama roots: ``dllama-api`` keeps the model loaded across runs.

``dllama inference`` (see :mod:`edgelab.engines.dllama.root`) re-reads the weights
and streams every worker its slice at every request, so each run pays a model
load, and on a slow link that load lands in the run's network counters and
wait. distributed-llama's own API server, ``dllama-api``, loads once and keeps
the workers connected; this root runs it as a child on loopback and serves the
root API by relaying ``POST /generate`` to its ``/v1/chat/completions`` with
``"stream": true``. That makes a dllama cluster warm exactly like a llama.cpp
cluster: a sweep's topology group loads the model once, and only the link
profiles change between runs.

What this mode can and cannot measure, recorded in ``/info`` and so in each
run's provenance:

- ``dllama-api`` prints no per-token compute/sync lines, so a warm run has no
  per-token compute vs network split from dllama itself; edgelab's link proxies
  measure the network side. Users who want dllama's own split run the per-run
  mode (engine option ``dllama_mode: inference``) and pay a model load per run.
- A token event is one stream chunk. dllama-api holds back a piece that may be
  the start of a stop string and sends it with the next one, so a chunk can
  carry more than one token; then the count is low by one per merge (never on
  the stand-in; check ``output_tokens`` against ``max_tokens`` on a real build).
- Its "naive cache" reuses KV positions only when a request has MORE messages
  than the cache holds and begins with them (``NaiveCache::resolveDeltaPrompt``
  in src/dllama-api.cpp). Every request here is one user message, so every
  request starts at position 0 and prefills its whole prompt: TTFT is never a
  cache hit. dllama-api announces a hit with a ``🐤`` line; should one ever
  appear, the run fails instead of reporting a fake TTFT.
- dllama-api always applies a chat template (the tokenizer's, or
  ``--chat-template`` when the tokenizer has none, which this root passes as
  ``llama3``); raw completions exist only in the per-run mode.
- Its main loop reconnects and streams the weights again after a worker
  connection error (``🚨 ...`` then ``🔄 Retrying``). A silent reload would hide a
  load inside a run, so this root exits instead and the cluster reports the node.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgelab.engines.base import EngineError
from edgelab.engines.dllama.binary import binary_version, resolve_api_binary
from edgelab.engines.dllama.child import spawn_on_pty, stop_child
from edgelab.engines.dllama.files import DEFAULT_CTX, DllamaRoot, worker_flags
from edgelab.engines.dllama.prompt import EncodeError
from edgelab.engines.rootapi import GenerateRequest, Generation, RequestError

ENGINE_NAME = "dllama"
MODE = "api"
#: The template passed with --chat-template when the tokenizer carries none
#: (dllama-api refuses to start without one). Any of llama2|llama3|deepSeek3 works
#: for the text; llama3 is what most converted models use.
FALLBACK_TEMPLATE = "llama3"
API_START_TIMEOUT_S = 300.0
TOKEN_TIMEOUT_S = 600.0
#: How long a new request waits for dllama-api to finish an abandoned one; it
#: serves one connection at a time, so a request sent earlier would queue behind
#: the rest of the old generation and see it as time to first token.
DRAIN_TIMEOUT_S = 120.0
LOG_TAIL = 40
SERVER_URL = "Server URL:"
FATAL_PREFIX = "🚨"
CACHE_HIT_PREFIX = "🐤"
REQUEST_PREFIX = "🔷"
COMPLETION_END = "🔶"
SOCKET_ERRORS = ("Socket error", "socket error")


def dllama_chat_kind(template: str | None) -> str | None:
    """Which of its templates dllama-api detects in a tokenizer's chat template.

    The same substring checks as ``ChatTemplateGenerator`` (src/tokenizer.cpp);
    ``None`` when the tokenizer has no template (or one dllama cannot detect).
    """
    if not template:
        return None
    if "[INST]" in template:
        return "llama2"
    if "<|start_header_id|>" in template:
        return "llama3"
    if "<｜Assistant｜>" in template:
        return "deepSeek3"
    return None


def dllama_chat_prompt(kind: str, prompt: str, eos: str) -> str:
    """The text dllama-api tokenizes for one user message (to count its tokens).

    ``eos`` is the piece of the tokenizer's first EOS token, which dllama-api
    appends after each turn.
    """
    if kind == "llama2":
        return f"[INST] {prompt} [/INST]{eos}"
    if kind == "llama3":
        return (
            f"<|start_header_id|>user<|end_header_id|>\n\n{prompt}{eos}"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    if kind == "deepSeek3":
        return f"<｜User｜>{prompt}<｜Assistant｜><think>\n"
    raise ValueError(f"unknown dllama chat template {kind!r}")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiProcess:
    """A running ``dllama-api`` and what its stdout said.

    stdout goes through a pty: on a pipe the C stdio buffers whole blocks, and
    the ``Server URL`` line (printed without a flush) would never arrive.
    """

    def __init__(self, argv: list[str], on_lost: Callable[[str], None]) -> None:
        self.argv = argv
        self.log: deque[str] = deque(maxlen=LOG_TAIL)
        self.ready = threading.Event()
        self.ended = threading.Event()
        self.fatal: str | None = None
        self.cache_hits = 0
        self.requests = 0
        self.finished = 0
        self.weights_loaded: float | None = None
        self.started = time.monotonic()
        self._on_lost = on_lost
        self._closing = False
        self._changed = threading.Condition()
        self.proc, self._master = spawn_on_pty(argv, stderr_on_pty=True)
        self._reader = threading.Thread(target=self._read, name="dllama-api", daemon=True)
        self._reader.start()

    def _line(self, text: str) -> None:
        self.log.append(text)
        print(f"dllama-api: {text}", file=sys.stderr, flush=True)
        with self._changed:
            if text.startswith(SERVER_URL):
                self.ready.set()
            elif text.startswith("💿 Weights loaded"):
                self.weights_loaded = time.monotonic()
            elif text.startswith(FATAL_PREFIX):
                self.fatal = self.fatal or text
            elif text.startswith(CACHE_HIT_PREFIX):
                self.cache_hits += 1
            elif text.startswith(REQUEST_PREFIX) and "/v1/chat/completions" in text:
                self.requests += 1
            elif text.endswith(COMPLETION_END) or any(e in text for e in SOCKET_ERRORS):
                # Generated text is printed without a newline, so a socket error
                # message can end the line a generation started.
                self.finished += 1
            self._changed.notify_all()
        if text.startswith(FATAL_PREFIX) and self.ready.is_set() and not self._closing:
            self._on_lost(text)

    def _read(self) -> None:
        partial = b""
        try:
            while True:
                try:
                    data = os.read(self._master, 65536)
                except OSError:  # EIO: the child closed its side of the pty
                    data = b""
                if not data:
                    break
                partial += data
                *lines, partial = partial.split(b"\n")
                for raw in lines:
                    self._line(raw.decode("utf-8", errors="replace").rstrip("\r"))
                # Generated text is printed without newlines; keep the tail bounded.
                partial = partial[-8192:]
            if partial:
                self._line(partial.decode("utf-8", errors="replace"))
        finally:
            os.close(self._master)
            code = self.proc.wait()
            self.ended.set()
            with self._changed:
                self._changed.notify_all()
            if self.ready.is_set() and not self._closing:
                self._on_lost(f"dllama-api exited with code {code}")

    def tail(self) -> str:
        return "\n".join(self.log) or "(no output)"

    def wait_ready(self, timeout_s: float) -> None:
        """Until the server listens; raises ``EngineError`` with its output otherwise."""
        deadline = time.monotonic() + timeout_s
        while not self.ready.wait(0.1):
            if self.ended.is_set() or self.fatal is not None:
                self.stop()
                why = self.fatal or f"exited with code {self.proc.returncode}"
                raise EngineError(
                    f"dllama-api failed to start ({why}); last output:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EngineError(
                    f"dllama-api did not start serving within {timeout_s:g} s; "
                    f"last output:\n{self.tail()}"
                )

    def wait_drained(self, timeout_s: float) -> bool:
        """Until every request it received has finished (True) or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.finished < self.requests and not self.ended.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def stop(self, grace_s: float = 5.0) -> None:
        self._closing = True
        stop_child(self.proc, grace_s)
        self._reader.join(timeout=grace_s)


def exit_on_lost(reason: str) -> None:
    """dllama-api lost its workers or died after it was serving: end this root.

    Its own loop would reconnect and stream the weights again inside whatever
    run comes next; a dead root is what the cluster detects and names instead.
    """
    print(
        f"root: {reason}; dllama-api would reload the model silently, so the root exits "
        "and the cluster reports it",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)


class ApiGenerator(DllamaRoot):
    """Serve generations through one long-lived ``dllama-api`` child."""

    def __init__(
        self,
        api_binary: Path | None,
        model_path: Path,
        workers: list[str],
        threads: int,
        tokenizer_path: Path | None = None,
        net_turbo: bool = False,
        ctx: int = DEFAULT_CTX,
        warmup: bool = True,
        dllama_binary: Path | None = None,
        on_lost: Callable[[str], None] = exit_on_lost,
    ) -> None:
        """``api_binary`` (else found from ``dllama_binary``); the rest as :class:`DllamaRoot`.

        ``on_lost`` is called when dllama-api dies or loses its workers after serving.
        """
        super().__init__(model_path, workers, threads, tokenizer_path, net_turbo, ctx, warmup)
        self.api_binary = api_binary
        self.dllama_binary = dllama_binary
        self.on_lost = on_lost
        self.chat_template_flag: str | None = None
        self.port: int | None = None
        self.host_flag = True
        self.process: ApiProcess | None = None
        self.weights_ms: float | None = None

    def load(self) -> None:
        self.api_binary = resolve_api_binary(self.api_binary, self.dllama_binary)
        template = self.load_files().tokenizer.chat_template
        self.chat_kind = dllama_chat_kind(template)
        if self.chat_kind is None:
            if template:
                raise EngineError(
                    f"the chat template of {self.tokenizer_path} is not one dllama-api supports "
                    "(llama2, llama3, deepSeek3); run this model with the engine option "
                    "dllama_mode: inference"
                )
            self.chat_kind = self.chat_template_flag = FALLBACK_TEMPLATE
        self.port = free_loopback_port()
        self.process = ApiProcess(self.argv(), self.on_lost)
        try:
            self.process.wait_ready(API_START_TIMEOUT_S)
        except EngineError:
            if "Unknown option: --host" not in self.process.tail():
                raise
            # Builds before --host existed bind every interface; still usable (the
            # root talks to it on loopback), so start again without the flag.
            print(
                "root: this dllama-api has no --host; it will bind all interfaces",
                file=sys.stderr,
                flush=True,
            )
            self.host_flag = False
            self.process = ApiProcess(self.argv(), self.on_lost)
            self.process.wait_ready(API_START_TIMEOUT_S)
        if self.process.weights_loaded is not None:
            self.weights_ms = round((self.process.weights_loaded - self.process.started) * 1e3, 3)
        self._check_models()
        if self.warmup:
            # One token proves every proxy path and the HTTP relay before the
            # cluster reports healthy (and leaves no cache a later request can hit).
            for _ in self.generate(GenerateRequest("Hello", 1)):
                pass
            self.warmup_detail = {"tokens": 1}

    def argv(self) -> list[str]:
        assert self.port is not None
        return [
            str(self.api_binary),
            *self.model_flags(),
            *(["--host", "127.0.0.1"] if self.host_flag else []),
            "--port",
            str(self.port),
            *(["--chat-template", self.chat_template_flag] if self.chat_template_flag else []),
            *worker_flags(self.workers),
        ]

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        assert self.port is not None
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)

    def _check_models(self) -> None:
        # A full request, never a bare connect: a connection that closes before its
        # request is complete kills dllama-api (an uncaught exception in its loop).
        conn = self._connection(30.0)
        try:
            conn.request("GET", "/v1/models")
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(f"dllama-api does not answer GET /v1/models: {exc}") from exc
        finally:
            conn.close()
        if resp.status != 200:
            raise EngineError(f"dllama-api answered GET /v1/models with {resp.status}: {body!r}")

    def count_prompt(self, prompt: str) -> int | None:
        """Prompt tokens as dllama-api will see them: its template, then BOS + encode."""
        assert self.files is not None
        assert self.chat_kind is not None
        tok = self.files.tokenizer
        eos = tok.vocab[tok.eos_ids[0]].decode("utf-8", "replace") if tok.eos_ids else ""
        text = dllama_chat_prompt(self.chat_kind, prompt, eos)
        try:
            count = self.files.encoder.count(text)
        except EncodeError:
            return None
        # dllama-api always asks for a BOS at position 0, whatever the tokenizer says.
        if tok.add_bos is False and tok.bos_id >= 0:
            count += 1
        return count

    def info(self) -> dict[str, Any]:
        return {
            "engine": ENGINE_NAME,
            "engine_version": binary_version(Path(str(self.api_binary)), "dllama-api"),
            "mode": MODE,
            **self.model_info(),
            "chat_template": self.chat_kind,
            "chat_template_flag": self.chat_template_flag,
            "bound_to": "127.0.0.1" if self.host_flag else "all interfaces (no --host)",
            "stops_at_eos": True,
            "weights_streamed_per_inference": False,
            "weights_ms": self.weights_ms,
            "per_token_split": None,
            "token_events": "dllama-api stream chunks",
            "warmup": self.warmup_detail,
        }

    def generate(self, request: GenerateRequest) -> Generation:
        process = self.process
        if process is None or self.files is None:
            raise RuntimeError("model not loaded")
        if process.fatal is not None or process.ended.is_set():
            raise RuntimeError(
                f"dllama-api is gone ({process.fatal}); last output:\n{process.tail()}"
            )
        counted = self.count_prompt(request.prompt)
        if counted is not None and counted - 1 + request.max_tokens > self.seq_len:
            raise RequestError(
                f"prompt ({counted} tokens) + max_tokens ({request.max_tokens}) exceeds "
                f"the context of {self.seq_len} tokens"
            )
        if not process.wait_drained(DRAIN_TIMEOUT_S):
            raise RuntimeError(
                f"dllama-api is still busy with an abandoned generation after {DRAIN_TIMEOUT_S:g} s"
            )
        hits_before = process.cache_hits
        body = {
            # Exactly one message: dllama-api's naive cache can then never match, so
            # every request prefills from position 0 (see the module docstring).
            "messages": [{"role": "user", "content": request.prompt}],
            "stream": True,
            "max_tokens": request.max_tokens,
            "temperature": float(request.temperature),
            "seed": request.seed,
        }
        conn = self._connection(TOKEN_TIMEOUT_S)
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            # dllama-api sends its headers before the prefill starts.
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise RuntimeError(
                f"dllama-api did not take the request: {exc}; last output:\n{process.tail()}"
            ) from exc
        if resp.status != 200:
            text = resp.read()[:500]
            conn.close()
            raise RuntimeError(f"dllama-api answered {resp.status}: {text!r}")
        detail: dict[str, Any] = {
            "mode": MODE,
            "prompt_tokens_counted": counted,
            "chat_template": self.chat_kind,
            "start_pos": 0,
        }
        if not request.chat:
            detail["chat"] = "dllama-api always applies the chat template"
        generation = Generation(
            prompt_tokens=counted if counted is not None else 0,
            pieces=iter(()),
            detail=detail,
        )
        generation.pieces = self._pieces(conn, resp, request, generation, hits_before)
        return generation

    def _pieces(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        request: GenerateRequest,
        generation: Generation,
        hits_before: int,
    ) -> Iterator[str]:
        process = self.process
        assert process is not None
        produced = 0
        try:
            for chunk in sse_chunks(resp):
                choices = chunk.get("choices") or [{}]
                choice = choices[0] if isinstance(choices[0], dict) else {}
                delta = choice.get("delta") or {}
                content = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(content, str) and content:
                    produced += 1
                    yield content
                # Read on past finish_reason to "data: [DONE]" and the end chunk:
                # closing early makes dllama-api's last writes fail, and it would
                # then skip its end-of-request bookkeeping.
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise RuntimeError(
                f"dllama-api stream broke after {produced} tokens: {exc}; "
                f"last output:\n{process.tail()}"
            ) from exc
        finally:
            conn.close()
        if process.cache_hits != hits_before:
            raise RuntimeError(
                "dllama-api reused cached positions for this request (a 🐤 naive-cache hit): "
                "its time to first token would not include the prefill"
            )
        if produced < request.max_tokens:
            generation.stop_reason = "stop"

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.stop()


def sse_chunks(resp: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON objects of a dllama-api event stream, until ``data: [DONE]`` or the end."""
    while True:
        line = resp.readline()
        if not line:
            return
        text = line.decode("utf-8", errors="replace").strip()
        if not text.startswith("data:"):
            continue
        payload = text[len("data:") :].strip()
        if payload == "[DONE]":
            return
        value = json.loads(payload)
        if isinstance(value, dict):
            yield value


__all__ = [
    "MODE",
    "ApiGenerator",
    "ApiProcess",
    "dllama_chat_kind",
    "dllama_chat_prompt",
    "sse_chunks",
]
