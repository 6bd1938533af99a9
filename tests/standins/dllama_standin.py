#!/usr/bin/env python3
"""A STAND-IN for distributed-llama's ``dllama`` binary, for tests only.

No real dllama build exists where edgelab's tests run, and edgelab may never
build one (the user brings their own; see edgelab/engines/dllama/binary.py). This
script takes its place so that edgelab's own code around the binary - the
worker supervisor, the link proxies, the root API, the output parser, the
Docker mounts - runs end to end. It is not distributed-llama and computes
nothing: it imitates only what edgelab depends on, as documented in issue 8:

``dllama_standin.py worker --port P --nthreads T [--net-turbo 0]``
    listens on all interfaces; a connection that closes before its handshake
    line is fatal (the process exits 1), as it is for a real dllama worker. The
    root's handshake names every worker's address; each worker then connects to
    the workers after it using exactly those strings, as real workers do, so a
    per-worker proxy sees several connections.

``dllama_standin.py inference --model M --tokenizer T --prompt P --steps N ... --workers h:p ...``
    checks that model and tokenizer exist, connects to every worker, streams a
    slice of the model file to each ("weights"), echoes the prompt, then prints
    dllama's documented ``🔷️ Eval``/``🔶 Pred`` lines with the bytes it really
    exchanged with the workers, and the closing summary.

Installed under the name ``dllama-api`` (tests/integration/conftest.py installs
both names), it imitates distributed-llama's API server, which keeps the model
loaded and the workers connected across requests (issue 14):

``dllama-api --model M --tokenizer T --port P [--host H] --workers h:p ...``
    connects to the workers and streams them their weights ONCE, prints
    ``💿 Weights loaded`` and ``Server URL: http://127.0.0.1:P/v1/``, then serves
    ``GET /v1/models`` and ``POST /v1/chat/completions`` one connection at a time,
    as the real server does: HTTP/1.1, ``"stream": true`` answers with chunked
    ``text/event-stream`` ``data: {chunk}`` events (one per token), ``data: [DONE]``
    and the end chunk; without ``stream`` one JSON completion with ``usage``. Its
    "naive cache" follows the real rule: cached positions are reused only when a
    request has MORE messages than the cache holds and they start with the cached
    ones (``🐤 Found naive cache ...``); any other request starts from position 0.
    Every forward pass exchanges sync bytes with every worker, so the link proxies
    see prefill and decode traffic and no weights after the start. A connection
    that closes before its request is complete kills the process, as an uncaught
    exception does in the real server (so callers must never probe by connecting).
    A tokenizer-less template is refused unless ``--chat-template`` names one of
    ``llama2``, ``llama3``, ``deepSeek3`` (checked by value only: the stand-in does
    not read the tokenizer). With ``STANDIN_API_WITHOUT_HOST=1`` it acts like a
    build from before ``--host`` existed (dies on the unknown option).

The wire protocol between the modes and the workers is this script's own (line
headers plus payloads), not dllama's. Standard library only: it also runs inside
the node containers, under their Python.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

SYNC_BYTES = 2048  # per worker per forward pass, so every line shows >= 2 kB
PIECES = [" stand", "-in", " token", "\n", " more", " text"]


def option(args: list[str], name: str, default: str | None = None) -> str:
    if name in args:
        return args[args.index(name) + 1]
    if default is None:
        print(f"🚨 missing {name}", flush=True)
        sys.exit(1)
    return default


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            return b""
        data += chunk
    return data


def read_exact(conn: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(min(65536, n - len(data)))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return bytes(data)


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


# --- worker ---------------------------------------------------------------------


def serve_peer(conn: socket.socket) -> None:
    """Another worker's connection: answer each sync message with as many bytes."""
    while True:
        header = read_line(conn)
        if not header:
            return
        n = int(header.split()[1])
        read_exact(conn, n)
        conn.sendall(b"s" * n)


def serve_root(conn: socket.socket, first: bytes) -> None:
    _, index_text, addresses_json = first.decode().split(" ", 2)
    index = int(index_text)
    addresses = json.loads(addresses_json)
    peers = []
    for address in addresses[index:]:  # the workers after this one
        peer = connect(address)
        peer.sendall(f"PEER {index}\n".encode())
        peers.append(peer)
    conn.sendall(b"OK\n")
    try:
        while True:
            header = read_line(conn)
            if not header:
                return
            kind, n_text = header.decode().split()
            payload = read_exact(conn, int(n_text))
            if kind == "W":
                conn.sendall(b"ACK\n")
                continue
            for peer in peers:
                peer.sendall(header + payload)
                read_exact(peer, len(payload))
            conn.sendall(b"r" * len(payload))
    finally:
        for peer in peers:
            peer.close()


def handle(conn: socket.socket) -> None:
    with conn:
        first = read_line(conn)
        if not first:
            # What a real dllama worker does with a connection that never handshakes.
            print("🚨 a connection closed before the handshake; exiting", flush=True)
            os._exit(1)
        try:
            if first.startswith(b"PEER "):
                serve_peer(conn)
            elif first.startswith(b"ROOT "):
                serve_root(conn, first)
        except (ConnectionError, OSError) as exc:
            print(f"worker: connection ended: {exc}", flush=True)


def worker(args: list[str]) -> int:
    port = int(option(args, "--port"))
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(16)
    print(f"Listening on 0.0.0.0:{port}...", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


# --- inference --------------------------------------------------------------------


def exchange(workers: list[socket.socket], n_bytes: int) -> tuple[float, int, int]:
    """One forward pass's sync with every worker: (ms, bytes sent, bytes received)."""
    t0 = time.monotonic()
    for conn in workers:
        conn.sendall(f"T {n_bytes}\n".encode() + b"a" * n_bytes)
    for conn in workers:
        read_exact(conn, n_bytes)
    return (time.monotonic() - t0) * 1000, n_bytes * len(workers), n_bytes * len(workers)


def inference(args: list[str]) -> int:
    model = option(args, "--model")
    tokenizer = option(args, "--tokenizer")
    prompt = option(args, "--prompt")
    steps = int(option(args, "--steps"))
    addresses = args[args.index("--workers") + 1 :] if "--workers" in args else []
    for path in (model, tokenizer):
        if not os.path.isfile(path):
            print(f"🚨 cannot open {path}", flush=True)
            return 1
    print(f"📄 stand-in tokenizer {tokenizer}", flush=True)
    workers = []
    for i, address in enumerate(addresses, start=1):
        try:
            conn = connect(address)
            conn.sendall(f"ROOT {i} {json.dumps(addresses)}\n".encode())
            if read_line(conn) != b"OK\n":
                raise ConnectionError("no handshake answer")
        except OSError as exc:
            print(f"🚨 cannot connect to worker {address}: {exc}", flush=True)
            return 1
        workers.append(conn)
    print("💿 Loading weights...", flush=True)
    size = os.path.getsize(model)
    with open(model, "rb") as f:
        for conn in workers:
            chunk = f.read(max(1, size // (len(workers) + 1)))
            conn.sendall(f"W {len(chunk)}\n".encode() + chunk)
            if read_line(conn) != b"ACK\n":
                print("🚨 a worker did not take its weights", flush=True)
                return 1
    print("💿 Weights loaded", flush=True)
    print(prompt, flush=True)
    n_prompt = max(1, len(prompt.split()))
    ms, sent, recv = exchange(workers, SYNC_BYTES * n_prompt)
    print(
        f"🔷️ Eval{5:5d} ms Sync{int(ms):5d} ms | Sent{sent // 1024:6d} kB "
        f"Recv{recv // 1024:6d} kB | ({n_prompt} tokens)",
        flush=True,
    )
    generated = 0
    for _ in range(n_prompt, steps):
        time.sleep(0.005)  # "compute"
        ms, sent, recv = exchange(workers, SYNC_BYTES)
        piece = PIECES[generated % len(PIECES)]
        print(
            f"🔶 Pred{5:5d} ms Sync{int(ms):5d} ms | Sent{sent // 1024:6d} kB "
            f"Recv{recv // 1024:6d} kB | {piece}",
            flush=True,
        )
        generated += 1
    print(f"\nEvaluation\n   nBatches: 1\n    nTokens: {n_prompt}\n   tokens/s: 1.00 (1.00 ms/tok)")
    print(f"Prediction\n    nTokens: {generated}\n   tokens/s: 1.00 (1.00 ms/tok)", flush=True)
    for conn in workers:
        conn.close()
    return 0


# --- dllama-api -------------------------------------------------------------------

CHAT_TEMPLATES = ("llama2", "llama3", "deepSeek3")
# Prompt "tokens" per message word: the stand-in has no tokenizer; edgelab counts
# real tokens itself, this only sizes the prefill exchange.
API_PREFILL_PER_WORD = 1


class ApiServer:
    """One loaded "model": the worker connections live as long as the server."""

    def __init__(self, model: str, workers: list[socket.socket]) -> None:
        self.model = model
        self.workers = workers
        # (end position, role, content), like dllama-api's NaiveCache.
        self.cache: list[tuple[int, str, str]] = []

    def resolve_cache(self, messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
        """The real rule: reuse only a strict prefix of cached messages."""
        if not self.cache:
            return messages, 0
        if len(messages) > len(self.cache):
            same = all(
                (c[1], c[2]) == (m.get("role"), m.get("content"))
                for c, m in zip(self.cache, messages, strict=False)
            )
            if same:
                start = self.cache[-1][0]
                print(
                    f"🐤 Found naive cache for {len(self.cache)} messages, pos={start}", flush=True
                )
                return messages[len(self.cache) :], start
        self.cache.clear()
        return messages, 0

    def complete(self, conn: socket.socket, body: dict[str, object]) -> None:
        messages = [m for m in body.get("messages", []) if isinstance(m, dict)]  # type: ignore[union-attr]
        stream = bool(body.get("stream", False))
        max_tokens = int(body.get("max_tokens", 16))  # type: ignore[call-overload]
        delta, start = self.resolve_cache(messages)
        words = sum(len(str(m.get("content", "")).split()) for m in delta)
        n_prompt = max(1, words * API_PREFILL_PER_WORD + 2 * len(delta))
        prompt_end = start + n_prompt - 1
        for m in delta:
            self.cache.append((prompt_end, str(m.get("role")), str(m.get("content"))))
        print("🔹" + " ".join(str(m.get("content")) for m in delta) + "🔸", end="", flush=True)
        if stream:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\n"
                b"Content-Type: text/event-stream; charset=utf-8\r\nConnection: close\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
        if n_prompt > 1:
            exchange(self.workers, SYNC_BYTES * (n_prompt - 1))  # prefill, one batch
        text = ""
        for i in range(max_tokens):
            time.sleep(0.005)  # "compute"
            exchange(self.workers, SYNC_BYTES)
            piece = PIECES[i % len(PIECES)]
            print(piece, end="", flush=True)
            text += piece
            if stream:
                chunk_event(conn, {"role": "assistant", "content": piece}, "")
        self.cache.append((prompt_end + max_tokens, "assistant", text))
        if stream:
            chunk_event(conn, None, "stop")
            send_chunk(conn, b"data: [DONE]")
            conn.sendall(b"0000\r\n\r\n")
        else:
            completion = {
                "id": "cmpl-j0",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "Distributed Model",
                "usage": {
                    "completion_tokens": max_tokens,
                    "prompt_tokens": n_prompt,
                    "total_tokens": n_prompt + max_tokens,
                },
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "",
                    }
                ],
            }
            send_json(conn, completion)
        print("🔶", flush=True)


def send_chunk(conn: socket.socket, data: bytes) -> None:
    conn.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def chunk_event(conn: socket.socket, delta: dict[str, str] | None, finish: str) -> None:
    choice: dict[str, object] = {"index": 0, "finish_reason": finish}
    if delta is not None:
        choice["delta"] = delta
    chunk = {
        "id": "cmpl-c0",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "Distributed Model",
        "choices": [choice],
    }
    send_chunk(conn, b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")


def send_json(conn: socket.socket, body: object) -> None:
    data = json.dumps(body).encode()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\n"
        b"Content-Type: application/json; charset=utf-8\r\nConnection: close\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )


def read_request(conn: socket.socket) -> tuple[str, str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            # The real server throws std::runtime_error here, which nothing catches.
            print("terminate called after throwing an instance of 'std::runtime_error'")
            print("  what():  Error while reading headers from socket", flush=True)
            os._exit(134)
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    method, path = lines[0].split()[:2]
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key == "Content-Length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            print("terminate called after throwing an instance of 'std::runtime_error'")
            print("  what():  Error while reading body from socket", flush=True)
            os._exit(134)
        body += chunk
    return method, path, body


def connect_workers(addresses: list[str]) -> list[socket.socket]:
    workers = []
    for i, address in enumerate(addresses, start=1):
        conn = connect(address)
        conn.sendall(f"ROOT {i} {json.dumps(addresses)}\n".encode())
        if read_line(conn) != b"OK\n":
            raise ConnectionError(f"no handshake answer from {address}")
        workers.append(conn)
    return workers


def stream_weights(model: str, workers: list[socket.socket]) -> None:
    size = os.path.getsize(model)
    with open(model, "rb") as f:
        for conn in workers:
            chunk = f.read(max(1, size // (len(workers) + 1)))
            conn.sendall(f"W {len(chunk)}\n".encode() + chunk)
            if read_line(conn) != b"ACK\n":
                raise ConnectionError("a worker did not take its weights")


def api(args: list[str]) -> int:
    model = option(args, "--model")
    tokenizer = option(args, "--tokenizer")
    port = int(option(args, "--port", "9990"))
    host = option(args, "--host", "0.0.0.0")
    template = option(args, "--chat-template", "-")
    if "--host" in args and os.environ.get("STANDIN_API_WITHOUT_HOST"):
        # Builds before --host existed: AppCliArgs::parse throws, nothing catches it.
        print("terminate called after throwing an instance of 'std::runtime_error'")
        print("  what():  Unknown option: --host", flush=True)
        os._exit(134)
    addresses = args[args.index("--workers") + 1 :] if "--workers" in args else []
    addresses = [a for a in addresses if not a.startswith("-")]
    if template != "-" and template not in CHAT_TEMPLATES:
        print(f"🚨 Critical error: Invalid chat template type: {template}", flush=True)
        return 1
    for path in (model, tokenizer):
        if not os.path.isfile(path):
            print(f"🚨 Critical error: cannot open {path}", flush=True)
            return 1
    print(f"📄 stand-in tokenizer {tokenizer}", flush=True)
    while True:
        workers: list[socket.socket] = []
        server: socket.socket | None = None
        try:
            workers = connect_workers(addresses)
            print("💿 Loading weights...", flush=True)
            stream_weights(model, workers)
            print("💿 Weights loaded", flush=True)
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((host, port))
            server.listen(16)
            api_server = ApiServer(model, workers)
            print(f"Server URL: http://127.0.0.1:{port}/v1/", flush=True)
            while True:
                conn, _ = server.accept()
                with conn:
                    method, path, body = read_request(conn)
                    print(f"🔷 {method} {path}", flush=True)
                    if method == "GET" and path == "/v1/models":
                        name = os.path.basename(model)
                        send_json(
                            conn,
                            {
                                "object": "list",
                                "data": [
                                    {
                                        "id": name,
                                        "object": "model",
                                        "created": 0,
                                        "owned_by": "user",
                                    }
                                ],
                            },
                        )
                    elif method == "POST" and path == "/v1/chat/completions":
                        try:
                            api_server.complete(conn, json.loads(body or b"{}"))
                        except BrokenPipeError:
                            print("Socket error: 32 client went away", flush=True)
                    else:
                        conn.sendall(
                            b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n"
                            b"Content-Length: 9\r\n\r\nNot Found"
                        )
        except (ConnectionError, OSError) as exc:
            # The real server's main loop: report, wait, connect and load again.
            print(f"🚨 Connection error: {exc}", flush=True)
            print("🔄 Retrying in 3 seconds...", flush=True)
            for conn in workers:
                conn.close()
            if server is not None:
                server.close()
            time.sleep(3)


def main() -> int:
    if os.path.basename(sys.argv[0]).startswith("dllama-api"):
        return api(sys.argv[1:])
    if len(sys.argv) < 2 or sys.argv[1] not in ("worker", "inference"):
        print("usage: dllama_standin.py worker|inference ...", file=sys.stderr)
        return 2
    mode, args = sys.argv[1], sys.argv[2:]
    return worker(args) if mode == "worker" else inference(args)


if __name__ == "__main__":
    sys.exit(main())
