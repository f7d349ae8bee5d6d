"""Builders for ledger tests: signed txs, blocks committed to a real LedgerStore, certificates
signed by the founding validators' deterministic keys."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.genesis import Genesis
from kledger.node.chain.header import ZERO_HASH, CommitCertificate, Header, sign_header
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.node.proof.receipts import receipts_root
from kledger.node.storage import state_tree
from kledger.node.storage.keyspace import DictView
from kledger.node.storage.store import BlockRecord, LedgerStore
from tests.helpers import FOUNDING_ORGS, key, make_genesis

GENESIS_STATE_ROOT = hashlib.sha256(b"genesis state").digest()
# A real one-key state tree: the store keeps a state value in its leaf (store v6).
_GENESIS_STATE: dict[bytes, bytes | None] = {b"s/org/KOMCA": b"\x01"}
GENESIS_WRITES: dict[bytes, bytes | None] = {
    **_GENESIS_STATE,
    **state_tree.update(DictView(), 0, _GENESIS_STATE)[1],
}


def open_store(path: Path, genesis: Genesis | None = None, **kwargs: Any) -> LedgerStore:
    return LedgerStore.open(
        path, genesis or make_genesis(), GENESIS_WRITES, GENESIS_STATE_ROOT, **kwargs
    )


def make_tx(nonce: int, chain_id: str = "kledger-test", org: str = "KOMCA") -> SignedTx:
    body = TxBody(chain_id, "usage.report", nonce, {"work": f"T-{nonce:09d}", "plays": nonce % 97})
    return sign_tx(key(f"{org}/client"), body)


def ok_receipts_root(store: LedgerStore, tx_count: int, results: list[TxResult] | None = None):
    """The receipts_root of the next block: `tx_count` txs with these results (default OK)."""
    results = results if results is not None else [TxResult() for _ in range(tx_count)]
    first = store.log_size()
    height = store.last_height() + 1
    return receipts_root([Receipt(height, first + i, r) for i, r in enumerate(results)])


def next_header(
    store: LedgerStore,
    txs: list[SignedTx],
    round_number: int = 0,
    *,
    results: list[TxResult] | None = None,
    epoch: int | None = None,
    validators: ValidatorSet | None = None,
    next_validators: ValidatorSet | None = None,
) -> Header:
    """The next header on the store's tip: epoch and set default to the tip's."""
    last = store.last_header()
    size, root = store.root_after([tx.encoding for tx in txs])
    return Header(
        chain_id=last.chain_id,
        epoch=last.epoch if epoch is None else epoch,
        height=last.height + 1,
        round=round_number or last.round + 1,
        parent_hash=last.hash(),
        tx_log_size=size,
        tx_log_root=root,
        state_root=hashlib.sha256(b"state" + last.height.to_bytes(8, "big")).digest(),
        validator_set_hash=last.validator_set_hash if validators is None else validators.digest(),
        next_validator_set_hash=ZERO_HASH if next_validators is None else next_validators.digest(),
        receipts_root=ok_receipts_root(store, len(txs), results),
        proposer="KOMCA",
        timestamp_ms=last.timestamp_ms + 1_000,
    )


def with_tree(store: LedgerStore, state: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
    """The next block's state writes: `state` with the state-tree records its s/ changes make
    (the store keeps each value in its leaf, store v6); other records pass as they are."""
    flat = {k: v for k, v in state.items() if k.startswith(b"s/")}
    if not flat:
        return dict(state)
    return {**state, **state_tree.update(store.view, store.last_height() + 1, flat)[1]}


def commit(
    store: LedgerStore,
    txs: list[SignedTx],
    state: dict[bytes, bytes | None] | None = None,
    *,
    results: list[TxResult] | None = None,
    epoch: int | None = None,
    validators: ValidatorSet | None = None,
    next_validators: ValidatorSet | None = None,
):
    """Commit a block of `txs` (results default OK); `next_validators` ends the epoch here."""
    results = results if results is not None else [TxResult() for _ in txs]
    header = next_header(
        store,
        txs,
        results=results,
        epoch=epoch,
        validators=validators,
        next_validators=next_validators,
    )
    record = BlockRecord(header, b"block-" + header.height.to_bytes(8, "big"), b"qc")
    writes = with_tree(store, state or {})
    receipts = store.commit_block(record, txs, results, writes, next_validators)
    return header, receipts


def certify(header: Header, signers: int = 4) -> CommitCertificate:
    orgs = sorted(org for org, _ in FOUNDING_ORGS)[:signers]
    header_hash = header.hash()
    return CommitCertificate(
        header_hash,
        tuple((org, sign_header(key(f"{org}/validator"), header_hash)) for org in orgs),
    )


def certify_with(header: Header, keys: dict[str, KeyPair]) -> CommitCertificate:
    """A certificate signed by exactly these (org -> validator key) signers."""
    header_hash = header.hash()
    return CommitCertificate(
        header_hash,
        tuple((org, sign_header(keys[org], header_hash)) for org in sorted(keys)),
    )


def kill_9_after(module: str, path: Path, blocks: int, safety_net_s: float) -> int:
    """Run `python -m module PATH 100000` (a child that commits and prints each height it has
    made durable), SIGKILL it once it reports `blocks` (or after `safety_net_s`, a net only: no
    test asserts on time), and return the last height it reported."""
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(
        [sys.executable, "-m", module, str(path), "100000"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    reported = 0
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + safety_net_s
        for line in child.stdout:
            reported = int(line)
            if reported >= blocks or time.monotonic() > deadline:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert reported >= 1, "the child committed nothing"
    return reported
