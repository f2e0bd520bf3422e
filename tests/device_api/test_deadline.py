"""A deadline that passes cancels the run: no further node starts and the slow one is told."""

from __future__ import annotations

import time

import grpc
import pytest

from agent.daemon import Agent
from agent.device_api import DeviceServer
from agent.workflow import CompileOptions, NodeRegistry, compile_workflow
from protos import device_pb2 as pb
from protos import device_pb2_grpc
from tests.workflow.testnodes import Record

SLOW = {
    "id": "slow",
    "nodes": [
        {"id": "wait_for_cancel", "type": "test_watch_cancel", "config": {}},
        {"id": "after_deadline", "type": "test_record", "config": {}},
    ],
    "edges": [{"source": "wait_for_cancel", "target": "after_deadline"}],
}


def test_deadline_exceeded_cancels_the_run(
    agent: Agent, server: DeviceServer, stub: device_pb2_grpc.DeviceServiceStub, registry: NodeRegistry
) -> None:
    plan = compile_workflow(SLOW, CompileOptions(registry=registry))
    agent.activate_plan(plan)  # a workflow delivered while the agent runs, fed only by the API
    with pytest.raises(grpc.RpcError) as caught:
        stub.RunWorkflow(pb.RunWorkflowRequest(workflow_id="slow", input_json="{}"), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    waiting = plan.node("wait_for_cancel").impl
    assert waiting.seen.get(timeout=30) is True  # type: ignore[attr-defined]  # the node saw the cancel
    service = agent.service("slow")
    assert service is not None
    while service.stats.runs == 0:  # the run's thread returns right after the node
        time.sleep(0.01)
    assert service.stats.failed == 1
    assert not any("after_deadline" in nodes for nodes in Record.log.values())  # never started
