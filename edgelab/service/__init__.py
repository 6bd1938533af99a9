"""The web service: ``create_app(settings)`` wires the Flask app, its extensions and Celery.

This module only wires. The JSON API lives in :mod:`edgelab.service.api`; more
blueprints (the web viewer) are added in :func:`register_blueprints`.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from edgelab.embedded import resolve_redis_url
from edgelab.service.extensions import db
from edgelab.settings import Settings
from edgelab.tasks.celery_app import celery_config, celery_init_app


def create_app(settings: Settings | None = None, config: dict[str, Any] | None = None) -> Flask:
    """The Flask app for ``settings`` (default: from the environment).

    ``config`` overrides Flask config keys (tests use it, e.g. ``TESTING``). The
    Celery app is always created; without a broker URL, submitting work answers 503.
    """
    settings = settings if settings is not None else Settings.from_env()
    redis_url = resolve_redis_url(settings)
    app = Flask(__name__)
    celery_conf = celery_config(redis_url or "memory://")
    celery_conf["edgelab_database_url"] = settings.database_url
    app.config.from_mapping(CELERY=celery_conf)
    if config:
        app.config.update(config)
    app.extensions["edgelab_settings"] = settings
    app.extensions["edgelab_redis_url"] = redis_url

    db.init_app(app, settings.database_url)
    celery_init_app(app)
    register_blueprints(app)
    register_api_guards(app, settings)
    return app


def register_blueprints(app: Flask) -> None:
    """Every blueprint of the service; the web viewer adds its own line here."""
    from edgelab.service.api import api

    app.register_blueprint(api, url_prefix="/api")
    from edgelab.service.web import web  # the viewer's pages (issue 7)

    app.register_blueprint(web)


def register_api_guards(app: Flask, settings: Settings) -> None:
    """JSON errors under ``/api`` (never an HTML page), and the API token if one is set."""

    @app.before_request
    def _require_token() -> Any:
        if not settings.api_token or not request.path.startswith("/api/"):
            return None
        given = request.headers.get("X-Edgelab-Token", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :]
        if hmac.compare_digest(given.encode(), settings.api_token.encode()):
            return None
        return jsonify(error="missing or wrong API token (X-Edgelab-Token or Bearer)"), 401

    @app.before_request
    def _refuse_cross_site_writes() -> Any:
        # The API has no CSRF token (scripts and CLIs call it), so a page on another
        # site must not be able to make a visitor's browser start or cancel runs on
        # a loopback instance: browsers send Origin with every cross-site POST.
        if request.method in ("GET", "HEAD", "OPTIONS") or not request.path.startswith("/api/"):
            return None
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            return jsonify(error=f"cross-site request from {origin} refused"), 403
        return None

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return exc
        return jsonify(error=exc.description or exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        app.logger.exception("unhandled error on %s", request.path)
        if not request.path.startswith("/api/"):
            raise exc
        return jsonify(error=f"internal error: {type(exc).__name__}"), 500


__all__ = ["create_app", "register_blueprints"]
