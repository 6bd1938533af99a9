"""Runs: validating a run's configuration, executing it on a cluster, storing the results.

:mod:`edgelab.runs.config` says what a valid run is; :mod:`edgelab.runs.executor`
carries one out. The CLI, the Celery tasks and the web form all go through both,
so a run means the same thing wherever it was submitted.
"""
