"""The epoch-change marker (docs/design.md §4.8): its encoding is total on hostile bytes, the
leader proposes it once the executed state holds a ready next set, replicas vote for it only
with the same ready set (a lagging replica refuses), the blocks above it stay empty, and
validator_set_after answers the marker's set exactly for the marker block."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.consensus import Block, Height, Round, genesis_block
from kledger.consensus.validators import NodeId, ValidatorSet
from kledger.node.chain import canonical
from kledger.node.chain.payload import (
    decode_epoch_change,
    decode_payload,
    encode_epoch_change,
    encode_payload,
    epoch_change_of,
)
from kledger.node.errors import DecodeError
from kledger.node.ordering.proposals import MempoolPayloads
from tests.helpers import key
from tests.test_payload_source import GENESIS, _any_payload, hashes, tx

SET_1 = ValidatorSet.of(1, [(f"ORG{i}", key(f"ORG{i}/validator").public_key) for i in range(5)])
OTHER_1 = ValidatorSet.of(1, [(f"ORG{i}", key(f"ORG{i}/validator").public_key) for i in range(4)])


class Facts:
    """The executed committed state's answers, set by each test."""

    def __init__(self) -> None:
        self.ready: ValidatorSet | None = None
        self.entered_sets: list[ValidatorSet] = []

    def ready_next_set(self) -> ValidatorSet | None:
        return self.ready

    def ending_qc(self, epoch: int) -> None:
        return None

    def entered(self, validators: ValidatorSet) -> None:
        self.entered_sets.append(validators)


def source(facts: Facts) -> MempoolPayloads:
    from kledger.node.ordering.mempool import Mempool

    mempool = Mempool()
    for nonce in range(3):
        mempool.admit(tx(nonce).encoding, GENESIS.chain_id)
    return MempoolPayloads(
        mempool,
        GENESIS,
        lambda _hash: False,
        proposal_max_txs=10,
        check_payload=_any_payload,
        max_payload_bytes=1 << 20,
        epochs=facts,
    )


def test_a_marker_round_trips_and_is_never_a_tx_batch() -> None:
    payload = encode_epoch_change(SET_1)
    assert decode_epoch_change(payload) == SET_1
    assert canonical.decode(payload) == {
        "epoch_change": {
            "epoch": 1,
            "validators": [[v.node_id, v.public_key] for v in SET_1.validators],
        }
    }
    with pytest.raises(DecodeError):
        decode_payload(payload, GENESIS.block_limits, GENESIS.tx_limits)
    assert decode_epoch_change(b"") is None
    assert decode_epoch_change(encode_payload([tx(0)])) is None


@pytest.mark.parametrize(
    "value",
    [
        {"epoch_change": {"epoch": 1, "validators": []}},
        {"epoch_change": {"epoch": 0, "validators": [["A", b"k" * 32]]}},
        {"epoch_change": {"epoch": True, "validators": [["A", b"k" * 32]]}},
        {"epoch_change": {"epoch": 1, "validators": [["A", b"k" * 31]]}},
        {"epoch_change": {"epoch": 1, "validators": [["B", b"k" * 32], ["A", b"j" * 32]]}},
        {"epoch_change": {"epoch": 1, "validators": [["A", b"k" * 32], ["A", b"j" * 32]]}},
        {"epoch_change": {"epoch": 1, "validators": [["A", b"k" * 32], ["B", b"k" * 32]]}},
        {"epoch_change": {"epoch": 1, "validators": [["A", b"k" * 32, 1]]}},
        {"epoch_change": {"epoch": 1, "validators": [["", b"k" * 32]]}},
        {"epoch_change": {"epoch": 1, "validators": [["A", b"k" * 32]], "x": 1}},
        {"epoch_change": [1]},
        {"epoch_change": {"epoch": 1, "validators": [["A", b"k" * 32]]}, "more": 1},
        {"other": 1},
        [1, 2],
    ],
)
def test_malformed_markers_are_not_markers(value: object) -> None:
    assert decode_epoch_change(canonical.encode(value)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoding_a_marker_is_total_on_junk_bytes(junk: bytes) -> None:
    result = decode_epoch_change(junk)
    assert result is None or isinstance(result, ValidatorSet)
    # Flipping bytes of a real marker gives a set or None, never an exception.
    marker = bytearray(encode_epoch_change(SET_1))
    rng = random.Random(junk)
    for _ in range(3):
        marker[rng.randrange(len(marker))] = rng.randrange(256)
    decoded = decode_epoch_change(bytes(marker))
    assert decoded is None or isinstance(decoded, ValidatorSet)


def test_the_leader_proposes_the_marker_once_the_next_set_is_ready() -> None:
    facts = Facts()
    payloads = source(facts)
    assert hashes(payloads.next_payload([])) == [tx(n).tx_hash for n in range(3)]
    facts.ready = SET_1
    assert payloads.has_payload([])
    assert payloads.next_payload([]) == encode_epoch_change(SET_1)  # the whole payload


def test_replicas_vote_for_the_marker_only_with_the_same_ready_set() -> None:
    facts = Facts()
    payloads = source(facts)
    marker = encode_epoch_change(SET_1)
    assert not payloads.is_valid_payload(marker, [])  # lagging: NEXT not ready here yet
    facts.ready = OTHER_1
    assert not payloads.is_valid_payload(marker, [])  # another set
    facts.ready = SET_1
    assert payloads.is_valid_payload(marker, [])
    assert not payloads.is_valid_payload(encode_epoch_change(SET_1), [marker])  # a second one
    two = ValidatorSet(2, SET_1.validators)
    facts.ready = two
    assert not payloads.is_valid_payload(encode_epoch_change(two), [])  # not epoch e + 1


def test_blocks_above_an_uncommitted_marker_are_empty() -> None:
    facts = Facts()
    facts.ready = SET_1
    payloads = source(facts)
    marker = encode_epoch_change(SET_1)
    assert payloads.next_payload([marker]) == b""
    assert payloads.next_payload([b"", marker]) == b""
    assert payloads.is_valid_payload(b"", [marker])
    assert not payloads.is_valid_payload(encode_payload([tx(0)]), [b"", marker])
    # Once the marker committed (the core is in epoch 1), it is only an unapplied payload.
    assert payloads.validator_set_after(_block(marker, epoch=0)) == SET_1
    assert payloads.epoch == 1 and facts.entered_sets == [SET_1]
    assert payloads.is_valid_payload(encode_payload([tx(0)]), [marker])
    assert hashes(payloads.next_payload([marker])) == [tx(n).tx_hash for n in range(3)]


def test_validator_set_after_answers_only_for_the_marker_block() -> None:
    facts = Facts()
    payloads = source(facts)
    assert payloads.validator_set_after(_block(encode_payload([tx(0)]), epoch=0)) is None
    assert payloads.validator_set_after(_block(b"", epoch=0)) is None
    # A marker naming any epoch but block.epoch + 1 is no marker.
    assert epoch_change_of(_block(encode_epoch_change(SET_1), epoch=1)) is None
    assert payloads.epoch == 0 and facts.entered_sets == []


def _block(payload: bytes, epoch: int) -> Block:
    root, root_qc = genesis_block(GENESIS.chain_id, GENESIS.validator_set, 0)
    return Block(
        chain_id=GENESIS.chain_id,
        epoch=epoch,
        round=Round(1),
        height=Height(1),
        parent_id=root.id,
        proposer=NodeId("KOMCA"),
        timestamp_ms=1,
        payload=payload,
        qc=root_qc,
    )
