"""Work skipped on the hot path never changes an answer: signer resolution sees every committed
member change at once (decoded records are cached by their stored bytes, never by key), decoded
bodies shared by admission and execution stay unchanged, and remembered or mempool-held payload
txs give exactly what decoding the payload gives, refusals included."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from kledger.cluster.bench.workload import sign_songs
from kledger.cluster.local.gen import ALL_ROLES
from kledger.node.chain import canonical
from kledger.node.chain.genesis import BlockLimits
from kledger.node.chain.keys import TX_TAG
from kledger.node.chain.payload import decode_payload, encode_payload
from kledger.node.chain.tx import SignedTx, TxBody, TxLimits, decode_body, sign_tx
from kledger.node.errors import DecodeError, Refused, Status
from kledger.node.ordering.mempool import Mempool, MempoolLimits
from kledger.node.registry import BlockContext, Registry
from kledger.node.storage.keyspace import DictView
from tests.helpers import key, make_genesis

GENESIS = make_genesis()


class Ledger:
    """A registry over an in-memory state, and a mempool admitting against it as a node does."""

    def __init__(self) -> None:
        self.registry = Registry(GENESIS)
        self.view = DictView({k: v for k, v in self.registry.genesis_writes().items() if v})
        self.mempool = Mempool()
        self.nonce = 0
        self.height = 0

    def signed(self, signer: str, tx_type: str, payload: dict[str, Any]) -> SignedTx:
        self.nonce += 1
        return sign_tx(key(signer), TxBody(GENESIS.chain_id, tx_type, self.nonce, payload))

    def admit(self, tx: SignedTx) -> None:
        self.mempool.admit(
            tx.encoding,
            GENESIS.chain_id,
            check_state=lambda tx, body: self.registry.check_admission(self.view, tx, body),
        )

    def commit(self, *txs: SignedTx) -> None:
        self.height += 1
        context = BlockContext(GENESIS.chain_id, 0, self.height, GENESIS.genesis_time_ms)
        outcome = self.registry.execute_block(
            self.view, [(tx, decode_body(tx)) for tx in txs], context
        )
        assert all(result.ok for result in outcome.results), outcome.results
        self.view.apply(outcome.writes)
        self.mempool.remove_committed(tx.tx_hash for tx in txs)


def usage_report(report_id: str) -> dict[str, object]:
    return {
        "report_id": report_id,
        "period": "2026-01",
        "territory": "KR",
        "service": "Melon",
        "commercial_model": "subscription",
        "use_type": "stream",
        "currency": "KRW",
        "net_revenue_minor": 1_000,
        "total_usages": 10,
        "lines": [{"line_id": "1", "code_kind": "isrc", "code": "KRA341561064", "usages": 1}],
    }


def test_a_committed_member_change_is_seen_by_the_next_admission() -> None:
    ledger = Ledger()
    second = key("KOMCA/second").public_key.hex()
    member = {"org": "KOMCA", "public_key": second, "roles": ["REPORTER"]}
    with pytest.raises(Refused) as refusal:
        ledger.admit(ledger.signed("KOMCA/second", "ReportUsage", usage_report("R1")))
    assert refusal.value.status is Status.PERMISSION_DENIED and refusal.value.field == "signer"

    ledger.commit(ledger.signed("KOMCA/admin", "RegisterMember", member))
    ledger.admit(ledger.signed("KOMCA/second", "ReportUsage", usage_report("R2")))
    ledger.admit(ledger.signed("KOMCA/second", "ReportUsage", usage_report("R3")))  # cached now
    party = {"party_id": "p1", "names": [{"name": "P"}], "memberships": [{"society": "KOMCA"}]}
    with pytest.raises(Refused) as no_role:
        ledger.admit(ledger.signed("KOMCA/second", "RegisterParty", party))
    assert no_role.value.status is Status.PERMISSION_DENIED and "REPORTER" in no_role.value.message

    ledger.commit(
        ledger.signed("KOMCA/admin", "RevokeMember", {"org": "KOMCA", "public_key": second})
    )
    with pytest.raises(Refused) as revoked:
        ledger.admit(ledger.signed("KOMCA/second", "ReportUsage", usage_report("R4")))
    assert revoked.value.status is Status.PERMISSION_DENIED
    assert "not a registered member key" in revoked.value.message

    # Registered again with another role: the new record's roles apply, not the old ones.
    ledger.commit(
        ledger.signed("KOMCA/admin", "RegisterMember", {**member, "roles": ["AUTHOR_CMO"]})
    )
    ledger.admit(ledger.signed("KOMCA/second", "RegisterParty", party))
    with pytest.raises(Refused):
        ledger.admit(ledger.signed("KOMCA/second", "ReportUsage", usage_report("R5")))


def test_admission_and_execution_leave_decoded_bodies_unchanged() -> None:
    orgs = tuple((f"ORG{i}", ALL_ROLES) for i in range(1, 5))
    genesis = make_genesis(orgs)
    registry = Registry(genesis)
    view = DictView({k: v for k, v in registry.genesis_writes().items() if v})
    mempool = Mempool()
    keys = {org: key(f"{org}/client") for org, _ in orgs}
    for song in sign_songs(genesis.chain_id, keys, 0, 8):
        for encoding in song.encodings:
            mempool.admit(
                encoding,
                genesis.chain_id,
                check_state=lambda tx, body: registry.check_admission(view, tx, body),
            )
    txs = mempool.batch(100)
    before = [copy.deepcopy(decode_body(tx)) for tx in txs]
    context = BlockContext(genesis.chain_id, 0, 1, genesis.genesis_time_ms)
    outcome = registry.execute_block(view, [(tx, decode_body(tx)) for tx in txs], context)
    assert all(result.ok for result in outcome.results)
    assert [decode_body(tx) for tx in txs] == before
    # The body is decoded once per tx object and limits, then shared.
    assert decode_body(txs[0]) is decode_body(txs[0])
    assert decode_body(txs[0], TxLimits(max_string_chars=100)) is not decode_body(txs[0])


def malformed(signer_bytes: int) -> SignedTx:
    body = canonical.encode({"chain_id": "c", "type": "T", "nonce": 1, "payload": {}})
    client = key("KOMCA/client")
    return SignedTx(body, bytes(signer_bytes), client.sign(TX_TAG, body))


def test_remembered_payloads_are_checked_like_decoded_ones() -> None:
    good = [sign_tx(key("KOMCA/client"), TxBody("c", "T", n, {"n": n})) for n in range(3)]
    payload = encode_payload(good)  # remembered: the same tx objects come back
    decoded = decode_payload(payload, GENESIS.block_limits, GENESIS.tx_limits)
    assert decoded == good and all(a is b for a, b in zip(decoded, good, strict=True))
    with pytest.raises(DecodeError) as too_many:
        decode_payload(payload, replace(GENESIS.block_limits, max_block_txs=2), GENESIS.tx_limits)
    assert too_many.value.field == "payload"
    with pytest.raises(Refused) as too_big:
        decode_payload(payload, GENESIS.block_limits, TxLimits(max_tx_bytes=100))
    assert too_big.value.status is Status.RESOURCE_EXHAUSTED
    with pytest.raises(DecodeError) as short:
        decode_payload(encode_payload([good[0], malformed(5)]), BlockLimits(), TxLimits())
    assert short.value.field == "signer_public_key"


def test_mempool_txs_are_taken_only_for_their_exact_encoding() -> None:
    pool = Mempool()
    # Other txs than the test above, whose payload this module remembers.
    txs = [sign_tx(key("KOMCA/client"), TxBody("c", "T", n, {"n": n})) for n in range(10, 13)]
    for tx in txs:
        pool.add(tx, local=False)
    payload = canonical.encode([tx.encoding for tx in txs])  # not via encode_payload
    decoded = decode_payload(payload, GENESIS.block_limits, GENESIS.tx_limits, pool.get)
    assert all(a is b for a, b in zip(decoded, txs, strict=True))
    other = sign_tx(key("KOSCAP/client"), TxBody("c", "T", 9, {"n": 9}))
    lying = decode_payload(
        canonical.encode([other.encoding]),
        GENESIS.block_limits,
        GENESIS.tx_limits,
        lambda _hash: txs[0],  # a holder answering with another tx is ignored
    )
    assert lying == [other] and lying[0] is not txs[0]


def test_only_the_first_waiting_txs_keep_their_decoded_body() -> None:
    pool = Mempool(MempoolLimits(max_decoded_bodies=2))
    txs = [sign_tx(key("KOMCA/client"), TxBody("c", "T", n, {"n": n})) for n in range(20, 24)]
    for tx in txs:
        pool.admit(tx.encoding, "c")
    held = [pool.get(tx.tx_hash) for tx in txs]
    assert [tx is not None and tx._decoded_body is not None for tx in held] == [
        True,
        True,
        False,
        False,
    ]
    pool.remove_committed([txs[0].tx_hash, txs[1].tx_hash])
    late = sign_tx(key("KOMCA/client"), TxBody("c", "T", 30, {"n": 30}))
    pool.admit(late.encoding, "c")
    kept = pool.get(late.tx_hash)
    assert kept is not None and kept._decoded_body is None  # 3 wait: 2 older ones, then it
