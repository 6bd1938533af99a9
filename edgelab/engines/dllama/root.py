"""The distributed-llama root node: an edgelab process serving the root API.

Run as ``python -m edgelab.engines.dllama.root --dllama-bin B --port P --model M.m
--workers h:p,h:p --threads T [--mode api|inference]``.

``--mode api`` (the default) keeps the cluster warm through distributed-llama's
``dllama-api`` server: see :mod:`edgelab.engines.dllama.api`. ``--mode inference``
is this module's per-run mode: every ``POST /generate`` runs one ``dllama
inference`` whose ``--workers`` are the cluster's proxy addresses, reads its
stdout through a pty (piped stdout is block-buffered), and turns the lines into
token events, with dllama's own per-token compute and sync numbers.

Two things differ from llama.cpp in the per-run mode and are recorded rather than hidden:

- dllama streams the weights from the root to every worker at the start of each
  inference. That load is measured per request (``load_ms`` in the generation's
  detail and in the first token's detail) and the generation's timing origin is
  set to the moment loading ended, so TTFT means prefill + first token.
- ``dllama inference`` runs exactly ``--steps`` positions and does not stop at
  an end-of-sequence token, so ``stop_reason`` is always ``"length"``.

Each token's ``detail`` carries dllama's own compute ms, sync ms and sent/recv kB.
"""

from __future__ import annotations

import argparse
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgelab.engines.base import EngineError
from edgelab.engines.dllama.api import ApiGenerator
from edgelab.engines.dllama.binary import binary_version, resolve_binary
from edgelab.engines.dllama.child import spawn_on_pty, stop_child
from edgelab.engines.dllama.files import DEFAULT_CTX, DllamaRoot, worker_flags
from edgelab.engines.dllama.output import (
    ErrorLine,
    Event,
    LogLine,
    OutputParser,
    PrefillBatch,
    Summary,
    TokenLine,
    WeightsLoaded,
)
from edgelab.engines.dllama.prompt import EncodeError, apply_chat, chat_template_kind
from edgelab.engines.rootapi import GenerateRequest, Generation, RequestError, run_root

ENGINE_NAME = "dllama"
# Extra positions beyond the counted prompt + max_tokens, so a prompt count that
# is off by one or two never yields fewer tokens than asked; the surplus tokens
# are discarded and dllama still ends cleanly (workers get its stop packet).
EXTRA_STEPS = 2
FIRST_TOKEN_TIMEOUT_S = 600.0
IDLE_GRACE_S = 0.002
LOG_TAIL = 30


class TokenPiece(str):
    """A piece of output text that also carries dllama's per-token numbers.

    The root API sends ``detail`` with the token event when it is set; being a
    ``str``, the piece works unchanged with any consumer that only wants text.
    """

    detail: dict[str, Any] | None = None

    @classmethod
    def make(cls, text: str, detail: dict[str, Any]) -> TokenPiece:
        piece = cls(text)
        piece.detail = detail
        return piece


@dataclass
class DllamaGeneration(Generation):
    """A generation whose ``origin`` is set once dllama has streamed the weights."""


@dataclass
class _Exit:
    returncode: int
    at: float


class Inference:
    """One running ``dllama inference`` process and the events read from it."""

    def __init__(self, argv: list[str], prompt: str) -> None:
        self.argv = argv
        self.events: queue.Queue[Event | _Exit] = queue.Queue()
        self.log: deque[str] = deque(maxlen=LOG_TAIL)
        self.started = time.monotonic()
        self.loaded_at: float | None = None
        self.prefill: list[PrefillBatch] = []
        self.summary: dict[str, Any] | None = None
        self.returncode: int | None = None
        self._parser = OutputParser(prompt)
        self.proc, self._master = spawn_on_pty(argv, stderr_on_pty=False)
        self._reader = threading.Thread(target=self._read, name="dllama-stdout", daemon=True)
        self._reader.start()
        self._stderr = threading.Thread(target=self._read_stderr, name="dllama-err", daemon=True)
        self._stderr.start()

    def _note(self, text: str) -> None:
        self.log.append(text)
        print(f"dllama: {text}", file=sys.stderr, flush=True)

    def _push(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, LogLine):
                self._note(event.text)
                continue
            if isinstance(event, ErrorLine):
                self._note(event.message)
            elif isinstance(event, WeightsLoaded):
                self.loaded_at = event.at
            elif isinstance(event, PrefillBatch):
                self.prefill.append(event)
            elif isinstance(event, Summary):
                self.summary = event.values
            self.events.put(event)

    def _read(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self._master, 65536)
                except OSError:  # EIO: the child closed its side of the pty
                    data = b""
                now = time.monotonic()
                if not data:
                    break
                self._push(self._parser.feed(data, now))
                ready, _, _ = select.select([self._master], [], [], IDLE_GRACE_S)
                if not ready:
                    self._push(self._parser.idle())
            self._push(self._parser.close(time.monotonic()))
        finally:
            os.close(self._master)
            self.returncode = self.proc.wait()
            self.events.put(_Exit(self.returncode, time.monotonic()))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._note(raw.decode("utf-8", errors="replace").rstrip("\n"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self, why: str) -> RuntimeError:
        tail = "\n".join(self.log) or "(no output)"
        return RuntimeError(f"dllama inference {why}; last output:\n{tail}")

    def next_event(self, timeout_s: float) -> Event | _Exit:
        try:
            return self.events.get(timeout=timeout_s)
        except queue.Empty:
            raise self.failure(f"printed nothing for {timeout_s:g} s") from None

    def stop(self, grace_s: float = 5.0) -> None:
        """End the process now (SIGTERM, then SIGKILL) and wait for it."""
        stop_child(self.proc, grace_s)
        self._reader.join(timeout=grace_s)

    def wait(self, timeout_s: float) -> None:
        """Let the process finish by itself; stop it if it takes longer."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
        self._reader.join(timeout=5.0)


class DllamaGenerator(DllamaRoot):
    """Serve generations by running ``dllama inference`` once per request."""

    def __init__(
        self,
        binary: Path,
        model_path: Path,
        workers: list[str],
        threads: int,
        tokenizer_path: Path | None = None,
        net_turbo: bool = False,
        ctx: int = DEFAULT_CTX,
        warmup: bool = True,
    ) -> None:
        """``binary`` is dllama; the rest as :class:`DllamaRoot` takes them."""
        super().__init__(model_path, workers, threads, tokenizer_path, net_turbo, ctx, warmup)
        self.binary = binary
        self.last_run: dict[str, Any] | None = None
        self._previous: Inference | None = None

    def load(self) -> None:
        self.binary = resolve_binary(self.binary)
        files = self.load_files()
        self.chat_kind = chat_template_kind(files.tokenizer.chat_template)
        if self.warmup:
            # One tiny inference proves the binary, the workers and every proxy
            # path work before the cluster reports healthy, and measures the
            # per-inference weight load once.
            generation = self.generate(GenerateRequest("Hello", 1, chat=False))
            for _ in generation:
                pass
            self.warmup_detail = dict(self.last_run or {})

    def argv(self, prompt: str, steps: int, request: GenerateRequest) -> list[str]:
        return [
            str(self.binary),
            "inference",
            *self.model_flags(),
            "--prompt",
            prompt,
            "--steps",
            str(steps),
            "--temperature",
            repr(float(request.temperature)),
            "--seed",
            str(request.seed),
            *worker_flags(self.workers),
        ]

    def info(self) -> dict[str, Any]:
        return {
            "engine": ENGINE_NAME,
            "engine_version": binary_version(Path(self.binary)),
            "mode": "inference",
            **self.model_info(),
            "chat_template": self.chat_kind,
            "stops_at_eos": False,
            "weights_streamed_per_inference": True,
            "per_token_split": "dllama (compute ms, sync ms, sent/recv kB per token)",
            "token_events": "dllama inference token lines",
            "warmup": self.warmup_detail,
        }

    def _reap_previous(self) -> None:
        previous, self._previous = self._previous, None
        if previous is not None:
            previous.wait(timeout_s=60.0)

    def generate(self, request: GenerateRequest) -> Generation:
        if self.files is None:
            raise RuntimeError("model not loaded")
        self._reap_previous()
        chat_kind = self.chat_kind if request.chat else None
        prompt = apply_chat(request.prompt, chat_kind)
        try:
            counted: int | None = self.files.encoder.count(prompt)
        except EncodeError:
            counted = None
        # Without a count, the byte length (+BOS) bounds the token count from above.
        estimate = counted if counted is not None else len(prompt.encode()) + 1
        if estimate - 1 + request.max_tokens > self.seq_len:
            raise RequestError(
                f"prompt ({estimate} tokens) + max_tokens ({request.max_tokens}) exceeds "
                f"the context of {self.seq_len} tokens"
            )
        steps = min(self.seq_len, estimate - 1 + request.max_tokens + EXTRA_STEPS)
        run = Inference(self.argv(prompt, steps, request), prompt)
        self._previous = run
        first = self._first_token(run)
        prompt_tokens = sum(b.tokens for b in run.prefill) + 1
        load_ms = (
            round((run.loaded_at - run.started) * 1000.0, 3) if run.loaded_at is not None else None
        )
        prefill = {
            "batches": len(run.prefill),
            "eval_ms": sum(b.eval_ms for b in run.prefill),
            "sync_ms": sum(b.sync_ms or 0 for b in run.prefill),
            "sent_kb": sum(b.sent_kb for b in run.prefill),
            "recv_kb": sum(b.recv_kb for b in run.prefill),
        }
        detail: dict[str, Any] = {
            "load_ms": load_ms,
            "prefill": prefill,
            "steps": steps,
            "prompt_tokens_counted": counted,
            "chat_template": chat_kind,
            "net_turbo": self.net_turbo,
        }
        self.last_run = detail
        generation = DllamaGeneration(
            prompt_tokens=prompt_tokens,
            pieces=iter(()),
            origin=run.loaded_at if run.loaded_at is not None else run.started,
            detail=detail,
        )
        # Positions dllama will run past the last token we keep.
        surplus = steps - (prompt_tokens - 1) - request.max_tokens
        generation.pieces = self._pieces(run, first, request.max_tokens, surplus, detail)
        return generation

    def _first_token(self, run: Inference) -> TokenLine:
        deadline = time.monotonic() + FIRST_TOKEN_TIMEOUT_S
        while True:
            event = run.next_event(max(0.1, deadline - time.monotonic()))
            if isinstance(event, TokenLine):
                return event
            if isinstance(event, ErrorLine):
                run.stop()
                raise run.failure(f"failed: {event.message}")
            if isinstance(event, _Exit):
                raise run.failure(f"exited with code {event.returncode} before the first token")

    def _pieces(
        self,
        run: Inference,
        first: TokenLine,
        max_tokens: int,
        surplus: int,
        detail: dict[str, Any],
    ) -> Iterator[str]:
        produced = 0
        finished = False
        try:
            token: TokenLine | None = first
            while True:
                if token is not None:
                    produced += 1
                    token_detail = token.detail()
                    if token.placeholder:
                        token_detail["printed"] = "~"
                    if produced == 1:
                        token_detail["load_ms"] = detail["load_ms"]
                        token_detail["prefill"] = detail["prefill"]
                    yield TokenPiece.make("" if token.placeholder else token.text, token_detail)
                    if produced >= max_tokens:
                        finished = True
                        return
                event = run.next_event(FIRST_TOKEN_TIMEOUT_S)
                token = event if isinstance(event, TokenLine) else None
                if isinstance(event, ErrorLine):
                    raise run.failure(f"failed after {produced} tokens: {event.message}")
                if isinstance(event, _Exit):
                    if event.returncode != 0:
                        raise run.failure(
                            f"exited with code {event.returncode} after {produced} tokens"
                        )
                    finished = True  # the context ran out before max_tokens
                    return
        finally:
            # With a few surplus positions left, dllama ends by itself and sends the
            # workers its stop packet (the next request reaps it). Abandoned, failed
            # or far over-provisioned runs are stopped now.
            if not finished or surplus > EXTRA_STEPS:
                run.stop()

    def close(self) -> None:
        previous, self._previous = self._previous, None
        if previous is not None:
            previous.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dllama-bin", default=None, help="the dllama binary (else $EDGELAB_DLLAMA_BIN)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--workers", default="", help="comma-separated host:port list")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=DEFAULT_CTX)
    parser.add_argument("--net-turbo", type=int, choices=(0, 1), default=0)
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument(
        "--mode",
        choices=("api", "inference"),
        default="api",
        help="api: one warm dllama-api for all requests; inference: one dllama inference each",
    )
    parser.add_argument(
        "--dllama-api-bin",
        default=None,
        help="the dllama-api binary (else $EDGELAB_DLLAMA_API_BIN, else next to dllama)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    try:
        binary = resolve_binary(args.dllama_bin)
    except EngineError as exc:
        print(f"root: {exc}", file=sys.stderr, flush=True)
        return 2
    workers = [w.strip() for w in args.workers.split(",") if w.strip()]
    common: dict[str, Any] = {
        "tokenizer_path": args.tokenizer,
        "net_turbo": bool(args.net_turbo),
        "ctx": args.ctx,
        "warmup": not args.no_warmup,
    }
    generator: DllamaRoot
    if args.mode == "api":
        api_binary = Path(args.dllama_api_bin) if args.dllama_api_bin else None
        generator = ApiGenerator(
            api_binary, args.model, workers, args.threads, dllama_binary=binary, **common
        )
    else:
        generator = DllamaGenerator(binary, args.model, workers, args.threads, **common)
    return run_root(generator, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
