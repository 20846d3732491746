"""Prometheus metrics for the daemon modes (milter, SMTP/LMTP server): counters and one endpoint.

Owns ``Metrics`` (thread-safe counters, one instance per process passed explicitly, no
globals) and ``serve_metrics`` (a tiny stdlib HTTP server in a thread that serves the text
exposition format). It must not know about milter or SMTP details: modes report messages by
action, filter timings and failures, and open connections through the four methods below.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    """Escape a label value for the text exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters of one process: messages by action, time and failures per filter, connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, int] = {}
        self._filter_sum: dict[str, float] = {}
        self._filter_count: dict[str, int] = {}
        self._filter_failures: dict[str, int] = {}
        self._connections = 0

    def observe_message(self, action: str) -> None:
        """Count one finished message with its final ``action`` (accept, reject, ...)."""
        with self._lock:
            self._messages[action] = self._messages.get(action, 0) + 1

    def observe_filter(self, name: str, seconds: float, failed: bool) -> None:
        """Record one run of filter ``name`` that took ``seconds``; ``failed`` counts a failure."""
        with self._lock:
            self._filter_sum[name] = self._filter_sum.get(name, 0.0) + seconds
            self._filter_count[name] = self._filter_count.get(name, 0) + 1
            if failed:
                self._filter_failures[name] = self._filter_failures.get(name, 0) + 1
            else:
                self._filter_failures.setdefault(name, 0)

    def connection(self, delta: int) -> None:
        """Change the number of open connections by ``delta`` (+1 on connect, -1 on close)."""
        with self._lock:
            self._connections += delta

    def render(self) -> str:
        """Render the metrics in Prometheus' text exposition format (version 0.0.4)."""
        with self._lock:
            messages = sorted(self._messages.items())
            sums = sorted(self._filter_sum.items())
            counts = dict(self._filter_count)
            failures = sorted(self._filter_failures.items())
            connections = self._connections
        lines = [
            "# HELP rohrpost_messages_total Messages finished, by final action.",
            "# TYPE rohrpost_messages_total counter",
            *(f'rohrpost_messages_total{{action="{_label(a)}"}} {n}' for a, n in messages),
            "# HELP rohrpost_filter_seconds Time spent in each filter.",
            "# TYPE rohrpost_filter_seconds summary",
        ]
        for name, total in sums:
            lines.append(f'rohrpost_filter_seconds_sum{{filter="{_label(name)}"}} {total:.6f}')
            lines.append(f'rohrpost_filter_seconds_count{{filter="{_label(name)}"}} {counts[name]}')
        lines += [
            "# HELP rohrpost_filter_failures_total Filter runs that failed or timed out.",
            "# TYPE rohrpost_filter_failures_total counter",
            *(f'rohrpost_filter_failures_total{{filter="{_label(f)}"}} {n}' for f, n in failures),
            "# HELP rohrpost_connections_active Open connections.",
            "# TYPE rohrpost_connections_active gauge",
            f"rohrpost_connections_active {connections}",
        ]
        return "\n".join(lines) + "\n"


def serve_metrics(metrics: Metrics, host: str, port: int) -> Callable[[], None]:
    """Serve ``metrics.render()`` at ``http://host:port/metrics`` from a daemon thread.

    :returns: a callable that stops the server and closes its socket.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes are not worth a log line

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="rohrpost-metrics", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
