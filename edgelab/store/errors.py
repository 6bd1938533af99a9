"""Typed errors of the store: each says what was refused and maps to one HTTP code.

Like MLflow's ``MlflowException`` error codes, the class tells a caller (the API,
the pages, the CLI) how to answer without parsing a message: ``NotFound`` -> 404,
``InvalidTransition`` -> 409. ``NotFound`` is also a ``LookupError`` so code that
predates the store keeps working.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises on purpose."""

    http_status = 400


class NotFound(StoreError, LookupError):
    http_status = 404

    def __init__(self, kind: str, ident: int) -> None:
        super().__init__(f"{kind} {ident} not found")
        self.kind = kind
        self.ident = ident


class RunNotFound(NotFound):
    def __init__(self, run_id: int) -> None:
        super().__init__("run", run_id)


class SweepNotFound(NotFound):
    def __init__(self, sweep_id: int) -> None:
        super().__init__("sweep", sweep_id)


class InvalidTransition(StoreError):
    """The run or sweep is in a state from which the requested change is illegal."""

    http_status = 409

    def __init__(self, kind: str, ident: int, current: str, target: str, verb: str = "") -> None:
        what = verb or f"become {target}"
        super().__init__(f"{kind} {ident} already {current}: it cannot {what}")
        self.kind = kind
        self.ident = ident
        self.current = current
        self.target = target
