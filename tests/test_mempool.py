"""The mempool: bounds (txs and bytes), dedup, replay, chain id, state check, signature verified
once, FIFO proposal batches with exclusions, removal on commit, and the gossip outbox."""

from __future__ import annotations

import pytest

from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.node.errors import Refused, Status
from kledger.node.ordering.mempool import Mempool, MempoolLimits
from tests.helpers import key

CHAIN = "kledger-test"


def make_tx(nonce: int, chain_id: str = CHAIN, signer: str = "KOMCA/client") -> SignedTx:
    body = TxBody(chain_id=chain_id, type="usage.report", nonce=nonce, payload={"n": nonce})
    return sign_tx(key(signer), body)


def refused(call: object) -> Refused:
    assert callable(call)
    with pytest.raises(Refused) as info:
        call()
    return info.value


def test_admit_dedup_and_replay() -> None:
    pool = Mempool()
    tx = make_tx(1)
    assert pool.admit(tx.encoding, CHAIN) == tx
    assert tx.tx_hash in pool and len(pool) == 1 and pool.size_bytes == len(tx.encoding)
    again = refused(lambda: pool.admit(tx.encoding, CHAIN))
    assert again.status is Status.ALREADY_EXISTS and again.field == "tx_hash"
    other = make_tx(2)
    replay = refused(
        lambda: pool.admit(other.encoding, CHAIN, is_committed={other.tx_hash}.__contains__)
    )
    assert replay.status is Status.ALREADY_EXISTS and "replay" in replay.message
    assert len(pool) == 1


def test_stateless_refusals_change_nothing() -> None:
    pool = Mempool()
    wrong_chain = refused(lambda: pool.admit(make_tx(1, chain_id="other").encoding, CHAIN))
    assert wrong_chain.status is Status.INVALID_ARGUMENT and wrong_chain.field == "chain_id"
    malformed = refused(lambda: pool.admit(b"\x93\x01", CHAIN))
    assert malformed.status is Status.INVALID_ARGUMENT
    good = make_tx(3)
    forged = SignedTx(good.body, good.signer, bytes(64))
    bad_signature = refused(lambda: pool.admit(forged.encoding, CHAIN))
    assert bad_signature.status is Status.UNAUTHENTICATED and bad_signature.field == "signature"

    def unknown_key(tx: SignedTx, body: TxBody) -> None:
        raise Refused(Status.PERMISSION_DENIED, "key is not a member key", "signer_public_key")

    denied = refused(lambda: pool.admit(good.encoding, CHAIN, check_state=unknown_key))
    assert denied.status is Status.PERMISSION_DENIED
    assert len(pool) == 0 and pool.size_bytes == 0 and pool.take_gossip(10) == []


def test_bounded_by_count_and_bytes() -> None:
    pool = Mempool(MempoolLimits(max_txs=3))
    for nonce in range(3):
        pool.admit(make_tx(nonce).encoding, CHAIN)
    full = refused(lambda: pool.admit(make_tx(9).encoding, CHAIN))
    assert full.status is Status.RESOURCE_EXHAUSTED and "max_txs=3" in full.message
    assert len(pool) == 3  # nothing held was evicted

    size = len(make_tx(0).encoding)
    by_bytes = Mempool(MempoolLimits(max_bytes=2 * size + size // 2))
    by_bytes.admit(make_tx(0).encoding, CHAIN)
    by_bytes.admit(make_tx(1).encoding, CHAIN)
    over = refused(lambda: by_bytes.admit(make_tx(2).encoding, CHAIN))
    assert over.status is Status.RESOURCE_EXHAUSTED and "max_bytes" in over.message


def test_signature_verified_once() -> None:
    pool = Mempool()
    good = make_tx(1)
    forged = SignedTx(good.body, good.signer, bytes(64))
    # A hash marked verified (e.g. checked when it arrived in a proposal) is not checked again:
    # shown with a forged signature, which the check would refuse.
    assert not pool.is_verified(forged.tx_hash)
    pool.mark_verified(forged.tx_hash)
    assert pool.is_verified(forged.tx_hash)
    pool.admit(forged.encoding, CHAIN)
    assert forged.tx_hash in pool
    # Mempool txs answer is_verified; after commit they no longer do.
    pool.admit(good.encoding, CHAIN)
    assert pool.is_verified(good.tx_hash)
    pool.remove_committed([good.tx_hash])
    assert not pool.is_verified(good.tx_hash)


def test_verified_cache_is_bounded() -> None:
    pool = Mempool(MempoolLimits(max_verified_cache=2))
    hashes = [bytes([i]) * 32 for i in range(3)]
    for tx_hash in hashes:
        pool.mark_verified(tx_hash)
    assert [pool.is_verified(h) for h in hashes] == [False, True, True]


def test_batches_fifo_with_exclusions_and_commit() -> None:
    pool = Mempool()
    txs = [make_tx(n) for n in range(6)]
    for tx in txs:
        pool.admit(tx.encoding, CHAIN)
    assert pool.batch(3) == txs[:3]
    assert pool.batch(3, exclude={txs[0].tx_hash, txs[2].tx_hash}) == [txs[1], txs[3], txs[4]]
    assert pool.batch(10, max_bytes=2 * len(txs[0].encoding) + 1) == txs[:2]
    assert pool.batch(3) == txs[:3]  # batching removes nothing
    assert pool.remove_committed([txs[0].tx_hash, txs[1].tx_hash, b"\x00" * 32]) == 2
    assert pool.batch(10) == txs[2:]
    assert pool.size_bytes == sum(len(t.encoding) for t in txs[2:])


def test_gossip_outbox() -> None:
    pool = Mempool()
    local = [make_tx(n) for n in range(5)]
    for tx in local:
        pool.admit(tx.encoding, CHAIN)
    gossiped = make_tx(100, signer="RIAK/client")
    pool.admit(gossiped.encoding, CHAIN, local=False)
    pool.remove_committed([local[1].tx_hash])
    assert pool.take_gossip(2) == [local[0], local[2]]
    assert pool.take_gossip(10) == [local[3], local[4]]  # not the tx that came by gossip
    assert pool.take_gossip(10) == []
    assert gossiped.tx_hash in pool
