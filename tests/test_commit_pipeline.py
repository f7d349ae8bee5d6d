"""The commit pipeline (node/commit/pipeline.py) executes committed blocks off the event loop
without weakening what commits promise: blocks execute on the worker thread while the loop
serves other work; commits queued behind a running execution are applied after it, in order,
each height exactly once; a height is announced only after its write, while the store stands at
exactly that height; closing waits for a running write, starts nothing more, and leaves a store
that reopens and checks itself."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from kledger.cluster.bench.workload import sign_songs
from kledger.consensus import Block, BlockId, Height, NodeId, QuorumCert, Round, genesis_block
from kledger.node.chain.payload import encode_payload
from kledger.node.chain.tx import SignedTx, TxBody, decode_tx
from kledger.node.commit.committer import CommittedHeight, Committer
from kledger.node.commit.pipeline import CommitPipeline, CommitPipelineClosed
from kledger.node.registry import BlockContext, BlockOutcome, Registry
from kledger.node.storage.keyspace import ReadView
from kledger.node.storage.store import LedgerStore
from tests.helpers import key, make_genesis

GENESIS = make_genesis()
ROOT, ROOT_QC = genesis_block(GENESIS.chain_id, GENESIS.validator_set, GENESIS.genesis_time_ms)
SONGS_PER_BLOCK = 20  # six txs each
GATE_TIMEOUT_S = 30.0  # a test that forgets to open the gate fails instead of hanging


class GatedRegistry(Registry):
    """The real registry; a block's execution waits at the start until the gate is open, so a
    test can hold an execution 'running' as long as it needs."""

    def __init__(self) -> None:
        super().__init__(GENESIS)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.threads: list[str] = []

    def execute_block(
        self, view: ReadView, txs: Sequence[tuple[SignedTx, TxBody]], ctx: BlockContext
    ) -> BlockOutcome:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(GATE_TIMEOUT_S), "the test never opened the gate"
        return super().execute_block(view, txs, ctx)


def blocks(count: int) -> list[Block]:
    """`count` chained blocks above genesis, each with SONGS_PER_BLOCK songs of registry txs."""
    songs = sign_songs(GENESIS.chain_id, {"KOMCA": key("KOMCA/client")}, 0, count * SONGS_PER_BLOCK)
    out: list[Block] = []
    parent = ROOT
    for height in range(1, count + 1):
        batch = songs[(height - 1) * SONGS_PER_BLOCK : height * SONGS_PER_BLOCK]
        txs = [decode_tx(data) for song in batch for data in song.encodings]
        block = Block(
            chain_id=GENESIS.chain_id,
            epoch=0,
            round=Round(height),
            height=Height(height),
            parent_id=BlockId(parent.id),
            proposer=NodeId("KOMCA"),
            timestamp_ms=GENESIS.genesis_time_ms + height,
            payload=encode_payload(txs),
            qc=ROOT_QC,
        )
        out.append(block)
        parent = block
    return out


def qc() -> QuorumCert:
    return ROOT_QC  # the committer stores the QC's bytes; what it proves is not its concern here


@dataclass
class Ledger:
    path: Path
    store: LedgerStore
    registry: GatedRegistry
    pipeline: CommitPipeline
    # (height announced, store height at that moment, its txs all readable from the store)
    announced: list[tuple[int, int, bool]]
    batches_done: int = 0

    def announce(self, committed: CommittedHeight) -> None:
        stored = all(self.store.get_tx(tx.tx_hash) is not None for tx in committed.txs)
        self.announced.append((committed.header.height, self.store.last_height(), stored))

    def after_commit(self) -> None:
        self.batches_done += 1

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.registry.entered.wait, GATE_TIMEOUT_S)
        self.registry.entered.clear()

    async def wait_height(self, height: int) -> None:
        while self.store.last_height() < height or len(self.announced) < height:
            await asyncio.sleep(0.005)


def open_ledger(path: Path) -> Ledger:
    registry = GatedRegistry()
    store = LedgerStore.open(
        path, GENESIS, registry.genesis_writes(), registry.genesis_state_root()
    )
    committer = Committer(store, registry, GENESIS)
    return Ledger(path, store, registry, CommitPipeline(committer), [])


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(tmp_path / "store")
    yield opened
    opened.registry.gate.set()
    opened.store.close()


@pytest.mark.asyncio
async def test_a_block_executes_on_the_worker_while_the_loop_serves(ledger: Ledger) -> None:
    [block] = blocks(1)
    runner = asyncio.create_task(ledger.pipeline.run(ledger.announce, ledger.after_commit))
    ledger.pipeline.submit([block], qc())
    await ledger.wait_entered()
    # The execution is running and held: the loop is free, and what it reads is the old tip.
    assert ledger.registry.threads == ["kledger-commit_0"]
    served = await asyncio.wait_for(asyncio.sleep(0, result="served"), GATE_TIMEOUT_S)
    assert served == "served"
    assert ledger.store.last_height() == 0 and ledger.announced == []
    ledger.registry.gate.set()
    await ledger.wait_height(1)
    assert ledger.announced == [(1, 1, True)] and ledger.batches_done == 1
    runner.cancel()
    await ledger.pipeline.close()


@pytest.mark.asyncio
async def test_commits_queued_behind_an_execution_apply_after_it_in_order_once(
    ledger: Ledger,
) -> None:
    chain = blocks(4)
    runner = asyncio.create_task(ledger.pipeline.run(ledger.announce, ledger.after_commit))
    ledger.pipeline.submit(chain[:1], qc())
    await ledger.wait_entered()
    # While height 1 executes, consensus commits more: two at once, one alone, and (as after a
    # restart) one the store will already hold by the time it is taken.
    ledger.pipeline.submit(chain[1:3], qc())
    ledger.pipeline.submit(chain[3:], qc())
    ledger.pipeline.submit(chain[2:3], qc())
    assert ledger.pipeline.queued_commits == 3
    ledger.registry.gate.set()
    # Readers on the loop while the worker writes: every published height is whole.
    reads = 0
    while len(ledger.announced) < 4 or ledger.batches_done < 4:
        height = ledger.store.last_height()
        header = ledger.store.header(height)
        assert header is not None and ledger.store.log_size() >= header.tx_log_size
        reads += 1
        await asyncio.sleep(0)
    assert reads > 0
    # Announced in order, once each, after the write (txs readable), store exactly there.
    assert ledger.announced == [(h, h, True) for h in range(1, 5)]
    assert [ledger.store.header(h).round for h in range(1, 5)] == [1, 2, 3, 4]  # type: ignore[union-attr]
    assert all(name == "kledger-commit_0" for name in ledger.registry.threads)
    runner.cancel()
    await ledger.pipeline.close()


@pytest.mark.asyncio
async def test_close_waits_for_the_running_write_and_starts_no_more(ledger: Ledger) -> None:
    chain = blocks(2)
    runner = asyncio.create_task(ledger.pipeline.run(ledger.announce, ledger.after_commit))
    ledger.pipeline.submit(chain[:1], qc())
    ledger.pipeline.submit(chain[1:], qc())
    await ledger.wait_entered()
    # Node.stop: cancel the pipeline's task, then close before the store closes.
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    closing = asyncio.create_task(ledger.pipeline.close())
    await asyncio.sleep(0.05)
    assert not closing.done(), "close returned while a block was still being executed"
    ledger.registry.gate.set()
    await asyncio.wait_for(closing, GATE_TIMEOUT_S)
    # Height 1 finished its write; height 2 never started; nothing was announced after the
    # cancellation, and nothing new is taken.
    assert ledger.store.last_height() == 1 and ledger.announced == []
    assert ledger.registry.threads == ["kledger-commit_0"]
    assert ledger.pipeline.queued_commits == 1  # height 2, never taken
    ledger.pipeline.submit(chain[1:], qc())
    assert ledger.pipeline.queued_commits == 1
    with pytest.raises(CommitPipelineClosed):
        await ledger.pipeline.apply_block(chain[1], qc().encode(), ledger.announce)
    # The store reopens, checks itself, and its state matches its last header.
    ledger.store.close()
    reopened = open_ledger(ledger.path)
    ledger.store = reopened.store
    assert reopened.store.last_height() == 1
    assert (
        reopened.registry.state_root(reopened.store.view) == reopened.store.last_header().state_root
    )
