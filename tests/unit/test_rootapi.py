"""The root API protocol: a real RootServer and RootClient over loopback HTTP.

The generator is a tiny scripted stand-in for an engine, because what is under
test here is the protocol layer (streaming, ordering, errors, one-at-a-time), not
inference; the real engine is covered in tests/integration/test_llamacpp.py.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from edgelab.engines.base import EngineError
from edgelab.engines.client import RootClient
from edgelab.engines.rootapi import (
    GenerateRequest,
    Generation,
    Generator,
    RequestError,
    RootServer,
)


class ScriptedGenerator(Generator):
    """Yields the words of the prompt as tokens, with hooks to pause, fail or stop."""

    def __init__(self) -> None:
        self.loaded = threading.Event()
        self.allow_load = threading.Event()
        self.allow_load.set()
        # Tokens after the first wait for this, so a test can prove streaming.
        self.release_rest = threading.Event()
        self.release_rest.set()
        self.fail_after: int | None = None
        self.stop_after: int | None = None
        self.delay_s = 0.0
        self.requests: list[GenerateRequest] = []
        self.closed_streams = 0

    def load(self) -> None:
        self.allow_load.wait(10)
        self.loaded.set()

    def info(self) -> dict[str, Any]:
        return {"engine": "scripted", "n_layers": 4, "nodes": 1, "threads": 1}

    def generate(self, request: GenerateRequest) -> Generation:
        if request.prompt == "too long":
            raise RequestError("prompt does not fit")
        self.requests.append(request)
        words = request.prompt.split()
        generation = Generation(prompt_tokens=len(words), pieces=iter(()))
        generation.pieces = self._pieces(words, request.max_tokens, generation)
        return generation

    def _pieces(self, words: list[str], max_tokens: int, generation: Generation) -> Iterator[str]:
        try:
            for i in range(max_tokens):
                if i == 1:
                    self.release_rest.wait(10)
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("worker vanished")
                if self.stop_after is not None and i == self.stop_after:
                    generation.stop_reason = "stop"
                    return
                time.sleep(self.delay_s)
                yield words[i % len(words)] + " "
        finally:
            self.closed_streams += 1


def drain(stream: Iterator[dict[str, Any]], seen: list[dict[str, Any]]) -> None:
    for event in stream:
        seen.append(event)


@pytest.fixture
def generator() -> ScriptedGenerator:
    return ScriptedGenerator()


@pytest.fixture
def server(generator: ScriptedGenerator) -> Iterator[RootServer]:
    srv = RootServer(generator, "127.0.0.1", 0)
    srv.start()
    try:
        yield srv
    finally:
        srv.shutdown()


@pytest.fixture
def loaded(server: RootServer) -> RootServer:
    server.load_model()
    return server


def test_health_says_loading_until_the_model_is_loaded(
    server: RootServer, generator: ScriptedGenerator
) -> None:
    client = RootClient(server.url)
    generator.allow_load.clear()
    loader = threading.Thread(target=server.load_model)
    loader.start()
    try:
        assert client.health() == "loading"
        with pytest.raises(EngineError, match="loading"):
            list(client.generate("a b", 2))
    finally:
        generator.allow_load.set()
        loader.join()
    client.wait_healthy(timeout_s=5)
    assert client.health() == "ok"


def test_info_merges_generator_info_and_load_time(loaded: RootServer) -> None:
    info = RootClient(loaded.url).info()
    assert info["engine"] == "scripted"
    assert info["n_layers"] == 4
    assert isinstance(info["load_ms"], float)


def test_stream_has_start_tokens_end_in_order(
    loaded: RootServer, generator: ScriptedGenerator
) -> None:
    events = list(RootClient(loaded.url).generate("one two three", 5, seed=7))
    assert [e["type"] for e in events] == ["start"] + ["token"] * 5 + ["end"]
    assert events[0]["prompt_tokens"] == 3
    tokens = events[1:-1]
    assert [t["index"] for t in tokens] == list(range(5))
    assert "".join(t["text"] for t in tokens) == "one two three one two "
    offsets = [e["offset_ms"] for e in events]
    assert offsets == sorted(offsets)
    assert events[-1] == {
        "type": "end",
        "output_tokens": 5,
        "stop_reason": "length",
        "offset_ms": events[-1]["offset_ms"],
    }
    assert generator.requests[0] == GenerateRequest("one two three", 5, 0.0, 7, True)


def test_request_defaults_to_greedy_and_chat(
    loaded: RootServer, generator: ScriptedGenerator
) -> None:
    body = json.dumps({"prompt": "hi", "max_tokens": 1}).encode()
    req = urllib.request.Request(f"{loaded.url}/generate", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        lines = resp.read().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["start", "token", "end"]
    assert generator.requests[0] == GenerateRequest("hi", 1, temperature=0.0, seed=0, chat=True)


def test_early_stop_is_reported(loaded: RootServer, generator: ScriptedGenerator) -> None:
    generator.stop_after = 2
    events = list(RootClient(loaded.url).generate("a b c", 10))
    assert events[-1]["output_tokens"] == 2
    assert events[-1]["stop_reason"] == "stop"


def test_tokens_arrive_while_generation_is_still_running(
    loaded: RootServer, generator: ScriptedGenerator
) -> None:
    generator.release_rest.clear()
    stream = RootClient(loaded.url).generate("x y", 3)
    try:
        assert next(stream)["type"] == "start"
        first = next(stream)
        # The generator is still blocked before token 1: token 0 was not buffered.
        assert first == {"type": "token", "index": 0, "offset_ms": first["offset_ms"], "text": "x "}
        assert not generator.release_rest.is_set()
        generator.release_rest.set()
        assert [e["type"] for e in stream] == ["token", "token", "end"]
    finally:
        generator.release_rest.set()
        stream.close()


def test_error_mid_stream_raises_engine_error(
    loaded: RootServer, generator: ScriptedGenerator
) -> None:
    generator.fail_after = 2
    seen: list[dict[str, Any]] = []
    with pytest.raises(EngineError, match="worker vanished"):
        drain(RootClient(loaded.url).generate("a b c", 10), seen)
    assert [e["type"] for e in seen] == ["start", "token", "token"]
    # The server is usable again afterwards.
    generator.fail_after = None
    assert list(RootClient(loaded.url).generate("a", 1))[-1]["type"] == "end"


def test_second_concurrent_generation_gets_409(
    loaded: RootServer, generator: ScriptedGenerator
) -> None:
    generator.release_rest.clear()
    client = RootClient(loaded.url)
    first = client.generate("a b", 3)
    try:
        assert next(first)["type"] == "start"
        with pytest.raises(EngineError, match="busy"):
            list(client.generate("c d", 3))
        body = json.dumps({"prompt": "c", "max_tokens": 1}).encode()
        req = urllib.request.Request(f"{loaded.url}/generate", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 409
    finally:
        generator.release_rest.set()
    assert [e["type"] for e in first][-1] == "end"


def test_client_that_goes_away_frees_the_root(
    loaded: RootServer, generator: ScriptedGenerator
) -> None:
    generator.delay_s = 0.01
    client = RootClient(loaded.url)
    stream = client.generate("a b", 8000)
    assert next(stream)["type"] == "start"
    assert next(stream)["type"] == "token"
    stream.close()
    # The root notices on its next write; until then it may still say "busy".
    deadline = time.monotonic() + 10
    events: list[dict[str, Any]] = []
    while not events:
        try:
            events = list(client.generate("a", 1))
        except EngineError as exc:
            error = str(exc)
        else:
            break
        assert "busy" in error
        assert time.monotonic() < deadline, "root still busy after the client left"
        time.sleep(0.05)
    assert events[-1]["type"] == "end"
    assert generator.closed_streams == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "", "max_tokens": 1}, "prompt"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "a", "max_tokens": True}, "max_tokens"),
        ({"prompt": "a", "max_tokens": 1, "temperature": -1}, "temperature"),
        ({"prompt": "a", "max_tokens": 1, "seed": -3}, "seed"),
        ({"prompt": "a", "max_tokens": 1, "chat": "yes"}, "chat"),
        ({"prompt": "a", "max_tokens": 1, "top_k": 3}, "unknown fields: top_k"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_requests_get_400_naming_the_field(loaded: RootServer, body: Any, message: str) -> None:
    req = urllib.request.Request(
        f"{loaded.url}/generate", data=json.dumps(body).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
    assert message in json.loads(err.value.read())["error"]


def test_engine_side_request_error_reaches_the_client(loaded: RootServer) -> None:
    with pytest.raises(EngineError, match=r"refused the generation \(400\): prompt does not fit"):
        list(RootClient(loaded.url).generate("too long", 1))


def test_shutdown_stops_the_server(loaded: RootServer) -> None:
    client = RootClient(loaded.url)
    client.shutdown()
    deadline = time.monotonic() + 5
    while True:
        try:
            client.health()
        except EngineError:
            break
        assert time.monotonic() < deadline, "root still answering after /shutdown"
        time.sleep(0.05)


def test_wait_healthy_gives_up_when_the_process_is_gone() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RootClient(f"http://127.0.0.1:{port}")
    with pytest.raises(EngineError, match="exited before it was ready"):
        client.wait_healthy(timeout_s=30, is_alive=lambda: False)
    with pytest.raises(EngineError, match="not ready after"):
        client.wait_healthy(timeout_s=0.3)


class _CutStreamServer:
    """Answers one /generate with a start and a token, then drops the connection,
    which is what the client sees when the root process dies mid-generation."""

    def __init__(self, tail: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.tail = tail
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.0 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n"
                b'{"type": "start", "prompt_tokens": 2, "offset_ms": 1.0}\n'
                b'{"type": "token", "index": 0, "offset_ms": 2.0, "text": "a"}\n' + self.tail
            )
            # Close with a FIN, not a reset: a request body still unread when the
            # socket closes would make the kernel send RST and hide the stream's end.
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                while conn.recv(65536):
                    pass


@pytest.mark.parametrize(
    ("tail", "message"),
    [(b"", "ended after 1 tokens without an end event"), (b'{"type": "tok', "cut mid-line")],
)
def test_broken_stream_raises_engine_error(tail: bytes, message: str) -> None:
    fake = _CutStreamServer(tail)
    try:
        seen: list[dict[str, Any]] = []
        with pytest.raises(EngineError, match=message):
            drain(RootClient(fake.url).generate("a b", 5), seen)
        assert [e["type"] for e in seen] == ["start", "token"]
    finally:
        fake.thread.join(timeout=5)
        fake.sock.close()


def test_client_rejects_a_malformed_url() -> None:
    with pytest.raises(EngineError, match="http://host:port"):
        RootClient("127.0.0.1:8000")


class _DetailedPiece(str):
    detail: dict[str, Any] | None = None


class DetailGenerator(ScriptedGenerator):
    """Pieces that carry per-token numbers, and an origin set after a simulated load."""

    def generate(self, request: GenerateRequest) -> Generation:
        generation = Generation(prompt_tokens=1, pieces=iter(()), detail={"load_ms": 5.0})
        generation.pieces = self._detailed(generation)
        return generation

    def _detailed(self, generation: Generation) -> Iterator[str]:
        time.sleep(0.3)  # "streaming weights": must not count towards token offsets
        generation.origin = time.monotonic()
        for i in range(2):
            piece = _DetailedPiece(f"t{i}")
            piece.detail = {"compute_ms": float(i)}
            yield piece


def test_piece_detail_and_generation_origin_reach_the_client() -> None:
    srv = RootServer(DetailGenerator(), "127.0.0.1", 0)
    srv.start()
    try:
        srv.load_model()
        events = list(RootClient(srv.url).generate("x", 2))
    finally:
        srv.shutdown()
    assert events[0]["detail"] == {"load_ms": 5.0}
    tokens = [e for e in events if e["type"] == "token"]
    assert [t["detail"] for t in tokens] == [{"compute_ms": 0.0}, {"compute_ms": 1.0}]
    # Offsets count from the origin, so the 300 ms "load" is not in them.
    assert tokens[0]["offset_ms"] < 300
