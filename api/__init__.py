"""FastAPI layer: REST under /api/v1, WebSocket under /ws, Prometheus /metrics."""
