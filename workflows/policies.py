"""Timeouts and retry policies of every activity call, in one place."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Docker outages retry with backoff for a while; business failures are non-retryable by type.
DOCKER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=8,
    non_retryable_error_types=[
        "ImageMissing",
        "ContainerNotFound",
        "ContainerNotRunning",
        "ContainerExited",
    ],
)
# Removal must eventually happen (no orphaned container): retry until the engine is back.
REMOVE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=100),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
)
OBSERVE_RETRY = RetryPolicy(maximum_attempts=1)  # the next tick is the retry

START_TIMEOUT = timedelta(seconds=90)
START_HEARTBEAT = timedelta(seconds=15)
STOP_TIMEOUT = timedelta(seconds=60)
DOCKER_TIMEOUT = timedelta(seconds=30)
OBSERVE_TIMEOUT = timedelta(seconds=20)
STORE_TIMEOUT = timedelta(seconds=15)

# LLM calls: provider errors are classified by activities/llm.py (auth/bad request are
# non-retryable by type); overload and timeouts retry with backoff within the message timeout.
LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    non_retryable_error_types=["LLMAuthError", "LLMBadRequest", "LLMConfigError"],
)
LLM_HEARTBEAT = timedelta(seconds=30)
