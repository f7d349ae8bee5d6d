"""The asyncio driver carries out the core's effects in the core's order, and makes every
Persist/SaveBlock durable (one write) BEFORE any message that follows them leaves the node
(docs/style.md §2); it drops malformed and excess peer input without raising."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from kledger.consensus import (
    BlockRequest,
    Broadcast,
    Commit,
    CoreConfig,
    Effect,
    NodeId,
    Persist,
    Proposal,
    QuorumCert,
    Round,
    SafetyData,
    SaveBlock,
    Send,
    encode_message,
    genesis_block,
)
from kledger.consensus.core import Deliver
from kledger.node.ordering.driver import ConsensusDriver
from tests.helpers import make_genesis

GENESIS = make_genesis()
BLOCK, QC = genesis_block(GENESIS.chain_id, GENESIS.validator_set, GENESIS.genesis_time_ms)
REQUEST = BlockRequest(0, BLOCK.id, 1, NodeId("KOMCA"), b"\x00" * 64)


def safety(round_: int) -> SafetyData:
    return SafetyData(0, Round(round_), Round(0), None, None, None)


class ScriptedCore:
    """Stands in for consensus.Core: returns scripted effect lists and records its inputs."""

    def __init__(self, scripts: list[list[Effect]]) -> None:
        self.scripts = scripts
        self.inputs: list[Any] = []
        self.config = CoreConfig()
        self.validators = GENESIS.validator_set
        self.following = False

    def start(self, now_ms: int) -> list[Effect]:
        return self.scripts.pop(0)

    def step(self, event: Any) -> list[Effect]:
        self.inputs.append(event)
        return self.scripts.pop(0) if self.scripts else []


def make_driver(core: ScriptedCore, log: list[tuple[str, Any]], **kw: Any) -> ConsensusDriver:
    async def no_sync(peer: NodeId, target: QuorumCert) -> None:
        return None

    return ConsensusDriver(
        core,  # type: ignore[arg-type]
        persist=lambda s, blocks: log.append(("persist", (s, [b[0] for b in blocks]))),
        send=lambda to, data: log.append(("send", to)),
        broadcast=lambda data: log.append(("broadcast", None)),
        commit=lambda blocks, qc: log.append(("commit", [b.height for b in blocks])),
        sync=no_sync,
        clock_ms=lambda: 1_000,
        **kw,
    )


@pytest.mark.asyncio
async def test_durable_writes_go_out_in_one_batch_before_the_next_message() -> None:
    first: list[Effect] = [
        Persist(safety(3)),
        SaveBlock(BLOCK),
        Send(NodeId("RIAK"), REQUEST),
        Persist(safety(4)),
        Persist(safety(5)),  # a later Persist supersedes the earlier one in the same batch
        Broadcast(REQUEST),
        Commit((BLOCK,), QC),
        SaveBlock(BLOCK),  # trailing durable write: flushed at the end of the list
    ]
    log: list[tuple[str, Any]] = []
    driver = make_driver(ScriptedCore([first]), log)
    driver.stop()
    await driver.run()
    assert log == [
        ("persist", (safety(3).encode(), [0])),
        ("send", "RIAK"),
        ("persist", (safety(5).encode(), [])),
        ("broadcast", None),
        ("commit", [0]),
        ("persist", (None, [0])),
    ]


@pytest.mark.asyncio
async def test_peer_input_is_decoded_bounded_and_never_raises() -> None:
    core = ScriptedCore([[]])
    log: list[tuple[str, Any]] = []
    driver = make_driver(core, log, max_inbox_messages=2)
    driver.deliver("RIAK", b"\xff garbage")
    for _ in range(3):
        driver.deliver("RIAK", encode_message(REQUEST))
    assert driver.dropped == {"malformed": 1, "inbox_full": 1}
    task = asyncio.create_task(driver.run())
    await asyncio.sleep(0.01)
    driver.stop()
    await asyncio.wait_for(task, 5)
    delivered = [e for e in core.inputs if isinstance(e, Deliver)]
    assert [(e.sender, e.message) for e in delivered] == [("RIAK", REQUEST), ("RIAK", REQUEST)]


def test_proposals_tell_whether_this_nodes_clock_is_in_step() -> None:
    """A node 60 s slow sees every peer's proposal 60 s ahead (and refuses it): it says so."""
    log: list[tuple[str, Any]] = []
    driver = make_driver(ScriptedCore([[]]), log)  # its clock reads 1,000 ms
    assert driver.clock.reading().state == "unknown"

    def proposal(timestamp_ms: int) -> bytes:
        block = replace(BLOCK, timestamp_ms=timestamp_ms)
        return encode_message(Proposal(block, None, None, b"\x00" * 64))

    driver.deliver("RIAK", proposal(1_000 - 30))  # 30 ms of network delay
    assert driver.clock.reading().state == "ok"
    driver.deliver("KEPA", proposal(61_000))
    driver.deliver("FKMP", proposal(61_020))
    reading = driver.clock.reading()
    assert reading.state == "slow" and reading.offset_ms is not None and reading.offset_ms > 5_000
    driver.deliver("STRANGER", proposal(1_000_000))  # not a validator: no say in it
    assert driver.clock.reading() == reading
