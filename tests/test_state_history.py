"""State history in a real LedgerStore: proofs at every certified height inside the retention
window verify with the offline verifier (`kledger verify state`'s check) and fail when
tampered, a pruned height is refused by name, the pruner leaves the live tree, and a crash
(a dropped block batch; kill -9 of a process committing blocks and pruning) recovers the same
roots: the stored root equals the last header's, equals the root recomputed from the flat table,
and every kept height still proves; and `kledger query state` over real gRPC writes a proof
that `kledger verify state` accepts, and rejects once tampered.

This module is also the crash child: `python -m tests.test_state_history DIR BLOCKS`.
"""

from __future__ import annotations

import json
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from kledger.cluster.client import query_cli
from kledger.node.api.access import AccessPolicy
from kledger.node.api.registry_service import add_registry_service
from kledger.node.chain import canonical
from kledger.node.chain.genesis import save_genesis
from kledger.node.chain.header import ZERO_HASH, Header
from kledger.node.chain.receipt import TxResult
from kledger.node.commit.certified_state import CertifiedState
from kledger.node.errors import Refused, Status, StoreCorrupt
from kledger.node.proof import smt
from kledger.node.proof import verify_cli as verify
from kledger.node.proof.state_proof import build_bundle, state_bundle_problem
from kledger.node.storage import keyspace, state_tree
from kledger.node.storage.state_pruner import StatePruner
from kledger.node.storage.store import BlockRecord, LedgerStore
from kledger.node.storage.store_parts import TREE_PART
from tests.helpers import make_genesis
from tests.ledger_builders import certify, kill_9_after, make_tx, ok_receipts_root

ROOT = Path(__file__).resolve().parent.parent
GENESIS = make_genesis()
GENESIS_STATE = {b"s/org/KOMCA": canonical.encode("KOMCA")}


def _genesis_tree() -> tuple[dict[bytes, bytes | None], bytes]:
    root, tree = state_tree.update(keyspace.DictView(), 0, GENESIS_STATE)
    return {**GENESIS_STATE, **tree}, root


def open_state_store(path: Path) -> LedgerStore:
    writes, root = _genesis_tree()
    return LedgerStore.open(path, GENESIS, writes, root)


def commit_state(store: LedgerStore, changes: dict[bytes, bytes | None], nonce: int) -> Header:
    """One block of one tx whose state changes go through the real state tree."""
    last = store.last_header()
    height = last.height + 1
    root, tree = state_tree.update(store.view, height, changes)
    txs = [make_tx(nonce)]
    size, log_root = store.root_after([tx.encoding for tx in txs])
    header = Header(
        chain_id=last.chain_id, epoch=0, height=height, round=height, parent_hash=last.hash(),
        tx_log_size=size, tx_log_root=log_root, state_root=root,
        validator_set_hash=last.validator_set_hash, next_validator_set_hash=ZERO_HASH,
        receipts_root=ok_receipts_root(store, len(txs)), proposer="KOMCA",
        timestamp_ms=last.timestamp_ms + 1_000,
    )  # fmt: skip
    store.commit_block(BlockRecord(header, b"block", b"qc"), txs, [TxResult()], {**changes, **tree})
    return header


def block_changes(height: int) -> dict[bytes, bytes | None]:
    """Overwrites of a small key set (so history piles up), some inserts and deletes."""
    changes: dict[bytes, bytes | None] = {
        f"s/work/{(height * 3 + i) % 40}".encode(): canonical.encode(f"v{height}.{i}")
        for i in range(6)
    }  # values in canonical msgpack, as the registry stores (and `verify state` decodes)
    changes[f"s/usage/{height}".encode()] = canonical.encode(height)
    if height % 4 == 0:
        changes[f"s/usage/{height - 2}".encode()] = None
    return changes


def live_state(store: LedgerStore) -> dict[bytes, bytes | None]:
    return dict(store.view.iterate(keyspace.STATE))


def reference_root(state: dict[bytes, bytes | None]) -> bytes:
    root, _ = state_tree.update(keyspace.DictView(), 0, state)
    return root


def test_window_proofs_verify_offline_and_pruned_heights_are_refused(tmp_path):
    store = open_state_store(tmp_path / "db")
    history: list[dict[bytes, bytes | None]] = [dict(GENESIS_STATE)]
    for height in range(1, 21):
        header = commit_state(store, block_changes(height), height)
        store.save_certificate(height, certify(header))
        state = dict(history[-1])
        state.update(block_changes(height))
        history.append(state)
    certified = CertifiedState(store, retention_blocks=5)
    StatePruner(store, retention_blocks=5, batch_records=13).prune_all()
    for height in range(15, 21):
        for key in (b"s/work/1", b"s/work/7", b"s/usage/18", b"s/usage/99"):
            found = certified.proof_at(height, key)
            assert found.value == history[height].get(key)
            bundle = build_bundle(key, found.value, found.proof, found.header, found.certificate)
            assert state_bundle_problem(bundle, GENESIS) is None
            bundle["value"] = canonical.encode("forged").hex()
            assert state_bundle_problem(bundle, GENESIS) is not None
    latest = certified.proof_at(0, b"s/work/1")  # 0: the latest certified height
    assert latest.header.height == 20
    with pytest.raises(Refused) as refused:
        certified.proof_at(14, b"s/work/1")
    assert refused.value.status is Status.FAILED_PRECONDITION and refused.value.field == "height"
    assert "state at height 14 is pruned; the window is 5 blocks" in refused.value.message
    with pytest.raises(Refused) as refused:
        certified.proof_at(21, b"s/work/1")
    assert refused.value.status is Status.NOT_FOUND and refused.value.field == "height"
    with pytest.raises(Refused) as refused:
        certified.proof_at(20, b"x/format")
    assert refused.value.field == "key"
    assert state_tree.root_at(store.view, 14) is None  # pruned records are gone from disk
    store.close()


def test_each_prune_pass_scans_from_where_the_last_one_stopped(tmp_path, monkeypatch):
    """LevelDB keeps deleted keys as tombstones until a compaction reaches them, and a scan
    walks every tombstone in its range: passes that each scanned from the stale family's start
    walked all the deletes before them, so pruning slowed as the ledger aged."""
    store = open_state_store(tmp_path / "db")
    scans: list[tuple[bytes, bytes]] = []
    real_scan = LedgerStore._scan_range

    def scan(self: LedgerStore, start: bytes, stop: bytes):  # type: ignore[no-untyped-def]
        scans.append((start, stop))
        return real_scan(self, start, stop)

    monkeypatch.setattr(LedgerStore, "_scan_range", scan)
    pruner = StatePruner(store, retention_blocks=5, batch_records=7)

    def past_kept(height: int) -> bytes:
        """The first stale key a pass at `height` keeps (stale since a kept height)."""
        return state_tree.STALE + (max(0, height - 5) + 1).to_bytes(8, "big")

    for height in range(1, 41):
        commit_state(store, block_changes(height), height)
        scans.clear()
        pruner.prune_all()
        stale_starts = [start for start, _ in scans if start.startswith(state_tree.STALE)]
        # The first pass starts past every height the previous block's passes let go...
        let_go = state_tree.STALE if height == 1 else past_kept(height - 1)
        assert stale_starts[0] == let_go
        # ...and each later one where the one before it stopped, never back at the start.
        assert stale_starts == sorted(set(stale_starts))
        assert store._prune_cursor.stale == past_kept(height)
    assert state_tree.stored_root(store.view) == reference_root(live_state(store))
    store.close()


def test_pruning_shrinks_the_tree_to_the_live_state(tmp_path):
    store = open_state_store(tmp_path / "db")
    for height in range(1, 61):
        commit_state(store, block_changes(height), height)

    def tree_records() -> int:
        # Pages and leaves are the tree/ LevelDB's only records (node/storage/store_parts.py).
        return sum(1 for _ in store._db.part(TREE_PART).iterator(include_value=False))

    before = tree_records()
    StatePruner(store, retention_blocks=1).prune_all()
    after = tree_records()
    live_keys = len(live_state(store))
    assert after < before / 3  # history went, the live tree stayed
    assert after <= 2 * live_keys  # leaves plus the pages above them
    assert state_tree.stored_root(store.view) == reference_root(live_state(store))
    store.close()


def test_dropped_block_batch_keeps_the_roots(tmp_path):
    store = open_state_store(tmp_path / "db")
    for height in range(1, 6):
        commit_state(store, block_changes(height), height)
    before = state_tree.stored_root(store.view)
    changes = block_changes(6)
    root, tree = state_tree.update(store.view, 6, changes)
    last = store.last_header()
    txs = [make_tx(6)]
    size, log_root = store.root_after([tx.encoding for tx in txs])
    header = Header(
        chain_id=last.chain_id, epoch=0, height=6, round=6, parent_hash=last.hash(),
        tx_log_size=size, tx_log_root=log_root, state_root=root,
        validator_set_hash=last.validator_set_hash, next_validator_set_hash=ZERO_HASH,
        receipts_root=ok_receipts_root(store, len(txs)), proposer="KOMCA",
        timestamp_ms=last.timestamp_ms + 1_000,
    )  # fmt: skip
    prepared = store.prepare_commit(
        BlockRecord(header, b"b", b"q"), txs, [TxResult()], {**changes, **tree}
    )
    del prepared  # the process dies before batch.write()
    store.close()
    store = open_state_store(tmp_path / "db")
    assert state_tree.stored_root(store.view) == before == store.last_header().state_root
    assert commit_state(store, changes, 6).state_root == root  # the same block, the same root
    store.close()


def test_kill_9_while_committing_and_pruning_recovers_the_same_roots(tmp_path):
    path = tmp_path / "db"
    reported = kill_9_after("tests.test_state_history", path, blocks=40, safety_net_s=120)
    store = open_state_store(path)
    try:
        last = store.last_height()
        assert last >= reported
        assert state_tree.stored_root(store.view) == store.last_header().state_root
        assert reference_root(live_state(store)) == store.last_header().state_root
        oldest = max(0, last - CHILD_RETENTION_BLOCKS)
        for height in range(oldest, last + 1):
            header = store.header(height)
            assert header is not None
            for key in (b"s/work/3", b"s/usage/5", b"s/org/KOMCA"):
                value, proof = state_tree.prove(store.view, height, key)
                assert smt.verify_proof(header.state_root, key, value, proof)
        pruner = StatePruner(store, CHILD_RETENTION_BLOCKS)
        pruner.prune_all()  # the interrupted prune finishes
        header = commit_state(store, block_changes(last + 1), 10**6)  # and it keeps going
        assert reference_root(live_state(store)) == header.state_root
    finally:
        store.close()


CHILD_RETENTION_BLOCKS = 8


def _child(path: str, blocks: int) -> None:
    store = open_state_store(Path(path))
    pruner = StatePruner(store, CHILD_RETENTION_BLOCKS, batch_records=3)
    for height in range(1, blocks + 1):
        commit_state(store, block_changes(height), height)
        for _ in range(4):  # a few small prune batches between blocks: kill -9 lands in either
            pruner.prune_once()
        print(height, flush=True)


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))


def test_state_proof_rpc_cli_and_offline_verifier_end_to_end(tmp_path, capsys):
    """`kledger query state KEY --height H` over real gRPC, `kledger verify state` on the file."""
    store = open_state_store(tmp_path / "db")
    for height in range(1, 13):
        header = commit_state(store, block_changes(height), height)
        store.save_certificate(height, certify(header))
    StatePruner(store, retention_blocks=5).prune_all()
    certified = CertifiedState(store, retention_blocks=5)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    # In process without client TLS: the policy reads every call as the public reader, which
    # StateProof serves for keys outside the restricted families (a work here).
    add_registry_service(
        server, certified.current, AccessPolicy(lambda: store.view), certified.proof_at
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    genesis_path = tmp_path / "genesis.json"
    save_genesis(genesis_path, GENESIS)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        proofs = tmp_path / "proofs"
        argv = ["state", "s/work/3", "--height", "9", "--proofs", str(proofs)]
        assert query_cli.main(argv, channel=channel) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["height"] == 9
        [file] = sorted(proofs.glob("proof-*.json"))
        assert verify.main(["state", str(file), "--genesis", str(genesis_path)]) == 0
        assert "valid: s/work/3" in capsys.readouterr().out
        bundle = json.loads(file.read_text())
        bundle["value"] = canonical.encode("tampered").hex()
        file.write_text(json.dumps(bundle))
        assert verify.main(["state", str(file), "--genesis", str(genesis_path)]) == 1
        capsys.readouterr()
        assert query_cli.main(["state", "s/work/3", "--height", "3"], channel=channel) == 1
        err = capsys.readouterr().err
        assert "FAILED_PRECONDITION" in err and "state at height 3 is pruned" in err
    finally:
        channel.close()
        server.stop(None)
        store.close()


def test_a_store_of_the_hash_keyed_format_is_refused_by_name(tmp_path):
    """No silent conversion: a v1 store (state tree keyed by hash) does not open."""
    store = open_state_store(tmp_path / "db")
    store._db.put(b"x/format", b"kledger-store/v1")
    store.close()
    with pytest.raises(StoreCorrupt) as refused:
        open_state_store(tmp_path / "db")
    assert "kledger-store/v1" in str(refused.value)
    assert "state tree stored by hash" in str(refused.value)
    assert "does not convert" in str(refused.value)
