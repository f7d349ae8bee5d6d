"""The node's payload source: proposals leave out txs in flight (uncommitted ancestors, and
blocks the core committed that the store has not applied yet, however many wait behind a running
execution); votes refuse a payload that repeats one, is for another chain, or carries a bad
signature."""

from __future__ import annotations

import pytest

from kledger.consensus import CoreConfig
from kledger.node.chain.payload import decode_payload, encode_payload
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.node.ordering.mempool import Mempool
from kledger.node.ordering.proposals import MempoolPayloads
from tests.helpers import key, make_genesis

GENESIS = make_genesis()
CLIENT = key("KOMCA/client")


def tx(nonce: int, chain_id: str = GENESIS.chain_id) -> SignedTx:
    return sign_tx(CLIENT, TxBody(chain_id, "RegisterParty", nonce, {"n": nonce}))


def _any_payload(_body: TxBody) -> None:
    """These tests are about what is in flight; the payload checks have their own tests
    (tests/test_execution_total.py)."""


def source(
    committed: set[bytes] | None = None, max_payload_bytes: int = CoreConfig().max_payload_bytes
) -> tuple[MempoolPayloads, Mempool]:
    mempool = Mempool()
    for nonce in range(4):
        mempool.admit(tx(nonce).encoding, GENESIS.chain_id)
    done = committed or set()
    return MempoolPayloads(
        mempool,
        GENESIS,
        done.__contains__,
        proposal_max_txs=10,
        check_payload=_any_payload,
        max_payload_bytes=max_payload_bytes,
    ), mempool


def hashes(payload: bytes) -> list[bytes]:
    return [t.tx_hash for t in decode_payload(payload, GENESIS.block_limits, GENESIS.tx_limits)]


def test_proposals_skip_every_tx_the_core_says_is_in_flight() -> None:
    """`pending` is what the core counts as in flight (uncommitted ancestors, and committed
    blocks not yet applied: tests/test_consensus_rules.py); proposals and votes skip it all."""
    payloads, _ = source()
    ancestor, unapplied = encode_payload([tx(0)]), encode_payload([tx(2)])
    assert hashes(payloads.next_payload([ancestor, unapplied])) == [tx(1).tx_hash, tx(3).tx_hash]
    assert not payloads.is_valid_payload(encode_payload([tx(2)]), [ancestor, unapplied])
    assert payloads.is_valid_payload(encode_payload([tx(2)]), [ancestor])


def test_votes_refuse_repeats_foreign_chains_and_bad_signatures() -> None:
    payloads, _ = source(committed={tx(3).tx_hash})
    assert payloads.is_valid_payload(encode_payload([tx(0), tx(1)]), [])
    assert not payloads.is_valid_payload(encode_payload([tx(0), tx(0)]), [])  # repeat inside
    assert not payloads.is_valid_payload(encode_payload([tx(0)]), [encode_payload([tx(0)])])
    assert not payloads.is_valid_payload(encode_payload([tx(3)]), [])  # already committed
    assert not payloads.is_valid_payload(encode_payload([tx(9, "other-chain")]), [])
    forged = SignedTx(tx(8).body, CLIENT.public_key, bytes(64))
    assert not payloads.is_valid_payload(encode_payload([forged]), [])
    assert not payloads.is_valid_payload(b"\xc1 not msgpack", [])
    fresh = tx(7)  # not in the mempool: verified on first sight, then cached
    assert payloads.is_valid_payload(encode_payload([fresh]), [])


def test_a_proposal_never_exceeds_the_cores_payload_limit() -> None:
    """The leader's payload is bounded by the core's max_payload_bytes (1 MiB), not only by the
    genesis block limit (4 MiB): the core asserts its limit, so a bigger proposal crashed the
    leader's driver, and every next leader's that held the same txs."""
    payloads, mempool = source(max_payload_bytes=128 * 1024)
    big = [
        sign_tx(
            CLIENT, TxBody(GENESIS.chain_id, "RegisterParty", 100 + n, {"s": ["x" * 4_000] * 5})
        )
        for n in range(30)
    ]
    for big_tx in big:
        mempool.admit(big_tx.encoding, GENESIS.chain_id)
    proposed = []
    while payload := payloads.next_payload([]):
        assert len(payload) <= 128 * 1024  # ten of these txs (200 KB) were proposed at once
        proposed += hashes(payload)
        mempool.remove_committed(hashes(payload))
    assert len(proposed) == len(set(proposed)) == 34  # every tx goes out, in turn


def test_each_pending_payload_is_decoded_once_however_many_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While execution is behind, hundreds of committed blocks wait to be applied, and every
    proposal and every vote asks what they hold. Each is decoded once, when it first appears
    (a 64-payload cache once missed on all of them past 64, and the event loop decoded the
    whole backlog for every round: docs/bench.md "The 30-minute soak, store v6")."""
    payloads, _ = source()
    backlog = [encode_payload([tx(1_000 + n)]) for n in range(300)]
    decoded: list[bytes] = []

    def counting(payload: bytes, *args: object) -> list[SignedTx]:
        decoded.append(payload)
        return decode_payload(payload, *args)  # type: ignore[arg-type]

    monkeypatch.setattr("kledger.node.ordering.proposals.decode_payload", counting)
    for _ in range(3):
        assert hashes(payloads.next_payload(backlog)) == [tx(n).tx_hash for n in range(4)]
        assert not payloads.is_valid_payload(encode_payload([tx(0), tx(1_299)]), backlog)
    assert sorted(p for p in decoded if p in backlog) == sorted(backlog)
    grown = [*backlog[1:], encode_payload([tx(0)])]  # one applied, one new on top
    assert hashes(payloads.next_payload(grown)) == [tx(n).tx_hash for n in (1, 2, 3)]
    assert payloads.is_valid_payload(encode_payload([tx(1_000)]), grown)  # it left the flight
    assert len([p for p in decoded if p in grown]) == len(grown)


def test_a_tx_stays_in_flight_until_the_last_payload_holding_it_leaves() -> None:
    """Blocks of two forks may hold the same tx; it is proposable again only once neither is
    pending. A pending payload that does not decode holds nothing and refuses nothing."""
    payloads, _ = source()
    fork_a, fork_b = encode_payload([tx(0), tx(1)]), encode_payload([tx(0)])
    assert hashes(payloads.next_payload([fork_a, fork_b])) == [tx(2).tx_hash, tx(3).tx_hash]
    assert hashes(payloads.next_payload([fork_b])) == [tx(n).tx_hash for n in (1, 2, 3)]
    assert hashes(payloads.next_payload([b"\xc1 junk", fork_b])) == [
        tx(n).tx_hash for n in (1, 2, 3)
    ]
    assert hashes(payloads.next_payload([])) == [tx(n).tx_hash for n in range(4)]
