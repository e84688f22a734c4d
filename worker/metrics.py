"""One worker /metrics endpoint: our `aintandem_*` metrics plus the Temporal SDK's own.

The SDK's Prometheus exporter serves on an internal loopback port; a collector re-exposes its
families through prometheus_client so Prometheus scrapes a single target per worker.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator

from prometheus_client import REGISTRY, Gauge, start_http_server
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger("aintandem.worker")

SANDBOXES = Gauge(
    "aintandem_sandbox_sandboxes", "Sandboxes by lifecycle status (read model)", ["status"]
)
COLLABORATIONS = Gauge(
    "aintandem_collaboration_collaborations", "Collaborations by status (read model)", ["status"]
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TemporalSdkCollector(Collector):
    def __init__(self, url: str) -> None:
        self._url = url

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self._url, timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return
        yield from text_string_to_metric_families(text)


def serve(host: str, port: int, sdk_port: int) -> None:
    REGISTRY.register(TemporalSdkCollector(f"http://127.0.0.1:{sdk_port}/metrics"))
    start_http_server(port, addr=host)
    log.info("worker metrics on http://%s:%d/metrics", host, port)
