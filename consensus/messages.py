"""Consensus messages between validators and their one wire form.

Every message is signed by its sender's validator key over canonical sign bytes that start with
a per-kind domain tag and the chain id and include the epoch. `encode_message` writes a kind byte
and the message's canonical bytes; `decode_message` accepts any bytes and either returns a
message or raises DecodeError, after checking the total size and every count against a bound.
Signatures are not checked here: the core holds the validator keys and checks them (it drops,
counts and never raises).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from kledger.consensus.codec import DecodeError, Reader, Writer
from kledger.consensus.types import (
    BLOCK_ID_BYTES,
    MAX_SIGNATURE_BYTES,
    PROPOSAL_TAG,
    REQUEST_TAG,
    RESPONSE_TAG,
    Block,
    BlockId,
    QuorumCert,
    Round,
    TimeoutCert,
    Vote,
    read_optional_qc,
    read_optional_tc,
    timeout_sign_bytes,
    write_optional_qc,
    write_optional_tc,
)
from kledger.consensus.validators import NodeId

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_BLOCKS_PER_RESPONSE = 64  # wire bound; CoreConfig.max_blocks_per_response may be lower


@dataclass(frozen=True, slots=True)
class Proposal:
    """The leader's block for its round, the TC for the previous round when the block does not
    extend a QC of that round, and the leader's highest commit certificate (for lagging peers)."""

    block: Block
    last_tc: TimeoutCert | None
    commit_qc: QuorumCert | None
    signature: bytes

    @property
    def author(self) -> NodeId:
        return self.block.proposer

    @property
    def round(self) -> Round:
        return self.block.round


def proposal_sign_bytes(chain_id: str, block_id: BlockId) -> bytes:
    return Writer().raw(PROPOSAL_TAG).text(chain_id).raw(block_id).done()


@dataclass(frozen=True, slots=True)
class Timeout:
    """A replica's signed timeout for `round`, with its high QC (whose round is what it signs),
    its last TC (so peers behind can enter the round) and its highest commit certificate."""

    epoch: int
    round: Round
    high_qc: QuorumCert
    last_tc: TimeoutCert | None
    commit_qc: QuorumCert | None
    author: NodeId
    signature: bytes

    def sign_bytes(self, chain_id: str) -> bytes:
        return timeout_sign_bytes(chain_id, self.epoch, self.round, self.high_qc.round)


@dataclass(frozen=True, slots=True)
class BlockRequest:
    """Ask a peer for the block `block_id` and up to `count - 1` of its ancestors."""

    epoch: int
    block_id: BlockId
    count: int
    author: NodeId
    signature: bytes

    def sign_bytes(self, chain_id: str) -> bytes:
        writer = Writer().raw(REQUEST_TAG).text(chain_id).u64(self.epoch).raw(self.block_id)
        return writer.u64(self.count).done()


@dataclass(frozen=True, slots=True)
class BlockResponse:
    """Blocks from the sender's tree: `blocks[0]` is the requested one, each next its parent."""

    epoch: int
    block_id: BlockId
    blocks: tuple[Block, ...]
    author: NodeId
    signature: bytes

    def sign_bytes(self, chain_id: str) -> bytes:
        writer = Writer().raw(RESPONSE_TAG).text(chain_id).u64(self.epoch).raw(self.block_id)
        writer.u32(len(self.blocks))
        for block in self.blocks:
            writer.raw(block.id)
        return writer.done()


@dataclass(frozen=True, slots=True)
class EpochRequest:
    """From a node still in `epoch` that hears a later epoch: "send me the certificates that
    ended `epoch` and the epochs after it". Unsigned on purpose: the answer is public and checks
    itself, and the requester's key may have changed since (a rotation), so the answerer could
    not check a signature anyway; the transport authenticates the peer and the answerer bounds
    how often it answers one peer."""

    epoch: int
    author: NodeId


@dataclass(frozen=True, slots=True)
class EpochProof:
    """The commit certificates that ended epochs `epoch`, `epoch` + 1, ... (oldest first, at most
    MAX_EPOCH_PROOF_QCS, like Aptos's EpochChangeProof): `qcs[i]` is signed by the set of epoch
    `epoch` + i and commits that epoch's last block, so a receiver checks each one only once it
    has the set before it. `more`: the sender knows later epoch ends. Unsigned: every
    certificate carries its own quorum's signatures."""

    epoch: int
    qcs: tuple[QuorumCert, ...]
    more: bool
    author: NodeId


Message = Proposal | Vote | Timeout | BlockRequest | BlockResponse | EpochRequest | EpochProof

_KIND_PROPOSAL, _KIND_VOTE, _KIND_TIMEOUT, _KIND_REQUEST, _KIND_RESPONSE = 1, 2, 3, 4, 5
_KIND_EPOCH_REQUEST, _KIND_EPOCH_PROOF = 6, 7
MAX_EPOCH_PROOF_QCS = 16


def encode_message(message: Message) -> bytes:
    writer = Writer()
    match message:
        case Proposal():
            writer.u8(_KIND_PROPOSAL)
            message.block.write(writer)
            write_optional_tc(writer, message.last_tc)
            write_optional_qc(writer, message.commit_qc)
            writer.blob(message.signature)
        case Vote():
            writer.u8(_KIND_VOTE)
            message.write(writer)
        case Timeout():
            writer.u8(_KIND_TIMEOUT).u64(message.epoch).u64(message.round)
            message.high_qc.write(writer)
            write_optional_tc(writer, message.last_tc)
            write_optional_qc(writer, message.commit_qc)
            writer.text(message.author).blob(message.signature)
        case BlockRequest():
            writer.u8(_KIND_REQUEST).u64(message.epoch).raw(message.block_id)
            writer.u64(message.count).text(message.author).blob(message.signature)
        case BlockResponse():
            writer.u8(_KIND_RESPONSE).u64(message.epoch).raw(message.block_id)
            writer.u32(len(message.blocks))
            for block in message.blocks:
                block.write(writer)
            writer.text(message.author).blob(message.signature)
        case EpochRequest():
            writer.u8(_KIND_EPOCH_REQUEST).u64(message.epoch).text(message.author)
        case EpochProof():
            writer.u8(_KIND_EPOCH_PROOF).u64(message.epoch).u32(len(message.qcs))
            for qc in message.qcs:
                qc.write(writer)
            writer.flag(message.more).text(message.author)
        case _:
            assert_never(message)
    data = writer.done()
    assert len(data) <= MAX_MESSAGE_BYTES, "a message over the wire limit was built"
    return data


def decode_message(data: bytes) -> Message:
    """Raises DecodeError (only) for anything that is not one canonical message."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("input must be bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    reader = Reader(data)
    kind = reader.u8()
    message: Message
    try:
        if kind == _KIND_PROPOSAL:
            block = Block.read(reader)
            message = Proposal(
                block, read_optional_tc(reader), read_optional_qc(reader), _signature(reader)
            )
        elif kind == _KIND_VOTE:
            message = Vote.read(reader)
        elif kind == _KIND_TIMEOUT:
            epoch, round = reader.u64(), Round(reader.u64())
            high_qc = QuorumCert.read(reader)
            last_tc, commit_qc = read_optional_tc(reader), read_optional_qc(reader)
            author = NodeId(reader.text())
            message = Timeout(epoch, round, high_qc, last_tc, commit_qc, author, _signature(reader))
        elif kind == _KIND_REQUEST:
            epoch, block_id, count = reader.u64(), BlockId(reader.raw(BLOCK_ID_BYTES)), reader.u64()
            message = BlockRequest(
                epoch, block_id, count, NodeId(reader.text()), _signature(reader)
            )
        elif kind == _KIND_RESPONSE:
            epoch, block_id = reader.u64(), BlockId(reader.raw(BLOCK_ID_BYTES))
            blocks = tuple(Block.read(reader) for _ in range(reader.count(MAX_BLOCKS_PER_RESPONSE)))
            author = NodeId(reader.text())
            message = BlockResponse(epoch, block_id, blocks, author, _signature(reader))
        elif kind == _KIND_EPOCH_REQUEST:
            message = EpochRequest(reader.u64(), NodeId(reader.text()))
        elif kind == _KIND_EPOCH_PROOF:
            epoch = reader.u64()
            qcs = tuple(QuorumCert.read(reader) for _ in range(reader.count(MAX_EPOCH_PROOF_QCS)))
            message = EpochProof(epoch, qcs, reader.flag(), NodeId(reader.text()))
        else:
            raise DecodeError(f"unknown message kind {kind}")
    except RecursionError as error:  # defensive: the format has no recursion, keep decode total
        raise DecodeError("message nests too deeply") from error
    reader.end()
    return message


def _signature(reader: Reader) -> bytes:
    return reader.blob(MAX_SIGNATURE_BYTES)
