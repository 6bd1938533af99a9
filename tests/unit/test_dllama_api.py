"""The warm dllama root (``dllama-api`` child) against the stand-in, on one node.

A stand-in, because no real distributed-llama build can run here (edgelab never
builds one); tests/standins/dllama_standin.py imitates dllama-api's HTTP API, its
stdout markers and its naive cache rule as read from src/dllama-api.cpp. One node
(no workers) keeps this fast; the multi-node warm cluster is
tests/integration/test_dllama_warm.py.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgelab.engines.dllama.api import ApiGenerator, dllama_chat_kind, dllama_chat_prompt
from edgelab.engines.dllama.synthetic import write_synthetic_model
from edgelab.engines.rootapi import GenerateRequest

STANDIN = Path(__file__).resolve().parents[1] / "standins" / "dllama_standin.py"
PIECES = [" stand", "-in", " token", "\n", " more", " text"]


@pytest.fixture
def api_binary(tmp_path: Path) -> Path:
    rest = STANDIN.read_text().split("\n", 1)[1]
    path = tmp_path / "bin" / "dllama-api"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n{rest}")
    path.chmod(0o755)
    return path


@pytest.fixture
def lost() -> list[str]:
    return []


@pytest.fixture
def generator(tmp_path: Path, api_binary: Path, lost: list[str]) -> Iterator[ApiGenerator]:
    model, _ = write_synthetic_model(tmp_path / "m")
    gen = ApiGenerator(api_binary, model, [], threads=1, on_lost=lost.append)
    gen.load()
    try:
        yield gen
    finally:
        gen.close()


def test_chat_templates_follow_dllama_detection() -> None:
    assert dllama_chat_kind(None) is None
    assert dllama_chat_kind("{{ '[INST] ' + content }}") == "llama2"
    assert dllama_chat_kind("<|start_header_id|>{{ role }}") == "llama3"
    assert dllama_chat_kind("{{'<｜Assistant｜>'}}") == "deepSeek3"
    assert dllama_chat_kind("<|im_start|>") is None  # chatml: dllama-api cannot
    assert dllama_chat_prompt("llama3", "Hi", "</s>") == (
        "<|start_header_id|>user<|end_header_id|>\n\nHi</s>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert dllama_chat_prompt("llama2", "Hi", "</s>") == "[INST] Hi [/INST]</s>"


def test_warm_root_streams_every_request_from_one_load(generator: ApiGenerator) -> None:
    assert generator.process is not None
    argv = generator.process.argv
    # The synthetic tokenizer has no chat template: dllama-api needs one named.
    assert argv[argv.index("--chat-template") + 1] == "llama3"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    info = generator.info()
    assert info["mode"] == "api"
    assert info["weights_streamed_per_inference"] is False
    assert info["engine_version"].startswith("dllama-api sha256:")

    for _ in range(2):
        generation = generator.generate(GenerateRequest("Hello the world", 5))
        assert generation.prompt_tokens == generator.count_prompt("Hello the world")
        assert generation.detail["start_pos"] == 0
        assert list(generation) == PIECES[:5]
        assert generation.stop_reason == "length"
    # The weights were loaded once, by the start; the warm-up and both runs reused them.
    log = list(generator.process.log)
    assert sum("Weights loaded" in line for line in log) == 1
    assert sum(line.startswith("🔷 POST /v1/chat/completions") for line in log) == 3
    assert not any(line.startswith("🐤") for line in log)


def test_an_abandoned_generation_is_drained_before_the_next(generator: ApiGenerator) -> None:
    assert generator.process is not None
    pieces = iter(generator.generate(GenerateRequest("Hello", 150)))
    assert next(pieces) == PIECES[0]
    pieces.close()  # the client went away (a cancelled run)
    generation = generator.generate(GenerateRequest("Hello", 3))
    # The next request went out only once dllama-api had ended the abandoned one
    # (it serves one connection at a time), and got exactly its own tokens.
    assert list(generation) == PIECES[:3]
    assert generator.process.wait_drained(10)  # its "🔶" line may trail the stream
    assert generator.process.finished == 3


def test_a_naive_cache_hit_fails_the_run(generator: ApiGenerator) -> None:
    """Should dllama-api ever reuse positions, the TTFT would be fake: fail instead."""
    assert generator.process is not None
    generation = generator.generate(GenerateRequest("Hello", 3))
    pieces = iter(generation)
    next(pieces)
    generator.process.cache_hits += 1  # as a "🐤 Found naive cache" line would
    with pytest.raises(RuntimeError, match="naive-cache hit"):
        list(pieces)


def test_standin_follows_dllama_api_naive_cache_rule(generator: ApiGenerator) -> None:
    """Single-message requests never hit; a longer conversation with the cached prefix does."""
    assert generator.process is not None
    assert generator.port is not None

    def complete(messages: list[dict[str, str]]) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", generator.port, timeout=30)
        body = {"messages": messages, "max_tokens": 2}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body))
        answer = json.loads(conn.getresponse().read())
        conn.close()
        return str(answer["choices"][0]["message"]["content"])

    first = [{"role": "user", "content": "Hello"}]
    reply = complete(first)
    complete(first)  # one message again: position 0, no hit
    assert generator.process.cache_hits == 0
    complete([*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "x"}])
    deadline = time.monotonic() + 5
    while generator.process.cache_hits == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert generator.process.cache_hits == 1


def test_dllama_api_dying_after_start_is_reported(generator: ApiGenerator, lost: list[str]) -> None:
    assert generator.process is not None
    generator.process.proc.kill()
    done = threading.Event()
    deadline = time.monotonic() + 10
    while not lost and time.monotonic() < deadline:
        done.wait(0.05)
    assert lost
    assert lost[0].startswith("dllama-api exited with code")
    with pytest.raises(RuntimeError, match="dllama-api is gone"):
        generator.generate(GenerateRequest("Hello", 1))


def test_a_dllama_api_without_host_flag_is_started_without_it(
    tmp_path: Path, api_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_API_WITHOUT_HOST", "1")
    model, _ = write_synthetic_model(tmp_path / "m")
    gen = ApiGenerator(api_binary, model, [], threads=1, on_lost=lambda _reason: None)
    try:
        gen.load()
        assert gen.process is not None
        assert "--host" not in gen.process.argv
        assert gen.info()["bound_to"] == "all interfaces (no --host)"
        assert list(gen.generate(GenerateRequest("Hello", 2))) == PIECES[:2]
    finally:
        gen.close()
