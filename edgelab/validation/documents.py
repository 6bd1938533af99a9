"""Whole documents (JSON request bodies, YAML/JSON sweep specs) read within limits.

What a hostile document can do to a parser, and what stops it here:

* size: at most :data:`MAX_BODY_BYTES` (Flask's ``MAX_CONTENT_LENGTH`` for request
  bodies, checked here too for spec files from the command line);
* nesting: at most :data:`MAX_DEPTH` levels (50,000 levels overflowed the stack);
* YAML aliases: at most :data:`MAX_YAML_NODES` nodes *after* expanding aliases (a
  303-byte "billion laughs" spec expanded to millions of values);
* numbers: ``NaN``/``Infinity``/``1e400`` are not finite and refused; integers of
  more than 4,000 digits (Python's conversion limit) become a marker that fails the
  field's bounds check instead of crashing the parser;
* types: only what JSON has (YAML dates, sets and binary are refused), string keys.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from edgelab.validation.values import FieldError, InvalidInput

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 16
MAX_YAML_NODES = 10_000
#: What an integer with more digits than Python converts becomes: far out of any bound.
HUGE_INT = 10**4000


class DocumentError(InvalidInput):
    """The document as a whole is unusable; ``errors`` maps a field (``body``/``spec``) to why."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FieldError(f"numbers must be finite; {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise FieldError(f"{name} is not a number JSON allows (numbers must be finite)")


def _int(text: str) -> int:
    return int(text) if len(text) <= 4000 else HUGE_INT


def load_json(data: bytes | str, *, field: str = "body") -> Any:
    """Parse a JSON document within the limits of this module."""
    if len(data) > MAX_BODY_BYTES:
        raise DocumentError({field: f"is larger than {MAX_BODY_BYTES} bytes"})
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(
            text, parse_float=_finite_float, parse_int=_int, parse_constant=_no_constant
        )
    except FieldError as exc:
        raise DocumentError({field: str(exc)}) from None
    except RecursionError:
        raise DocumentError({field: f"is nested deeper than {MAX_DEPTH} levels"}) from None
    except UnicodeDecodeError:
        raise DocumentError({field: "is not UTF-8 text"}) from None
    except ValueError as exc:
        raise DocumentError({field: f"is not valid JSON: {str(exc)[:120]}"}) from None
    check_plain(value, field)
    return value


def load_yaml(text: str, *, field: str = "spec") -> Any:
    """Parse YAML (of which JSON is a subset) within the limits of this module."""
    if len(text) > MAX_BODY_BYTES:
        raise DocumentError({field: f"is larger than {MAX_BODY_BYTES} bytes"})
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_yaml_nodes(node, field)
        value = yaml.safe_load(text)
    except RecursionError:
        raise DocumentError({field: f"is nested deeper than {MAX_DEPTH} levels"}) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = str(getattr(exc, "problem", "") or "syntax error")[:120]
        raise DocumentError({field: f"is not valid YAML or JSON: {problem}{where}"}) from None
    except ValueError as exc:  # e.g. a timestamp out of range, an over-long integer
        raise DocumentError({field: f"has a value YAML cannot read: {str(exc)[:120]}"}) from None
    check_plain(value, field)
    return value


def _check_yaml_nodes(root: yaml.Node, field: str) -> None:
    """Count nodes with aliases expanded (each visit counts), and the depth."""
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise DocumentError(
                {field: f"expands to more than {MAX_YAML_NODES} values (YAML aliases?)"}
            )
        if depth > MAX_DEPTH:
            raise DocumentError({field: f"is nested deeper than {MAX_DEPTH} levels"})
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, child in node.value:
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))


def check_plain(value: Any, field: str) -> None:
    """JSON types only, string keys, finite floats, at most MAX_DEPTH levels (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            raise DocumentError({field: f"is nested deeper than {MAX_DEPTH} levels"})
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise DocumentError({field: "has a key that is not a string"})
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise DocumentError({field: "has a number that is not finite (nan/inf)"})
        elif item is not None and not isinstance(item, str | int | bool):
            raise DocumentError(
                {field: f"has a {type(item).__name__} value; only JSON types are allowed"}
            )


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_YAML_NODES",
    "DocumentError",
    "check_plain",
    "load_json",
    "load_yaml",
]
