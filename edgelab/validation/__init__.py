"""One validation layer for everything that comes in: API bodies and query strings,
web forms, YAML/JSON sweep specs and command-line options.

* :mod:`edgelab.validation.values`: single values (ASCII digits, finite numbers,
  clean text, short quotes of bad values in messages);
* :mod:`edgelab.validation.fields`: every field with its type, bounds, default and
  description, the registry the parsers, the forms and the OpenAPI document share;
* :mod:`edgelab.validation.documents`: whole documents within size, depth and YAML
  alias limits.

The parsers of runs (:func:`edgelab.runs.config.parse_config`) and sweeps
(:mod:`edgelab.sweeps.spec`) build on these and report every problem of an input at
once, as a mapping from field name to message (:class:`InvalidInput`). What they
return is validated: the actions that queue work receive nothing else.
"""

from __future__ import annotations

from edgelab.validation.documents import DocumentError, load_json, load_yaml
from edgelab.validation.fields import RUN_RULES, SWEEP_RULES, Rule
from edgelab.validation.values import FieldError, InvalidInput, quote

__all__ = [
    "RUN_RULES",
    "SWEEP_RULES",
    "DocumentError",
    "FieldError",
    "InvalidInput",
    "Rule",
    "load_json",
    "load_yaml",
    "quote",
]
