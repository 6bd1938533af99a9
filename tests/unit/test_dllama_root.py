"""The dllama root node end to end against a stand-in ``dllama`` script.

A stand-in, because no real distributed-llama build can run in unit tests (edgelab
never builds it; the real binary is exercised by tests/integration/test_dllama_run.py
when EDGELAB_DLLAMA_BIN is set). The script prints dllama's documented output
format with per-token flushes, so the pty reader, the prompt-echo skip, the
timing origin and the per-token detail are tested for real.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgelab.engines.dllama.root import DllamaGeneration, DllamaGenerator, TokenPiece
from edgelab.engines.dllama.synthetic import write_synthetic_model
from edgelab.engines.rootapi import GenerateRequest

FAKE = r"""#!PYTHON
import sys, time
args = sys.argv[1:]
prompt = args[args.index("--prompt") + 1]
steps = int(args[args.index("--steps") + 1])
print("💿 Loading weights...", flush=True)
time.sleep(0.2)
print("💿 Weights loaded")
print(prompt, flush=True)
print("🔷️ Eval   30 ms Sync    5 ms | Sent   100 kB Recv    90 kB | (3 tokens)", flush=True)
pieces = [" one", "\n", "~", " two\nthree"] + [" x"] * 50
for i in range(steps - 3):
    time.sleep(0.05)
    print(f"🔶 Pred{10 + i:5d} ms Sync{i:5d} ms | Sent{4:6d} kB Recv{5:6d} kB | {pieces[i]}",
          flush=True)
print("\nEvaluation\n   nBatches: 32\n    nTokens: 3\n   tokens/s: 1.00 (1.00 ms/tok)")
print("Prediction\n    nTokens: 4\n   tokens/s: 1.00 (1.00 ms/tok)")
"""


@pytest.fixture
def generator(tmp_path: Path) -> DllamaGenerator:
    model, _ = write_synthetic_model(tmp_path / "m")
    fake = tmp_path / "dllama"
    fake.write_text(FAKE.replace("PYTHON", sys.executable))
    fake.chmod(0o755)
    gen = DllamaGenerator(fake, model, [], threads=1, warmup=False)
    gen.load()
    return gen


def test_root_streams_tokens_with_detail_and_load_origin(generator: DllamaGenerator) -> None:
    request = GenerateRequest("Hello the world", 4, chat=False)
    generation = generator.generate(request)
    assert isinstance(generation, DllamaGeneration)
    assert generation.prompt_tokens == 4
    assert generation.origin is not None
    assert generation.detail["load_ms"] >= 150
    pieces = list(generation)
    assert pieces == [" one", "\n", "", " two\nthree"]
    assert all(isinstance(p, TokenPiece) for p in pieces)
    details = [p.detail for p in pieces if isinstance(p, TokenPiece)]
    assert details[0] is not None
    assert details[0]["prefill"]["eval_ms"] == 30
    assert details[1] == {"compute_ms": 11, "sync_ms": 1, "sent_kb": 4, "recv_kb": 5}
    assert details[2] is not None
    assert details[2]["printed"] == "~"
    generator.close()


def test_root_counts_steps_from_the_prompt(generator: DllamaGenerator) -> None:
    request = GenerateRequest("Hello the world", 2, chat=False)
    prompt_tokens = generator.files.encoder.count("Hello the world") if generator.files else 0
    argv = generator.argv("Hello the world", prompt_tokens - 1 + 2, request)
    assert argv[argv.index("--net-turbo") + 1] == "0"
    assert argv[argv.index("--buffer-float-type") + 1] == "f32"
    assert "--workers" not in argv
    assert len(list(generator.generate(request))) == 2
    generator.close()
