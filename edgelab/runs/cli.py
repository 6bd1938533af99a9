"""``edgelab run``: one experiment end to end, from the terminal."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgelab.cli import load_settings
from edgelab.runs import DEFAULT_PROMPT
from edgelab.settings import Settings
from edgelab.store.status import RunStatus
from edgelab.topology.spec import TopologyError

if TYPE_CHECKING:
    import redis


def run_as_dict(database_url: str, run_id: int) -> dict[str, Any]:
    from edgelab.runs.views import run_detail

    return run_detail(database_url, run_id)


@click.command("run")
@click.option(
    "--prompt",
    default=DEFAULT_PROMPT,
    show_default=True,
    help="The prompt to send.",
)
@click.option("--model", default="smollm2-135m", show_default=True, help="Catalog model name.")
# Numbers are taken as text and parsed by the run fields' own rules (ASCII digits,
# bounds), so the CLI refuses exactly what the API and the forms refuse.
@click.option("--nodes", default="3", show_default=True, help="Devices including the root.")
@click.option("--threads", default="1", show_default=True, help="CPU threads per node.")
@click.option(
    "--latency",
    default="10ms..50ms",
    show_default=True,
    help="Per-link one-way delay: 20ms, 10ms..50ms (uniform), 20ms~5ms (normal).",
)
@click.option("--bandwidth", default=None, help="Per-link cap, e.g. 100mbit.")
@click.option(
    "--loss",
    default="0%",
    show_default=True,
    help="Packet loss on every link, each way, 0-50 % (e.g. 1% or 0.5); a --link's own "
    "loss:P% wins. Docker, or local nodes as root.",
)
@click.option("--max-tokens", default="64", show_default=True, help="1-1024.")
@click.option("--seed", default="0", show_default=True, help="Seed for sampling and delays.")
@click.option("--temperature", default="0", show_default=True, help="0 = greedy, at most 2.")
@click.option("--engine", default="llamacpp", show_default=True, help="llamacpp or dllama.")
@click.option(
    "--dllama-bin",
    default=None,
    help="Path to a distributed-llama binary (default: EDGELAB_DLLAMA_BIN).",
)
@click.option(
    "--dllama-mode",
    type=click.Choice(["api", "inference"]),
    default=None,
    help="dllama only: api = warm dllama-api root (default); inference = one dllama "
    "inference per run, with dllama's per-token compute/sync split.",
)
@click.option("--backend", default=None, help="local or docker (default: EDGELAB_BACKEND).")
@click.option("--cpus", default=None, help="Docker: CPU limit per node.")
@click.option("--mem", default=None, help="Docker: memory limit per node, e.g. 512m.")
@click.option(
    "--device",
    "devices",
    multiple=True,
    metavar="NODE=PRESET|key:value,...",
    help="One node's device: a preset (`edgelab devices list`) or threads/cpus/mem, e.g. "
    "worker2=slow or worker2=cpus:0.25,threads:1. Repeatable; other nodes keep the "
    "cluster-wide --threads/--cpus/--mem.",
)
@click.option(
    "--link",
    "links",
    multiple=True,
    metavar="NODE=[PROFILE][,bandwidth:RATE][,loss:P%][,trace:FILE]",
    help="The link root<->NODE: its own profile (missing: --latency), bandwidth, loss, "
    "delay trace, queue, e.g. worker2=30ms,bandwidth:20mbit. Repeatable; a node given "
    "twice gets both (worker1=1ms and worker1=loss:2% is worker1=1ms,loss:2%).",
)
@click.option(
    "--topology",
    "topology_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A YAML file with devices: {NODE: ...} and links: {NODE: ...} (and optionally "
    "nodes and loss); --device/--link override its entries, --nodes/--loss its values.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the stored run as JSON.")
def run_command(
    prompt: str,
    model: str,
    nodes: str,
    threads: str,
    latency: str,
    bandwidth: str | None,
    loss: str,
    max_tokens: str,
    seed: str,
    temperature: str,
    engine: str,
    dllama_bin: str | None,
    dllama_mode: str | None,
    backend: str | None,
    cpus: str | None,
    mem: str | None,
    devices: tuple[str, ...],
    links: tuple[str, ...],
    topology_file: Path | None,
    as_json: bool,
) -> None:
    """Run one prompt on a fresh cluster and store the results."""
    from edgelab.catalog import Catalog
    from edgelab.models.db import upgrade
    from edgelab.runs.config import ConfigError, config_from_text, parse_config
    from edgelab.runs.executor import execute_run
    from edgelab.store.store import Store
    from edgelab.tasks.runner import held_like_a_worker
    from edgelab.validation.fields import OPTION_RULES
    from edgelab.validation.values import FieldError

    settings = load_settings()
    if dllama_bin:
        # Node processes inherit the environment: this is how the binary reaches them.
        os.environ["EDGELAB_DLLAMA_BIN"] = dllama_bin
    catalog = Catalog(settings)
    options: dict[str, Any] = {}
    text_errors: dict[str, str] = {}
    if cpus is not None:
        try:
            options["cpus"] = OPTION_RULES["cpus"].from_text(cpus)
        except FieldError as exc:
            text_errors["cpus"] = str(exc)
    if mem is not None:
        options["mem"] = mem
    if dllama_mode is not None:
        options["dllama_mode"] = dllama_mode
    try:
        topology_input = topology_options(devices, links, topology_file)
    except TopologyError as exc:
        lines = "\n".join(f"  --{k}: {v}" for k, v in exc.errors.items())
        raise click.ClickException(f"invalid run configuration:\n{lines}") from exc
    # The file's nodes and loss stand unless the flag was given.
    for key in ("nodes", "loss"):
        if key in topology_input:
            from_file = topology_input.pop(key)
            source = click.get_current_context().get_parameter_source(key)
            if source is not None and source.name == "DEFAULT":
                if key == "nodes":
                    nodes = from_file
                else:
                    loss = from_file
    text: dict[str, Any] = {
        **topology_input,
        "prompt": prompt,
        "model": model,
        "nodes": nodes,
        "threads": threads,
        "latency": latency,
        "bandwidth": bandwidth,
        "loss": loss,
        "max_tokens": max_tokens,
        "seed": seed,
        "temperature": temperature,
        "engine": engine,
        "backend": backend or settings.backend,
        "options": options,
    }
    raw, parse_errors = config_from_text(text)
    text_errors.update(parse_errors)
    try:
        config, _model = parse_config(raw, catalog, default_backend=settings.backend)
        if text_errors:
            raise ConfigError(text_errors)
    except ConfigError as exc:
        errors = {**exc.errors, **text_errors}
        lines = "\n".join(f"  --{_flag(k)}: {v}" for k, v in errors.items())
        raise click.ClickException(f"invalid run configuration:\n{lines}") from exc

    r = _host_lock_broker(settings)
    upgrade(settings.database_url)
    run_id = Store(settings.database_url).create_run(config).id

    log = sys.stderr if as_json else sys.stdout
    # True while the streamed answer's last line has no newline yet: a status or
    # progress line must then start on a line of its own.
    open_line = {"answer": False}

    def end_answer_line() -> None:
        if open_line["answer"]:
            log.write("\n")
            log.flush()
            open_line["answer"] = False

    def sink(event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "progress":
            end_answer_line()
            click.echo(f"[{event['message']}]", file=sys.stderr)
        elif kind == "status":
            end_answer_line()
            click.echo(f"[run {run_id}: {event['status']}]", file=sys.stderr)
        elif kind == "token":
            log.write(event["text"])
            log.flush()
            open_line["answer"] = not event["text"].endswith("\n")

    shape = "" if config.topology.is_uniform else f", {config.topology.label}"
    click.echo(
        f"[run {run_id}: {config.nodes} nodes, latency {config.latency.label}{shape}]", err=True
    )
    # SIGTERM ends the run like Ctrl-C does: cluster torn down, run marked cancelled.
    signal.signal(signal.SIGTERM, _interrupt)
    waiting = "waiting for another experiment on this host"
    try:
        with (
            held_like_a_worker(
                settings, r, run_id, on_wait=lambda: sink({"type": "progress", "message": waiting})
            )
            if r is not None
            else contextlib.nullcontext()
        ):
            result = execute_run(settings, run_id, sink=sink, catalog=catalog)
    except KeyboardInterrupt:
        raise click.ClickException(f"run {run_id} interrupted; its cluster was stopped") from None
    end_answer_line()
    data = run_as_dict(settings.database_url, run_id)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(summary(data))
    if result.status != RunStatus.SUCCEEDED:
        raise click.ClickException(f"run {run_id} {result.status}: {result.error}")


def _flag(field: str) -> str:
    """The command-line flag of a configuration field (``devices`` is ``--device``)."""
    return {"devices": "device", "links": "link"}.get(field, field.replace("_", "-"))


def topology_options(
    devices: tuple[str, ...], links: tuple[str, ...], topology_file: Path | None
) -> dict[str, Any]:
    """``--topology FILE`` merged with ``--device``/``--link`` as run input
    (``devices``, ``links`` and the file's ``nodes`` and ``loss``); the flags win per node."""
    from edgelab.topology.spec import parse_assignments

    out: dict[str, Any] = {}
    dev: dict[str, Any] = {}
    lnk: dict[str, Any] = {}
    if topology_file is not None:
        import yaml

        try:
            data = yaml.safe_load(topology_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TopologyError({"topology": f"{topology_file}: {exc}"}) from None
        if not isinstance(data, dict) or set(data) - {"devices", "links", "nodes", "name", "loss"}:
            raise TopologyError(
                {
                    "topology": f"{topology_file} must map devices:, links: (and nodes:, "
                    "loss:, name:)"
                }
            )
        if not isinstance(data.get("devices") or {}, dict) or not isinstance(
            data.get("links") or {}, dict
        ):
            raise TopologyError({"topology": f"{topology_file}: devices and links must be maps"})
        dev.update(data.get("devices") or {})
        # A trace named in the file is found beside the file.
        base = topology_file.resolve().parent
        for node, value in (data.get("links") or {}).items():
            lnk[node] = _trace_beside(value, base)
        for key in ("nodes", "loss"):
            if key in data:
                out[key] = data[key]
    dev.update(parse_assignments(devices, "device"))
    lnk.update(parse_assignments(links, "link"))
    if dev:
        out["devices"] = dev
    if lnk:
        out["links"] = lnk
    return out


def _trace_beside(value: Any, base: Path) -> Any:
    if isinstance(value, dict) and isinstance(value.get("trace"), str):
        trace = Path(value["trace"]).expanduser()
        return {**value, "trace": str(trace if trace.is_absolute() else base / trace)}
    if isinstance(value, str) and "trace:" in value:
        items = []
        for item in value.split(","):
            key, sep, rest = item.partition(":")
            if sep and key.strip() == "trace" and not Path(rest.strip()).is_absolute():
                item = f"trace:{base / rest.strip()}"
            items.append(item)
        return ",".join(items)
    return value


def _host_lock_broker(settings: Settings) -> redis.Redis | None:
    """The Redis holding this host's experiment lock, or None if there is no broker.

    With a broker configured (or an ``edgelab up`` running), ``edgelab run`` takes
    the same host lock as workers do; it refuses to run if that broker does not
    answer rather than silently sharing the CPU with a worker's experiment.
    """
    import redis

    from edgelab.embedded import resolve_redis_url
    from edgelab.tasks.events import redis_client

    url = resolve_redis_url(settings)
    if not url:
        return None
    r = redis_client(url)
    try:
        r.ping()
    except redis.RedisError as exc:
        raise click.ClickException(
            f"broker unreachable at {url} ({exc}): `edgelab run` takes the same host lock as "
            "workers; start the broker, or unset EDGELAB_REDIS_URL to run without it"
        ) from exc
    return r


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


QUANTILES = ("p50", "p99", "max")


def summary(run: dict[str, Any]) -> str:
    """A short human-readable report of a stored run."""
    from edgelab.units import fmt_bytes, fmt_ms

    m = run["metrics"]
    lines = [
        f"run {run['id']} {run['status']}: {run['config']['nodes']} nodes x "
        f"{run['config']['threads']} threads, latency {run['config']['latency']}, "
        f"model {run['config']['model']}",
        f"  TTFT {_fmt(m['ttft_ms'], ' ms')}  TTLT {_fmt(m['e2el_ms'], ' ms')}  "
        f"TPOT {_fmt(m['tpot_ms'], ' ms')}  decode {_fmt(m['decode_tps'], ' tok/s')}",
        f"  ITL p50/p90/p99 {_fmt(m['itl_p50_ms'])}/{_fmt(m['itl_p90_ms'])}/"
        f"{_fmt(m['itl_p99_ms'])} ms  tokens {m['prompt_tokens']} in, {m['output_tokens']} out"
        f"  start-up {_fmt(m['load_ms'], ' ms', 0)}",
    ]
    topology = run["config"].get("topology") or {}
    if topology and not topology.get("uniform", True):
        lines.append(f"  topology: {topology['label']}")
    limits = run["provenance"].get("node_limits") or {}
    for name, applied in limits.items():
        cpus = "no CPU quota" if applied.get("cpus") is None else f"{applied['cpus']:g} CPU"
        mem = "" if not applied.get("mem") else f", {fmt_bytes(applied['mem'])} memory"
        if isinstance(applied.get("mem"), str):
            mem = f", {applied['mem']} memory"
        lines.append(f"  {name}: {applied.get('threads')} threads, {cpus}{mem} (applied)")
    # Each link's own profile (a heterogeneous cluster's links differ).
    configured = {t["link"]: t["latency"] for t in topology.get("links") or []}
    for link in run["links"]:
        # Bytes per link; per-message delay sums would read like critical-path time.
        lines.append(
            f"  {link['link']}: {fmt_bytes(link['bytes_up'])} up / "
            f"{fmt_bytes(link['bytes_down'])} down, "
            f"{link['chunks_up']}/{link['chunks_down']} messages"
        )
        if link.get("eff_delay_p50_ms_up") is not None:
            eff = {
                d: " / ".join(fmt_ms(link.get(f"eff_delay_{q}_ms_{d}")) for q in QUANTILES)
                for d in ("up", "down")
            }
            lines.append(
                f"    effective one-way delay p50/p99/max up {eff['up']}, down {eff['down']} "
                f"(configured {configured.get(link['link'], run['config']['latency'])})"
            )
    nodes: dict[str, list[dict[str, Any]]] = {}
    for sample in run["samples"]:
        nodes.setdefault(sample["node"], []).append(sample)
    for name, samples in nodes.items():
        cpu = max(s["cpu_percent"] for s in samples)
        rss = max(s["rss_bytes"] for s in samples) / 2**20
        lines.append(
            f"  {name}: peak CPU {cpu:.0f}%  peak RSS {rss:.0f} MiB ({len(samples)} samples)"
        )
    if run.get("error"):
        lines.append(f"  error: {run['error']}")
    return "\n".join(lines)
