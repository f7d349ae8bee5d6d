"""The ledger store on real LevelDB files: genesis creation, the read API, one-batch commits,
refusal of commits that do not follow the chain, and the open-time self-check refusing stores
that do not add up (overwritten header, deleted block record, overwritten log node, other
genesis, a missing tx record, index entry or receipts tree, ...) with a message naming the
problem; store v4's tx records by position, tx index and receipt trees served the same after a
restart, and a v3 store refused by name."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from typing import Any

import plyvel
import pytest

from kledger.cluster.bench.preload import copy_store
from kledger.node.chain.header import ZERO_HASH
from kledger.node.chain.payload import encode_payload
from kledger.node.chain.receipt import TxResult
from kledger.node.errors import StoreCorrupt
from kledger.node.proof import merkle
from kledger.node.proof.bundle import bundle_problem
from kledger.node.proof.receipts import receipt_path, receipts_root
from kledger.node.storage import keyspace
from kledger.node.storage.merkle_log import node_key
from kledger.node.storage.proofs import build_inclusion_bundle
from kledger.node.storage.store import BODIES, HEADERS, PENDING_BLOCK, BlockRecord, _StoredBlock
from kledger.node.storage.store_parts import HISTORY_PART, LOG_PART, PARTS
from tests.helpers import make_genesis
from tests.ledger_builders import (
    GENESIS_STATE_ROOT,
    GENESIS_WRITES,
    certify,
    commit,
    make_tx,
    next_header,
    open_store,
    with_tree,
)


def _height(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _record(height: int, index: int) -> bytes:
    """The T/ key of the tx at `index` of block `height`."""
    return keyspace.TX_RECORD + _height(height) + index.to_bytes(4, "big")


def _tree(height: int) -> bytes:
    return keyspace.RECEIPT_TREE + _height(height)


@pytest.fixture
def store(tmp_path):
    handle = open_store(tmp_path / "db")
    yield handle
    handle.close()


def _fill(store: Any, blocks: int = 4, per_block: int = 5) -> list[Any]:
    txs: list[Any] = []
    for _ in range(blocks):
        batch = [make_tx(len(txs) + i) for i in range(per_block)]
        header, _ = commit(store, batch)
        store.save_certificate(header.height, certify(header))
        txs += batch
    return txs


def test_genesis_header_and_writes(store):
    genesis = make_genesis()
    header = store.last_header()
    assert store.last_height() == 0 and header.height == 0
    assert header.parent_hash == ZERO_HASH and header.round == 0 and header.proposer == ""
    assert header.tx_log_size == 0 and header.tx_log_root == merkle.EMPTY_ROOT
    assert header.state_root == GENESIS_STATE_ROOT
    assert header.timestamp_ms == genesis.genesis_time_ms
    assert header.validator_set_hash == genesis.validator_set.digest()
    assert store.view.get(b"s/org/KOMCA") == b"\x01"
    assert store.view.get(b"z/root") == GENESIS_WRITES[b"z/root"]
    assert store.height_of(header.hash()) == 0
    assert store.latest_certified_height() == 0 and store.certificate(0) is None
    assert store.log_root() == merkle.EMPTY_ROOT


def test_commit_and_read_back(store):
    txs = [make_tx(i) for i in range(3)]
    results = [
        TxResult(),
        TxResult("FAILED_PRECONDITION", "work unknown"),
        TxResult(output={"w": 1}),
    ]
    header = next_header(store, txs, results=results)
    record = BlockRecord(header, b"consensus block", b"qc bytes")
    writes = with_tree(store, {b"s/work/1": b"v", b"s/org/KOMCA": None})
    receipts = store.commit_block(record, txs, results, writes)
    assert store.block_receipts(1) == receipts
    assert header.receipts_root == receipts_root(receipts) != merkle.EMPTY_ROOT
    assert [(r.height, r.leaf_index) for r in receipts] == [(1, 0), (1, 1), (1, 2)]
    assert receipts[1].result.status == "FAILED_PRECONDITION"
    assert store.last_header() == header and store.header(1) == header
    assert store.block(1) == record and store.block(2) is None and store.header(-1) is None
    assert store.block_txs(1) == txs
    assert store.block_tx_hashes(1) == (header, tuple(tx.tx_hash for tx in txs))
    assert store.block_tx_hashes(2) is None
    assert store.height_of(header.hash()) == 1
    assert store.log_size() == 3 and store.log_root() == header.tx_log_root
    assert store.get_tx(txs[1].tx_hash) == (txs[1], receipts[1])
    assert store.has_tx(txs[2].tx_hash) and not store.has_tx(make_tx(99).tx_hash)
    assert store.view.get(b"s/work/1") == b"v" and store.view.get(b"s/org/KOMCA") is None
    path = store.inclusion_proof(1, 3)
    assert merkle.verify_inclusion(merkle.leaf_hash(txs[1].encoding), 1, 3, path, store.log_root())


def test_historical_roots_and_proofs(store):
    _fill(store, blocks=6, per_block=7)
    for height in range(7):
        header = store.header(height)
        assert store.log_root(header.tx_log_size) == header.tx_log_root
    old, new = store.header(2), store.header(5)
    proof = store.consistency_proof(old.tx_log_size, new.tx_log_size)
    assert merkle.verify_consistency(
        old.tx_log_size, new.tx_log_size, proof, old.tx_log_root, new.tx_log_root
    )


def test_certificates_and_safety(store, tmp_path):
    _fill(store, blocks=3)
    assert store.latest_certified_height() == 3
    assert store.certificate(2).header_hash == store.header(2).hash()
    assert store.load_safety() is None
    store.save_consensus(b"highest vote r7", [])
    assert store.load_safety() == b"highest vote r7"
    assert store.size_bytes() > 0
    with pytest.raises(AssertionError):
        store.save_certificate(2, certify(store.header(3)))


def test_size_ignores_a_file_compaction_removed_while_it_was_counted(store, tmp_path, monkeypatch):
    # LevelDB compaction deletes table files at any time; a size read must not raise (it did,
    # from the node's metrics loop, and stopped the node in a 5-minute soak). The listing is
    # taken first and a file removed after it, as compaction would between scandir and stat.
    state = tmp_path / "db" / "state"
    doomed = state / "999999.ldb"
    doomed.write_bytes(b"x" * 1000)
    listed = list(os.scandir(state))
    doomed.unlink()
    monkeypatch.setattr("kledger.node.storage.store.os.scandir", lambda path: iter(listed))
    assert store.size_bytes() > 0


def test_commits_that_do_not_follow_the_chain_are_bugs(store):
    txs = [make_tx(i) for i in range(2)]
    header = next_header(store, txs)
    ok = BlockRecord(header, b"", b"")
    bad_cases = [
        (BlockRecord(replace(header, height=2), b"", b""), txs),
        (
            BlockRecord(replace(header, parent_hash=ZERO_HASH), b"", b""),
            txs,
        ),
        (BlockRecord(replace(header, tx_log_size=3), b"", b""), txs),
        (
            BlockRecord(replace(header, tx_log_root=ZERO_HASH), b"", b""),
            txs,
        ),
        (ok, [txs[0], txs[0]]),
    ]
    for record, block_txs in bad_cases:
        with pytest.raises(AssertionError):
            store.commit_block(record, block_txs, [TxResult()] * len(block_txs), {})
    with pytest.raises(AssertionError, match="outside"):
        store.commit_block(ok, txs, [TxResult()] * 2, {b"x/last_height": b""})
    assert store.last_height() == 0  # nothing above was written
    store.commit_block(ok, txs, [TxResult()] * 2, {})
    again = next_header(store, [txs[0]])
    with pytest.raises(AssertionError, match="already committed"):
        store.commit_block(BlockRecord(again, b"", b""), [txs[0]], [TxResult()], {})


def test_empty_blocks_commit(store):
    _, receipts = commit(store, [])
    assert receipts == [] and store.last_height() == 1 and store.log_size() == 0


def test_reopen_keeps_everything(tmp_path):
    store = open_store(tmp_path / "db")
    txs = _fill(store)
    root, height = store.log_root(), store.last_height()
    store.close()
    store = open_store(tmp_path / "db", deep_check=True)
    assert (store.log_root(), store.last_height(), store.latest_certified_height()) == (
        root,
        height,
        height,
    )
    found = store.get_tx(txs[7].tx_hash)
    assert found is not None and found[1].leaf_index == 7
    commit(store, [make_tx(1000)])  # appends continue from the stored frontier
    assert store.log_size() == len(txs) + 1
    store.close()


def test_a_settled_store_copies_and_reads_back_the_same(tmp_path):
    """What cluster/bench/preload.py relies on before copying a store: settle() returns once no
    table file moves (no compaction left running), and the closed store's copy opens deep-checked
    with the same log."""
    store = open_store(tmp_path / "db")
    txs = _fill(store)
    root = store.log_root()
    assert store.settle(poll_s=0.01, quiet_polls=3)
    assert not store.settle(poll_s=0.01, quiet_polls=3, timeout_s=0.0)  # no time: not proven
    levels = store.leveldb_levels()
    for part in PARTS:  # the memtables were written out and pushed below level 0
        assert levels[part] and not any(row.files for row in levels[part] if row.level == 0)
    store.close()
    for part in PARTS:  # nothing left in the logs for a copy's open to flush again
        assert all(log.stat().st_size < 4096 for log in (tmp_path / "db" / part).glob("*.log"))
    copy_store(tmp_path / "db", tmp_path / "copy")
    store = open_store(tmp_path / "copy", deep_check=True)
    assert store.log_root() == root and store.get_tx(txs[-1].tx_hash) is not None
    store.close()


# ---- corrupted stores are refused at open ------------------------------------------------------


def _corrupt_and_reopen(tmp_path, damage, deep: bool = False) -> str:
    store = open_store(tmp_path / "db")
    _fill(store, blocks=4, per_block=5)
    damage(store, store._db)
    store.close()
    with pytest.raises(StoreCorrupt) as caught:
        open_store(tmp_path / "db", deep_check=deep)
    return str(caught.value)


def _overwrite_header(store: Any, db: Any) -> None:
    record = store.block(2)
    forged = replace(record.header, timestamp_ms=1)
    hashes = tuple(tx.tx_hash for tx in store.block_txs(2))
    db.put(HEADERS + _height(2), _StoredBlock(forged, hashes).encode())


def _overwrite_header_and_index(store: Any, db: Any) -> None:
    forged = replace(store.block(2).header, timestamp_ms=1)
    _overwrite_header(store, db)
    db.put(keyspace.BLOCK_BY_HASH + forged.hash(), _height(2))


@pytest.mark.parametrize(
    ("damage", "message", "deep"),
    [
        (_overwrite_header, "hash index does not point to height 2", False),
        (_overwrite_header_and_index, "height 3 does not link to its parent", False),
        (lambda s, db: db.delete(HEADERS + _height(3)), "height 3 is missing", False),
        (lambda s, db: db.delete(HEADERS + _height(4)), "height 4 is missing", False),
        (lambda s, db: db.delete(HEADERS + _height(0)), "height 0 is missing", False),
        (lambda s, db: db.delete(BODIES + _height(4)), "block body at height 4 is missing", False),
        (lambda s, db: db.put(HEADERS + _height(2), b"\x93junk"), "height 2", False),
        (lambda s, db: db.put(node_key(4, 0), bytes(32)), "Merkle log root differs", False),
        (lambda s, db: db.delete(node_key(4, 0)), "level 4, index 0) is missing", False),
        (lambda s, db: db.put(node_key(1, 3), bytes(32)), "level 1, index 3) is wrong", True),
        (lambda s, db: db.put(node_key(0, 19), bytes(32)), "log leaf 19 is not the hash", False),
        (lambda s, db: db.put(b"x/tx_count", _height(21)), "21 committed txs", False),
        (lambda s, db: db.put(b"x/last_height", _height(3)), "20 committed txs", False),
        (lambda s, db: db.put(b"x/last_height", _height(5)), "height 5 is missing", False),
        (lambda s, db: db.put(b"x/genesis", bytes(32)), "genesis digest", False),
        (lambda s, db: db.put(b"m/size", _height(19)), "log holds 19 leaves", False),
        (
            lambda s, db: db.delete(keyspace.TX + s.block_txs(4)[0].tx_hash),
            "does not name height 4, index 0",
            False,
        ),
        (
            lambda s, db: db.delete(_record(4, 0)),
            "tx record (T/) at height 4, index 0 is missing",
            False,
        ),
        (
            lambda s, db: db.delete(_record(4, 4)),
            "tx record (T/) at height 4, index 4 is missing",
            False,
        ),
        (lambda s, db: db.delete(_record(2, 1)), "(T/) at height 2, index 1 is missing", True),
        (
            lambda s, db: db.put(_record(4, 5), db.get(_record(4, 4))),
            "(T/) at height 4: key",
            False,
        ),
        (lambda s, db: db.delete(_tree(4)), "receipt tree (r/) at height 4 is missing", False),
        (lambda s, db: db.put(_tree(4), b"\0\0\0\5junk"), "receipt tree (r/) at height 4", False),
        (lambda s, db: db.put(_tree(4), db.get(_tree(3))), "leaves do not hash to", False),
        (lambda s, db: db.put(_tree(2), db.get(_tree(3))), "(r/) at height 2 is not the", True),
        (
            lambda s, db: db.put(keyspace.CERTIFICATE + _height(4), certify(s.header(3)).encode()),
            "certificate at height 4 signs another header",
            False,
        ),
    ],
)
def test_corrupted_store_is_refused_naming_the_problem(tmp_path, damage, message, deep):
    assert message in _corrupt_and_reopen(tmp_path, damage, deep)


def test_store_of_another_genesis_is_refused(tmp_path):
    open_store(tmp_path / "db").close()
    with pytest.raises(StoreCorrupt, match="genesis digest"):
        open_store(tmp_path / "db", make_genesis(chain_id="other-chain"))


def test_check_window_walks_only_the_last_blocks(tmp_path):
    store = open_store(tmp_path / "db")
    _fill(store, blocks=6, per_block=2)
    store._db.delete(HEADERS + _height(2))  # an old header: outside a window of 3
    store.close()
    reopened = open_store(tmp_path / "db", check_blocks=3)
    assert reopened.last_height() == 6
    with pytest.raises(StoreCorrupt, match="block record at height 2 is missing"):
        reopened.header(2)
    reopened.close()
    with pytest.raises(StoreCorrupt, match="height 2 is missing"):
        open_store(tmp_path / "db")  # the default walks the whole chain
    with pytest.raises(StoreCorrupt, match="height 2 is missing"):
        open_store(tmp_path / "db", check_blocks=4)


def test_block_body_is_stored_apart(store):
    header, _ = commit(store, [make_tx(1)])
    record = store.block(1)
    assert record is not None and record.consensus_block.startswith(b"block-")
    store._db.delete(BODIES + _height(1))
    with pytest.raises(StoreCorrupt, match="block body at height 1 is missing"):
        store.block(1)
    assert store.header(1) == header


def _served(store: Any, txs: list[Any], sizes: list[int]) -> list[Any]:
    """Everything the tx families serve, for every height: txs, receipts, trees, proofs."""
    out: list[Any] = []
    first = 0
    for height, size in enumerate(sizes, start=1):
        block = txs[first : first + size]
        header = store.header(height)
        receipts = store.block_receipts(height)
        assert store.block_txs(height) == block and len(receipts) == size
        assert receipts_root(receipts) == header.receipts_root
        tree = store.receipts_tree(height)
        assert tree.size == size and tree.root() == header.receipts_root
        for offset, (tx, receipt) in enumerate(zip(block, receipts, strict=True)):
            assert store.has_tx(tx.tx_hash) and store.get_tx(tx.tx_hash) == (tx, receipt)
            assert receipt.leaf_index == first + offset and receipt.height == height
            # The stored tree's path is the one node/proof/receipts.py computes from scratch:
            # the bundles' bytes do not change with the store format.
            count, path = store.receipt_path(receipt)
            assert (count, path) == (size, receipt_path(receipts, offset))
            assert merkle.verify_inclusion(
                merkle.leaf_hash(receipt.encode()), offset, size, path, header.receipts_root
            )
            bundle = build_inclusion_bundle(store, tx.tx_hash)
            assert bundle_problem(bundle, make_genesis()) is None
            out.append((tx, receipt, path, bundle))
        first += size
    return out


def test_tx_records_by_position_round_trip_and_survive_a_restart(tmp_path):
    """Store v4: tx records by (height, index), the t/ index, the per-block receipts tree;
    blocks of 0, 1 and many txs (perfect and ragged trees), mixed results; a restarted store
    (deep check included) serves exactly the same, and an unknown tx is not there."""
    store = open_store(tmp_path / "db")
    sizes = [1, 0, 2, 5, 8, 17, 3]
    txs = [make_tx(500 + i) for i in range(sum(sizes))]
    first = 0
    for size in sizes:
        block = txs[first : first + size]
        results = [
            TxResult("FAILED_PRECONDITION", f"no {i}") if i % 3 == 1 else TxResult(output={"i": i})
            for i in range(size)
        ]
        header, _ = commit(store, block, results=results)
        store.save_certificate(header.height, certify(header))
        first += size
    before = _served(store, txs, sizes)
    assert store.block_txs(2) == [] and store.block_receipts(2) == []
    empty = store.receipts_tree(2)
    assert empty is not None and empty.root() == merkle.EMPTY_ROOT
    assert store.block_txs(99) == [] and store.receipts_tree(99) is None
    assert not store.has_tx(make_tx(1).tx_hash) and store.get_tx(make_tx(1).tx_hash) is None
    store.close()
    store = open_store(tmp_path / "db", deep_check=True)
    try:
        assert _served(store, txs, sizes) == before
    finally:
        store.close()


def _refused(path) -> str:
    """The StoreCorrupt message of opening the store at `path`."""
    with pytest.raises(StoreCorrupt) as refused:
        open_store(path)
    return str(refused.value)


def test_a_v3_store_is_refused_by_name(tmp_path):
    store = open_store(tmp_path / "db")
    store._db.put(b"x/format", b"kledger-store/v3")
    store.close()
    message = _refused(tmp_path / "db")
    assert "kledger-store/v3" in message and "tx records keyed by tx hash" in message
    assert "kledger-store/v6" in message and "does not convert" in message


def test_a_v5_store_of_three_leveldbs_is_refused_by_name_and_left_as_it_is(tmp_path):
    """v5 had no log/ (its log nodes were in state/): refused by name, not as a store with a
    LevelDB missing, and no log/ is made."""
    store = open_store(tmp_path / "db")
    store._db.put(b"x/format", b"kledger-store/v5")
    store.close()
    shutil.rmtree(tmp_path / "db" / LOG_PART)
    message = _refused(tmp_path / "db")
    assert "kledger-store/v5" in message and "three LevelDBs" in message
    assert "kledger-store/v6" in message and "does not convert" in message
    assert not (tmp_path / "db" / LOG_PART).exists()


def test_a_v4_store_of_one_leveldb_is_refused_by_name_and_left_as_it_is(tmp_path):
    """Stores v1-v4 were one LevelDB in the data directory itself; v6 is four in directories
    of their own (node/storage/store_parts.py). An old one is refused by name, not converted,
    and no directory of the new format is made in it."""
    old = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    old.put(b"x/format", b"kledger-store/v4")
    old.close()
    message = _refused(tmp_path / "db")
    assert "kledger-store/v4" in message and "one LevelDB for every record" in message
    assert "kledger-store/v6" in message and "does not convert" in message
    assert not any((tmp_path / "db" / part).exists() for part in PARTS)


def test_a_store_missing_one_of_its_leveldbs_is_refused_and_nothing_is_created(tmp_path):
    store = open_store(tmp_path / "db")
    _fill(store, blocks=2)
    store.close()
    shutil.rmtree(tmp_path / "db" / HISTORY_PART)
    with pytest.raises(StoreCorrupt, match=r"history is missing while the others hold records"):
        open_store(tmp_path / "db")
    assert not (tmp_path / "db" / HISTORY_PART).exists()


def test_a_block_body_without_its_payload_is_rebuilt_byte_for_byte(tmp_path):
    """The body keeps a consensus block without the payload its T/ records hold, and gives back
    the very bytes it was handed, also after a restart; a block whose payload is not exactly
    its committed txs (one skipped as a replay) is kept whole."""
    store = open_store(tmp_path / "db")
    txs = [make_tx(700 + i) for i in range(6)]
    payload = encode_payload(txs)
    assert payload.count(payload[:64]) == 1
    block_bytes = b"chain, round, parent" + payload + b"the parent's QC"
    header = next_header(store, txs)
    store.commit_block(BlockRecord(header, block_bytes, b"qc 1"), txs, [TxResult()] * 6, {})
    skipped = [make_tx(800), make_tx(801)]
    whole = b"head" + encode_payload([*skipped, txs[0]]) + b"tail"  # txs[0] was a replay
    header2 = next_header(store, skipped)
    store.commit_block(BlockRecord(header2, whole, b"qc 2"), skipped, [TxResult()] * 2, {})
    body = store._db.get(BODIES + _height(1))
    assert body is not None and len(body) < 100  # the payload is not stored twice
    assert len(store._db.get(BODIES + _height(2)) or b"") > len(whole)
    for reopened in (False, True):
        if reopened:
            store.close()
            store = open_store(tmp_path / "db", deep_check=True)
        assert store.block(1) == BlockRecord(header, block_bytes, b"qc 1")
        assert store.block(2) == BlockRecord(header2, whole, b"qc 2")
    # A T/ record that does not hash to the block's tx is never rebuilt into its block.
    record = keyspace.TX_RECORD + _height(1) + (3).to_bytes(4, "big")
    other = store._db.get(keyspace.TX_RECORD + _height(1) + (4).to_bytes(4, "big"))
    assert other is not None
    store._db.put(record, other)
    with pytest.raises(StoreCorrupt, match=r"\(T/\) at height 1, index 3: holds another tx"):
        store.block(1)
    store.close()


def test_a_receipt_tree_whose_inner_node_was_rewritten_serves_no_path(store):
    """A perfect tree's root is one stored hash, so the root check on read does not cover the
    nodes below it: the path served is checked against the header's root too."""
    txs = [make_tx(900 + i) for i in range(8)]
    commit(store, txs)
    key = _tree(1)
    record = bytearray(store._db.get(key) or b"")
    level_one = 4 + 8 * 32  # after the count and the 8 leaf hashes
    record[level_one] ^= 0x01  # node (level 1, index 0): leaves 0 and 1
    store._db.put(key, bytes(record))
    assert store.receipts_tree(1) is not None  # its root is still the header's
    found = store.get_tx(txs[2].tx_hash)
    assert found is not None
    with pytest.raises(StoreCorrupt, match=r"receipt tree \(r/\) at height 1: the audit path"):
        store.receipt_path(found[1])
    untouched = store.get_tx(txs[0].tx_hash)  # its path holds (0, 1) and (1, 1), not (1, 0)
    assert untouched is not None and store.receipt_path(untouched[1])[0] == 8


def test_saved_blocks_are_pruned_from_where_the_last_pass_stopped(store, monkeypatch):
    """Saved uncommitted blocks at or below the committed height are deleted after each commit.
    A pass starts where the one before stopped (LevelDB walks every tombstone in a scanned range
    until a compaction drops it: passes from the family's start took 6.6 % of one node's event
    loop 16 minutes into a soak), and a block saved late, below that point, still goes."""
    block = b"an uncommitted block"

    def saved_heights() -> list[int]:
        keys = store._db.iterator(start=PENDING_BLOCK, stop=PENDING_BLOCK + b"\xff" * 8)
        return [int.from_bytes(key[len(PENDING_BLOCK) :][:8], "big") for key, _ in keys]

    def commit_block() -> None:
        commit(store, [make_tx(1_000 + store.last_height())])

    store.save_consensus(None, [(h, bytes([h]) * 32, block) for h in (1, 2, 3, 4)])
    starts: list[bytes] = []
    real_iterator = store._db.iterator

    def iterator(**kwargs: Any) -> Any:
        starts.append(kwargs["start"])
        return real_iterator(**kwargs)

    monkeypatch.setattr(store._db, "iterator", iterator)
    commit_block()
    commit_block()
    store.prune_pending_blocks()
    assert saved_heights() == [3, 4] and store.load_pending_blocks() == [block, block]
    commit_block()
    store.save_consensus(None, [(1, b"\x09" * 32, block)])  # a late proposal for height 1
    starts.clear()
    store.prune_pending_blocks()
    assert starts == [PENDING_BLOCK + _height(1)] and saved_heights() == [4]
    starts.clear()
    commit_block()
    store.prune_pending_blocks()
    assert starts == [PENDING_BLOCK + _height(4)] and saved_heights() == []
    starts.clear()
    store.prune_pending_blocks()  # nothing new committed: no scan at all
    assert starts == []
