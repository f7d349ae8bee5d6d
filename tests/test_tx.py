"""Signed transactions: golden bytes, signature checks, and refusal of malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.node.chain import canonical
from kledger.node.chain.keys import TX_TAG, KeyPair
from kledger.node.chain.tx import (
    SignedTx,
    TxBody,
    TxLimits,
    admit_tx,
    check_signature,
    decode_body,
    decode_tx,
    sign_tx,
)
from kledger.node.errors import DecodeError, Refused, Status

GOLDEN_KEY = KeyPair.from_seed(bytes(range(32)))
GOLDEN_BODY = TxBody(
    "kledger-test", "RegisterParty", 7, {"name": "Kim Min-ji", "ipi": "00662307358"}
)
GOLDEN_BODY_HEX = (
    "84a8636861696e5f6964ac6b6c65646765722d74657374a56e6f6e636507a77061796c6f616482a3697069ab"
    "3030363632333037333538a46e616d65aa4b696d204d696e2d6a69a474797065ad52656769737465725061727479"
)
GOLDEN_SIGNATURE_HEX = (
    "982445a119e01ae091e9f8bc7c1332d6099ecd71f1769d74e51a29701399b80f"
    "c7010046b3e8f6c2801e5aa68aedee4ee6c3d78178c82d7898ea12f56d77b40d"
)
GOLDEN_TX_HASH_HEX = "6b637aff152a7d12bd2b62612351c38a0fa6449a540dd722271134fa17bcee32"


def test_golden_vector_pins_body_signature_and_hash() -> None:
    tx = sign_tx(GOLDEN_KEY, GOLDEN_BODY)
    assert GOLDEN_KEY.public_key.hex() == (
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )
    assert tx.body.hex() == GOLDEN_BODY_HEX
    assert tx.signature.hex() == GOLDEN_SIGNATURE_HEX
    assert tx.encoding == canonical.encode([tx.body, tx.signer, tx.signature])
    assert tx.tx_hash.hex() == GOLDEN_TX_HASH_HEX


def test_roundtrip_and_admission() -> None:
    tx = sign_tx(GOLDEN_KEY, GOLDEN_BODY)
    decoded = decode_tx(tx.encoding)
    assert decoded == tx and decoded.tx_hash == tx.tx_hash
    admitted, body = admit_tx(tx.encoding, "kledger-test")
    assert admitted.tx_hash == tx.tx_hash and body == GOLDEN_BODY


def test_signature_covers_the_domain_tag_and_body() -> None:
    tx = sign_tx(GOLDEN_KEY, GOLDEN_BODY)
    other_tag = SignedTx(tx.body, tx.signer, GOLDEN_KEY.sign(b"kledger/other/v1\x00", tx.body))
    with pytest.raises(Refused) as info:
        check_signature(other_tag)
    assert info.value.status is Status.UNAUTHENTICATED and info.value.field == "signature"
    tampered = SignedTx(tx.body[:-1] + b"\x00", tx.signer, tx.signature)
    with pytest.raises(Refused):
        check_signature(tampered)
    check_signature(SignedTx(tx.body, tx.signer, GOLDEN_KEY.sign(TX_TAG, tx.body)))


def test_wrong_chain_is_refused_naming_chain_id() -> None:
    tx = sign_tx(GOLDEN_KEY, GOLDEN_BODY)
    with pytest.raises(Refused) as info:
        admit_tx(tx.encoding, "another-chain")
    assert info.value.status is Status.INVALID_ARGUMENT and info.value.field == "chain_id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"chain_id": "c", "type": "T", "nonce": 1}, "body"),
        ({"chain_id": "c", "type": "T", "nonce": 1, "payload": {}, "extra": 1}, "body"),
        ({"chain_id": "", "type": "T", "nonce": 1, "payload": {}}, "chain_id"),
        ({"chain_id": "c", "type": "", "nonce": 1, "payload": {}}, "type"),
        ({"chain_id": "c", "type": "T", "nonce": -1, "payload": {}}, "nonce"),
        ({"chain_id": "c", "type": "T", "nonce": True, "payload": {}}, "nonce"),
        ({"chain_id": "c", "type": "T", "nonce": 1, "payload": []}, "payload"),
        (
            {"chain_id": "c", "type": "T", "nonce": 1, "payload": {"l": list(range(1001))}},
            "payload.l",
        ),
        ({"chain_id": "c", "type": "T", "nonce": 1, "payload": {"s": "x" * 4097}}, "payload.s"),
        (
            {"chain_id": "c", "type": "T", "nonce": 1, "payload": {"a": [{"b": "x" * 4097}]}},
            "payload.a[0].b",
        ),
        (
            {"chain_id": "c", "type": "T", "nonce": 1, "payload": {"a": {"l": [[0] * 1001]}}},
            "payload.a.l[0]",
        ),
    ],
)
def test_malformed_bodies_name_their_field(body: dict[str, object], field: str) -> None:
    raw = canonical.encode(body)
    tx = SignedTx(raw, GOLDEN_KEY.public_key, GOLDEN_KEY.sign(TX_TAG, raw))
    with pytest.raises(Refused) as info:
        decode_body(tx)
    assert info.value.field == field


def test_oversize_tx_is_resource_exhausted() -> None:
    big = sign_tx(GOLDEN_KEY, TxBody("c", "T", 1, {"s": "x" * 4000}))
    with pytest.raises(Refused) as info:
        decode_tx(big.encoding, TxLimits(max_tx_bytes=1000))
    assert info.value.status is Status.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x93\x01\x02\x03",
        canonical.encode([b"body", b"short", bytes(64)]),
        canonical.encode([b"body", bytes(32), bytes(63)]),
        canonical.encode(["body", bytes(32), bytes(64)]),
        b"\x91" * 60_000,
        b"\x82\xa1b\x01\xa1a\x02",  # keys out of canonical order
        b"\xd1\x00\x01",  # int16 for 1: not the shortest form
        b"\xcb" + bytes(8),  # a float
        b"\xd4\x01\x00",  # an ext type
    ],
)
def test_malformed_tx_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_tx(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        tx = decode_tx(data)
    except Refused:
        return
    assert tx.encoding == data
