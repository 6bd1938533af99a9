"""The WSGI entry point for ``edgelab serve`` (gunicorn ``edgelab.service.wsgi:app``)."""

from __future__ import annotations

from edgelab.service import create_app

app = create_app()
