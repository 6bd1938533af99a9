"""What edgelab measures: token-timeline metrics and per-node resource samples.

Every metric is defined once, in :mod:`edgelab.metrics.timeline`; samplers in
:mod:`edgelab.metrics.sampler` turn node processes or containers into
``NodeSample`` rows on the same clock as the token timeline.
"""
