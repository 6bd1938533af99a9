"""What every request passes before a view sees it, and how errors leave the app.

In order:

1. **Host allowlist** (:attr:`Settings.allowed_hosts`, ``EDGELAB_ALLOWED_HOSTS``):
   a request whose ``Host`` names another site is refused with 400. This is what
   stops DNS rebinding: a page on ``evil.example`` whose name is made to resolve to
   127.0.0.1 reaches this port, but with ``Host: evil.example``; without this
   check it could fetch a form's CSRF token and post it back, or call the API.
2. **Cross-site writes**: a state-changing request whose ``Origin`` is not an
   allowed host is refused with 403 (browsers send ``Origin`` with every
   cross-site POST). The allowlist, not the request's own ``Host``, is the
   reference: a spoofed Host cannot vouch for itself.
3. **API token** (``EDGELAB_API_TOKEN``) on ``/api``; the pages check it in
   :mod:`edgelab.service.web.access`.
4. **Ids in range**: a path id outside the database's integer range is a 400
   naming the parameter (it used to overflow PostgreSQL's ``integer`` into a 500).

Errors under ``/api`` are JSON with ``errors: {field: message}`` where a field is
to blame; ``405`` keeps its ``Allow`` header; a body over
:data:`~edgelab.validation.documents.MAX_BODY_BYTES` is a 413 naming ``body``.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from edgelab.settings import Settings
from edgelab.validation.documents import MAX_BODY_BYTES
from edgelab.validation.fields import ID
from edgelab.validation.values import quote

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AsciiIntConverter(IntegerConverter):
    """``<int:...>`` with ASCII digits only: werkzeug's ``\\d`` also matches ``١`` (Arabic-Indic
    one), which then silently became run 1."""

    regex = r"[0-9]{1,30}"


def host_name(netloc: str) -> str:
    """``[::1]:8080`` -> ``::1``, ``LocalHost.:80`` -> ``localhost``; '' if unparseable."""
    try:
        name = urlsplit(f"//{netloc}").hostname or ""
    except ValueError:
        return ""
    return name.rstrip(".").lower()


def host_allowed(settings: Settings, netloc: str) -> bool:
    allowed = settings.allowed_hosts
    return "*" in allowed or host_name(netloc) in allowed


def _is_api() -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def _refuse(status: int, message: str, errors: dict[str, str] | None = None) -> Any:
    if _is_api() or (request.endpoint or "").endswith(("_data", "_events")):
        body: dict[str, Any] = {"error": message}
        if errors:
            body["errors"] = errors
        return jsonify(body), status
    return Response(message + "\n", status=status, mimetype="text/plain")


def register_guards(app: Flask, settings: Settings) -> None:
    """Install the checks of the module docstring and the JSON error handlers."""
    # Flask's default is None (no limit at all); a test's own value is kept.
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.before_request
    def _check_host() -> Any:
        if host_allowed(settings, request.host):
            return None
        shown = quote(host_name(request.host) or request.host)
        return _refuse(
            400,
            f"Host {shown} is not served here; allowed hosts: "
            f"{', '.join(settings.allowed_hosts)} (EDGELAB_ALLOWED_HOSTS)",
            {"Host": "not an allowed host name"},
        )

    @app.before_request
    def _refuse_cross_site_writes() -> Any:
        if request.method in SAFE_METHODS:
            return None
        origin = request.headers.get("Origin")
        if origin is None:
            return None  # not a browser (scripts, the CLI), or a same-origin legacy browser
        parts = urlsplit(origin) if origin != "null" else None
        if (
            parts is not None
            and parts.scheme in ("http", "https")
            and host_allowed(settings, parts.netloc)
        ):
            return None
        return _refuse(
            403,
            f"cross-site request from {quote(origin)} refused: its origin is not an allowed "
            "host (EDGELAB_ALLOWED_HOSTS)",
            {"Origin": "not an allowed host"},
        )

    @app.before_request
    def _require_token() -> Any:
        if not settings.api_token or not _is_api():
            return None
        given = request.headers.get("X-Edgelab-Token", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :]
        if hmac.compare_digest(given.encode(), settings.api_token.encode()):
            return None
        return jsonify(error="missing or wrong API token (X-Edgelab-Token or Bearer)"), 401

    @app.before_request
    def _ids_in_range() -> Any:
        lo, hi = ID.bounds()
        errors = {
            name: f"must be between {lo} and {hi}, got {quote(value)}"
            for name, value in (request.view_args or {}).items()
            if name.endswith("_id") and isinstance(value, int) and not lo <= value <= hi
        }
        if errors:
            return _refuse(400, "invalid request", errors)
        return None

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if not _is_api():
            return exc
        body: dict[str, Any] = {"error": exc.description or exc.name}
        if exc.code == 413:
            body["errors"] = {"body": f"is larger than {MAX_BODY_BYTES} bytes"}
        resp = jsonify(body)
        resp.status_code = exc.code or 500
        # 405 must say which methods are allowed (RFC 9110 15.5.6).
        for key, value in exc.get_headers():
            if key.lower() != "content-type":
                resp.headers[key] = value
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        app.logger.exception("unhandled error on %s", request.path)
        if not _is_api():
            raise exc
        return jsonify(error=f"internal error: {type(exc).__name__}"), 500


__all__ = ["AsciiIntConverter", "host_allowed", "host_name", "register_guards"]
