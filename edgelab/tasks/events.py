"""Live run events over Redis pub/sub, cancel flags, and the late-join stream.

While a run executes, every event of the executor's sink (status, progress, token,
metrics) is published on ``edgelab:db<N>:run:<id>:events`` and appended to a short-lived
list ``edgelab:run:<id>:log``. A viewer that joins late gets:

1. the tokens already stored in the database (the executor writes them in small
   batches),
2. then the events of the current execution from the list (covering tokens not yet
   flushed to the database),
3. then live events from the channel, to which it subscribed *before* step 1,

with tokens deduplicated by index, so nothing is missed or shown twice.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import redis
from sqlalchemy import select

from edgelab.models import Run, TokenEvent
from edgelab.models.db import session_scope
from edgelab.store import RUN_TERMINAL, RunStatus
from edgelab.tasks.locks import PREFIX

LOG_TTL_S = 3600
CANCEL_TTL_S = 7 * 24 * 3600


#: Connections one process may open to the broker. Every open event stream holds one
#: (its pub/sub subscription) for as long as it is open; redis-py's default of 100
#: made the 100th viewer's stream a 503 (web workers serve up to 1000 connections).
MAX_REDIS_CONNECTIONS = 2000


@cache
def redis_client(url: str) -> redis.Redis:
    """One client (connection pool) per URL per process; redis-py re-creates
    connections after fork, so a cached client is safe in Celery children."""
    return redis.Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=5, max_connections=MAX_REDIS_CONNECTIONS
    )


def channel(r: redis.Redis, run_id: int) -> str:
    """The run's pub/sub channel. Keys live in one Redis database, but pub/sub
    channels are server-wide: the database number is part of the name, so two
    edgelab installations on one server (different DBs) never hear each other."""
    db = r.connection_pool.connection_kwargs.get("db", 0)
    return f"{PREFIX}:db{db}:run:{run_id}:events"


def log_key(run_id: int) -> str:
    return f"{PREFIX}:run:{run_id}:log"


def cancel_key(run_id: int) -> str:
    return f"{PREFIX}:cancel:run:{run_id}"


def request_cancel(r: redis.Redis, run_ids: list[int]) -> None:
    """Raise the cancel flag of runs that are executing somewhere."""
    if run_ids:
        pipe = r.pipeline()
        for run_id in run_ids:
            pipe.set(cancel_key(run_id), "1", ex=CANCEL_TTL_S)
        pipe.execute()


def cancel_check(r: redis.Redis, run_id: int, every_s: float = 0.2) -> Callable[[], bool]:
    """A ``should_cancel`` for the executor, asking Redis at most every ``every_s``."""
    state = {"next": 0.0, "flag": False}

    def should_cancel() -> bool:
        now = time.monotonic()
        if not state["flag"] and now >= state["next"]:
            state["next"] = now + every_s
            # A broker hiccup must not fail a measurement: ask again next time.
            with contextlib.suppress(redis.RedisError):
                state["flag"] = bool(r.exists(cancel_key(run_id)))
        return bool(state["flag"])

    return should_cancel


class RunPublisher:
    """The executor's event sink for one run: publish live, keep a replayable log."""

    def __init__(self, r: redis.Redis, run_id: int) -> None:
        self.r = r
        self.run_id = run_id

    def __call__(self, event: dict[str, Any]) -> None:
        event = {**event, "run_id": self.run_id}
        blob = json.dumps(event, default=str)
        try:
            pipe = self.r.pipeline(transaction=False)
            if event.get("type") == "status" and event.get("status") == RunStatus.STARTING:
                pipe.delete(log_key(self.run_id))  # a re-execution starts a fresh log
            pipe.rpush(log_key(self.run_id), blob)
            pipe.expire(log_key(self.run_id), LOG_TTL_S)
            pipe.publish(channel(self.r, self.run_id), blob)
            pipe.execute()
        except redis.RedisError:
            pass  # viewers fall back to the database; the run itself goes on


def _db_state(database_url: str, run_id: int, after_index: int) -> tuple[str, list[dict[str, Any]]]:
    with session_scope(database_url) as s:
        status = s.scalar(select(Run.status).where(Run.id == run_id))
        if status is None:
            raise LookupError(f"run {run_id} not found")
        tokens = [
            {"type": "token", "index": t.index, "offset_ms": t.offset_ms, "text": t.text}
            for t in s.scalars(
                select(TokenEvent)
                .where(TokenEvent.run_id == run_id, TokenEvent.index > after_index)
                .order_by(TokenEvent.index)
            )
        ]
    return status, tokens


def _final_events(database_url: str, run_id: int) -> list[dict[str, Any]]:
    from edgelab.runs.views import METRIC_FIELDS

    with session_scope(database_url) as s:
        run = s.get(Run, run_id)
        if run is None:
            return []
        out: list[dict[str, Any]] = []
        # A cancelled or failed run keeps the metrics of the tokens it produced.
        if run.status == RunStatus.SUCCEEDED or run.output_tokens:
            out.append(
                {"type": "metrics", "run_id": run_id, **{f: getattr(run, f) for f in METRIC_FIELDS}}
            )
        # like the executor: metrics first, then the final status
        out.append({"type": "status", "status": run.status, "error": run.error, "run_id": run_id})
        return out


def stream_run_events(
    database_url: str,
    r: redis.Redis,
    run_id: int,
    *,
    idle_s: float = 15.0,
    recheck_s: float = 5.0,
    max_s: float = 6 * 3600,
) -> Iterator[dict[str, Any]]:
    """Replay then follow a run's events until it ends.

    Yields event dicts; ``{"type": "ping"}`` every ``idle_s`` of silence (keeps
    proxies from closing the stream) and ``{"type": "end", "status": ...}`` last.
    The database is re-checked every ``recheck_s`` so the stream ends even if the
    worker died without publishing a final status.
    """
    pubsub = r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel(r, run_id))
    try:
        last_index = -1
        status, tokens = _db_state(database_url, run_id, last_index)
        yield {"type": "status", "status": status, "run_id": run_id, "replay": True}
        for token in tokens:
            last_index = token["index"]
            yield {**token, "run_id": run_id, "replay": True}
        if status in RUN_TERMINAL:
            yield from _final_events(database_url, run_id)
            yield {"type": "end", "status": status, "run_id": run_id}
            return

        def fresh(event: dict[str, Any]) -> bool:
            nonlocal last_index
            if event.get("type") == "token":
                if int(event.get("index", -1)) <= last_index:
                    return False
                last_index = int(event["index"])
            return True

        for blob in r.lrange(log_key(run_id), 0, -1):
            event = json.loads(blob)
            if event.get("type") == "status" and event.get("status") == RunStatus.STARTING:
                continue  # already reported from the database
            if fresh(event):
                yield event
                if event.get("type") == "status" and event.get("status") in RUN_TERMINAL:
                    yield {"type": "end", "status": event["status"], "run_id": run_id}
                    return

        started = last_event = last_check = time.monotonic()
        while time.monotonic() - started < max_s:
            message = pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None and message.get("type") == "message":
                event = json.loads(message["data"])
                last_event = now
                if fresh(event):
                    yield event
                if event.get("type") == "status" and event.get("status") in RUN_TERMINAL:
                    # the executor sends metrics before the final status
                    yield {"type": "end", "status": event["status"], "run_id": run_id}
                    return
                continue
            if now - last_check >= recheck_s:
                last_check = now
                status, missed = _db_state(database_url, run_id, last_index)
                for token in missed:
                    if fresh(token):
                        yield {**token, "run_id": run_id}
                if status in RUN_TERMINAL:
                    yield from _final_events(database_url, run_id)
                    yield {"type": "end", "status": status, "run_id": run_id}
                    return
            if now - last_event >= idle_s:
                last_event = now
                yield {"type": "ping"}
        yield {"type": "end", "status": "timeout", "run_id": run_id}
    finally:
        pubsub.close()
