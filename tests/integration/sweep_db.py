"""A sweep stored from a spec and executed group by group, as the group tasks would.

For integration tests that run sweeps without a Celery worker: the spec is parsed
and expanded against the catalog, the sweep and its runs are created, and each
topology group goes through ``runner.run_group`` in this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from edgelab.catalog import Catalog
from edgelab.models import Run
from edgelab.models.db import session_scope
from edgelab.settings import Settings
from edgelab.sweeps import control, expand, parse_spec
from edgelab.sweeps.spec import Cell, group_by_topology
from edgelab.tasks.runner import run_group


@dataclass
class StoredSweep:
    id: int
    cells: list[Cell]
    #: Run id of each cell, by the cell's index.
    run_ids: dict[int, int]
    #: Run ids of each topology group (one warm cluster each), in execution order.
    groups: list[list[int]]


def store_sweep(
    settings: Settings, data: dict[str, Any], catalog: Catalog, max_cells: int = 100
) -> StoredSweep:
    spec = parse_spec(data, max_cells=max_cells)
    cells = expand(spec, catalog)
    with session_scope(settings.database_url) as s:
        sweep_id = control.create_sweep(s, spec, cells).id
    with session_scope(settings.database_url) as s:
        ids = list(s.scalars(select(Run.id).where(Run.sweep_id == sweep_id).order_by(Run.id)))
    run_ids = dict(zip(range(len(cells)), ids, strict=True))
    groups = [[run_ids[c.index] for c in group] for group in group_by_topology(cells)]
    return StoredSweep(sweep_id, cells, run_ids, groups)


def run_stored(settings: Settings, r: Any, sweep: StoredSweep, catalog: Catalog) -> None:
    """Every group of ``sweep`` through ``run_group`` (``r``: the Redis client)."""
    for group in sweep.groups:
        run_group(settings, r, group, sweep_id=sweep.id, catalog=catalog)
