"""Units a person reads, the same in templates (format.py) and page scripts (format.js).

The JavaScript half runs under node (Debian's ``nodejs``, installed by ``.ci/run``);
both halves get the same table of cases, so they cannot drift apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgelab import units as fmt

FORMAT_JS = Path(fmt.__file__).resolve().parent / "service" / "static" / "format.js"

#: (kind, value, expected text)
CASES: list[tuple[str, Any, str]] = [
    # The example: bytes per token as a person reads them, not "259,258.0 B".
    ("bytes", 259258.0, "259 kB"),
    ("bytes", 0, "0 B"),
    ("bytes", 999, "999 B"),
    ("bytes", 1000, "1.00 kB"),
    ("bytes", 12345, "12.3 kB"),
    ("bytes", 98_200_000, "98.2 MB"),
    ("bytes", 999_600, "1.00 MB"),
    ("bytes", 1_520_000_000, "1.52 GB"),
    ("bytes", None, "—"),
    ("ms", 5395.2, "5,395 ms"),
    ("ms", 48.34, "48.3 ms"),
    ("ms", 3.14159, "3.14 ms"),
    ("ms", 12_345.0, "12.3 s"),
    ("ms", 754_000.0, "12.6 min"),
    ("ms", None, "—"),
    ("tok/s", 12.345, "12.3 tok/s"),
    ("tok/s", 5.4213, "5.42 tok/s"),
    ("tok/s", 154.7, "155 tok/s"),
    ("tok/s", None, "—"),
    ("count", 11, "11"),
    ("count", 12345, "12,345"),
    ("count", None, "—"),
]

METRIC_CASES: list[tuple[str, Any, str]] = [
    ("net_bytes_per_token", 259258.0, "259 kB"),
    ("ttft_ms", 312.46, "312 ms"),
    ("decode_tps", 7.891, "7.89 tok/s"),
    ("output_tokens", 11, "11"),
    ("load_ms", None, "—"),
]


@pytest.mark.parametrize(("kind", "value", "expected"), CASES)
def test_python_units(kind: str, value: Any, expected: str) -> None:
    assert fmt.fmt_kind(value, kind) == expected


@pytest.mark.parametrize(("name", "value", "expected"), METRIC_CASES)
def test_metric_units(name: str, value: Any, expected: str) -> None:
    assert fmt.fmt_metric(value, name) == expected


def test_every_metric_has_a_unit_kind() -> None:
    from edgelab.runs.views import METRIC_FIELDS

    assert set(METRIC_FIELDS) <= set(fmt.METRIC_KINDS)


def test_metric_parts_split_number_and_unit() -> None:
    assert fmt.metric_parts(259258.0, "net_bytes_per_token") == ("259", "kB")
    assert fmt.metric_parts(None, "ttft_ms") == ("—", "")


def test_javascript_agrees_with_python() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is missing: apt-get install nodejs")
    script = (
        f"const f = require({json.dumps(str(FORMAT_JS))});"
        f"const cases = {json.dumps(CASES)};"
        f"const metrics = {json.dumps(METRIC_CASES)};"
        "const out = cases.map(([k, v]) => f.kind(v, k))"
        "  .concat(metrics.map(([n, v]) => f.metric(v, n)));"
        "process.stdout.write(JSON.stringify({out: out, kinds: f.METRIC_KINDS}));"
    )
    result = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, timeout=30, check=True
    )
    got = json.loads(result.stdout)
    assert got["out"] == [c[2] for c in CASES] + [c[2] for c in METRIC_CASES]
    assert got["kinds"] == fmt.METRIC_KINDS
