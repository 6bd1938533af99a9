"""Remote control of a :class:`LinkProxy` that runs in another process or container.

In the Docker backend each worker container runs its own link proxy (so the
root<->worker bytes cross it inside the worker's network namespace), and the
host still needs the same two things the local backend gets in-process: read
the link's counters while tokens stream, and change its latency profile on a
warm cluster. This is a tiny JSON-over-HTTP endpoint for exactly that, built on
the standard library because it runs inside slim node images:

``GET /health``   ``{"status": "ok", "link": name}``
``GET /stats``    ``LinkStats.to_dict()``
``GET /chunks?since=T``  ``ChunkTrace.to_dict()`` of chunks that arrived at or after
                  ``T`` (CLOCK_MONOTONIC seconds, shared with the host)
``PUT /profile``  body ``LatencyProfile.to_dict()``; answers ``{"profile": label}``
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgelab.netem.profile import LatencyProfile, ProfileError
from edgelab.netem.proxy import DirectionStats, LinkProxy, LinkStats
from edgelab.netem.trace import ChunkTrace


class ControlError(RuntimeError):
    """The control endpoint of a link could not be reached or refused a request."""


def stats_from_dict(data: dict[str, Any]) -> LinkStats:
    """Rebuild the :class:`LinkStats` snapshot that ``GET /stats`` serialised."""
    return LinkStats(
        name=str(data["name"]),
        profile=str(data["profile"]),
        up=DirectionStats(**data["up"]),
        down=DirectionStats(**data["down"]),
        connections_open=int(data.get("connections_open", 0)),
        connections_total=int(data.get("connections_total", 0)),
        connect_errors=int(data.get("connect_errors", 0)),
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # stats are polled several times a second; access logs would drown the node log

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        proxy = self.server.proxy
        if self.path == "/health":
            self._reply(200, {"status": "ok", "link": proxy.name})
        elif self.path == "/stats":
            self._reply(200, proxy.stats().to_dict())
        elif self.path.startswith("/chunks"):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            try:
                since = float(query.get("since", ["0"])[0])
            except ValueError:
                self._reply(400, {"error": "since must be a number of seconds"})
                return
            self._reply(200, proxy.chunks_since(since).to_dict())
        else:
            self._reply(404, {"error": f"no such path {self.path}"})

    def do_PUT(self) -> None:
        if self.path != "/profile":
            self._reply(404, {"error": f"no such path {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            profile = LatencyProfile.from_dict(json.loads(self.rfile.read(length)))
        except (ValueError, ProfileError, TypeError) as exc:
            self._reply(400, {"error": f"bad profile: {exc}"})
            return
        self.server.proxy.set_profile(profile)
        self._reply(200, {"profile": profile.label})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listen: tuple[str, int], proxy: LinkProxy) -> None:
        self.proxy = proxy
        super().__init__(listen, _Handler)


class ControlServer:
    """Serves the control endpoint of ``proxy`` on ``listen`` from a background thread."""

    def __init__(self, proxy: LinkProxy, listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self._server = _Server(listen, proxy)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"netem-{proxy.name}-control", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class ControlClient:
    """Talks to one link's control endpoint at ``host:port``."""

    def __init__(self, host: str, port: int, timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {} if data is None else {"Content-Type": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ControlError(
                f"link control at {self.host}:{self.port} unreachable ({method} {path}): {exc}"
            ) from exc
        finally:
            conn.close()
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            raise ControlError(
                f"link control at {self.host}:{self.port} sent {raw[:200]!r}"
            ) from exc
        if resp.status != 200 or not isinstance(decoded, dict):
            raise ControlError(
                f"link control at {self.host}:{self.port} answered {resp.status}: {decoded}"
            )
        return decoded

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def stats(self) -> LinkStats:
        return stats_from_dict(self._call("GET", "/stats"))

    def chunks_since(self, since: float) -> ChunkTrace:
        return ChunkTrace.from_dict(self._call("GET", f"/chunks?since={since!r}"))

    def set_profile(self, profile: LatencyProfile) -> str:
        """Apply ``profile`` to the remote link; return its label as the link reports it."""
        return str(self._call("PUT", "/profile", profile.to_dict())["profile"])


__all__ = ["ControlClient", "ControlError", "ControlServer", "stats_from_dict"]
