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

The wire protocol between the two modes is this script's own (line headers plus
payloads), not dllama's. Standard library only: it also runs inside the node
containers, under their Python.
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


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("worker", "inference"):
        print("usage: dllama_standin.py worker|inference ...", file=sys.stderr)
        return 2
    mode, args = sys.argv[1], sys.argv[2:]
    return worker(args) if mode == "worker" else inference(args)


if __name__ == "__main__":
    sys.exit(main())
