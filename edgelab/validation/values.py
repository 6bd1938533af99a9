"""Checks of single values: whole numbers, finite numbers, clean text, short quotes.

Every check raises :class:`FieldError` with a message that never quotes more than
:data:`QUOTE_CHARS` characters of the bad value, so a 100 kB model name cannot
become a 200 kB error body. Text from forms, query strings and the command line
is parsed with ASCII-only patterns: Python's ``str.isdigit()`` and ``int()`` also
accept ``²`` and Arabic-Indic digits, which the database and users do not mean.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: Postgres ``integer`` (and so every id and counter column of ours) holds at most this.
DB_INT_MAX = 2**31 - 1
#: How much of a bad value an error message quotes.
QUOTE_CHARS = 40

_INT_TEXT = re.compile(r"[+-]?[0-9]{1,19}")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]{1,19}(?:\.[0-9]{0,19})?|\.[0-9]{1,19})")
# Control characters (C0, DEL, C1), except tab, line feed and carriage return
# (allowed in prompts); written as regex source so the OpenAPI patterns say the same.
CONTROL_CHARS = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"
LINE_CONTROL_CHARS = "\\x00-\\x1f\\x7f-\\x9f"
#: Blank means only these (JSON Schema's ``\\s``, so the documented pattern agrees).
BLANK_CHARS = (
    "\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
)
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")
_CONTROL_ONE_LINE = re.compile(f"[{LINE_CONTROL_CHARS}]")
_BLANK = re.compile(f"[{BLANK_CHARS}]*")
_SURROGATE = re.compile("[\ud800-\udfff]")


class FieldError(ValueError):
    """One value is invalid; the message says why (the caller knows the field's name)."""


class InvalidInput(ValueError):
    """One or more fields are invalid; ``errors`` maps each field to its message.

    The parsers raise it (or a subclass) with every problem of an input at once, so
    the API answers with all of them and a form shows each beside its field.
    """

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def quote(value: Any) -> str:
    """A short, safe rendering of a value for an error message."""
    text = value if isinstance(value, str) else _type_or_repr(value)
    if isinstance(value, str):
        shown = repr(text[:QUOTE_CHARS])
        return shown if len(text) <= QUOTE_CHARS else f"{shown[:-1]}...' ({len(text)} characters)"
    return text


def _type_or_repr(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        digits = len(str(abs(value))) if abs(value) < 10**60 else None
        if digits is None:
            return "a number with more than 60 digits"
        return str(value) if digits <= QUOTE_CHARS else f"a {digits}-digit number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"an object with {len(value)} field(s)"
    return type(value).__name__


def got(value: Any) -> str:
    """What a value is, for "must be X, got ..." messages: its JSON type and a short quote."""
    if value is None or isinstance(value, list | dict):
        return quote(value)
    return f"{json_type(value)} {quote(value)}"


def json_type(value: Any) -> str:
    """The JSON name of a value's type, as users see it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def whole_number(value: Any, lo: int, hi: int) -> int:
    """A JSON integer in [lo, hi]; ``32.0`` counts (JSON Schema's integer), booleans do not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"must be a whole number, got {got(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise FieldError(f"must be a whole number, got {quote(value)}")
        value = int(value)
    if not lo <= value <= hi:
        raise FieldError(f"must be between {lo} and {hi}, got {quote(value)}")
    return int(value)


def number(value: Any, lo: float, hi: float) -> float:
    """A finite JSON number in [lo, hi]; booleans are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"must be a number, got {got(value)}")
    if isinstance(value, int) and abs(value) > 10**300:
        raise FieldError(f"must be between {lo:g} and {hi:g}, got {quote(value)}")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise FieldError(f"must be a finite number, got {quote(value)}")
    if not lo <= as_float <= hi:
        raise FieldError(f"must be between {lo:g} and {hi:g}, got {quote(value)}")
    return as_float


def _ascii_hint(text: str) -> str:
    if any(c.isdigit() and not c.isascii() for c in text):
        return " (only the digits 0-9)"
    if len(text) > 19 and text.lstrip("+-").isascii() and text.lstrip("+-").isdigit():
        return " (at most 19 digits)"
    return ""


def int_text(text: str) -> int:
    """Form/query/CLI text to an int: ASCII digits with an optional sign, nothing else."""
    stripped = text.strip()
    if not _INT_TEXT.fullmatch(stripped):
        raise FieldError(f"must be a whole number, got {quote(text)}{_ascii_hint(stripped)}")
    return int(stripped)


def number_text(text: str) -> float:
    """Form/query/CLI text to a finite float: ASCII digits, one optional point, no exponent."""
    stripped = text.strip()
    if not _NUMBER_TEXT.fullmatch(stripped):
        raise FieldError(f"must be a number, got {quote(text)}{_ascii_hint(stripped)}")
    return float(stripped)


def clean_text(
    value: Any, *, max_chars: int, multiline: bool = False, allow_empty: bool = False
) -> str:
    """A string without NUL or control characters (tab/newlines only if ``multiline``)."""
    if not isinstance(value, str):
        raise FieldError(f"must be a string, got {got(value)}")
    if len(value) > max_chars:
        raise FieldError(f"must be at most {max_chars} characters, got {len(value)}")
    if not allow_empty and _BLANK.fullmatch(value):
        raise FieldError("must not be empty")
    pattern = _CONTROL if multiline else _CONTROL_ONE_LINE
    bad = pattern.search(value)
    if bad is not None:
        raise FieldError(
            f"must not contain control characters (found U+{ord(bad.group()):04X} "
            f"at position {bad.start()})"
        )
    if _SURROGATE.search(value):
        raise FieldError("must not contain unpaired surrogate characters")
    return value


__all__ = [
    "BLANK_CHARS",
    "CONTROL_CHARS",
    "DB_INT_MAX",
    "LINE_CONTROL_CHARS",
    "QUOTE_CHARS",
    "FieldError",
    "InvalidInput",
    "clean_text",
    "got",
    "int_text",
    "json_type",
    "number",
    "number_text",
    "quote",
    "whole_number",
]
