"""Carry out one run: claim it, run it on a cluster, store everything measured.

The executor is a plain function so the CLI, Celery tasks and tests call the same
code. It never leaves a run in a non-terminal state when it returns or raises: a
failure becomes ``failed`` with a readable error (naming the node and its last log
lines when a node died), an interrupt becomes ``cancelled``.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgelab import __version__
from edgelab.catalog import Catalog, ModelInfo
from edgelab.cluster import Cluster, ClusterError, NodeFailure, open_cluster, workdirs
from edgelab.cluster.watchdog import StallWatchdog
from edgelab.engines import get_engine
from edgelab.engines.base import EngineError
from edgelab.metrics import host, linktiming, timeline
from edgelab.metrics.sampler import NodeSampler
from edgelab.netem.proxy import LinkStats
from edgelab.runs.config import RunConfig
from edgelab.settings import Settings
from edgelab.store import RunStatus
from edgelab.store.store import Store, insert_run
from edgelab.store.store import config_of as config_of  # re-exported: older callers
from edgelab.topology.spec import node_names

#: Called with each live event: {"type": "status"|"token"|"progress"|"metrics", ...}.
EventSink = Callable[[dict[str, Any]], None]
#: Polled between tokens, while waiting for one and while the cluster starts;
#: returning True cancels the run.
CancelCheck = Callable[[], bool]

TOKEN_FLUSH_EVERY = 16
TOKEN_FLUSH_S = 0.5
#: How often running metrics, node samples and link counters are published.
LIVE_EVERY_S = 0.5


class RunCancelled(Exception):
    """The run was cancelled while it executed."""


class RunLost(Exception):
    """The run left this executor's hands (another worker adopted it): stop, write nothing."""


class _NotClaimed(Exception):
    """The run could not be claimed (cancelled or gone since it was handed out): skip it."""


@dataclass(frozen=True)
class RunResult:
    run_id: int
    status: RunStatus
    error: str | None


# Kept under their old names: creating a run and reading its configuration are the
# store's business now (edgelab.store.store), these are the same functions.
create_run = insert_run


def claim_run(database_url: str, run_id: int) -> bool:
    """queued (or left behind by a dead executor) -> starting; False: do not execute."""
    return Store(database_url).claim_run(run_id)


def host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _link_delta(before: LinkStats | None, after: LinkStats) -> dict[str, float | None]:
    """Counters of one link accumulated during this run only (clusters are reused).

    The column mapping is ``LinkStats.link_stat_fields``; here only the counters are
    differenced. Maxima (delay, queue depth) cannot be, so the link's running
    maximum is kept.
    """
    a = after.link_stat_fields()
    b = before.link_stat_fields() if before is not None else {}
    row = {
        # A counter the backend could not read (None) stays None.
        key: None if value is None else value - (b.get(key) or 0)
        for key, value in a.items()
        if key not in ("link", *_RUNNING_MAXIMA)
    }
    row.update({key: a[key] for key in _RUNNING_MAXIMA})
    drops, drops_before = a["dropped_packets"], b.get("dropped_packets")
    if drops is not None and drops_before is not None and drops < drops_before:
        # The drop counter started again (a node restarted with a new namespace):
        # everything it counted since is this run's.
        row["dropped_packets"] = drops
    return row


_RUNNING_MAXIMA = ("delay_max_ms", "queue_max_bytes_up", "queue_max_bytes_down")


class _TokenWriter:
    """Writes token events in small batches: live viewers replay from the DB, and one
    commit per token would cost more than the token itself on a fast cluster.

    The last batch of a run is not committed on its own: :meth:`take` hands it to
    the commit that stores the run's outcome (one commit less per run, and a run
    seen finished has all its tokens). A run that fails before that commit calls
    :meth:`flush`, so its tokens are kept all the same.
    """

    def __init__(self, database_url: str, run_id: int) -> None:
        self.store = Store(database_url)
        self.run_id = run_id
        self.pending: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()

    def add(self, index: int, offset_ms: float, text: str, detail: dict[str, Any] | None) -> None:
        self.pending.append(
            {"index": index, "offset_ms": offset_ms, "text": text, "detail": detail}
        )
        if (
            len(self.pending) >= TOKEN_FLUSH_EVERY
            or time.monotonic() - self.last_flush >= TOKEN_FLUSH_S
        ):
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.store.add_token_events(self.run_id, self.pending)
            self.pending = []
        self.last_flush = time.monotonic()

    def take(self) -> list[dict[str, Any]]:
        """The rows not written yet, for the caller's own commit (then :meth:`stored`)."""
        return list(self.pending)

    def stored(self) -> None:
        """The rows :meth:`take` returned were committed by the caller."""
        self.pending = []


@contextmanager
def cluster_for(
    settings: Settings,
    config: RunConfig,
    model: ModelInfo,
    progress: Callable[[str], None] | None = None,
    name: str = "cluster",
    should_cancel: CancelCheck | None = None,
) -> Iterator[Cluster]:
    """Start a cluster for ``config``'s topology and always tear it down afterwards.

    While it starts, ``should_cancel`` is polled (``RunCancelled`` aborts the start)
    and a stall watchdog (``Settings.start_stall_timeout_s``) fails a start that
    stopped making progress, naming the node, long before the start timeout.
    """
    workdirs.prune(settings)  # every start tidies up after earlier ones
    work_dir = workdirs.new_work_dir(settings, name)
    engine = get_engine(config.engine, model, config.options)
    cluster = open_cluster(
        config.cluster_spec,
        str(work_dir),
        str(model.path),
        name=name,
        engine=engine,
        settings=settings,
    )
    watchdog = StallWatchdog(cluster, settings.start_stall_timeout_s, "cluster start")

    def watch() -> None:
        if should_cancel is not None and should_cancel():
            raise RunCancelled()
        watchdog.check()

    failure: BaseException | None = None
    try:
        cluster.start(progress, watch)
        yield cluster
    except BaseException as exc:
        failure = exc
        raise
    finally:
        failed = cluster.broken is not None or cluster.keep_work_dir
        if failure is not None and not isinstance(failure, (RunCancelled, KeyboardInterrupt)):
            failed = True
        cluster.close()
        kept = workdirs.release(settings, work_dir, failed=failed, logs=cluster.node_logs(50))
        if kept and failure is not None:
            # The error this becomes says where the whole logs are.
            failure.kept_note = workdirs.keep_note(settings, work_dir)  # type: ignore[attr-defined]


def failure_text(exc: BaseException) -> str:
    """A run's error for ``exc``: its message, plus where its node logs were kept."""
    text = str(exc) or type(exc).__name__
    note = getattr(exc, "kept_note", None)
    return f"{text}\n{note}" if note else text


def execute_run(
    settings: Settings,
    run_id: int,
    *,
    cluster: Cluster | None = None,
    sink: EventSink | None = None,
    should_cancel: CancelCheck | None = None,
    catalog: Catalog | None = None,
    claimed: bool = False,
) -> RunResult:
    """Execute run ``run_id``, on ``cluster`` if given (a warm cluster of the same
    topology; only its latency is changed), else on a cluster started for it.

    ``claimed``: the caller already moved the run to ``starting`` (the group runner
    does, so the lead run shows it is starting while the cluster comes up); otherwise the
    run is claimed here. Either way it is claimed exactly once per execution. On a warm
    cluster it is claimed when it starts generating, in the commit that marks it
    running: there is nothing to start, so nothing to show as ``starting``.
    """
    emit = sink or (lambda _event: None)
    store = Store(settings.database_url)
    claim_with_start = not claimed and cluster is not None
    if not claimed and not claim_with_start:
        if not store.claim_run(run_id):
            return _skipped(store, run_id)
        emit({"type": "status", "status": RunStatus.STARTING})
    config = store.run_config(run_id)
    catalog = catalog or Catalog(settings)

    def progress(message: str) -> None:
        emit({"type": "progress", "message": message})

    try:
        model = catalog.get(config.model)
        if cluster is None:
            with cluster_for(
                settings, config, model, progress, name=f"run{run_id}", should_cancel=should_cancel
            ) as own:
                _generate(settings, run_id, config, model, own, emit, should_cancel)
        else:
            if cluster.spec.topology_key() != config.cluster_spec.topology_key():
                raise EngineError("the warm cluster's topology does not match this run")
            cluster.set_latency(config.latency, config.topology)
            _generate(
                settings, run_id, config, model, cluster, emit, should_cancel, claim_with_start
            )
    except _NotClaimed:
        return _skipped(store, run_id)
    except RunLost as exc:
        # Not ours any more: whoever has it now writes its outcome.
        return RunResult(run_id, store.run_status(run_id) or RunStatus.FAILED, str(exc))
    except (KeyboardInterrupt, RunCancelled) as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else RunStatus.CANCELLED.value
        store.end_cancelled(run_id, reason)
        emit({"type": "status", "status": RunStatus.CANCELLED, "error": reason})
        if isinstance(exc, KeyboardInterrupt):
            raise
        return RunResult(run_id, RunStatus.CANCELLED, reason)
    except Exception as exc:
        error = failure_text(exc)
        if cluster is not None and settings.keep_work_dirs != "never":
            # A warm cluster outlives this run: it keeps its directory when it closes.
            cluster.keep_work_dir = True
            error += "\n" + workdirs.keep_note(settings, cluster.work_dir)
        logs = exc.node_logs if isinstance(exc, ClusterError) else None
        store.fail_run(run_id, error, logs)
        emit({"type": "status", "status": RunStatus.FAILED, "error": error})
        return RunResult(run_id, RunStatus.FAILED, error)
    emit({"type": "status", "status": RunStatus.SUCCEEDED})
    return RunResult(run_id, RunStatus.SUCCEEDED, None)


def _skipped(store: Store, run_id: int) -> RunResult:
    """The result for a run that could not be claimed: whatever state it is in now."""
    status = store.run_status(run_id)
    return RunResult(run_id, status or RunStatus.FAILED, None if status else "missing")


def _generate(
    settings: Settings,
    run_id: int,
    config: RunConfig,
    model: ModelInfo,
    cluster: Cluster,
    emit: EventSink,
    should_cancel: CancelCheck | None,
    claim: bool = False,
) -> None:
    """Generate on ``cluster`` and store the outcome; ``claim``: the run is still
    queued, and is claimed in the commit that marks it running."""
    url = settings.database_url
    store = Store(url)
    info = cluster.root_info
    runs_before = cluster.runs_served
    measurement = measurement_of(info, cluster, runs_before)
    provenance = dict(
        measurement=measurement,
        engine_version=info.get("engine_version"),
        layer_split=info.get("layer_split"),
        model_sha256=model.sha256,
        host_cpu=host_cpu(),
        host_cores=os.cpu_count(),
        oversubscribed=host.oversubscribed(
            [cluster.spec.threads_of(n) for n in node_names(config.nodes)], os.cpu_count()
        ),
        edgelab_version=__version__,
        image_ids=cluster.provenance(),
        node_limits=cluster.node_limits() or None,
    )
    if claim:
        if not store.claim_run(run_id, running=provenance):
            raise _NotClaimed()
        emit({"type": "status", "status": RunStatus.STARTING})  # a fresh event log
    elif not store.mark_running(run_id, **provenance):
        raise RunLost(f"run {run_id} is no longer this executor's ({store.run_status(run_id)})")
    cluster.runs_served = runs_before + 1
    emit({"type": "status", "status": RunStatus.RUNNING})

    # The run's window on the shared monotonic clock: chunk traces are read from here.
    window_start = time.monotonic()
    links_before = cluster.link_stats()
    # The first run on a cluster is charged the cluster's start-up traffic as load.
    startup_links = links_before if runs_before == 0 else {}
    clock_origin: float | None = None
    root_clients: set[str] = set()
    sampler = NodeSampler(cluster.sample_sources(), host=host.HostMonitor())
    writer = _TokenWriter(url, run_id)
    offsets: list[float] = []
    pieces: list[str] = []
    prompt_tokens = 0
    start_detail: dict[str, Any] = {}
    live = _LiveFeed(emit, sampler, cluster, links_before)
    next_metrics = 0.0
    stopped: BaseException | None = None
    watchdog = StallWatchdog(cluster, settings.stall_timeout_s, "generation")

    def on_idle() -> None:
        # Between events: a cancel must not wait for the next token (a hung node
        # may never send one), and a cluster where nothing moves is a stall.
        if should_cancel is not None and should_cancel():
            raise RunCancelled()
        watchdog.check()

    t0 = time.monotonic()
    sampler.start(t0)
    live.start()
    try:
        try:
            for event in cluster.client.generate(
                config.prompt,
                config.max_tokens,
                temperature=config.temperature,
                seed=config.seed,
                on_idle=on_idle,
            ):
                watchdog.progress()
                kind = event.get("type")
                if kind == "start":
                    prompt_tokens = int(event.get("prompt_tokens", 0))
                    start_detail = event.get("detail") or {}
                    clock = event.get("clock")
                    if isinstance(clock, dict) and isinstance(clock.get("origin"), int | float):
                        clock_origin = float(clock["origin"])
                elif kind == "token":
                    if not offsets:  # the root's connections to the links exist now
                        root_clients = _root_clients(cluster)
                    offsets.append(float(event["offset_ms"]))
                    pieces.append(str(event["text"]))
                    writer.add(len(offsets) - 1, offsets[-1], pieces[-1], event.get("detail"))
                    emit(
                        {
                            "type": "token",
                            "index": len(offsets) - 1,
                            "offset_ms": offsets[-1],
                            "text": pieces[-1],
                        }
                    )
                    # Running metrics: TTFT with the first token, then TPOT and
                    # tokens/s as they settle (the same definitions as the final ones).
                    if time.monotonic() >= next_metrics:
                        next_metrics = time.monotonic() + LIVE_EVERY_S
                        live_metrics = timeline.compute(offsets, prompt_tokens).to_dict()
                        emit({"type": "metrics", "live": True, **live_metrics})
                    if should_cancel is not None and should_cancel():
                        raise RunCancelled()
        except EngineError as exc:
            # A broken stream is almost always a node that died: name it.
            time.sleep(0.2)  # let the dying node's exit status settle
            failure: ClusterError
            try:
                cluster.check_alive()
                failure = ClusterError(f"generation failed: {exc}")
            except NodeFailure as node_failure:
                failure = node_failure
                cluster.broken = node_failure
            failure.node_logs = cluster.node_logs()
            raise failure from exc
    except (RunCancelled, KeyboardInterrupt, ClusterError) as exc:
        # What was measured up to a cancel (or a node failure) is kept: the metrics
        # of the tokens produced so far, the node samples, the link counters.
        stopped = exc
    except BaseException:
        writer.flush()  # any other failure: the tokens so far are kept
        raise
    finally:
        live.stop()
        samples = sampler.stop()
    try:
        try:
            links_after = cluster.link_stats()
        except ClusterError:
            if stopped is None:
                raise
            links_after = {}  # a cancelled run still keeps its tokens and samples
        try:
            traces = cluster.link_chunks(window_start) if clock_origin is not None else {}
        except ClusterError:
            if stopped is None:
                raise
            traces = {}

        metrics = timeline.compute(offsets, prompt_tokens)
        link_rows: dict[str, dict[str, Any]] = {
            name: _link_delta(links_before.get(name), st) for name, st in links_after.items()
        }
        total_bytes = int(sum(r["bytes_up"] + r["bytes_down"] for r in link_rows.values()))
        values: dict[str, Any] = {
            "output_text": "".join(pieces),
            "load_ms": run_load_ms(start_detail, cluster, runs_before),
            "net_bytes_per_token": timeline.net_bytes_per_token(total_bytes, len(offsets)),
            **metrics.to_dict(),
        }
        assert sampler.host is not None
        contention = sampler.host.result(
            host.cluster_cpu_seconds((s.node, s.offset_ms, s.cpu_percent) for s in samples)
        )
        if contention is not None:
            values["host_contention"] = contention.to_dict()
            values["contended"] = contention.contended
        if traces and clock_origin is not None:
            timings = linktiming.compute(
                traces, linktiming.RootClock(clock_origin, offsets), root_clients
            )
            for name, lt in timings.items():
                startup = startup_links.get(name)
                if startup is not None:
                    lt.bytes["load"] += startup.up.bytes + startup.down.bytes
                if name in link_rows:
                    link_rows[name].update(_timing_columns(lt))
            values["net_bytes_per_token"] = linktiming.decode_bytes_per_token(timings)
            values["round_trips_per_token"] = linktiming.round_trips_per_token(timings)
            for phase in linktiming.PHASES:
                values[f"net_{phase}_bytes"] = sum(lt.bytes[phase] for lt in timings.values())
        sample_rows = [sample.to_dict() for sample in samples]
        if stopped is None:
            stored = store.succeed_run(
                run_id, values, samples=sample_rows, links=link_rows, tokens=writer.take()
            )
        else:
            # A stopped run's status is set by the caller, which reports why it stopped.
            stored = store.keep_measurements(
                run_id, values, samples=sample_rows, links=link_rows, tokens=writer.take()
            )
        if not stored:
            raise RunLost(f"run {run_id} is no longer this executor's ({store.run_status(run_id)})")
        writer.stored()
        emit(
            {
                "type": "metrics",
                **metrics.to_dict(),
                "net_bytes_per_token": values["net_bytes_per_token"],
            }
        )
    except RunLost:
        raise  # not ours any more (claimed again elsewhere): its tokens must not be written
    except BaseException:
        writer.flush()  # the outcome could not be stored: the tokens are kept all the same
        raise
    if stopped is not None:
        raise stopped


class _LiveFeed:
    """Publishes node samples and link counters while a run generates.

    A thread of its own, so the charts grow during a long prefill too (no tokens yet).
    Samples are sent once each (late viewers replay them from the event log); link
    counters are cumulative for this run, the same deltas as the stored rows.
    """

    def __init__(
        self,
        emit: EventSink,
        sampler: NodeSampler,
        cluster: Cluster,
        links_before: dict[str, LinkStats],
        every_s: float = LIVE_EVERY_S,
    ) -> None:
        self.emit = emit
        self.sampler = sampler
        self.cluster = cluster
        self.links_before = links_before
        self.every_s = every_s
        self._sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="live-feed", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.publish()
            except Exception:  # a viewer aid must never fail the run
                continue

    def publish(self) -> None:
        samples = self.sampler.samples[self._sent :]
        self._sent += len(samples)
        if samples:
            self.emit({"type": "samples", "samples": [s.to_dict() for s in samples]})
        rows = [
            {"link": name, **_link_delta(self.links_before.get(name), stats)}
            for name, stats in sorted(self.cluster.link_stats().items())
        ]
        if rows:
            self.emit({"type": "links", "links": rows})

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            # A dead or hung node's link control would only time out (and then emit
            # nothing): do not make the run's verdict wait for it.
            self._thread.join(timeout=0.5 if self.cluster.broken is not None else 5)
            self._thread = None


def _root_clients(cluster: Cluster) -> set[str]:
    try:
        return cluster.root_clients()
    except Exception:  # only an aid to tell root from worker traffic apart
        return set()


def _timing_columns(lt: linktiming.LinkTiming) -> dict[str, Any]:
    """``LinkStat`` columns from one link's timing (the rest goes to ``timing``)."""
    row: dict[str, Any] = {
        **{f"bytes_{phase}": lt.bytes[phase] for phase in linktiming.PHASES},
        "round_trips_prefill": lt.round_trips["prefill"],
        "round_trips_decode": lt.round_trips["decode"],
        **{f"decode_{kind}_ms": lt.ms["decode"][kind] for kind in linktiming.KINDS},
        "timing": lt.to_json(),
    }
    for direction in ("up", "down"):
        summary = lt.delay.get(direction, {})
        for stat in ("p50", "p99", "max"):
            row[f"eff_delay_{stat}_ms_{direction}"] = summary.get(stat)
    return row


def run_load_ms(start_detail: dict[str, Any], cluster: Cluster, runs_before: int) -> float | None:
    """The model load this run itself waited for, never another run's.

    An engine that loads per request (dllama's per-run mode) reports the load in
    the stream's start event: that is the run's own. Otherwise the only load is
    the cluster start, which belongs to the run the cluster was started for; a
    run on an already warm cluster loaded nothing (``None``), and the cluster's
    start-up stays in ``measurement.cluster`` of every run it served.
    """
    own = start_detail.get("load_ms")
    if isinstance(own, int | float):
        return float(own)
    return cluster.startup_ms if runs_before == 0 else None


def measurement_of(info: dict[str, Any], cluster: Cluster, runs_before: int) -> dict[str, Any]:
    """How this run is measured, from the root's ``/info`` and the cluster's history."""
    per_run_load = bool(info.get("weights_streamed_per_inference", False))
    return {
        # dllama: "api" (warm dllama-api) or "inference" (one per run); llama.cpp: "rpc".
        "mode": info.get("mode"),
        # Whose per-token compute/network split the token details carry (None: the
        # engine reports none; the link proxies' counters are the network side).
        "per_token_split": info.get("per_token_split"),
        "token_events": info.get("token_events"),
        "weights_streamed_per_run": per_run_load,
        "load_ms": "this run's own model load"
        if per_run_load
        else ("the cluster start (this run started it)" if runs_before == 0 else None),
        "cluster": {
            "startup_ms": cluster.startup_ms,
            "root_load_ms": info.get("load_ms"),
            "runs_before": runs_before,
        },
    }
