"""Crash safety of the ledger store: a crash between any two writes leaves the previous consistent
state. Simulated three ways: (1) the block's WriteBatch is built and dropped, never written (what a
crash before the write does, since LevelDB applies a batch atomically); (2) the block's writes to
three of the store's four LevelDBs land and the last, state/'s, does not; (3) a child process runs
a long series of synced commits and is killed with SIGKILL mid-run; the store then opens clean
(self-check passes, deep check included) at a committed height at least as high as the last one
the child reported.

This module is also the child: `python -m tests.test_store_crash DIR BLOCKS`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kledger.node.chain.receipt import TxResult
from kledger.node.proof import merkle
from kledger.node.storage import store_parts
from kledger.node.storage.merkle_log import nodes_from
from kledger.node.storage.store import BlockRecord
from kledger.node.storage.store_parts import HISTORY_PART, LOG_PART
from tests.ledger_builders import (
    certify,
    commit,
    kill_9_after,
    make_tx,
    next_header,
    open_store,
    with_tree,
)

ROOT = Path(__file__).resolve().parent.parent


def test_dropped_batch_leaves_previous_state(tmp_path):
    store = open_store(tmp_path / "db")
    commit(store, [make_tx(i) for i in range(4)])
    before = (store.last_header(), store.log_size(), store.log_root())
    txs = [make_tx(100 + i) for i in range(6)]
    header = next_header(store, txs)
    writes = with_tree(store, {b"s/new": b"1"})
    prepared = store.prepare_commit(BlockRecord(header, b"b", b"q"), txs, [TxResult()] * 6, writes)
    assert len(prepared.receipts) == 6
    del prepared  # the process dies before batch.write()
    assert (store.last_header(), store.log_size(), store.log_root()) == before
    store.close()
    store = open_store(tmp_path / "db", deep_check=True)
    assert (store.last_header(), store.log_size(), store.log_root()) == before
    assert not store.has_tx(txs[0].tx_hash) and store.view.get(b"s/new") is None
    # The same block commits fine after the "restart".
    first, stale = (
        store.prepare_commit(BlockRecord(header, b"b", b"q"), txs, [TxResult()] * 6, writes)
        for _ in range(2)
    )
    first.apply()
    assert store.log_size() == 10 and store.view.get(b"s/new") == b"1"
    with pytest.raises(AssertionError, match="another tip"):
        stale.apply()  # prepared before the same block committed: refused, nothing written
    store.close()


def test_crash_between_the_writes_of_the_four_leveldbs(tmp_path, monkeypatch):
    """A block's commit writes tree/, history/ and log/ (synced) before state/, the commit point
    (node/storage/store_parts.py). A crash after the first three: the block is not committed,
    the next open deletes what it left above state/'s height and log size, and the block
    commits again."""
    store = open_store(tmp_path / "db")
    commit(store, [make_tx(i) for i in range(4)])
    before = (store.last_header(), store.log_size(), store.log_root())
    page = b"z/n/" + (2).to_bytes(8, "big") + b"\x63"  # a state-tree record of height 2 (tree/)
    txs = [make_tx(100 + i) for i in range(3)]
    header = next_header(store, txs)
    record = BlockRecord(header, b"b", b"q")
    writes = with_tree(store, {b"s/new": b"1", page: b"page"})
    first_writes = (store_parts.TREE_PART, HISTORY_PART, LOG_PART)
    monkeypatch.setattr(store_parts, "WRITE_ORDER", first_writes)
    store.prepare_commit(record, txs, [TxResult()] * 3, writes).apply()  # state/ never written
    monkeypatch.undo()
    above = {part: (2).to_bytes(8, "big") for part in first_writes}
    above[LOG_PART] = nodes_from(4)  # the nodes that leaves 4, 5 and 6 complete
    for part, start in above.items():  # the crash left records of height 2 in each
        assert list(store._db.part(part).iterator(start=start, include_value=False))
    store.close()
    store = open_store(tmp_path / "db", deep_check=True)
    assert (store.last_header(), store.log_size(), store.log_root()) == before
    assert not store.has_tx(txs[0].tx_hash) and store.view.get(page) is None
    for part, start in above.items():
        assert not list(store._db.part(part).iterator(start=start, include_value=False))
    assert list(store._db.part(LOG_PART).iterator(include_value=False))  # the first 4 leaves
    store.prepare_commit(record, txs, [TxResult()] * 3, writes).apply()
    store.close()
    store = open_store(tmp_path / "db", deep_check=True)
    assert store.last_height() == 2 and store.view.get(page) == b"page"
    assert [tx.tx_hash for tx in store.block_txs(2)] == [tx.tx_hash for tx in txs]
    store.close()


def test_crash_between_commit_and_certificate(tmp_path):
    store = open_store(tmp_path / "db")
    header, _ = commit(store, [make_tx(1)])
    store.save_certificate(1, certify(header))
    commit(store, [make_tx(2)])  # crash before its certificate is saved
    store.close()
    store = open_store(tmp_path / "db")
    assert store.last_height() == 2 and store.latest_certified_height() == 1
    store.close()


def test_kill_9_during_synced_commits(tmp_path):
    path = tmp_path / "db"
    reported = kill_9_after("tests.test_store_crash", path, blocks=25, safety_net_s=60)
    store = open_store(path, deep_check=True)
    try:
        height = store.last_height()
        assert height >= reported
        header = store.last_header()
        assert store.log_size() == header.tx_log_size == 3 * height
        assert store.log_root() == header.tx_log_root
        last = store.block_txs(height)[-1]
        found = store.get_tx(last.tx_hash)
        assert found is not None and found[1].leaf_index == 3 * height - 1
        assert merkle.verify_inclusion(
            merkle.leaf_hash(last.encoding),
            3 * height - 1,
            3 * height,
            store.inclusion_proof(3 * height - 1, 3 * height),
            header.tx_log_root,
        )
        commit(store, [make_tx(10**9)])  # and it keeps going
    finally:
        store.close()


def _child(path: str, blocks: int) -> None:
    store = open_store(Path(path))
    for height in range(1, blocks + 1):
        commit(store, [make_tx(3 * height + i) for i in range(3)])
        print(height, flush=True)


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
