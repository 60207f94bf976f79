"""Prometheus metrics shared by every service, and the /metrics, /healthz, /readyz server.

Names carry the `loopwise_` prefix and base units; labels are bounded (service,
topic, partition, stage, error class, outcome), never a call id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

EVENTS_CONSUMED = Counter(
    "loopwise_events_consumed_total",
    "Events taken from an input topic, by outcome (processed or dead_lettered)",
    ["service", "topic", "outcome"],
)
EVENTS_PRODUCED = Counter(
    "loopwise_events_produced_total",
    "Events delivered to an output topic (dead-letter topics included)",
    ["service", "topic"],
)
EVENTS_SUPERSEDED = Counter(
    "loopwise_events_superseded_total",
    "Results not produced because a later one of the same call in the same batch replaced them",
    ["service"],
)
EVENTS_DEAD_LETTERED = Counter(
    "loopwise_events_dead_lettered_total",
    "Input events sent to the dead-letter topic, by stage and error class",
    ["service", "stage", "error_class"],
)
HANDLER_SECONDS = Histogram(
    "loopwise_handler_duration_seconds",
    "Time the handler spent on one event",
    ["service"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENTS_IN_PROGRESS = Gauge(
    "loopwise_events_in_progress", "Events taken but not yet committed", ["service"]
)
CONSUMER_LAG = Gauge(
    "loopwise_consumer_lag_messages",
    "Messages between the committed offset and the end of the partition",
    ["service", "topic", "partition"],
)
LAST_PROCESSED = Gauge(
    "loopwise_last_processed_timestamp_seconds",
    "Unix time at which the service last finished an event",
    ["service"],
)
DELIVERY_FAILURES = Counter(
    "loopwise_delivery_failures_total",
    "Records refused by the producer or failed after its own retries; the batch (or clock "
    "turn) is re-run",
    ["service", "topic"],
)
BATCH_SIZE = Histogram(
    "loopwise_batch_size",
    "Input records in one worker batch (small batches under load mean more round trips)",
    ["service"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
BATCH_RETRIES = Counter(
    "loopwise_batch_retries_total",
    "Input batches re-processed: outputs or state not delivered, or the handler's store down",
    ["service"],
)


def init_service_metrics(service: str, topics_in: Iterable[str], topics_out: Iterable[str]) -> None:
    """Create every label set a service will use, so dashboards see zeros, not gaps."""
    for topic in topics_in:
        for outcome in ("processed", "dead_lettered"):
            EVENTS_CONSUMED.labels(service, topic, outcome)
    for topic in topics_out:
        EVENTS_PRODUCED.labels(service, topic)
        DELIVERY_FAILURES.labels(service, topic)
    HANDLER_SECONDS.labels(service)
    EVENTS_IN_PROGRESS.labels(service)
    LAST_PROCESSED.labels(service)
    BATCH_RETRIES.labels(service)
    BATCH_SIZE.labels(service)
    EVENTS_SUPERSEDED.labels(service)


class ProbeServer:
    """Serves /metrics, /healthz and /readyz on one port, in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        probes = {"/healthz": healthy, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(HTTPStatus.OK, generate_latest(), CONTENT_TYPE_LATEST)
                elif path in probes:
                    ok = probes[path]()
                    status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                    self._reply(status, b"ok\n" if ok else b"not ok\n", "text/plain")
                else:
                    self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

            def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would drown the service's own logs

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probe-server", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self._server.server_address[1])

    def start(self) -> ProbeServer:
        """Start serving in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
