"""What a run publishes while it executes, and what a cancelled run keeps (issue 16).

Real llama.cpp nodes on the small model, real link proxies with a 10-30 ms profile.
The executor's event sink is a list here (the queue's sink publishes the same
events on Redis; the browser test follows them on the page).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest

from edgelab.catalog import Catalog
from edgelab.models.db import session_scope
from edgelab.runs.config import parse_config
from edgelab.runs.executor import create_run, execute_run
from edgelab.runs.views import run_detail
from edgelab.settings import Settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("no_leftover_nodes", "smollm2"),
]

PROMPT = "Name three planets."
LATENCY = ("--latency", "0ms", "--max-tokens", "6")


def _submit(settings: Settings, **fields: Any) -> int:
    raw = {"prompt": PROMPT, "nodes": 3, "threads": 1, "latency": "10ms..30ms", "max_tokens": 16}
    raw.update(fields)
    config, _ = parse_config(raw, Catalog(settings))
    with session_scope(settings.database_url) as s:
        return create_run(s, config).id


def test_running_metrics_samples_and_links_are_published_during_the_run(
    settings: Settings,
) -> None:
    run_id = _submit(settings)
    events: list[dict[str, Any]] = []
    result = execute_run(settings, run_id, sink=events.append)
    assert result.status == "succeeded", result.error
    kinds = [e["type"] for e in events]
    end = kinds.index("status", kinds.index("token"))  # the final status after the tokens
    first_token = kinds.index("token")
    # TTFT with the first token: the very next event carries it.
    after_first = events[first_token + 1]
    assert after_first["type"] == "metrics"
    assert after_first["live"] is True
    assert after_first["ttft_ms"] == events[first_token]["offset_ms"]
    live = [e for e in events[:end] if e["type"] == "metrics" and e.get("live")]
    assert all(e["output_tokens"] >= 1 for e in live)
    # Node samples and link counters before the run ended, not only after.
    live_samples = [s for e in events[:end] if e["type"] == "samples" for s in e["samples"]]
    live_links = [e for e in events[:end] if e["type"] == "links"]
    assert {s["node"] for s in live_samples} == {"root", "worker1", "worker2"}
    assert live_links
    assert {row["link"] for row in live_links[-1]["links"]} == {"root<->worker1", "root<->worker2"}
    assert all(row["bytes_up"] > 0 for row in live_links[-1]["links"])
    # The final metrics agree with the stored ones.
    stored = run_detail(settings.database_url, run_id)["metrics"]
    final = [e for e in events if e["type"] == "metrics" and not e.get("live")][-1]
    assert final["ttft_ms"] == stored["ttft_ms"]
    assert final["output_tokens"] == stored["output_tokens"]


def test_a_cancelled_run_keeps_what_it_measured(settings: Settings) -> None:
    run_id = _submit(settings, max_tokens=64)
    seen = {"tokens": 0}

    def sink(event: dict[str, Any]) -> None:
        if event["type"] == "token":
            seen["tokens"] += 1

    result = execute_run(settings, run_id, sink=sink, should_cancel=lambda: seen["tokens"] >= 5)
    assert result.status == "cancelled"
    data = run_detail(settings.database_url, run_id)
    assert data["status"] == "cancelled"
    assert data["metrics"]["output_tokens"] == 5
    assert len(data["tokens"]) == 5
    assert data["metrics"]["ttft_ms"] == data["tokens"][0]["offset_ms"]
    assert data["metrics"]["tpot_ms"] is not None
    assert data["output_text"] == "".join(t["text"] for t in data["tokens"])
    assert {s["node"] for s in data["samples"]} == {"root", "worker1", "worker2"}
    assert {link["link"] for link in data["links"]} == {"root<->worker1", "root<->worker2"}
    assert data["finished_at"] is not None


def test_cli_ends_the_streamed_answer_before_the_status_line(settings: Settings) -> None:
    env = dict(os.environ)
    env.update(
        {
            "EDGELAB_DATA_DIR": str(settings.data_dir),
            "EDGELAB_MODELS_DIR": str(settings.models_dir),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "edgelab", "run", "--prompt", PROMPT, "--nodes", "1", *LATENCY],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one terminal, as a user sees it
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    status = [line for line in lines if re.search(r"\[run \d+: succeeded\]", line)]
    assert len(status) == 1, proc.stdout
    assert re.fullmatch(r"\[run \d+: succeeded\]", status[0]), proc.stdout
    # the summary starts on its own line too
    assert any(re.match(r"run \d+ succeeded: 1 nodes", line) for line in lines), proc.stdout
