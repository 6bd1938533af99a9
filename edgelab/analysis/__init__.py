"""Statistics over stored runs: groups with CIs, scaling, significance, a performance model.

Pure functions over :class:`RunRecord` values (built from ``Run`` rows by
:func:`load_records`), shared by the JSON API, the pages, the CLI and the report
so they can never disagree on a number. The modules, smallest first:

- :mod:`~edgelab.analysis.records`: the record, the loader, delay of a profile;
- :mod:`~edgelab.analysis.stats`: Student-t summaries, Welch, bootstrap, ratio CIs;
- :mod:`~edgelab.analysis.groups`: configurations -> n, mean, sd, CV, CI, flags;
- :mod:`~edgelab.analysis.scaling`: speedup and efficiency vs nodes;
- :mod:`~edgelab.analysis.model`: TPOT(N, d, bw) fit, prediction, break-even;
- :mod:`~edgelab.analysis.significance`: B vs A verdicts;
- :mod:`~edgelab.analysis.breakdown`: one run's per-token time split (root, workers,
  injected delay, transfer); :mod:`~edgelab.analysis.config_breakdown`: its mean per
  configuration;
- :mod:`~edgelab.analysis.summary`: :func:`analyze` (a sweep) and :func:`compare`.

Typical use::

    records = load_records(session, sweep_id=7)
    result = analyze(records)          # result.to_dict() is the API's JSON
    fit = result.fits[0]
    fit.predict(8, delay_ms=5.0)       # TPOT at 8 nodes, 5 ms one-way
    fit.break_even(3)                  # largest delay at which 3 nodes beat 1
"""

from edgelab.analysis.config_breakdown import ConfigBreakdown, config_breakdowns
from edgelab.analysis.groups import MIN_RUNS, ConfigKey, Group, group_records
from edgelab.analysis.model import FORMULA, BreakEven, ModelFit, Residual, fit_model, fit_models
from edgelab.analysis.records import (
    METRICS,
    RunRecord,
    load_records,
    record_from_run,
    records_from_runs,
    rtt_delay_ms,
)
from edgelab.analysis.scaling import ScalingPoint, ScalingSeries, scaling
from edgelab.analysis.significance import Comparison, MetricTest, compare_groups, pairwise
from edgelab.analysis.stats import Summary, summarize, welch
from edgelab.analysis.summary import (
    CompareAnalysis,
    SweepAnalysis,
    analyze,
    analyze_sweep,
    clear_cache,
    compare,
    compare_runs,
    differing_fields,
    runs_version_columns,
    sweep_analysis_dict,
    sweep_breakdowns,
)

__all__ = [
    "FORMULA",
    "METRICS",
    "MIN_RUNS",
    "BreakEven",
    "CompareAnalysis",
    "Comparison",
    "ConfigBreakdown",
    "ConfigKey",
    "Group",
    "MetricTest",
    "ModelFit",
    "Residual",
    "RunRecord",
    "ScalingPoint",
    "ScalingSeries",
    "Summary",
    "SweepAnalysis",
    "analyze",
    "analyze_sweep",
    "clear_cache",
    "compare",
    "compare_groups",
    "compare_runs",
    "config_breakdowns",
    "differing_fields",
    "fit_model",
    "fit_models",
    "group_records",
    "load_records",
    "pairwise",
    "record_from_run",
    "records_from_runs",
    "rtt_delay_ms",
    "runs_version_columns",
    "scaling",
    "summarize",
    "sweep_analysis_dict",
    "sweep_breakdowns",
    "welch",
]
