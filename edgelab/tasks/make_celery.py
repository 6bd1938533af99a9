"""The ``celery -A edgelab.tasks.make_celery`` target: the Flask app and its Celery app."""

from __future__ import annotations

from edgelab.service import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
