"""Network namespaces for local nodes: when loss is refused, subnets, the reaper.

The refusals are checked for real, in a child process that lacks what is needed
(run as ``nobody``; a PATH without ``nft``), not by patching the checks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgelab.netem.loss import LinkRetransmits
from edgelab.topology import netns
from edgelab.topology.netns import (
    NodeNamespace,
    candidate_subnets,
    netns_problem,
    owned_namespaces,
    pick_subnet,
    reap_namespaces,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (makes namespaces)")

#: Prints topology_problems of a 3-node topology with 2 % loss on worker1's link; with
#: an argument, as that uid (dropped after the imports: the interpreter lives under /root).
_CHECK = """
import json, os, sys
from edgelab.netem.profile import LatencyProfile
from edgelab.topology import resolve_topology
from edgelab.topology.presets import EXAMPLE_PRESETS
from edgelab.topology.support import topology_problems
if len(sys.argv) > 1:
    os.setgid(int(sys.argv[1]))
    os.setuid(int(sys.argv[1]))
t = resolve_topology(devices=None, links={"worker1": "loss:2%"}, nodes=3, threads=1,
    latency=LatencyProfile.parse("0ms", seed=0), presets=EXAMPLE_PRESETS)
print(json.dumps(topology_problems(t, "local")))
"""


def _problems_in_child(env: dict[str, str], uid: int | None = None) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, *([] if uid is None else [str(uid)])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd="/",
        env=env,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@needs_root
def test_local_loss_is_refused_when_not_root_saying_why() -> None:
    problems = _problems_in_child({"PATH": os.environ["PATH"]}, uid=65534)  # nobody
    assert set(problems) == {"links"}
    message = problems["links"]
    assert message.startswith("worker1: packet loss cannot be applied: local nodes need a ")
    assert "edgelab does not run as root" in message
    assert "run edgelab as root with iproute2 and nftables" in message
    assert "--backend docker" in message


@needs_root
def test_local_loss_is_refused_without_nft_naming_the_package(tmp_path: Path) -> None:
    for tool in ("ip", "nsenter"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"no {tool} here")
        (tmp_path / tool).symlink_to(found)
    problems = _problems_in_child({"PATH": str(tmp_path)})
    assert "the nft binary is missing (Debian package nftables)" in problems["links"]


@needs_root
def test_local_loss_is_accepted_as_root_with_the_tools() -> None:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(problem)
    assert _problems_in_child({"PATH": os.environ["PATH"]}) == {}
    assert owned_namespaces(os.getpid()) == []  # the probe's namespace is gone


def test_subnets_come_from_the_pool_and_skip_what_the_host_uses() -> None:
    first, second = list(candidate_subnets("abcd1234"))[:2]
    assert first.prefixlen == 24
    assert first.subnet_of(netns.POOL)
    assert first != second
    assert list(candidate_subnets("abcd1234"))[:2] == [first, second]  # from the id alone
    assert pick_subnet("abcd1234", []) == first
    # A host route inside the first candidate (a LAN, another cluster) moves it on.
    inside = ipaddress.ip_network(f"{first.network_address + 8}/30")
    assert pick_subnet("abcd1234", [inside]) == second
    assert pick_subnet("abcd1234", [ipaddress.ip_network("10.0.0.0/8")]) is None


@needs_root
def test_reaper_removes_namespaces_whose_owner_died_only() -> None:
    if netns_problem() is not None:
        pytest.skip(str(netns_problem()))
    dead = subprocess.Popen(["true"])
    dead.wait()
    subnet = pick_subnet("reaptest", netns.used_networks())
    assert subnet is not None
    mine = NodeNamespace("reaptest", "worker1", 1, subnet)
    orphan = f"{netns.PREFIX}{dead.pid}-reaptest-worker1"
    subprocess.run(["ip", "netns", "add", orphan], check=True)
    try:
        removed = reap_namespaces()
        assert orphan in removed
        assert mine.name not in removed  # its owner (this test) lives
        assert owned_namespaces(os.getpid()) == [mine.name]
    finally:
        subprocess.run(["ip", "netns", "delete", orphan], check=False, capture_output=True)
        mine.remove()
    assert owned_namespaces(os.getpid()) == []
    link = subprocess.run(["ip", "link", "show", mine.host_if], capture_output=True, check=False)
    assert link.returncode != 0  # the host end of its veth went with it


#: A link's worker end: echoes every connection it accepts on (address, port) until
#: killed, so that its namespace (whose counters the test reads) outlives them.
_ECHO = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    conn, _ = srv.accept()
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
"""


def _echo(s: socket.socket, size: int) -> None:
    payload = os.urandom(size)
    s.sendall(payload)
    got = b""
    while len(got) < size:
        chunk = s.recv(65536)
        assert chunk, "the echo server closed early"
        got += chunk
    assert got == payload


@needs_root
def test_a_lossy_link_s_retransmits_stay_counted_after_its_sockets_close() -> None:
    """The counter of :class:`LinkRetransmits` over a real veth with 5 % loss (some 9
    of the 180 segments of 256 KiB each way): it rises with the traffic, keeps what a
    closed connection sent again (a sum of ``ss`` lifetime totals lost it), and adds
    a new connection's on top."""
    if netns_problem() is not None:
        pytest.skip(str(netns_problem()))
    subnet = pick_subnet("rtxtest", netns.used_networks())
    assert subnet is not None
    ns = NodeNamespace("rtxtest", "worker1", 1, subnet)
    port = 47311
    server = subprocess.Popen(
        ["nsenter", f"--net={ns.path}", sys.executable, "-c", _ECHO, ns.node_ip, str(port)]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((ns.node_ip, port), 0.5):
                break
            assert time.monotonic() < deadline, "the echo server did not listen within 10 s"
            time.sleep(0.05)
        assert ns.holds(server.pid)
        counter = LinkRetransmits(server.pid, (None, ns.node_ip, port))
        # An earlier run of this test (same subnet, same port) leaves sockets behind.
        counter.ignore_existing()
        ns.apply_loss(5, port)
        assert counter.read() == 0  # no traffic through the loss yet
        with socket.create_connection((ns.node_ip, port), timeout=30) as s:
            _echo(s, 1 << 18)
            first = counter.read()  # read while the connection is open, as the
            assert first is not None  # cluster's periodic reads do
            assert first > 0
        # That connection is closed (gone from ``ss -ti``); its resends stay counted.
        after_close = counter.read()
        assert after_close is not None
        assert after_close >= first
        with socket.create_connection((ns.node_ip, port), timeout=30) as s:
            _echo(s, 1 << 18)
            second = counter.read()
        assert second is not None
        assert second > after_close
    finally:
        server.kill()
        server.wait()
        ns.remove()
    assert owned_namespaces(os.getpid()) == []
