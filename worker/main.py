"""Worker wiring: connect to Temporal, build clients once, register workflows and activities."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.store import StoreActivities
from config.settings import Settings
from store.db import create_engine, session_factory
from worker import metrics

log = logging.getLogger("aintandem.worker")


async def connect(settings: Settings, runtime: Runtime | None = None, wait: float = 60.0) -> Client:
    """Connect, retrying while Temporal starts (the embedded server takes a few seconds)."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            return await Client.connect(
                settings.resolved_temporal_address, namespace=settings.temporal_namespace,
                runtime=runtime,
            )
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


def build_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor) -> Worker:
    engine = create_engine(settings.resolved_database_url)
    store = StoreActivities(session_factory(engine))
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[],
        activities=[store.append_event],
        activity_executor=executor,
    )


async def run(settings: Settings) -> None:
    sdk_port = metrics.free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{sdk_port}"))
    )
    metrics.serve(settings.worker_metrics_host, settings.worker_metrics_port, sdk_port)
    client = await connect(settings, runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity") as executor:
        worker = build_worker(client, settings, executor)
        log.info("worker polling task queue %r on %s", settings.task_queue,
                 settings.resolved_temporal_address)
        async with worker:
            await stop.wait()
            log.info("worker shutting down")
