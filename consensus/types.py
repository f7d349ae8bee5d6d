"""Consensus data: blocks, votes, quorum and timeout certificates, the persisted safety data.

Rules kept here:
- Every type has one canonical byte form (consensus.codec); `decode(encode(x)) == x` and decode
  raises only DecodeError.
- A block's id is SHA-256 over a domain tag and the block's canonical bytes, which include the
  chain id, epoch, round, height, parent id, proposer, timestamp, payload and the parent's QC.
- What a validator signs is built by one function per kind (`*_sign_bytes`), each with its own
  domain tag and the chain id, so a signature can never be replayed as another kind, on another
  chain or in another epoch (the epoch is inside the signed data).
- A QC whose vote data carries commit info (the block's parent when the two rounds are
  consecutive) is the commit certificate of that block: DiemBFT's LedgerInfo.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NewType

from kledger.consensus.codec import DecodeError, Reader, Writer
from kledger.consensus.validators import NodeId, ValidatorSet

Round = NewType("Round", int)
Height = NewType("Height", int)
BlockId = NewType("BlockId", bytes)

BLOCK_ID_BYTES = 32
MAX_SIGNATURE_BYTES = 128
MAX_CERT_SIGNERS = 256  # no validator set is larger (bounds decoding before membership checks)

BLOCK_TAG = b"kledger/consensus/block/v1\x00"
VOTE_TAG = b"kledger/consensus/vote/v1\x00"
TIMEOUT_TAG = b"kledger/consensus/timeout/v1\x00"
PROPOSAL_TAG = b"kledger/consensus/proposal/v1\x00"
REQUEST_TAG = b"kledger/consensus/block-request/v1\x00"
RESPONSE_TAG = b"kledger/consensus/block-response/v1\x00"
GENESIS_PARENT = BlockId(bytes(BLOCK_ID_BYTES))

__all__ = ["DecodeError"]


def _read_id(reader: Reader) -> BlockId:
    return BlockId(reader.raw(BLOCK_ID_BYTES))


def _read_signature(reader: Reader) -> bytes:
    return reader.blob(MAX_SIGNATURE_BYTES)


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """What a vote names of a block: enough to check the commit rule without the block."""

    id: BlockId
    round: Round
    height: Height

    def write(self, writer: Writer) -> None:
        assert len(self.id) == BLOCK_ID_BYTES
        writer.raw(self.id).u64(self.round).u64(self.height)

    @staticmethod
    def read(reader: Reader) -> BlockInfo:
        return BlockInfo(_read_id(reader), Round(reader.u64()), Height(reader.u64()))


@dataclass(frozen=True, slots=True)
class VoteData:
    """The signed content of a vote: the certified block, its parent, and (when the two rounds
    are consecutive) the block a QC on this data commits."""

    epoch: int
    certified: BlockInfo
    parent: BlockInfo
    commit: BlockInfo | None

    @property
    def round(self) -> Round:
        return self.certified.round

    def write(self, writer: Writer) -> None:
        writer.u64(self.epoch)
        self.certified.write(writer)
        self.parent.write(writer)
        writer.flag(self.commit is not None)
        if self.commit is not None:
            self.commit.write(writer)

    @staticmethod
    def read(reader: Reader) -> VoteData:
        epoch = reader.u64()
        certified = BlockInfo.read(reader)
        parent = BlockInfo.read(reader)
        commit = BlockInfo.read(reader) if reader.flag() else None
        return VoteData(epoch, certified, parent, commit)

    def encode(self) -> bytes:
        writer = Writer()
        self.write(writer)
        return writer.done()


def vote_sign_bytes(chain_id: str, data: VoteData) -> bytes:
    return Writer().raw(VOTE_TAG).text(chain_id).raw(data.encode()).done()


def timeout_sign_bytes(chain_id: str, epoch: int, round: int, high_qc_round: int) -> bytes:
    return Writer().raw(TIMEOUT_TAG).text(chain_id).u64(epoch).u64(round).u64(high_qc_round).done()


def _write_signatures(writer: Writer, signatures: tuple[tuple[NodeId, bytes], ...]) -> None:
    writer.u32(len(signatures))
    for author, signature in signatures:
        writer.text(author).blob(signature)


def _read_signatures(reader: Reader) -> tuple[tuple[NodeId, bytes], ...]:
    count = reader.count(MAX_CERT_SIGNERS)
    return tuple((NodeId(reader.text()), _read_signature(reader)) for _ in range(count))


@dataclass(frozen=True, slots=True)
class QuorumCert:
    """A quorum of signatures over one VoteData, sorted by author. The genesis QC and the QC that
    opens an epoch carry no signatures: every node derives them from committed data."""

    data: VoteData
    signatures: tuple[tuple[NodeId, bytes], ...]

    @property
    def round(self) -> Round:
        return self.data.certified.round

    @property
    def epoch(self) -> int:
        return self.data.epoch

    @property
    def block_id(self) -> BlockId:
        return self.data.certified.id

    @property
    def commit(self) -> BlockInfo | None:
        return self.data.commit

    def write(self, writer: Writer) -> None:
        self.data.write(writer)
        _write_signatures(writer, self.signatures)

    @staticmethod
    def read(reader: Reader) -> QuorumCert:
        return QuorumCert(VoteData.read(reader), _read_signatures(reader))

    def encode(self) -> bytes:
        writer = Writer()
        self.write(writer)
        return writer.done()

    @staticmethod
    def decode(data: bytes) -> QuorumCert:
        reader = Reader(data)
        qc = QuorumCert.read(reader)
        reader.end()
        return qc


@dataclass(frozen=True, slots=True)
class Block:
    chain_id: str
    epoch: int
    round: Round
    height: Height
    parent_id: BlockId
    proposer: NodeId
    timestamp_ms: int
    payload: bytes
    qc: QuorumCert  # certifies the parent (the genesis block's QC certifies itself)
    id: BlockId = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", BlockId(hashlib.sha256(BLOCK_TAG + self.encode()).digest()))

    @property
    def info(self) -> BlockInfo:
        return BlockInfo(self.id, self.round, self.height)

    def write(self, writer: Writer) -> None:
        writer.text(self.chain_id).u64(self.epoch).u64(self.round).u64(self.height)
        writer.raw(self.parent_id).text(self.proposer).u64(self.timestamp_ms)
        writer.blob(self.payload)
        self.qc.write(writer)

    @staticmethod
    def read(reader: Reader) -> Block:
        chain_id = reader.text()
        epoch, round, height = reader.u64(), Round(reader.u64()), Height(reader.u64())
        parent_id, proposer, timestamp_ms = _read_id(reader), NodeId(reader.text()), reader.u64()
        payload = reader.blob()
        qc = QuorumCert.read(reader)
        return Block(chain_id, epoch, round, height, parent_id, proposer, timestamp_ms, payload, qc)

    def encode(self) -> bytes:
        writer = Writer()
        self.write(writer)
        return writer.done()

    @staticmethod
    def decode(data: bytes) -> Block:
        reader = Reader(data)
        block = Block.read(reader)
        reader.end()
        return block


@dataclass(frozen=True, slots=True)
class Vote:
    data: VoteData
    author: NodeId
    signature: bytes

    @property
    def round(self) -> Round:
        return self.data.round

    def write(self, writer: Writer) -> None:
        self.data.write(writer)
        writer.text(self.author).blob(self.signature)

    @staticmethod
    def read(reader: Reader) -> Vote:
        return Vote(VoteData.read(reader), NodeId(reader.text()), _read_signature(reader))


@dataclass(frozen=True, slots=True)
class TimeoutCert:
    """A quorum of signed timeouts for one round; each entry keeps its signer's high-QC round,
    which the next leader's proposal must not go below (safe_to_extend). `high_qc` is the QC of
    the highest of those rounds, so a TC never names a round no QC backs (a Byzantine signer
    cannot inflate the lock beyond what any leader can extend)."""

    epoch: int
    round: Round
    entries: tuple[tuple[NodeId, Round, bytes], ...]  # (author, high_qc_round, signature)
    high_qc: QuorumCert

    @property
    def max_high_qc_round(self) -> Round:
        return Round(max((entry[1] for entry in self.entries), default=0))

    def write(self, writer: Writer) -> None:
        writer.u64(self.epoch).u64(self.round).u32(len(self.entries))
        for author, high_qc_round, signature in self.entries:
            writer.text(author).u64(high_qc_round).blob(signature)
        self.high_qc.write(writer)

    @staticmethod
    def read(reader: Reader) -> TimeoutCert:
        epoch, round = reader.u64(), Round(reader.u64())
        count = reader.count(MAX_CERT_SIGNERS)
        entries = tuple(
            (NodeId(reader.text()), Round(reader.u64()), _read_signature(reader))
            for _ in range(count)
        )
        return TimeoutCert(epoch, round, entries, QuorumCert.read(reader))


def _write_optional_qc(writer: Writer, qc: QuorumCert | None) -> None:
    writer.flag(qc is not None)
    if qc is not None:
        qc.write(writer)


def _read_optional_qc(reader: Reader) -> QuorumCert | None:
    return QuorumCert.read(reader) if reader.flag() else None


def _write_optional_tc(writer: Writer, tc: TimeoutCert | None) -> None:
    writer.flag(tc is not None)
    if tc is not None:
        tc.write(writer)


def _read_optional_tc(reader: Reader) -> TimeoutCert | None:
    return TimeoutCert.read(reader) if reader.flag() else None


@dataclass(frozen=True, slots=True)
class SafetyData:
    """DiemBFT v4 safety data, persisted (synced) before any vote or timeout leaves the node.
    `high_qc` and `last_tc` are kept too so a restarted node re-enters the right round."""

    epoch: int
    highest_vote_round: Round
    highest_qc_round: Round  # the lock
    last_vote: Vote | None
    high_qc: QuorumCert | None
    last_tc: TimeoutCert | None

    def encode(self) -> bytes:
        writer = Writer().u64(self.epoch).u64(self.highest_vote_round).u64(self.highest_qc_round)
        writer.flag(self.last_vote is not None)
        if self.last_vote is not None:
            self.last_vote.write(writer)
        _write_optional_qc(writer, self.high_qc)
        _write_optional_tc(writer, self.last_tc)
        return writer.done()

    @staticmethod
    def decode(data: bytes) -> SafetyData:
        reader = Reader(data)
        epoch, vote_round, qc_round = reader.u64(), Round(reader.u64()), Round(reader.u64())
        last_vote = Vote.read(reader) if reader.flag() else None
        high_qc = _read_optional_qc(reader)
        last_tc = _read_optional_tc(reader)
        reader.end()
        return SafetyData(epoch, vote_round, qc_round, last_vote, high_qc, last_tc)


@dataclass(frozen=True, slots=True)
class SafetyFloor:
    """The high-water marks of what this validator once did, kept apart from the store so that
    a store rolled back (a lost log tail, a restored backup) cannot roll them back too
    (docs/design.md §6): the highest (epoch, vote round) and lock it persisted, and the highest
    height its store had committed when it did. The core never votes, times out or proposes at
    or below them, and votes not at all until its committed chain is back at that height."""

    epoch: int
    highest_vote_round: Round
    highest_qc_round: Round
    committed_height: Height

    def raised(self, safety: SafetyData, committed_height: int) -> SafetyFloor:
        """The floor after `safety` was persisted at `committed_height`: never lower."""
        if safety.epoch > self.epoch:
            vote_round, qc_round, epoch = (
                safety.highest_vote_round,
                safety.highest_qc_round,
                safety.epoch,
            )
        elif safety.epoch == self.epoch:
            epoch = self.epoch
            vote_round = Round(max(self.highest_vote_round, safety.highest_vote_round))
            qc_round = Round(max(self.highest_qc_round, safety.highest_qc_round))
        else:
            epoch, vote_round, qc_round = self.epoch, self.highest_vote_round, self.highest_qc_round
        return SafetyFloor(
            epoch, vote_round, qc_round, Height(max(self.committed_height, committed_height))
        )

    def applied_to(self, safety: SafetyData) -> SafetyData:
        """`safety` with its vote round and lock raised to the floor (same epoch only)."""
        if safety.epoch != self.epoch:
            return safety
        return SafetyData(
            safety.epoch,
            Round(max(safety.highest_vote_round, self.highest_vote_round)),
            Round(max(safety.highest_qc_round, self.highest_qc_round)),
            safety.last_vote,
            safety.high_qc,
            safety.last_tc,
        )


NO_FLOOR = SafetyFloor(0, Round(0), Round(0), Height(0))


def epoch_root_qc(root: Block, epoch: int) -> QuorumCert:
    """The unsigned QC that opens `epoch` on top of its root block (the genesis block, or the
    committed block that ended the previous epoch). Every node derives it from committed data,
    so it needs no signatures; inside the epoch the root counts as round 0."""
    info = BlockInfo(root.id, Round(0), root.height)
    return QuorumCert(VoteData(epoch, info, info, info), ())


def genesis_block(
    chain_id: str, validators: ValidatorSet, timestamp_ms: int
) -> tuple[Block, QuorumCert]:
    """The genesis block (height 0, round 0) and its QC. Deterministic: every node derives the
    same pair from the chain id, the genesis validator set and the genesis time. The block's own
    qc field names the validator-set digest as its parent, binding the genesis to the set."""
    set_info = BlockInfo(BlockId(validators.digest()), Round(0), Height(0))
    anchor = QuorumCert(VoteData(validators.epoch, set_info, set_info, None), ())
    block = Block(
        chain_id=chain_id,
        epoch=validators.epoch,
        round=Round(0),
        height=Height(0),
        parent_id=GENESIS_PARENT,
        proposer=NodeId(""),
        timestamp_ms=timestamp_ms,
        payload=b"",
        qc=anchor,
    )
    return block, epoch_root_qc(block, validators.epoch)


def read_optional_qc(reader: Reader) -> QuorumCert | None:
    return _read_optional_qc(reader)


def write_optional_qc(writer: Writer, qc: QuorumCert | None) -> None:
    _write_optional_qc(writer, qc)


def read_optional_tc(reader: Reader) -> TimeoutCert | None:
    return _read_optional_tc(reader)


def write_optional_tc(writer: Writer, tc: TimeoutCert | None) -> None:
    _write_optional_tc(writer, tc)
