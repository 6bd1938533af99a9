"""Sweeps: a grid of run configurations submitted together.

:mod:`edgelab.sweeps.spec` turns a spec (YAML/JSON) into validated cells and
groups them by topology; :mod:`edgelab.sweeps.control` keeps a sweep's state in
the database (progress, cancel, resume). Queueing lives in :mod:`edgelab.tasks`.
"""

from edgelab.sweeps.spec import Cell, SpecError, SweepSpec, expand, load_spec_text, parse_spec

__all__ = ["Cell", "SpecError", "SweepSpec", "expand", "load_spec_text", "parse_spec"]
