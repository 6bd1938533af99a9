"""``edgelab proxy``: one link in the foreground, locally or inside a worker container.

Ready is signalled by one stdout line ``proxy listening on HOST:PORT``; the
final counters are one JSON line printed on SIGINT/SIGTERM (exit status 0).
SIGUSR1 prints the current counters without stopping. With ``--control-stdin``
the profile can be changed live by writing ``set PROFILE [RATE]`` lines to stdin
or ``json {LatencyProfile.to_dict()}`` lines (exact, seed included) to stdin;
``stats`` prints counters. That is how a sweep re-uses a running container.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from types import FrameType

import click

from edgelab.netem.profile import LatencyProfile, ProfileError
from edgelab.netem.proxy import LinkProxy


def parse_hostport(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}", param_hint=option)
    return host.strip("[]"), int(port)


def _emit(proxy: LinkProxy, event: str) -> None:
    line = json.dumps({"event": event, **proxy.stats().to_dict()}, sort_keys=True)
    click.echo(line)
    sys.stdout.flush()


def _control_loop(proxy: LinkProxy, seed: int | None) -> None:
    for raw in sys.stdin:
        words = raw.split()
        if not words:
            continue
        if words[0] == "stats":
            _emit(proxy, "stats")
        elif words[0] == "json":
            try:
                profile = LatencyProfile.from_dict(json.loads(raw.split(None, 1)[1]))
            except (ValueError, IndexError) as exc:  # ProfileError is a ValueError
                click.echo(f"error: {exc}", err=True)
                continue
            proxy.set_profile(profile)
            click.echo(f"profile {profile.label}")
            sys.stdout.flush()
        elif words[0] == "set" and len(words) in (2, 3):
            try:
                profile = LatencyProfile.parse(
                    words[1], words[2] if len(words) == 3 else None, seed=seed
                )
            except ProfileError as exc:
                click.echo(f"error: {exc}", err=True)
                continue
            proxy.set_profile(profile)
            click.echo(f"profile {profile.label}")
            sys.stdout.flush()
        else:
            click.echo(
                "error: commands are 'set PROFILE [RATE]', 'json PROFILE_DICT' and 'stats'",
                err=True,
            )


@click.command("proxy")
@click.option("--listen", "listen", default="127.0.0.1:0", show_default=True, help="HOST:PORT")
@click.option("--upstream", "upstream", required=True, help="HOST:PORT of the worker.")
@click.option("--latency", "latency", default="0ms", show_default=True, help="e.g. 10ms..50ms")
@click.option("--bandwidth", "bandwidth", default=None, help="e.g. 100mbit (UP/DOWN allowed)")
@click.option("--seed", "seed", type=int, default=None, help="Reproduce the delay sequence.")
@click.option("--name", "name", default="link", show_default=True, help="Link name in counters.")
@click.option("--control-stdin", is_flag=True, help="Accept 'set PROFILE [RATE]' on stdin.")
@click.option("--realtime", is_flag=True, help="SCHED_FIFO release threads (needs CAP_SYS_NICE).")
def proxy_command(
    listen: str,
    upstream: str,
    latency: str,
    bandwidth: str | None,
    seed: int | None,
    name: str,
    control_stdin: bool,
    realtime: bool,
) -> None:
    """Run one delay/bandwidth link from --listen to --upstream until SIGINT/SIGTERM."""
    from edgelab.cli import load_settings

    splice = load_settings().netem_splice  # EDGELAB_NETEM_SPLICE=0 copies through a buffer
    try:
        profile = LatencyProfile.parse(latency, bandwidth, seed=seed)
    except ProfileError as exc:
        raise click.BadParameter(str(exc), param_hint="--latency/--bandwidth") from exc
    listen_addr = parse_hostport(listen, "--listen")
    upstream_addr = parse_hostport(upstream, "--upstream")

    stop = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    proxy = LinkProxy(
        name, upstream_addr, profile, listen=listen_addr, realtime=realtime, splice=splice
    )
    try:
        proxy.start()
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    previous = {s: signal.signal(s, on_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGUSR1, lambda signum, frame: _emit(proxy, "stats"))
    try:
        host, port = proxy.address
        click.echo(f"proxy listening on {host}:{port} -> {upstream_addr[0]}:{upstream_addr[1]}")
        click.echo(f"profile {profile.label}")
        sys.stdout.flush()
        if control_stdin:
            threading.Thread(
                target=_control_loop, args=(proxy, seed), name="netem-control", daemon=True
            ).start()
        while not stop.wait(0.5):
            pass
    finally:
        proxy.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    _emit(proxy, "final")
