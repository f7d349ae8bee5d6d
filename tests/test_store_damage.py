"""A stopped node's store damaged on disk, each way the issue (#14) found, on real LevelDB
files: rewritten value bytes in table files, a cut write-ahead log, a deleted CURRENT, a
deleted or damaged MANIFEST, a deleted or truncated table file, a deleted log. Each gives a
refusal naming the damaged thing (and the recovery) with no file deleted or created, or, for a
cut log tail, a clean earlier state that the safety record (node/storage/safety_record.py)
reports as behind. Never wrong data served, never lost files."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kledger.cluster.local.gen import ClusterSpec, generic_orgs, init_cluster
from kledger.node.app import Node, StoreDamaged
from kledger.node.chain import canonical
from kledger.node.config import load_config
from kledger.node.errors import StoreCorrupt
from kledger.node.proof import merkle
from kledger.node.storage import keyspace
from kledger.node.storage.leveldb_files import check_store_files, is_new_store_dir
from kledger.node.storage.store import HEADERS, LedgerStore, _StoredBlock
from kledger.node.storage.store_parts import HISTORY_PART, PARTS, STATE_PART, TREE_PART
from tests.ledger_builders import certify, commit, make_tx, open_store

PARTY = b"party-name:KIM MIN-SU (KOMCA member 0042)"
FORGED = b"party-name:LEE MIN-SU (KOMCA member 0042)"
PARTY_KEY = b"s/party/0042"
# The file-level damage below is done to history/, the LevelDB of the tx records: each of the
# store's three is checked the same way before any is opened.
PART = HISTORY_PART


def _listing(path: Path) -> dict[str, int]:
    """Path -> size of every file of a store's LevelDBs (LOG, LevelDB's info log, excluded:
    LevelDB rewrites it on every open)."""
    return {
        str(p.relative_to(path)): p.stat().st_size
        for p in path.rglob("*")
        if p.is_file() and not p.name.startswith("LOG")
    }


def _build(path: Path, *, compact: bool, blocks: int = 6) -> list[Any]:
    """A store with `blocks` blocks and a party-name state value; `compact` moves everything
    into table files (else the newest writes stay in the write-ahead log)."""
    store = open_store(path)
    txs: list[Any] = []
    for height in range(1, blocks + 1):
        batch = [make_tx(10 * height + i) for i in range(5)]
        state: dict[bytes, bytes | None] = {PARTY_KEY: PARTY} if height == 2 else {}
        header, _ = commit(store, batch, state)
        store.save_certificate(header.height, certify(header))
        txs += batch
    if compact:
        store.compact()
    store.close()
    return txs


def _refusal(path: Path, *, opened: bool = False) -> str:
    """The StoreCorrupt message of opening `path`. Refused before LevelDB opens the directory,
    no file may change; refused by the self-check after LevelDB opened it (`opened`), LevelDB
    may have started a new MANIFEST and log as every open does, but no table file is gone."""
    before = _listing(path)
    with pytest.raises(StoreCorrupt) as caught:
        open_store(path)
    after = _listing(path)
    if opened:
        assert {n for n in before if n.endswith(".ldb")} <= set(after), "a table file was lost"
    else:
        assert after == before, "opening a damaged store changed its files"
    return str(caught.value)


def _never_served(path: Path, read: Any, match: str) -> None:
    """A damaged record is never served: the open refuses (its self-check read the damaged
    LevelDB block) or the read of the record does; both name a damaged record."""
    try:
        store = open_store(path)
    except StoreCorrupt as exc:
        assert "damaged record" in str(exc)
        return
    try:
        with pytest.raises(StoreCorrupt, match=match):
            read(store)
    finally:
        store.close()


def _tables(path: Path) -> list[Path]:
    """The table files of a store's four LevelDBs (node/storage/store_parts.py)."""
    return sorted(path.rglob("*.ldb"))


def test_new_and_existing_directories_are_told_apart(tmp_path):
    assert is_new_store_dir(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    assert is_new_store_dir(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a store")
    assert is_new_store_dir(tmp_path / "other")  # no file of LevelDB's
    _build(tmp_path / "db", compact=True)
    assert is_new_store_dir(tmp_path / "db")  # its LevelDBs are in directories of their own
    for part in PARTS:
        where = tmp_path / "db" / part
        assert not is_new_store_dir(where)
        live = check_store_files(where)
        assert all((where / f"{n:06d}.ldb").exists() for n in live.tables)
        assert live.tables or part == TREE_PART  # these blocks write no state-tree records


def test_rewritten_value_bytes_are_refused_by_name_never_served(tmp_path):
    path = tmp_path / "db"
    txs = _build(path, compact=True)
    rewritten = 0
    for table in _tables(path / TREE_PART):  # a state value lives in its leaf (store v6)
        data = table.read_bytes()
        if PARTY in data:
            table.write_bytes(data.replace(PARTY, FORGED))
            rewritten += 1
    assert rewritten == 1, "the party name should sit in one table file (no compression)"
    _never_served(path, lambda s: s.view.get(PARTY_KEY), r"damaged record: state tree node \(z/\)")
    _never_served(path, lambda s: list(s.view.iterate(b"s/party/")), "damaged record")
    _never_served(path, lambda s: s.snapshot_view().get(PARTY_KEY), "damaged record")
    # A tx record's bytes rewritten in place: refused naming the tx record and its hash.
    path2 = tmp_path / "db2"
    txs = _build(path2, compact=True)
    work = b"T-000000022"  # the work id in the body of make_tx(22), txs[7]
    for table in _tables(path2 / HISTORY_PART):
        data = table.read_bytes()
        if work in data:
            table.write_bytes(data.replace(work, work[:-1] + b"X"))
    _never_served(
        path2, lambda s: s.get_tx(txs[7].tx_hash), r"damaged record: tx record \(T/\) at height 2"
    )


def _rewrite_last_in_tables(path: Path, old: bytes, new: bytes) -> None:
    """Overwrite the last occurrence of `old` in the store's table files (the tx index's key
    sorts after the block record that lists the same hash)."""
    assert len(old) == len(new)
    for table in reversed(_tables(path)):
        data = table.read_bytes()
        at = data.rfind(old)
        if at >= 0:
            table.write_bytes(data[:at] + new + data[at + len(old) :])
            return
    raise AssertionError(f"{old.hex()} is in no table file")


@pytest.mark.parametrize("family", ["T/", "t/", "r/"])
def test_a_damaged_tx_record_index_or_receipt_tree_is_refused_naming_it(tmp_path, family):
    """The tx families rewritten on disk: the tx record (T/, by position), the tx index
    (t/, by hash) and the block's receipts tree (r/). Either the open's self-check meets the
    damaged LevelDB block (it reads the tip's records of all three) or the read of the record
    does; both name the family, and nothing damaged is served."""
    path = tmp_path / "db"
    txs = _build(path, compact=True, blocks=40)  # records of many LevelDB blocks each
    tx = sorted(txs[95:100], key=lambda t: t.tx_hash)[2]  # height 20; a t/ key mid-family
    store = open_store(path)
    found = store.get_tx(tx.tx_hash)
    store.close()
    assert found is not None and found[1].height == 20
    read: Callable[[LedgerStore], object]
    if family == "T/":
        assert tx in txs[95:100]
        nonce = 10 * 20 + txs[95:100].index(tx)
        _rewrite_last_in_tables(path, f"T-{nonce:09d}".encode(), f"T-{nonce:08d}X".encode())
        read, name = (lambda s: s.get_tx(tx.tx_hash)), r"tx record \(T/\) at height"
    elif family == "t/":
        _rewrite_last_in_tables(path, tx.tx_hash[4:28], bytes(24))
        read, name = (lambda s: s.get_tx(tx.tx_hash)), r"tx index \(t/\) "
    else:
        leaf = merkle.leaf_hash(found[1].encode())
        _rewrite_last_in_tables(path, leaf, bytes(32))
        read, name = (lambda s: s.block_receipts(20)), r"receipt tree \(r/\) at height"
    try:
        store = open_store(path)
    except StoreCorrupt as exc:
        # history/ keeps a height's records together: the damaged LevelDB block the open's
        # chain walk meets may be the one holding a neighbouring height's block record.
        met = rf"{name}|block record \(b/h\)" if family != "t/" else name
        assert re.search(rf"damaged record: (a scan at )?({met})", str(exc)), str(exc)
        return
    try:
        with pytest.raises(StoreCorrupt, match=rf"damaged record: (a scan at )?{name}"):
            read(store)
    finally:
        store.close()


def test_rewritten_header_bytes_fail_the_open(tmp_path):
    path = tmp_path / "db"
    _build(path, compact=True)
    for table in _tables(path / HISTORY_PART):
        data = table.read_bytes()
        marker = b"kledger-test"  # the chain id inside every header record (and every tx's)
        # history/ keeps heights in order, and height 0 is its genesis header alone.
        index = data.find(marker)
        if index >= 0:
            table.write_bytes(data[:index] + b"kledger-tesT" + data[index + len(marker) :])
            break
    message = _refusal(path, opened=True)
    assert "damaged record: block record (b/h)" in message and "checksum mismatch" in message


def test_deleted_current_is_refused_and_nothing_is_deleted(tmp_path):
    path = tmp_path / "db"
    _build(path, compact=True)
    part = path / PART
    os.remove(part / "CURRENT")
    tables = {p.name for p in _tables(part)}
    message = _refusal(path)
    assert "CURRENT" in message and "missing" in message
    assert "move it aside" in message and "restore" in message
    assert {p.name for p in _tables(part)} == tables


def test_damaged_current_is_refused(tmp_path):
    path = tmp_path / "db"
    _build(path, compact=True)
    part = path / PART
    (part / "CURRENT").write_bytes(b"\x00garbage")
    assert "CURRENT: damaged" in _refusal(path)


def test_deleted_manifest_is_refused_naming_it(tmp_path):
    path = tmp_path / "db"
    _build(path, compact=True)
    part = path / PART
    manifest = (part / "CURRENT").read_text().strip()
    os.remove(part / manifest)
    message = _refusal(path)
    assert manifest in message and "missing" in message


def test_damaged_manifest_is_refused(tmp_path):
    path = tmp_path / "db"
    _build(path, compact=True)
    part = path / PART
    manifest = part / (part / "CURRENT").read_text().strip()
    data = bytearray(manifest.read_bytes())
    data[6] = 0x77  # the first record's type: no such type
    manifest.write_bytes(bytes(data))
    assert "damaged MANIFEST" in _refusal(path)


def test_deleted_table_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "db"
    _build(path, compact=True)
    part = path / PART
    victim = _tables(part)[0]
    os.remove(victim)
    message = _refusal(path)
    assert f"{victim.name}: table file missing" in message


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_truncated_table_file_is_refused_at_open(tmp_path, keep):
    path = tmp_path / "db"
    _build(path, compact=True)
    part = path / PART
    victim = max(_tables(part), key=lambda p: p.stat().st_size)
    size = victim.stat().st_size
    with open(victim, "r+b") as file:
        file.truncate(int(size * keep))
    message = _refusal(path)
    assert f"{victim.name}: table file is {int(size * keep)} bytes" in message
    assert "cut short" in message


def test_deleted_write_ahead_log_is_refused(tmp_path):
    path = tmp_path / "db"
    _build(path, compact=False)
    part = path / PART
    (log,) = part.glob("*.log")
    os.remove(log)
    message = _refusal(path)
    assert log.name in message and "write-ahead log" in message


def test_cut_write_ahead_log_opens_at_an_earlier_whole_block(tmp_path):
    """A log cut anywhere loses whole blocks from the end, never part of one: the store opens
    (self-check included) at a height at or below the last one, every block below it intact.
    That this height is behind what the node once committed is the safety record's to say
    (tests/test_safety_record.py)."""
    path = tmp_path / "db"
    _build(path, compact=False, blocks=4)
    # state/'s log: the commit point. (history/ and tree/ are synced before it, so a crash
    # can cut their logs only in a block whose state/ write never happened: trim_above.)
    (log,) = (path / STATE_PART).glob("*.log")
    size = log.stat().st_size
    heights = set()
    for cut in range(0, size + 1, max(1, size // 97)):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(path, work)
        with open(work / STATE_PART / log.name, "r+b") as file:
            file.truncate(cut)
        store = open_store(work, deep_check=True)
        heights.add(store.last_height())
        for height in range(1, store.last_height() + 1):
            assert len(store.block_txs(height)) == 5
        store.close()
        shutil.rmtree(work)
    assert heights == {0, 1, 2, 3, 4}


def test_damaged_read_after_open_stops_with_store_corrupt(tmp_path):
    """A table file damaged while the node runs (after its open checks): the next read that
    reaches it raises StoreCorrupt naming the record, never returns the damaged bytes."""
    path = tmp_path / "db"
    _build(path, compact=True)
    store = open_store(path)
    told: list[StoreCorrupt] = []
    store.on_damaged(told.append)
    try:
        for table in _tables(path):
            data = table.read_bytes()
            if PARTY in data:
                table.write_bytes(data.replace(PARTY, FORGED))
        with pytest.raises(StoreCorrupt, match=r"state tree node \(z/\) 6c2f") as caught:
            store.view.get(PARTY_KEY)
        # Told to the node even when some caller catches the error (the node then stops).
        assert told == [caught.value]
    finally:
        store.close()


def test_a_running_node_stops_on_the_first_damaged_read(tmp_path):
    """The node's reaction to a damaged read from any thread: it logs and ends with
    StoreDamaged, which `kledger node start` prints in one line before exiting 1."""
    layout = init_cluster(tmp_path / "c", ClusterSpec(orgs=generic_orgs(4), chain_id="kledger-d"))
    node = Node(load_config(layout.node_config("ORG1")))

    async def scenario() -> None:
        node._loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(node._stop_on_damage())
        damage = StoreCorrupt("store: damaged record: tx record (t/) 00ff")
        reader = threading.Thread(target=lambda: node._store_damaged(damage))
        reader.start()
        reader.join()
        with pytest.raises(StoreDamaged, match=r"damaged record: tx record \(t/\) 00ff"):
            await asyncio.wait_for(stopping, 30)

    try:
        asyncio.run(scenario())
    finally:
        node.store.close()


def test_records_that_pass_checksums_but_not_their_hashes_are_refused(tmp_path):
    """Where LevelDB's checksums do not reach (a record rewritten through LevelDB itself): a
    receipt naming another tx's log leaf, a header not indexed at its height, a certificate of
    another header are refused at read, named, and told to the node."""
    path = tmp_path / "db"
    txs = _build(path, compact=False, blocks=3)
    store = open_store(path, check_blocks=1)
    told: list[StoreCorrupt] = []
    store.on_damaged(told.append)
    try:
        tx, receipt = store.get_tx(txs[3].tx_hash) or (None, None)
        assert tx is not None and receipt is not None
        moved = replace(receipt, leaf_index=receipt.leaf_index + 1)
        position = store._db.get(keyspace.TX + tx.tx_hash)
        assert position is not None
        record = canonical.encode([tx.encoding, moved.encode()])
        store._db.put(keyspace.TX_RECORD + position, record)
        with pytest.raises(StoreCorrupt, match="its receipt names log leaf 4, which is not"):
            store.get_tx(tx.tx_hash)
        with pytest.raises(StoreCorrupt, match=r"\(T/\) at height 1, index 3: .* leaf 4, not 3"):
            store.block_txs(1)
        store._db.put(
            keyspace.TX_RECORD + position, canonical.encode([tx.encoding, receipt.encode()])
        )
        # The index pointing at another tx's record: refused naming the index.
        other = store._db.get(keyspace.TX + txs[4].tx_hash)
        assert other is not None
        store._db.put(keyspace.TX + tx.tx_hash, other)
        with pytest.raises(StoreCorrupt, match=r"tx index \(t/\) .*: names height 1, index 4"):
            store.get_tx(tx.tx_hash)
        store._db.put(keyspace.TX + tx.tx_hash, position)
        header = store.header(1)
        assert header is not None
        forged = replace(header, timestamp_ms=header.timestamp_ms + 1)
        hashes = tuple(t.tx_hash for t in store.block_txs(1))
        store._db.put(HEADERS + (1).to_bytes(8, "big"), _StoredBlock(forged, hashes).encode())
        with pytest.raises(StoreCorrupt, match=r"block record \(b/h\) at height 1: its header"):
            store.header(1)
        store._db.put(keyspace.CERTIFICATE + (2).to_bytes(8, "big"), certify(forged).encode())
        with pytest.raises(StoreCorrupt, match="certificate at height 2 signs another header"):
            store.certificate(2)
        assert len(told) == 5
    finally:
        store.close()
