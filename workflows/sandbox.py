"""SandboxWorkflow: one per sandbox (`sandbox-{sandbox_id}`), alive for the sandbox's life."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.sandbox import (
        Observation,
        ObservationRecord,
        ObserveInput,
        ResourcesInput,
        StartInput,
        StopInput,
    )
    from domain.containers import ContainerSpec, ContainerState
    from domain.enums import SandboxStatus as S
    from domain.sandbox import (
        TRANSITIONAL,
        ConfigUpdate,
        LifecycleResult,
        SandboxOp,
        SandboxState,
        SandboxWorkflowInput,
        StatusRecord,
        transition_error,
    )
    from workflows import policies as p

NOT_READY = "SandboxNotReady"
# What the observe activity fails with when the Docker engine cannot be reached at all
# (activities/docker_runtime.DockerUnavailable, named by its class).
ENGINE_UNREACHABLE = "DockerUnavailable"
# Other observation failures (engine errors, timeouts) are tolerated this many ticks in a row.
MAX_FAILED_OBSERVATIONS = 3
# Histories recorded before this patch kept `running` however long the engine was away.
ENGINE_OUTAGE_PATCH = "engine-outage-is-an-error"

_EVENT_FOR = {
    S.RUNNING: "sandbox_started",
    S.STOPPED: "sandbox_stopped",
    S.ERROR: "sandbox_error",
    S.STARTING: "sandbox_starting",
    S.STOPPING: "sandbox_stopping",
    S.RESTARTING: "sandbox_restarting",
    S.PROVISIONING: "sandbox_provisioning",
}


@workflow.defn(name="Sandbox")
class SandboxWorkflow:
    """Provisioning → running ⇄ stopped, health loop with crash restarts, deletion."""

    def __init__(self) -> None:
        self._inp: SandboxWorkflowInput | None = None
        self._state = SandboxState()
        self._ops: list[SandboxOp] = []
        self._deleting = False
        self._deleted = False
        # Docker operations from the run loop and from update handlers never interleave.
        self._docker_lock = asyncio.Lock()

    # -- run loop -------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: SandboxWorkflowInput) -> str:
        self._inp = inp
        self._state = inp.state
        if self._state.status == S.PROVISIONING:
            async with self._docker_lock:
                await self._bring_up(S.PROVISIONING)
        ticks = 0
        while True:
            with contextlib.suppress(TimeoutError):  # the timeout is the health tick
                await workflow.wait_condition(
                    lambda: bool(self._ops) or self._deleted,
                    timeout=timedelta(seconds=inp.health_interval_seconds),
                )
            if self._deleted:
                return "deleted"
            if self._ops:
                op = self._ops.pop(0)
                async with self._docker_lock:
                    if not self._deleting:
                        await self._perform(op)
            elif self._observed() and not self._deleting:
                async with self._docker_lock:
                    await self._health_tick()
            ticks += 1
            if (
                (ticks >= inp.ticks_per_run or workflow.info().is_continue_as_new_suggested())
                and not self._ops
                and not self._deleting
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(replace(inp, state=self._state))

    # -- updates --------------------------------------------------------------------------------

    def _validate(self, op: SandboxOp) -> None:
        if self._deleting:
            raise ApplicationError("sandbox is being deleted", type=NOT_READY)
        reason = transition_error(op, self._state.status)
        if reason:
            raise ApplicationError(reason, {"status": self._state.status}, type=NOT_READY)

    async def _request(self, op: SandboxOp) -> LifecycleResult:
        await self._transition(TRANSITIONAL[op])
        self._ops.append(op)
        return LifecycleResult(self._sid, self._state.status, self._state.version)

    @workflow.update(name="start")
    async def start(self) -> LifecycleResult:
        """Start a stopped (or errored) sandbox; answers with the transitional status."""
        return await self._request(SandboxOp.START)

    @start.validator
    def _validate_start(self) -> None:
        self._validate(SandboxOp.START)

    @workflow.update(name="stop")
    async def stop(self) -> LifecycleResult:
        """Stop a running sandbox."""
        return await self._request(SandboxOp.STOP)

    @stop.validator
    def _validate_stop(self) -> None:
        self._validate(SandboxOp.STOP)

    @workflow.update(name="restart")
    async def restart(self) -> LifecycleResult:
        """Restart a running (or errored) sandbox."""
        return await self._request(SandboxOp.RESTART)

    @restart.validator
    def _validate_restart(self) -> None:
        self._validate(SandboxOp.RESTART)

    @workflow.update(name="update_config")
    async def update_config(self, change: ConfigUpdate) -> LifecycleResult:
        """Apply new resources to the live container; new env vars apply from the next start."""
        inp = self._input
        if change.environment is not None:
            inp.environment = dict(change.environment)
        if change.resources is not None and change.resources != inp.resources:
            inp.resources = change.resources
            async with self._docker_lock:
                await workflow.execute_activity(
                    "sandbox_update_resources",
                    ResourcesInput(
                        self._sid,
                        inp.resources.memory_mb,
                        inp.resources.cpu_cores,
                        inp.resources.max_processes,
                    ),
                    start_to_close_timeout=p.DOCKER_TIMEOUT,
                    retry_policy=p.DOCKER_RETRY,
                    result_type=ContainerState,
                )
        return LifecycleResult(self._sid, self._state.status, self._state.version)

    @update_config.validator
    def _validate_config(self, change: ConfigUpdate) -> None:
        if self._deleting:
            raise ApplicationError("sandbox is being deleted", type=NOT_READY)

    @workflow.update(name="delete")
    async def delete(self) -> LifecycleResult:
        """Remove the container (retried until it is gone), then end the workflow."""
        self._deleting = True
        async with self._docker_lock:
            await workflow.execute_activity(
                "sandbox_remove",
                self._sid,
                start_to_close_timeout=p.STOP_TIMEOUT,
                retry_policy=p.REMOVE_RETRY,
            )
        self._deleted = True
        return LifecycleResult(self._sid, S.DELETED, self._state.version + 1)

    @workflow.query(name="state")
    def state(self) -> dict[str, Any]:
        """The lifecycle state as the workflow sees it (for operators and tests)."""
        return {
            "status": self._state.status,
            "version": self._state.version,
            "restart_count": self._state.restart_count,
            "reason": self._state.reason,
            "pending": [op.value for op in self._ops],
            "deleting": self._deleting,
        }

    # -- internals ------------------------------------------------------------------------------

    @property
    def _input(self) -> SandboxWorkflowInput:
        assert self._inp is not None
        return self._inp

    @property
    def _sid(self) -> str:
        return self._input.sandbox_id

    def _spec(self) -> ContainerSpec:
        inp = self._input
        return ContainerSpec(
            sandbox_id=inp.sandbox_id,
            workspace_id=inp.workspace_id,
            name=inp.name,
            image=inp.image,
            memory_mb=inp.resources.memory_mb,
            cpu_cores=inp.resources.cpu_cores,
            max_processes=inp.resources.max_processes,
            env=dict(inp.environment),
        )

    def _observed(self) -> bool:
        """Whether the health loop looks at the container (an engine-lost `error` too)."""
        st = self._state
        return st.status == S.RUNNING or (st.status == S.ERROR and st.engine_lost)

    async def _transition(
        self, status: str, reason: str | None = None, *, engine_lost: bool = False
    ) -> None:
        st = self._state
        st.status, st.reason = status, reason
        # Any other transition (a user's start/stop/restart, a recovery) ends the engine-lost
        # mode; set before the first await, so an update interleaving here sees it already.
        st.engine_lost = engine_lost
        st.version += 1
        if status == S.RUNNING:
            st.started_at = workflow.now().isoformat()
        elif status in (S.STOPPED, S.ERROR):
            st.started_at = None
        # A local activity: one short DB write needs no task-queue round trip (≈ 20 ms less per
        # transition, measured by bench/sandbox_lifecycle.py); it is still retried and recorded.
        await workflow.execute_local_activity(
            "sandbox_record_status",
            StatusRecord(
                sandbox_id=self._sid,
                workspace_id=self._input.workspace_id,
                status=status,
                version=st.version,
                reason=reason,
                restart_count=st.restart_count,
                started_at=st.started_at,
                event=_EVENT_FOR.get(S(status)),
            ),
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
            result_type=bool,
        )

    async def _bring_up(self, via: str) -> bool:
        """Create-if-missing + start + wait for the runtime; running, or error with the reason."""
        if self._state.status != via:
            await self._transition(via)
        try:
            await workflow.execute_activity(
                "sandbox_start",
                StartInput(self._spec()),
                start_to_close_timeout=p.START_TIMEOUT,
                heartbeat_timeout=p.START_HEARTBEAT,
                retry_policy=p.DOCKER_RETRY,
                result_type=ContainerState,
            )
        except ActivityError as err:
            await self._transition(S.ERROR, _reason(err))
            return False
        await self._transition(S.RUNNING)
        return True

    async def _stop_container(self) -> None:
        await workflow.execute_activity(
            "sandbox_stop",
            StopInput(self._sid),
            start_to_close_timeout=p.STOP_TIMEOUT,
            retry_policy=p.DOCKER_RETRY,
            result_type=ContainerState,
        )

    async def _perform(self, op: SandboxOp) -> None:
        try:
            if op == SandboxOp.STOP:
                await self._stop_container()
                await self._transition(S.STOPPED)
            elif op == SandboxOp.START:
                self._state.consecutive_failures = 0
                await self._bring_up(S.STARTING)
            elif op == SandboxOp.RESTART:
                await self._stop_container()
                self._state.consecutive_failures = 0
                await self._bring_up(S.RESTARTING)
        except ActivityError as err:
            await self._transition(S.ERROR, _reason(err))

    async def _health_tick(self) -> None:
        st = self._state
        lost = st.engine_lost
        try:
            obs = await workflow.execute_activity(
                "sandbox_observe",
                ObserveInput(self._sid, st.log_cursor),
                start_to_close_timeout=p.OBSERVE_TIMEOUT,
                retry_policy=p.OBSERVE_RETRY,
                result_type=Observation,
            )
        except ActivityError as err:
            # Before the patch a failed observation was ignored ("the next tick looks again"),
            # so with the engine gone the sandbox stayed `running` for as long as the outage
            # lasted while its container was not running at all.
            if workflow.patched(ENGINE_OUTAGE_PATCH):
                await self._observation_failed(err)
            return
        st.failed_observations = 0
        if lost:
            if st.engine_lost:  # no start/stop/restart arrived meanwhile: that one decides
                await self._engine_back(obs)
            return
        await self._record(obs)
        if obs.state.running:
            if obs.healthy:
                st.consecutive_failures = 0
            return
        # The container died under us: restart it by policy, give up after repeated failures.
        reason = _exit_reason(obs.state)
        st.consecutive_failures += 1
        if st.consecutive_failures > self._input.max_consecutive_failures:
            await self._transition(
                S.ERROR, f"{reason}; gave up after {st.consecutive_failures - 1} restarts"
            )
            return
        st.restart_count += 1
        await self._transition(S.RESTARTING, reason)
        await self._bring_up(S.RESTARTING)

    async def _record(self, obs: Observation) -> None:
        """Store what a health check saw (status, usage, new log lines) in the read model."""
        if obs.logs:
            self._state.log_cursor = obs.logs[-1].timestamp.isoformat()
        await workflow.execute_activity(
            "sandbox_record_observation",
            ObservationRecord(self._sid, self._input.workspace_id, workflow.now().isoformat(), obs),
            start_to_close_timeout=p.STORE_TIMEOUT,
            retry_policy=p.STORE_RETRY,
        )

    async def _observation_failed(self, err: ActivityError) -> None:
        """`running` is a claim about the container: one that cannot be checked is withdrawn.
        An unreachable engine (connection refused, socket gone) is not a hiccup: `error` at
        once. Other failures get a few ticks. Either way the loop keeps probing."""
        st = self._state
        st.failed_observations += 1
        if st.status != S.RUNNING:
            return  # already in error: wait for the engine
        unreachable = _error_type(err) == ENGINE_UNREACHABLE
        if unreachable or st.failed_observations >= MAX_FAILED_OBSERVATIONS:
            reason = _reason(err)  # "Docker engine unreachable: ..." when it is
            if not unreachable:
                reason = f"health check failed {st.failed_observations} times in a row: {reason}"
            await self._transition(S.ERROR, reason, engine_lost=True)

    async def _engine_back(self, obs: Observation) -> None:
        """The container can be observed again after an outage: make the status match it."""
        st = self._state
        await self._record(obs)
        if obs.state.running:  # it ran through the outage (e.g. the engine's live-restore)
            await self._transition(S.RUNNING)
            return
        # Stopped with the engine (no live-restore) or gone: bring it back, as after a crash.
        st.restart_count += 1
        st.consecutive_failures = 0
        await self._transition(
            S.RESTARTING, f"Docker engine was unreachable; {_exit_reason(obs.state)}"
        )
        await self._bring_up(S.RESTARTING)


def _error_type(err: ActivityError) -> str | None:
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _exit_reason(state: ContainerState) -> str:
    if not state.exists:
        return "container disappeared"
    if state.oom_killed:
        return "container was OOM-killed (memory limit reached)"
    return f"container exited with code {state.exit_code}"


def _reason(err: ActivityError) -> str:
    cause = err.cause
    while cause is not None and cause.cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.cause
    return str(cause.message if cause is not None and hasattr(cause, "message") else err)
