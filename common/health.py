"""``/healthz``, ``/readyz`` and ``/metrics`` on a small HTTP server thread, for the services
that are not web apps (streamery, loaders).

``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 only when every probe
(each a quick reachability check) passes, else 503 naming what is not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from common import metrics

Probe = Callable[[], bool]


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], probes: Mapping[str, Probe]) -> None:
        super().__init__(address, _Handler)
        self.probes = probes


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b'{"status":"ok"}', "application/json")
        elif path == "/readyz":
            checks = {name: _safe(probe) for name, probe in self.server.probes.items()}
            ok = all(checks.values())
            body = orjson.dumps({"status": "ok" if ok else "unavailable", "checks": checks})
            self._send(200 if ok else 503, body, "application/json")
        elif path == "/metrics":
            self._send(200, metrics.exposition(), metrics.CONTENT_TYPE)
        else:
            self._send(404, b'{"detail":"Not Found"}', "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # probes and scrapes every few seconds are not worth a log line


def _safe(probe: Probe) -> bool:
    try:
        return bool(probe())
    except Exception:
        return False


def serve(host: str, port: int, probes: Mapping[str, Probe]) -> HealthServer:
    """Start serving on a daemon thread; ``shutdown()`` stops it."""
    server = HealthServer((host, port), probes)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
