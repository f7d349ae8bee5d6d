"""Block sync trusts nothing the peer sends: an honest peer's committed blocks are applied and
reproduce its headers exactly; a forged block, or one that does not chain to our tip, is never
applied, and nothing after it is either (node/net/block_sync.py). Sync and consensus commits queued
at the same time share the commit pipeline: each height is written and announced once, in
order, and announced before the next one is written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kledger.consensus import (
    Block,
    Commit,
    Core,
    CoreConfig,
    Deliver,
    NodeId,
    QuorumCert,
    RestoredState,
    Send,
    SetTimer,
    TimerFired,
    genesis_block,
)
from kledger.consensus.validators import ValidatorSet
from kledger.node.chain import keys
from kledger.node.commit.committer import CommittedHeight, Committer
from kledger.node.commit.pipeline import CommitPipeline
from kledger.node.net.block_sync import BlockSync
from kledger.node.net.peer_transport import SyncedBlockData
from kledger.node.registry import Registry
from kledger.node.storage.store import LedgerStore
from tests.helpers import key, make_genesis

GENESIS = make_genesis(orgs=(("KOMCA", ("AUTHOR_CMO",)),))  # n=1: one validator commits alone
VALIDATOR = key("KOMCA/validator")
HEIGHTS = 6


class EmptyPayloads:
    def next_payload(self, pending: object) -> bytes:
        return b""

    def has_payload(self, pending: object) -> bool:
        return True

    def is_valid_payload(self, payload: bytes, pending: object) -> bool:
        return True

    def validator_set_after(self, block: Block) -> ValidatorSet | None:
        return None

    def epoch_ending_qc(self, epoch: int) -> QuorumCert | None:
        return None


def make_core() -> tuple[Core, Block]:
    root, qc = genesis_block(GENESIS.chain_id, GENESIS.validator_set, GENESIS.genesis_time_ms)
    core = Core(
        CoreConfig(),
        GENESIS.chain_id,
        NodeId("KOMCA"),
        GENESIS.validator_set,
        lambda message: VALIDATOR.sign(keys.CONSENSUS_TAG, message),
        lambda pk, message, sig: keys.verify(pk, keys.CONSENSUS_TAG, message, sig),
        EmptyPayloads(),
        RestoredState(None, root, qc),
    )
    return core, root


def commits_of(core: Core) -> list[Commit]:
    """Run the single-validator core (its messages to itself, its timers in order) until it
    has committed HEIGHTS blocks."""
    now = GENESIS.genesis_time_ms + 1_000
    queue = core.start(now)
    timers: list[tuple[int, Any]] = []
    commits: list[Commit] = []
    while len(commits) < HEIGHTS:
        if not queue:
            timers.sort(key=lambda t: t[0])
            at_ms, timer = timers.pop(0)
            now = max(now, at_ms)
            queue = core.step(TimerFired(timer, now))
            continue
        effect = queue.pop(0)
        if isinstance(effect, Send):
            queue += core.step(Deliver(NodeId("KOMCA"), effect.message, now))
        elif isinstance(effect, SetTimer):
            timers.append((effect.at_ms, effect.timer))
        elif isinstance(effect, Commit):
            commits.append(effect)
        # Broadcast reaches no one (n=1); Persist/SaveBlock need no disk here.
    return commits


def open_store(path: Path) -> tuple[LedgerStore, Committer]:
    registry = Registry(GENESIS)
    store = LedgerStore.open(
        path, GENESIS, registry.genesis_writes(), registry.genesis_state_root()
    )
    return store, Committer(store, registry, GENESIS)


@pytest.fixture
def source(tmp_path: Path):  # type: ignore[no-untyped-def]
    core, root = make_core()
    store, committer = open_store(tmp_path / "source")
    commits = commits_of(core)
    for commit in commits:
        for block in commit.blocks:  # as the commit pipeline applies a Commit effect
            committer.apply_block(block, commit.qc.encode())
    yield core, root, store, commits
    store.close()


def served(store: LedgerStore, change: Callable[[SyncedBlockData], SyncedBlockData] | None = None):  # type: ignore[no-untyped-def]
    async def fetch(peer: str, first: int, last: int) -> AsyncIterator[SyncedBlockData]:
        for height in range(first, last + 1):
            record = store.block(height)
            assert record is not None
            data = SyncedBlockData(
                height, record.consensus_block, record.commit_qc, record.header.encode(), b""
            )
            yield change(data) if change else data

    return fetch


async def sync_into(
    tmp_path: Path,
    source_core: Core,
    root: Block,
    fetch,
    target: QuorumCert,  # type: ignore[no-untyped-def]
) -> tuple[LedgerStore, list[int]]:
    store, committer = open_store(tmp_path / "target")
    pipeline = CommitPipeline(committer)
    applied: list[int] = []

    def on_applied(committed: CommittedHeight, certificate: bytes) -> None:
        applied.append(committed.header.height)

    sync = BlockSync(
        store=store,
        pipeline=pipeline,
        fetch=fetch,
        verify_qc=source_core.verify_qc,
        on_applied=on_applied,
        genesis_id=root.id,
    )
    try:
        await sync.sync(NodeId("KOMCA"), target)
    finally:
        await pipeline.close()
    return store, applied


@pytest.mark.asyncio
async def test_an_honest_peer_brings_a_node_to_the_same_headers(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    core, root, store, commits = source
    target = commits[-1].qc
    synced, applied = await sync_into(tmp_path, core, root, served(store), target)
    assert applied == list(range(1, HEIGHTS + 1))
    assert [synced.header(h).hash() for h in applied] == [store.header(h).hash() for h in applied]  # type: ignore[union-attr]
    synced.close()


@pytest.mark.asyncio
async def test_a_forged_block_and_everything_after_it_is_refused(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    core, root, store, commits = source
    target = commits[-1].qc

    def forge_height_3(data: SyncedBlockData) -> SyncedBlockData:
        if data.height != 3:
            return data
        block = Block.decode(data.consensus_block)
        forged = replace(block, payload=b"\x90")  # same parent, other content: another id
        return replace(data, consensus_block=forged.encode())

    synced, applied = await sync_into(tmp_path, core, root, served(store, forge_height_3), target)
    assert applied == [1, 2]
    assert synced.last_height() == 2
    synced.close()


@pytest.mark.asyncio
async def test_blocks_without_a_verifiable_qc_wait_for_one(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    core, root, store, commits = source
    target = commits[-1].qc

    def bad_qcs(data: SyncedBlockData) -> SyncedBlockData:
        return replace(data, commit_qc=b"not a qc" if data.height % 2 else b"")

    # No stored QC proves anything, but the core-verified target commits the last block, and
    # the parent-id chain down from it authenticates the whole run: all applied, at the end.
    synced, applied = await sync_into(tmp_path, core, root, served(store, bad_qcs), target)
    assert applied == list(range(1, HEIGHTS + 1))
    synced.close()

    def truncated(data: SyncedBlockData) -> SyncedBlockData:
        return (
            replace(data, commit_qc=b"")
            if data.height < HEIGHTS
            else replace(data, consensus_block=b"garbage")
        )

    other = tmp_path / "second"
    other.mkdir()
    synced, applied = await sync_into(other, core, root, served(store, truncated), target)
    assert applied == []  # without proof of commitment nothing is applied
    synced.close()


@pytest.mark.asyncio
async def test_sync_and_queued_consensus_commits_apply_each_height_once(
    source, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    core, root, store, commits = source
    target_store, committer = open_store(tmp_path / "target")
    pipeline = CommitPipeline(committer)
    # (height announced, store height at that moment, by whom)
    announced: list[tuple[int, int, str]] = []

    def by(who: str) -> Callable[[CommittedHeight], None]:
        def announce(committed: CommittedHeight) -> None:
            announced.append((committed.header.height, target_store.last_height(), who))

        return announce

    sync = BlockSync(
        store=target_store,
        pipeline=pipeline,
        fetch=served(store),
        verify_qc=core.verify_qc,
        on_applied=lambda committed, certificate: by("sync")(committed),
        genesis_id=root.id,
    )
    # Consensus committed every height too and queued them; sync starts before they are applied.
    for commit in commits:
        pipeline.submit(commit.blocks, commit.qc)
    runner = asyncio.create_task(pipeline.run(by("consensus"), lambda: None))
    try:
        await sync.sync(NodeId("KOMCA"), commits[-1].qc)
        while pipeline.queued_commits:
            await asyncio.sleep(0.01)
        await pipeline.apply_block(commits[-1].blocks[-1], commits[-1].qc.encode(), by("late"))
    finally:
        runner.cancel()
        await pipeline.close()
    assert sorted(height for height, _, _ in announced) == list(range(1, HEIGHTS + 1))
    # Announced in height order, each while the store stood exactly at that height.
    assert [(height, at) for height, at, _ in announced] == [(h, h) for h in range(1, HEIGHTS + 1)]
    assert [target_store.header(h) for h in range(HEIGHTS + 1)] == [
        store.header(h) for h in range(HEIGHTS + 1)
    ]
    target_store.close()
