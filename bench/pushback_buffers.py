"""Where a 5 MB sendall into a 10 mbit link waits: sendall time and the buffers holding the rest.

Run: ``.venv/bin/python bench/pushback_buffers.py`` (about 30 s; root not needed).

A fresh ``edgelab proxy`` process (10 mbit, 0 ms, started paced as a cluster's link
is) forwards to a sink in this process. For each sender congestion control (CUBIC
and the host's default) one 5 MB ``sendall`` is timed, and half-way through ``ss
-tmi`` is read on the sender's socket and on the proxy's accepted socket: what the
sender's kernel holds (bytes not yet sent, its send buffer), what the proxy's
receive buffer holds, and, from the proxy's counters, its deepest queue. The
sendall returns when all but those bytes have crossed the link, so their sum, in
link time (1.25 MB/s), is what separates the sendall from the 4.0 s link time.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import threading
import time

PAYLOAD = 5_000_000
RATE_BYTES_S = 10_000_000 / 8
EDGELAB = [sys.executable, "-c", "from edgelab.cli import main; main()"]


class Sink:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.received = 0
        self.last_at = 0.0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.received, self.done = 0, threading.Event()
            buf = bytearray(1 << 20)
            with conn:
                while n := conn.recv_into(buf):
                    self.received += n
                    self.last_at = time.perf_counter()
            self.done.set()


def _ss(local_port: int, peer_port: int) -> dict[str, int]:
    """Recv-Q, Send-Q, notsent and the skmem rb/tb of one socket (0 if not shown)."""
    out = subprocess.run(
        [
            "ss",
            "-tmiHn",
            "state",
            "established",
            f"( sport = :{local_port} and dport = :{peer_port} )",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    found: dict[str, int] = {}
    if len(out) >= 2:
        found["recv_q"], found["send_q"] = int(out[0]), int(out[1])
    text = " ".join(out)
    for key, pattern in (("rb", r"\brb(\d+)"), ("tb", r"\btb(\d+)"), ("notsent", r"notsent:(\d+)")):
        match = re.search(pattern, text)
        found[key] = int(match.group(1)) if match else 0
    return found


def one(sink: Sink, cc: bytes | None) -> dict[str, float | int | str]:
    proc = subprocess.Popen(
        [*EDGELAB, "proxy", "--upstream", f"127.0.0.1:{sink.listener.getsockname()[1]}",
         "--bandwidth", "10mbit", "--control-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        ready = proc.stdout.readline()
        proc.stdout.readline()  # "profile ..."
        host, port = ready.split()[3].rsplit(":", 1)
        snap: dict[str, dict[str, int]] = {}
        with socket.socket() as sock:
            if cc is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc)
            sock.connect((host, int(port)))
            mine = sock.getsockname()[1]

            def look() -> None:
                time.sleep(2.0)
                snap["sender"] = _ss(mine, int(port))
                snap["proxy"] = _ss(int(port), mine)

            looker = threading.Thread(target=look, daemon=True)
            start = time.perf_counter()
            looker.start()
            sock.sendall(bytes(PAYLOAD))
            sent = time.perf_counter() - start
            sock.shutdown(socket.SHUT_WR)
            sink.done.wait(30)
            looker.join(5)
        proc.stdin.write("stats\n")
        proc.stdin.flush()
        stats = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    sender, proxy = snap.get("sender", {}), snap.get("proxy", {})
    queue = int(stats["up"]["queue_max_bytes"])
    held = sender.get("send_q", 0) + proxy.get("recv_q", 0) + queue
    return {
        "cc": (cc or b"default").decode(),
        "sendall_s": sent,
        "last_byte_s": sink.last_at - start,
        "sender_send_q": sender.get("send_q", 0),
        "sender_notsent": sender.get("notsent", 0),
        "sender_sndbuf": sender.get("tb", 0),
        "proxy_recv_q": proxy.get("recv_q", 0),
        "proxy_rcvbuf": proxy.get("rb", 0),
        "queue_max": queue,
        "held_s": held / RATE_BYTES_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sink = Sink()
    print(
        f"{'sender cc':<10}{'sendall s':>10}{'last byte s':>12}{'send-q':>9}{'notsent':>9}"
        f"{'sndbuf':>9}{'proxy rq':>9}{'rcvbuf':>8}{'queue':>8}{'held s':>8}"
    )
    for _ in range(args.rounds):
        for cc in (b"cubic", None):
            r = one(sink, cc)
            print(
                f"{r['cc']!s:<10}{r['sendall_s']:>10.2f}{r['last_byte_s']:>12.2f}"
                f"{r['sender_send_q']:>9}{r['sender_notsent']:>9}{r['sender_sndbuf']:>9}"
                f"{r['proxy_recv_q']:>9}{r['proxy_rcvbuf']:>8}{r['queue_max']:>8}"
                f"{r['held_s']:>8.2f}"
            )


if __name__ == "__main__":
    main()
