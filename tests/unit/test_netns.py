"""Network namespaces for local nodes: when loss is refused, subnets, the reaper.

The refusals are checked for real, in a child process that lacks what is needed
(run as ``nobody``; a PATH without ``nft``), not by patching the checks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
