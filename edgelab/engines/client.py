"""Client of the root API (:mod:`edgelab.engines.rootapi`), used by clusters and runs.

Standard library only, like the server. Every failure surfaces as
:class:`~edgelab.engines.base.EngineError` with a message a researcher can act on;
in particular a stream that stops without an ``end`` event (the root died, e.g.
because a worker vanished) is an error, never a silently short answer.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from edgelab.engines.base import EngineError


class RootClient:
    """Talk to one root node at ``base_url`` (``http://host:port``).

    ``read_timeout_s`` bounds the wait for any single line of a stream (one token,
    or the prefill before the first one), so a root stuck on an unreachable worker
    fails the run instead of hanging it.
    """

    def __init__(self, base_url: str, read_timeout_s: float = 300.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise EngineError(f"root URL must look like http://host:port, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.host: str = parts.hostname
        self.port: int = parts.port
        self.read_timeout_s = read_timeout_s

    def _connect(self, timeout_s: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout_s: float = 10.0,
    ) -> tuple[int, dict[str, Any]]:
        conn = self._connect(timeout_s)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(
                f"root at {self.base_url} unreachable ({method} {path}): {exc}"
            ) from exc
        finally:
            conn.close()
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise EngineError(
                f"root at {self.base_url} sent non-JSON for {path}: {raw[:200]!r}"
            ) from exc
        if not isinstance(decoded, dict):
            raise EngineError(f"root at {self.base_url} sent {decoded!r} for {path}")
        return resp.status, decoded

    def health(self, timeout_s: float = 5.0) -> str:
        """Return ``"ok"`` or ``"loading"``; raise ``EngineError`` if unreachable."""
        status, body = self._request("GET", "/health", timeout_s=timeout_s)
        if status not in (200, 503):
            raise EngineError(f"root at {self.base_url} /health answered {status}: {body}")
        return str(body.get("status", "unknown"))

    def wait_healthy(
        self,
        timeout_s: float,
        is_alive: Callable[[], bool] | None = None,
        poll_s: float = 0.2,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        """Wait until the root has loaded its model.

        ``is_alive`` lets the caller say the root process has died, so a root that
        crashed while loading fails at once instead of after ``timeout_s``;
        ``on_poll`` is called on every poll and may raise to abort the wait (a
        cancel, a stall watchdog).
        """
        deadline = time.monotonic() + timeout_s
        last = "not reachable yet"
        while True:
            if is_alive is not None and not is_alive():
                raise EngineError(f"root at {self.base_url} exited before it was ready ({last})")
            if on_poll is not None:
                on_poll()
            try:
                # Short: a hung root must not delay on_poll (a cancel) by long.
                status = self.health(timeout_s=1.0)
            except EngineError as exc:
                last = str(exc)
            else:
                if status == "ok":
                    return
                last = f"status {status}"
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"root at {self.base_url} not ready after {timeout_s:g} s ({last})"
                )
            time.sleep(poll_s)

    def info(self) -> dict[str, Any]:
        """What the root reports about its engine, model and layer split."""
        status, body = self._request("GET", "/info")
        if status != 200:
            raise EngineError(f"root at {self.base_url} /info answered {status}: {body}")
        return body

    def shutdown(self) -> None:
        """Ask the root to exit; the caller still reaps (and if need be kills) the process."""
        status, body = self._request("POST", "/shutdown")
        if status != 200:
            raise EngineError(f"root at {self.base_url} /shutdown answered {status}: {body}")

    def generate(
        self,
        prompt: str,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        chat: bool = True,
        on_idle: Callable[[], None] | None = None,
        idle_poll_s: float = 0.2,
    ) -> Iterator[dict[str, Any]]:
        """Yield the stream's events (``start``, ``token``..., ``end``) as they arrive.

        Raises ``EngineError`` on an ``error`` event, a refused request, or a stream
        that breaks before its ``end`` event. ``on_idle`` is called every
        ``idle_poll_s`` while no event arrives and may raise to abandon the stream
        (a cancel, a stall watchdog): the wait for a hung root is then the
        caller's to end, not ``read_timeout_s``'s.
        """
        body = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
            "chat": chat,
        }
        conn = self._connect(self.read_timeout_s)
        if on_idle is None:
            try:
                yield from self._stream(conn, body)
            finally:
                conn.close()
            return
        yield from self._watched(conn, body, on_idle, idle_poll_s)

    def _stream(
        self, conn: http.client.HTTPConnection, body: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        try:
            conn.request(
                "POST",
                "/generate",
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(f"root at {self.base_url} unreachable: {exc}") from exc
        if resp.status != 200:
            raise EngineError(_refusal(self.base_url, resp.status, resp.read()))
        yield from self._events(resp)

    def _watched(
        self,
        conn: http.client.HTTPConnection,
        body: dict[str, Any],
        on_idle: Callable[[], None],
        idle_poll_s: float,
    ) -> Iterator[dict[str, Any]]:
        """The stream read on a thread, so the caller keeps control while it waits.

        A socket read with a short timeout cannot be resumed (a timed-out
        ``socket.makefile`` reader refuses further reads), so a reader thread owns
        the connection and hands events over a queue; abandoning the stream shuts
        the socket down, which wakes the reader and ends it.
        """
        try:
            # Connected here so that the socket can be shut down later: http.client
            # drops ``conn.sock`` once the response is read from its own file object.
            conn.connect()
        except OSError as exc:
            conn.close()
            raise EngineError(f"root at {self.base_url} unreachable: {exc}") from exc
        sock = conn.sock
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        abandoned = threading.Event()

        def read() -> None:
            try:
                for event in self._stream(conn, body):
                    if abandoned.is_set():
                        return
                    events.put(("event", event))
            except BaseException as exc:  # handed over to the caller's thread
                events.put(("error", exc))
            else:
                events.put(("end", None))

        reader = threading.Thread(target=read, name="root-stream", daemon=True)
        reader.start()
        try:
            while True:
                try:
                    kind, item = events.get(timeout=idle_poll_s)
                except queue.Empty:
                    on_idle()
                    continue
                if kind == "event":
                    yield item
                elif kind == "error":
                    raise item
                else:
                    return
        finally:
            abandoned.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            reader.join(timeout=2.0)
            conn.close()

    def _events(self, resp: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
        tokens = 0
        while True:
            try:
                line = resp.readline()
            except TimeoutError as exc:
                raise EngineError(
                    f"root at {self.base_url} sent nothing for {self.read_timeout_s:g} s "
                    f"after {tokens} tokens"
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise EngineError(
                    f"stream from root at {self.base_url} broke after {tokens} tokens: {exc}"
                ) from exc
            if not line:
                raise EngineError(
                    f"stream from root at {self.base_url} ended after {tokens} tokens without "
                    "an end event (the root process probably died; see its log)"
                )
            if not line.endswith(b"\n"):
                raise EngineError(
                    f"stream from root at {self.base_url} cut mid-line after {tokens} tokens"
                )
            try:
                event = json.loads(line)
            except ValueError as exc:
                raise EngineError(
                    f"root at {self.base_url} sent a bad line: {line[:200]!r}"
                ) from exc
            if not isinstance(event, dict) or "type" not in event:
                raise EngineError(f"root at {self.base_url} sent a bad event: {event!r}")
            if event["type"] == "error":
                raise EngineError(f"root at {self.base_url} failed: {event.get('message')}")
            yield event
            if event["type"] == "token":
                tokens += 1
            elif event["type"] == "end":
                return


def _refusal(base_url: str, status: int, raw: bytes) -> str:
    try:
        message = json.loads(raw).get("error", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace")
    if status == 409:
        return f"root at {base_url} is busy with another generation: {message}"
    return f"root at {base_url} refused the generation ({status}): {message}"


__all__ = ["RootClient"]
