"""Worker wiring: connect to Temporal, build clients once, register workflows and activities."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.agent import AgentActivities
from activities.collaboration import CollaborationActivities
from activities.docker_runtime import DockerRuntime
from activities.llm import LLMActivities
from activities.messaging import MessagingActivities
from activities.offline_llm import OfflineModelServer
from activities.offline_llm import available as offline_available
from activities.sandbox import SandboxActivities
from activities.store import StoreActivities
from config.payload_codec import data_converter, with_data_converter
from config.settings import Settings
from store.db import create_engine, session_factory
from worker import maintenance, metrics
from worker.search_attributes import ensure_search_attributes
from workflows.collaboration import CollaborationWorkflow
from workflows.inbox import InboxWorkflow
from workflows.message_delivery import MessageDeliveryWorkflow
from workflows.sandbox import SandboxWorkflow

log = logging.getLogger("aintandem.worker")


async def connect(settings: Settings, runtime: Runtime | None = None, wait: float = 60.0) -> Client:
    """Connect, retrying while Temporal starts (the embedded server takes a few seconds).
    Payloads are encrypted with the installation's key (config/payload_codec.py)."""
    deadline = asyncio.get_running_loop().time() + wait
    converter = data_converter(settings)
    while True:
        try:
            return await Client.connect(
                settings.resolved_temporal_address,
                namespace=settings.temporal_namespace,
                runtime=runtime,
                data_converter=converter,
            )
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


@dataclass(frozen=True)
class ActivitySet:
    store: StoreActivities
    sandbox: SandboxActivities
    messaging: MessagingActivities
    agent: AgentActivities
    llm: LLMActivities
    offline: OfflineModelServer | None
    collaboration: CollaborationActivities

    async def aclose(self) -> None:
        await self.llm.aclose()
        self.agent.runtime.close()  # the one DockerRuntime the sandbox activities share
        if self.offline is not None:
            await asyncio.to_thread(self.offline.stop)


def build_activities(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], client: Client
) -> ActivitySet:
    # The activities that start workflows or signal them encrypt like the API does.
    client = with_data_converter(client, settings)
    runtime = DockerRuntime(
        image=settings.sandbox_image,
        installation=settings.installation_id,
        internet_egress_allowed=settings.sandbox_internet_egress_allowed,
    )
    # The offline model starts on first use (a workspace without a configured provider).
    model, path = settings.offline_model_spec(), settings.offline_model_file()
    offline = OfflineModelServer(spec=model, model=path) if offline_available(model, path) else None
    return ActivitySet(
        StoreActivities(sessions),
        SandboxActivities(runtime, sessions),
        MessagingActivities(sessions, client, settings.task_queue),
        AgentActivities(sessions, runtime),
        LLMActivities(offline=offline, access=settings.provider_access()),
        offline,
        CollaborationActivities(sessions),
    )


def build_worker(
    client: Client, settings: Settings, executor: ThreadPoolExecutor, acts: ActivitySet
) -> Worker:
    sandbox, messaging = acts.sandbox, acts.messaging
    return Worker(
        # The worker decodes and encodes with its client's data converter: whatever client it is
        # handed (a test's dev server, a benchmark's), it uses the installation's keys.
        with_data_converter(client, settings),
        task_queue=settings.task_queue,
        workflows=[SandboxWorkflow, InboxWorkflow, MessageDeliveryWorkflow, CollaborationWorkflow],
        activities=[
            acts.store.append_event,
            sandbox.start,
            sandbox.stop,
            sandbox.remove,
            sandbox.update_resources,
            sandbox.observe,
            sandbox.record_status,
            sandbox.record_observation,
            messaging.target_status,
            messaging.deliver,
            messaging.fail,
            messaging.enqueue,
            messaging.set_status,
            acts.agent.prepare,
            acts.agent.run_tool,
            acts.agent.record_response,
            acts.llm.complete,
            acts.collaboration.send,
            acts.collaboration.reply,
            acts.collaboration.record,
        ],
        activity_executor=executor,
        max_concurrent_activities=64,
    )


async def refresh_gauges(sessions: async_sessionmaker[AsyncSession], every: float = 15.0) -> None:
    """Keep the status gauges in step with the read model (every worker reports the same)."""
    from store.repositories.metrics import collaborations_by_status, sandboxes_by_status

    while True:
        try:
            async with sessions() as session:
                gauges = [
                    (metrics.SANDBOXES, await sandboxes_by_status(session)),
                    (metrics.COLLABORATIONS, await collaborations_by_status(session)),
                ]
            for gauge, counts in gauges:
                gauge.clear()
                for status, n in counts.items():
                    gauge.labels(status).set(n)
        except Exception as exc:  # a database blip must not kill the worker
            log.warning("gauge refresh failed: %s", exc)
        await asyncio.sleep(every)


async def run(settings: Settings) -> None:
    sdk_port = metrics.free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{sdk_port}"))
    )
    metrics.serve(settings.worker_metrics_host, settings.worker_metrics_port, sdk_port)
    client = await connect(settings, runtime)
    await ensure_search_attributes(client, settings.temporal_namespace)
    engine = create_engine(settings.resolved_database_url)
    activities = build_activities(settings, session_factory(engine), client)
    try:
        removed = await activities.sandbox.remove_orphans()
        if removed:
            log.info("removed %d orphaned sandbox containers: %s", len(removed), removed)
    except Exception as exc:  # the engine may be down; sandboxes report it themselves
        log.warning("orphan sweep skipped: %s", exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=64, thread_name_prefix="activity") as executor:
        worker = build_worker(client, settings, executor, activities)
        log.info(
            "worker polling task queue %r on %s",
            settings.task_queue,
            settings.resolved_temporal_address,
        )
        gauges = asyncio.create_task(refresh_gauges(session_factory(engine)))
        sweeper = asyncio.create_task(
            maintenance.run_periodically(client, settings, session_factory(engine))
        )
        async with worker:
            await stop.wait()
            log.info("worker shutting down")
        gauges.cancel()
        sweeper.cancel()
    await activities.aclose()
    await engine.dispose()
