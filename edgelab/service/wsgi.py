"""The WSGI entry point for ``edgelab serve`` (gunicorn ``edgelab.service.wsgi:app``)."""

from __future__ import annotations

from edgelab.service import create_app, freeze_startup_heap

app = create_app()
# Each gunicorn worker imports this after its fork: its start-up objects stay out of
# the cyclic GC's full collections (why: freeze_startup_heap).
freeze_startup_heap()
