"""Runs: validating a run's configuration, executing it on a cluster, storing the results.

:mod:`edgelab.runs.config` says what a valid run is; :mod:`edgelab.runs.executor`
carries one out. The CLI, the Celery tasks and the web form all go through both,
so a run means the same thing wherever it was submitted.
"""

#: The prompt ``edgelab run`` sends when none is given (the forms show it as their
#: placeholder): a question every small instruct model answers at some length, so a
#: first try of a cluster needs no more than ``--nodes`` and ``--latency``.
DEFAULT_PROMPT = "Name three planets and say one fact about each."
