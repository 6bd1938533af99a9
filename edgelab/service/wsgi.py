"""The WSGI entry point for ``edgelab serve`` (gunicorn ``edgelab.service.wsgi:app``).

gunicorn imports this in each worker process after its fork (``edgelab serve`` does not
preload the app), so what is done here is done once per worker, before it serves.
"""

from __future__ import annotations

from edgelab.service import create_app, freeze_startup_heap
from edgelab.service.extensions import current_settings
from edgelab.validation.context import default_model, warm

app = create_app()
# The default model's vocabulary loads in the worker's tokenizer thread while it
# already serves: the first submit of the common case then does not wait for it
# (why and what it costs: edgelab.validation.context).
with app.app_context():
    warm(default_model(current_settings()))
# Its start-up objects stay out of the cyclic GC's full collections (why:
# freeze_startup_heap).
freeze_startup_heap()
