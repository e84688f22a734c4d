"""Prometheus metrics of the API process (`aintandem_api_*`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "aintandem_api_http_requests_total",
    "HTTP requests handled, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "aintandem_api_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBSOCKETS_OPEN = Gauge("aintandem_api_websocket_connections", "Open WebSocket connections")
EVENTS_PUBLISHED = Counter(
    "aintandem_api_events_published_total",
    "Events dispatched to WebSocket subscribers by the API's event bus",
    ["channel"],
)
RATE_LIMIT_REJECTIONS = Counter(
    "aintandem_api_rate_limit_rejections_total", "Requests refused by a rate limit", ["group"]
)
