"""Histories recorded by earlier versions of the workflows replay against today's code (the
fast suite's guard for `workflow.patched`: a change to workflow code that is not behind a patch
fails here).

`tests/histories/*.json` hold {"payload_key", "workflow_id", "history"}: the history as Temporal
stored it (payloads encrypted with that throwaway test key), recorded just before the change
its name says. Record a new one the same way before changing a workflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from config.payload_codec import data_converter
from config.settings import Settings
from workflows.collaboration import CollaborationWorkflow
from workflows.inbox import InboxWorkflow
from workflows.message_delivery import MessageDeliveryWorkflow
from workflows.sandbox import SandboxWorkflow

ROOT = Path(__file__).resolve().parents[1]
SAVED = sorted((ROOT / "histories").glob("*.json"))
RECORDS = {p.stem: json.loads(p.read_text()) for p in SAVED}
WORKFLOWS = [CollaborationWorkflow, MessageDeliveryWorkflow, InboxWorkflow, SandboxWorkflow]


@pytest.mark.parametrize("name", sorted(RECORDS))
async def test_saved_history_replays(name: str, tmp_path: Path) -> None:
    saved = RECORDS[name]
    settings = Settings(_env_file=None, data_dir=tmp_path, payload_key=saved["payload_key"])
    history = WorkflowHistory.from_json(saved["workflow_id"], saved["history"])
    result = await Replayer(
        workflows=WORKFLOWS, data_converter=data_converter(settings)
    ).replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_there_are_saved_histories() -> None:
    expected = {
        "collaboration_failed_before_patch",
        "message_delivery_failed_before_patch",
        "collaboration_orchestrated_completed_before_progress_patch",
        "collaboration_peer_to_peer_completed_before_progress_patch",
        "collaboration_swarm_completed_before_progress_patch",
    }
    assert expected <= set(RECORDS)
