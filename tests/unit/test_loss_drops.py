"""The loss rules' own drop counters, read from real ``nft -j`` output.

A throwaway network namespace (made and deleted here, as root) gets the loss table
of :func:`edgelab.netem.loss.ruleset`. For exact counts its random share is taken
out (the rules then drop every packet on the port; the table, chains and counters
are ruleset's): one connection attempt is one SYN, dropped once on input (its first
retransmission would be a second later, after the client gave up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from edgelab.netem.loss import (
    SCALE,
    LinkDrops,
    apply_loss,
    parse_dropped,
    read_dropped,
    ruleset,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="needs root, nft and ip (makes a network namespace)",
)

PORT = 47313
#: argv[1] connection attempts to PORT on the namespace's loopback, given up after 0.3 s.
_SYN = f"""
import socket, sys, time
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", {PORT}))
    except BlockingIOError:
        pass
time.sleep(0.3)
for s in socks:
    s.close()
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"eldrops{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def _syn(path: str, attempts: int = 1) -> None:
    subprocess.run(
        ["nsenter", f"--net={path}", sys.executable, "-c", _SYN, str(attempts)],
        check=True,
        timeout=10,
    )


def _drop_all(path: str) -> None:
    """ruleset's table, replaced as ruleset replaces it, dropping every packet."""
    rules = ruleset(2, PORT).replace(f"numgen random mod {SCALE} < 200 ", "")
    assert "numgen" not in rules
    assert rules.count("counter drop") == 2
    subprocess.run(
        ["nsenter", f"--net={path}", "nft", "-f", "-"], input=rules, text=True, check=True
    )


def test_drops_are_counted_exactly_and_survive_a_replaced_table(namespace: str) -> None:
    assert read_dropped(namespace) == (None, 0)  # no loss table: nothing can drop
    drops = LinkDrops(namespace)
    assert drops.read() == 0
    _drop_all(namespace)
    first = read_dropped(namespace)
    assert first is not None
    assert first[0] is not None
    assert first[1] == 0
    _syn(namespace, 2)
    assert read_dropped(namespace) == (first[0], 2)
    assert drops.read() == 2
    # A warm cluster's loss change: a new table (new handle), its counters from 0.
    _drop_all(namespace)
    second = read_dropped(namespace)
    assert second is not None
    assert second[0] != first[0]
    assert second[1] == 0
    _syn(namespace)
    assert drops.read() == 3  # 2 from the old table, 1 from the new one
    apply_loss(namespace, 0, PORT)  # rules removed: nothing more is dropped or counted
    _syn(namespace)
    assert read_dropped(namespace) == (None, 0)
    assert drops.read() == 3


def test_the_real_rules_count_what_they_drop(namespace: str) -> None:
    """At 50 % (the most a link takes) 20 attempts each lose their SYN or, past the
    input rule, the RST answering it on output, with probability 3/4: all 20 getting
    through both is 1 in 10^12. Each attempt is at most those two packets."""
    apply_loss(namespace, 50, PORT)
    _syn(namespace, 20)
    found = read_dropped(namespace)
    assert found is not None
    assert 0 < found[1] <= 40


def test_a_namespace_that_cannot_be_entered_is_unreadable_not_zero() -> None:
    assert read_dropped("/run/netns/edgelab-no-such-namespace") is None


def test_both_chains_counters_are_summed() -> None:
    """``nft -j`` output as nft 1.0.6 prints it for the loss table (trimmed to the
    fields read), 3 packets dropped out, 4 in."""
    rule = {
        "family": "inet", "table": "edgelab_loss", "chain": "out", "handle": 3,
        "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"drop": None}],
    }  # fmt: skip
    out = {
        "nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "edgelab_loss", "handle": 7}},
            {"rule": rule},
            {"rule": {**rule, "chain": "in", "handle": 4,
                      "expr": [{"counter": {"packets": 4, "bytes": 240}}, {"drop": None}]}},
        ]
    }  # fmt: skip
    assert parse_dropped(json.dumps(out)) == (7, 7)
