"""The web service: ``create_app(settings)`` wires the Flask app, its extensions and Celery.

This module only wires. The JSON API lives in :mod:`edgelab.service.api`; more
blueprints (the web viewer) are added in :func:`register_blueprints`; what every
request passes first (Host allowlist, cross-site writes, token, limits) and the JSON
errors are in :mod:`edgelab.service.guards`.
"""

from __future__ import annotations

import gc
from typing import Any

from flask import Flask

from edgelab.embedded import resolve_redis_url
from edgelab.service.extensions import db
from edgelab.service.guards import AsciiIntConverter, register_guards
from edgelab.settings import Settings
from edgelab.tasks.celery_app import QueueOptions, celery_config, celery_init_app


def create_app(settings: Settings | None = None, config: dict[str, Any] | None = None) -> Flask:
    """The Flask app for ``settings`` (default: from the environment).

    ``config`` overrides Flask config keys (tests use it, e.g. ``TESTING``). The
    Celery app is always created; without a broker URL, submitting work answers 503.
    """
    settings = settings if settings is not None else Settings.from_env()
    redis_url = resolve_redis_url(settings)
    app = Flask(__name__)
    celery_conf = celery_config(redis_url or "memory://", QueueOptions.from_settings(settings))
    celery_conf["edgelab_database_url"] = settings.database_url
    # What the worker's reconciler timer needs from the settings (edgelab.tasks.signals
    # starts it from a Celery signal, which has the Celery app but not this one).
    celery_conf["edgelab_lock_ttl_s"] = settings.lock_ttl_s
    celery_conf["edgelab_reconcile_s"] = settings.reconcile_s
    app.config.from_mapping(CELERY=celery_conf)
    if config:
        app.config.update(config)
    app.extensions["edgelab_settings"] = settings
    app.extensions["edgelab_redis_url"] = redis_url

    db.init_app(app, settings.database_url)
    celery_init_app(app)
    # Before any route is added: the rules compile their converters when registered.
    app.url_map.converters["int"] = AsciiIntConverter
    register_guards(app, settings)
    register_blueprints(app)
    return app


def freeze_startup_heap() -> None:
    """Keep what the serving process holds after start-up out of the cyclic GC.

    A serving process imports Flask, SQLAlchemy, numpy and the analysis (~150k tracked
    objects) and keeps them for its whole life, yet every full collection walks them
    all: on a loaded 2-core host one took ~200 ms and came about once per ten analyses
    of a 1,000-run sweep, which set the sweep page's p95. ``gc.freeze`` moves them to a
    generation that is never collected (garbage made later is still collected);
    ``edgelab.service.wsgi`` calls it once the app exists.
    """
    gc.collect()  # what is garbage already is freed, not kept forever
    gc.freeze()


def register_blueprints(app: Flask) -> None:
    """Every blueprint of the service; the web viewer adds its own line here."""
    from edgelab.service.api import api

    app.register_blueprint(api, url_prefix="/api")
    from edgelab.service.web import web  # the viewer's pages (issue 7)

    app.register_blueprint(web)


__all__ = ["create_app", "freeze_startup_heap", "register_blueprints"]
