"""Helpers of the queue and chaos tests: the API through Flask's test client, and waiting.

Not fixtures: the tests call them many times with different arguments. They sit
beside ``conftest.py`` (whose directory pytest puts on ``sys.path``), so the
modules in ``chaos/`` import them too.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from edgelab.service import create_app
from edgelab.settings import Settings


def api_client(settings: Settings) -> FlaskClient:
    """A test client of the app for ``settings`` (no worker in this process)."""
    return create_app(settings, {"TESTING": True}).test_client()


def wait_for(
    fetch: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    poll_s: float,
) -> dict[str, Any]:
    """``fetch()`` every ``poll_s`` until ``done`` says yes; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    data = fetch()
    while not done(data):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting after {timeout_s:.0f} s; last state: {data}")
        time.sleep(poll_s)
        data = fetch()
    return data


def run_json(client: FlaskClient, run_id: int) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/runs/{run_id}").get_json()
    return data


def sweep_json(client: FlaskClient, sweep_id: int) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/sweeps/{sweep_id}").get_json()
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
