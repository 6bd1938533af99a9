"""Extension objects shared by the web app and the Celery tasks, created unbound.

``create_app`` binds them; views and tasks reach the bound objects through the
current app context, never through module-level state tied to one configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, current_app
from sqlalchemy.orm import Session, scoped_session

from edgelab.models.db import session_factory
from edgelab.settings import Settings

if TYPE_CHECKING:
    from edgelab.store.actions import Actions


class Database:
    """A request/task-scoped session, removed when the app context ends."""

    def __init__(self) -> None:
        self._sessions: scoped_session[Session] | None = None

    def init_app(self, app: Flask, database_url: str) -> None:
        sessions = scoped_session(session_factory(database_url))
        app.extensions["edgelab_db"] = sessions

        @app.teardown_appcontext
        def _remove_session(_exc: BaseException | None) -> None:
            # Runs after each request and, through the Flask-aware task class,
            # after each Celery task: no session outlives its unit of work.
            sessions.remove()

    @property
    def session(self) -> Session:
        sessions: scoped_session[Session] = current_app.extensions["edgelab_db"]
        return sessions()


db = Database()


def current_settings() -> Settings:
    settings: Settings = current_app.extensions["edgelab_settings"]
    return settings


def current_redis() -> redis.Redis | None:
    """The broker's Redis, or None when no broker is configured (e.g. unit tests)."""
    from edgelab.tasks.events import redis_client

    url: str = current_app.extensions["edgelab_redis_url"]
    return redis_client(url) if url else None


def broker() -> redis.Redis | None:
    """The broker's Redis if it answers now, else None.

    Every submit path (API and pages) asks this first: work accepted without a
    reachable broker would sit in the database as queued with nobody to run it.
    """
    r = current_redis()
    if r is None:
        return None
    try:
        r.ping()
    except redis.RedisError:
        return None
    return r


def current_celery() -> Any:
    return current_app.extensions["celery"]


def current_actions() -> Actions:
    """Submit/cancel/re-run/resume for this app's database and broker (API and pages)."""
    from edgelab.store.actions import open_actions

    return open_actions(
        current_settings(), current_app.extensions["edgelab_redis_url"], current_celery()
    )
