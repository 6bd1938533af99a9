"""Settings come from EDGELAB_* variables; bad values name the variable."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from edgelab.settings import Settings, SettingsError


def test_defaults_are_local_and_safe() -> None:
    s = Settings.from_env({})
    assert s.database_url.startswith("sqlite:///")
    assert s.database_url.endswith("var/edgelab.db")
    assert s.redis_url == ""
    assert s.backend == "local"
    assert s.bind == "127.0.0.1:8080"
    assert s.models_dir == Path("var/models")


def test_values_from_environment(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "EDGELAB_DATA_DIR": str(tmp_path),
            "EDGELAB_DATABASE_URL": "postgresql://root@127.0.0.1/test",
            "EDGELAB_REDIS_URL": "redis://127.0.0.1:6379/3",
            "EDGELAB_BACKEND": "docker",
            "EDGELAB_BIND": "0.0.0.0:9000",
        }
    )
    assert s.database_url == "postgresql+psycopg://root@127.0.0.1/test"
    assert s.models_dir == tmp_path / "models"
    assert s.backend == "docker"
    assert (s.bind_host, s.bind_port) == ("0.0.0.0", 9000)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EDGELAB_BACKEND", "kubernetes"),
        ("EDGELAB_BIND", "localhost"),
        ("EDGELAB_BIND", "127.0.0.1:99999"),
        ("EDGELAB_DATABASE_URL", "mysql://x"),
        ("EDGELAB_REDIS_URL", "http://x"),
        ("EDGELAB_MAX_SWEEP_CELLS", "0"),
        ("EDGELAB_STALL_TIMEOUT", "0"),
        ("EDGELAB_STALL_TIMEOUT", "inf"),
        ("EDGELAB_START_STALL_TIMEOUT", "soon"),
        ("EDGELAB_KEEP_WORK_DIRS", "sometimes"),
        ("EDGELAB_WORK_DIR_KEEP_MB", "-1"),
        ("EDGELAB_WORK_DIR_KEEP_HOURS", ""),
        ("EDGELAB_LOCK_TTL", "1"),
        ("EDGELAB_LOCK_TTL", "thirty"),
        ("EDGELAB_RECONCILE_S", "0.1"),
        ("EDGELAB_RECONCILE_S", "nan"),
        ("EDGELAB_BROKER_RETRY_S", "0"),
        ("EDGELAB_BROKER_RETRY_S", "inf"),
        ("EDGELAB_RUN_TIME_LIMIT", "0"),
        ("EDGELAB_RUN_TIME_LIMIT", "half an hour"),
        ("EDGELAB_CLEANUP_GRACE", "-5"),
        ("EDGELAB_VISIBILITY_TIMEOUT", "not a number"),
        ("EDGELAB_HOST_ID", "two words"),
        ("EDGELAB_DOCKER_SELF", "../etc"),
        ("EDGELAB_NETEM_SPLICE", "no"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_watchdog_timeouts_default_to_a_minute_and_take_seconds() -> None:
    assert (Settings().stall_timeout_s, Settings().start_stall_timeout_s) == (60.0, 60.0)
    s = Settings.from_env({"EDGELAB_STALL_TIMEOUT": "7.5", "EDGELAB_START_STALL_TIMEOUT": "12"})
    assert (s.stall_timeout_s, s.start_stall_timeout_s) == (7.5, 12.0)


def test_queue_fault_tolerance_settings_default_and_take_seconds() -> None:
    """Lock TTL, reconciler period and broker retry budget are settings like the others
    (the queue code reads them from ``Settings``, not from the environment)."""
    assert (Settings().lock_ttl_s, Settings().reconcile_s, Settings().broker_retry_s) == (
        30.0,
        5.0,
        300.0,
    )
    s = Settings.from_env(
        {"EDGELAB_LOCK_TTL": "4", "EDGELAB_RECONCILE_S": "0.5", "EDGELAB_BROKER_RETRY_S": "2.5"}
    )
    assert (s.lock_ttl_s, s.reconcile_s, s.broker_retry_s) == (4.0, 0.5, 2.5)


def test_queue_budgets_host_and_docker_self_are_settings() -> None:
    """What the queue, the host lock, the Docker backend and the link proxies read
    comes from ``Settings`` (nothing in edgelab reads these variables itself)."""
    d = Settings()
    assert (d.run_time_limit_s, d.cleanup_grace_s, d.visibility_timeout_s) == (1800, 60, 3600)
    assert d.host_id == socket.gethostname()
    assert (d.docker_self, d.docker_models_source, d.netem_splice) == ("", "", True)
    s = Settings.from_env(
        {
            "EDGELAB_RUN_TIME_LIMIT": "5",
            "EDGELAB_CLEANUP_GRACE": "30",
            "EDGELAB_VISIBILITY_TIMEOUT": "90.5",
            "EDGELAB_HOST_ID": "host1",
            "EDGELAB_DOCKER_SELF": "edgelab-worker",
            "EDGELAB_DOCKER_MODELS_SOURCE": "edgelab-models",
            "EDGELAB_NETEM_SPLICE": "0",
        }
    )
    assert (s.run_time_limit_s, s.cleanup_grace_s, s.visibility_timeout_s) == (5, 30, 90.5)
    assert (s.host_id, s.docker_self, s.docker_models_source) == (
        "host1",
        "edgelab-worker",
        "edgelab-models",
    )
    assert s.netem_splice is False
    # A worker container's proxy builds its settings from what edgelab writes there.
    assert Settings.from_env(s.node_env()).netem_splice is False
    assert Settings.from_env(d.node_env()).netem_splice is True


def test_no_edgelab_variable_is_read_outside_settings() -> None:
    """The one place rule: reads of ``EDGELAB_*`` names from ``os.environ`` live in
    edgelab/settings.py only (writing a child's environment is fine). Every other
    read must name its variable literally, and no such name may start with EDGELAB_."""
    root = Path(__file__).resolve().parents[2] / "edgelab"
    reads = re.compile(r"(?:environ\.get|getenv)\(\s*([^,)]+)|environ\[([^\]]+)\](?!\s*=[^=])")
    allowed = re.compile(r"""["'](?!EDGELAB_)[A-Z][A-Z0-9_]*["']""")
    offenders = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for match in reads.finditer(line)
        if not allowed.fullmatch((match.group(1) or match.group(2)).strip())
    ]
    assert offenders == []
    # The pattern finds what it is meant to find.
    for line in ('os.environ.get("EDGELAB_HOST_ID")', "os.environ.get(ENV_VAR, '')"):
        found = reads.search(line)
        assert found is not None
        assert not allowed.fullmatch((found.group(1) or found.group(2)).strip())
    assert reads.search('os.environ["EDGELAB_DLLAMA_BIN"] = path') is None
    found = reads.search('os.environ.get("DOCKER_HOST", "unix://")')
    assert found is not None
    assert allowed.fullmatch(found.group(1).strip())
