"""Which node counts distributed-llama can split a model across.

distributed-llama slices every attention head, the KV cache, the feed-forward
matrices and the vocabulary evenly across all nodes (tensor parallelism). Most
of its checks are C ``assert``s, which release builds compile out: a bad node
count then does not abort but computes garbage or crashes mid-run. So edgelab
checks the same rules itself, from the ``.m`` header, before it starts anything.

The rules, from ``runInferenceApp`` and the slicers in ``nn-core.cpp``
(``sliceRowMatmul``, ``sliceColMatmul``, ``sliceKvCache``, ``sliceRope``,
``sliceMultiHeadAtt``) of distributed-llama v0.16:

- nodes <= KV heads (an explicit error in dllama);
- heads, KV dim, Q dim, hidden dim and vocabulary divisible by nodes;
- each node's Q and KV slice has an even width (RoPE rotates pairs);
- Q40 weights travel as Q80 buffers in 32-value blocks, so each node's slice of
  the Q dim and of the hidden dim (the column slices of ``wo`` and ``w2``) is a
  multiple of 32.

distributed-llama's README also says "only 1, 2, 4 ... 2^n nodes"; the code
enforces no such rule, and edgelab does not either (3 nodes work when the
shapes divide), but :func:`valid_node_counts` makes the working counts visible.
"""

from __future__ import annotations

from edgelab.catalog.dllama import DllamaHeader
from edgelab.engines.base import EngineError

Q_BLOCK = 32


def topology_problems(header: DllamaHeader, nodes: int) -> list[str]:
    """Every rule ``nodes`` breaks for this model, each as a sentence naming the rule."""
    if nodes < 1:
        return [f"nodes must be >= 1, got {nodes}"]
    problems: list[str] = []
    if nodes > header.n_kv_heads:
        problems.append(
            f"nodes ({nodes}) must not exceed the model's KV heads ({header.n_kv_heads})"
        )
    for label, value in (
        ("heads", header.n_heads),
        ("KV heads", header.n_kv_heads),
        ("KV dim", header.kv_dim),
        ("Q dim", header.q_dim),
        ("hidden dim", header.hidden_dim),
        ("vocabulary size", header.vocab_size),
    ):
        if value % nodes:
            problems.append(f"{label} ({value}) must be divisible by nodes ({nodes})")
    if not problems:
        for label, value in (("Q dim", header.q_dim), ("KV dim", header.kv_dim)):
            if (value // nodes) % 2:
                problems.append(
                    f"each node's {label} slice ({value} / {nodes} = {value // nodes}) "
                    "must be even (RoPE rotates pairs)"
                )
        if header.weight_type in ("q40", "q80"):
            for label, value in (("Q dim", header.q_dim), ("hidden dim", header.hidden_dim)):
                if (value // nodes) % Q_BLOCK:
                    problems.append(
                        f"each node's {label} slice ({value} / {nodes} = {value // nodes}) "
                        f"must be a multiple of {Q_BLOCK} for {header.weight_type.upper()} "
                        "weights (quantization blocks)"
                    )
    return problems


def valid_node_counts(header: DllamaHeader, limit: int | None = None) -> list[int]:
    """Every node count (1..KV heads, or ``limit``) this model can run on."""
    top = header.n_kv_heads if limit is None else min(limit, header.n_kv_heads)
    return [n for n in range(1, top + 1) if not topology_problems(header, n)]


def validate_topology(header: DllamaHeader, nodes: int) -> None:
    """Raise ``EngineError`` naming the broken rule(s) and the node counts that work."""
    problems = topology_problems(header, nodes)
    if not problems:
        return
    valid = ", ".join(str(n) for n in valid_node_counts(header)) or "none"
    raise EngineError(
        f"distributed-llama cannot split {header.path.name} across {nodes} nodes: "
        + "; ".join(problems)
        + f". Valid node counts for this model: {valid}"
    )


__all__ = ["topology_problems", "valid_node_counts", "validate_topology"]
