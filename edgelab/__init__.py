"""edgelab: LLM-inference experiments on simulated clusters of edge devices."""

__version__ = "0.1.0"
