"""Fixtures for the chaos tests: faults injected into real workers, nodes and brokers.

``chaos_timing`` records how long a fault took to be noticed (``detect_s``) and
to be resolved (``recover_s``). The tests print one ``CHAOS-TIMING`` JSON line per
fault and, when ``EDGELAB_CHAOS_TIMINGS`` names a file, append it there;
``bench/chaos_bench.py`` runs the chaos tests with that variable set and turns the
lines into the table in bench/RESULTS.md. Numbers are recorded, never asserted
beyond the bounds the issue states.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

TIMINGS_ENV = "EDGELAB_CHAOS_TIMINGS"

RecordTiming = Callable[..., None]


@pytest.fixture
def chaos_timing(request: pytest.FixtureRequest) -> RecordTiming:
    """``chaos_timing("fault row", detect_s=1.2, recover_s=3.4, note="...")``."""

    def record(row: str, **values: float | str | None) -> None:
        entry = {"row": row, "test": request.node.name, **values}
        line = json.dumps(entry, sort_keys=True)
        print(f"CHAOS-TIMING {line}")
        path = os.environ.get(TIMINGS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    return record
