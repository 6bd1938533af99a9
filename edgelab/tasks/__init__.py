"""The queue: Celery tasks on Redis that execute runs and sweeps.

One module per task family (``runs``, ``sweeps``); each task takes ids and calls a
plain function of :mod:`edgelab.tasks.runner` or :mod:`edgelab.sweeps`. Submitting
work goes through :mod:`edgelab.tasks.submit` so the API and the CLI queue it alike.
``celery -A edgelab.tasks.make_celery worker`` is the worker entry point.
"""
