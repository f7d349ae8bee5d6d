"""The flat state keeps a state value once, in its state-tree leaf (store v6,
node/storage/flat_state.py): s/<key> holds the leaf's version, and a flat entry that names no
leaf is damage, never a value."""

from __future__ import annotations

import threading

import pytest

from kledger.node.chain.receipt import TxResult
from kledger.node.errors import StoreCorrupt
from kledger.node.storage import store_parts
from kledger.node.storage.store import BlockRecord
from kledger.node.storage.store_parts import STATE_PART, TREE_PART
from tests.ledger_builders import commit, make_tx, next_header, open_store

VALUE = b"party-name:PARK JI-MIN (KOMCA member 0077)"
KEY = b"s/party/0077"


def test_a_value_is_stored_once_in_its_leaf_and_the_flat_entry_names_its_version(tmp_path):
    store = open_store(tmp_path / "db")
    try:
        commit(store, [make_tx(1)], {KEY: VALUE})
        commit(store, [make_tx(2)])
        assert store.view.get(KEY) == VALUE
        assert dict(store.view.iterate(b"s/party/")) == {KEY: VALUE}
        assert store.snapshot_view().get(KEY) == VALUE
        state = store._db.part(STATE_PART)
        assert state.get(KEY) == (1).to_bytes(8, "big")  # the height that wrote it
        assert not [k for k, v in state.iterator() if VALUE in v]
        assert [k for k, v in store._db.part(TREE_PART).iterator() if v == VALUE]
        commit(store, [make_tx(3)], {KEY: None})
        assert store.view.get(KEY) is None and state.get(KEY) is None
    finally:
        store.close()


@pytest.mark.parametrize(
    ("entry", "names"),
    [((9).to_bytes(8, "big"), "names its leaf at version 9, missing"), (b"abc", "not a leaf")],
)
def test_a_flat_entry_naming_no_leaf_is_damage(tmp_path, entry, names):
    store = open_store(tmp_path / "db")
    told: list[StoreCorrupt] = []
    store.on_damaged(told.append)
    try:
        store._db.part(STATE_PART).put(KEY, entry)
        with pytest.raises(StoreCorrupt, match=names) as caught:
            store.view.get(KEY)
        assert "b's/party/0077'" in str(caught.value) and told == [caught.value]
        with pytest.raises(StoreCorrupt, match=names):
            list(store.view.iterate(b"s/party/"))
    finally:
        store.close()
    with pytest.raises(StoreCorrupt, match=names):  # the deep check reads every state value
        open_store(tmp_path / "db", deep_check=True)


def test_a_state_write_without_its_leaf_is_never_written(tmp_path):
    store = open_store(tmp_path / "db")
    try:
        txs = [make_tx(1)]
        record = BlockRecord(next_header(store, txs), b"b", b"q")
        with pytest.raises(AssertionError, match="without its state-tree leaf"):
            store.prepare_commit(record, txs, [TxResult()], {KEY: VALUE})
        assert store.last_height() == 0 and store.view.get(KEY) is None
    finally:
        store.close()


def test_a_snapshot_is_never_taken_across_a_prune_pass(tmp_path, monkeypatch):
    """A prune pass deletes state-tree leaves; a snapshot between its state/ and tree/ parts
    could name a leaf its tree/ part no longer holds: the two exclude each other."""
    store = open_store(tmp_path / "db")
    try:
        for nonce in range(4):
            commit(store, [make_tx(nonce)], {KEY: VALUE + bytes([nonce])})
        held: list[bool] = []
        real_write = store_parts.SplitBatch._write

        def write(batch: store_parts.SplitBatch) -> None:
            held.append(store._db._prune_lock.locked())
            real_write(batch)

        monkeypatch.setattr(store_parts.SplitBatch, "_write", write)
        deleted, _ = store.prune_state(keep_from=3, max_records=100)
        assert deleted and held == [True]  # the prune pass wrote under the lock
        commit(store, [make_tx(9)])
        assert held[1:] == [False]  # a commit only adds records: it holds nothing up
        taken = threading.Event()

        def take() -> None:
            store.snapshot_view()
            taken.set()

        with store._db._prune_lock:  # a prune pass in progress
            thread = threading.Thread(target=take)
            thread.start()
            assert not taken.wait(0.2)
        thread.join(timeout=30)
        assert taken.is_set() and store.snapshot_view().get(KEY) == VALUE + b"\x03"
    finally:
        store.close()
