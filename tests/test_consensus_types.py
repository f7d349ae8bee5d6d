"""Consensus data and wire form: canonical round trips, block ids, genesis determinism, and that
decoding any bytes raises DecodeError and nothing else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.cluster.sim.simulator import SimKeys
from kledger.consensus import (
    Block,
    BlockRequest,
    BlockResponse,
    DecodeError,
    EpochProof,
    EpochRequest,
    Message,
    Proposal,
    QuorumCert,
    SafetyData,
    Timeout,
    TimeoutCert,
    Vote,
    VoteData,
    decode_message,
    encode_message,
    genesis_block,
)
from kledger.consensus.messages import MAX_EPOCH_PROOF_QCS
from kledger.consensus.types import BlockId, BlockInfo, Height, Round, vote_sign_bytes
from kledger.consensus.validators import NodeId, ValidatorSet

KEYS = SimKeys([NodeId(f"n{i}") for i in range(4)])
VALIDATORS = ValidatorSet.of(1, [(i, KEYS.public[i]) for i in KEYS.public])
GENESIS, GENESIS_QC = genesis_block("chain-a", VALIDATORS, 1_000)


def child(parent: Block, round: int, qc: QuorumCert, payload: bytes = b"tx") -> Block:
    return Block(
        "chain-a", 1, Round(round), Height(parent.height + 1), parent.id, NodeId("n1"),
        parent.timestamp_ms + 1, payload, qc,
    )  # fmt: skip


def signed_qc(block: Block, parent_info: BlockInfo, commit: BlockInfo | None) -> QuorumCert:
    data = VoteData(1, block.info, parent_info, commit)
    sigs = tuple(
        (i, KEYS.signer(i)(vote_sign_bytes("chain-a", data))) for i in sorted(KEYS.public)[:3]
    )
    return QuorumCert(data, sigs)


def sample_messages() -> list[Message]:
    block = child(GENESIS, 1, GENESIS_QC)
    qc = signed_qc(block, GENESIS.info, GENESIS.info)
    tc = TimeoutCert(1, Round(2), ((NodeId("n0"), Round(1), b"s" * 32),), qc)
    vote = Vote(qc.data, NodeId("n2"), b"v" * 32)
    return [
        Proposal(block, tc, qc, b"p" * 32),
        Proposal(block, None, None, b"p" * 32),
        vote,
        Timeout(1, Round(3), qc, tc, None, NodeId("n3"), b"t" * 32),
        BlockRequest(1, block.id, 8, NodeId("n0"), b"r" * 32),
        BlockResponse(1, block.id, (block, GENESIS), NodeId("n1"), b"q" * 32),
        EpochRequest(3, NodeId("n2")),
        EpochProof(1, (qc, qc), True, NodeId("n1")),
        EpochProof(4, (), False, NodeId("n1")),
    ]


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_messages_round_trip_canonically(message) -> None:
    data = encode_message(message)
    assert decode_message(data) == message
    assert encode_message(decode_message(data)) == data


def test_an_epoch_proof_holds_at_most_a_page_of_certificates() -> None:
    block = child(GENESIS, 1, GENESIS_QC)
    qc = signed_qc(block, GENESIS.info, GENESIS.info)
    page = EpochProof(1, (qc,) * MAX_EPOCH_PROOF_QCS, True, NodeId("n1"))
    assert decode_message(encode_message(page)) == page
    # One certificate more than a page, written by hand (encode_message would build it too):
    # the count is refused before anything is read.
    data = bytearray(encode_message(page))
    count_at = 1 + 8
    data[count_at : count_at + 4] = (MAX_EPOCH_PROOF_QCS + 1).to_bytes(4, "big")
    with pytest.raises(DecodeError):
        decode_message(bytes(data))


def test_types_round_trip() -> None:
    block = child(GENESIS, 1, GENESIS_QC)
    assert Block.decode(block.encode()) == block
    assert Block.decode(block.encode()).id == block.id
    qc = signed_qc(block, GENESIS.info, None)
    assert QuorumCert.decode(qc.encode()) == qc
    vote = Vote(qc.data, NodeId("n0"), b"x" * 32)
    tc = TimeoutCert(1, Round(5), ((NodeId("n0"), Round(4), b"s"),), qc)
    safety = SafetyData(1, Round(7), Round(5), vote, qc, tc)
    assert SafetyData.decode(safety.encode()) == safety
    empty = SafetyData(1, Round(0), Round(0), None, None, None)
    assert SafetyData.decode(empty.encode()) == empty


def test_block_id_binds_every_field() -> None:
    block = child(GENESIS, 1, GENESIS_QC)
    assert len(block.id) == 32
    other_payload = child(GENESIS, 1, GENESIS_QC, payload=b"other")
    other_chain = Block(
        "chain-b", 1, block.round, block.height, block.parent_id, block.proposer,
        block.timestamp_ms, block.payload, block.qc,
    )  # fmt: skip
    assert len({block.id, other_payload.id, other_chain.id}) == 3


def test_genesis_is_deterministic_and_bound_to_chain_and_set() -> None:
    again, again_qc = genesis_block("chain-a", VALIDATORS, 1_000)
    assert (again.id, again_qc) == (GENESIS.id, GENESIS_QC)
    assert GENESIS.height == 0 and GENESIS.round == 0
    assert GENESIS_QC.commit is not None and GENESIS_QC.commit.id == GENESIS.id
    other_set = ValidatorSet.of(1, [(i, KEYS.public[i]) for i in sorted(KEYS.public)[:3]])
    assert genesis_block("chain-a", other_set, 1_000)[0].id != GENESIS.id
    assert genesis_block("chain-b", VALIDATORS, 1_000)[0].id != GENESIS.id


def test_decode_rejects_trailing_truncated_and_oversized_input() -> None:
    data = encode_message(sample_messages()[0])
    with pytest.raises(DecodeError):
        decode_message(data + b"\x00")
    for cut in (0, 1, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodeError):
            decode_message(data[:cut])
    with pytest.raises(DecodeError):
        decode_message(b"\x09")  # unknown kind
    # a count far above the bound is refused before anything is allocated
    with pytest.raises(DecodeError):
        decode_message(b"\x05" + bytes(8) + bytes(32) + b"\xff\xff\xff\xff")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decode_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # any other exception fails the test
        decode_message(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_messages_decode_or_raise_decode_error(data) -> None:
    original = encode_message(data.draw(st.sampled_from(sample_messages())))
    index = data.draw(st.integers(0, len(original) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = original[:index] + bytes((value,)) + original[index + 1 :]
    with contextlib.suppress(DecodeError):
        decode_message(mutated)


def test_block_info_is_what_votes_name() -> None:
    block = child(GENESIS, 1, GENESIS_QC)
    assert block.info == BlockInfo(BlockId(block.id), Round(1), Height(1))
