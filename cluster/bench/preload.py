"""A large committed ledger for `kledger bench --preload-txs N`, built before the nodes start.

Committing 10^6 txs through the running cluster would take hours at today's rate; this module
builds the same ledger once, in-process, with the real code, and hands every node a copy of it:

- txs: the bench workload (cluster/bench/workload.py), songs numbered from 0, signed by the
  orgs' client keys; the measured load signs the songs after them, so no id repeats;
- consensus blocks: one per round (rounds 1, 2, 3, ... like a cluster without a view change),
  proposed by the round-robin leader of their round, each carrying the quorum certificate of
  its parent, which q validators signed with their real validator keys (the bench ran
  `kledger cluster init`, so it holds every key);
- execution: node/commit/committer.py's Committer writes each block into a real LedgerStore
  (LevelDB), with the QC that commits it (the QC on its child: consecutive rounds, 2-chain rule);
- headers: q validators sign each executed header, the header's commit certificate.

What makes a node start on the copy exactly as after a restart (node/app.py restored_state):
the store's last block has a stored QC that commits it, and the node's consensus data is what
a node that voted in those rounds persisted: the block after the last committed one (it
certifies nothing new: an empty block at the next round) saved as an uncommitted block, and
safety data holding that node's own vote on it (highest vote round = its round, the lock = its
parent's round, high QC = the QC it carries). Without that block the core would restart with a
high QC naming a block no node holds, and no leader could extend it. The per-node safety data
is written into each node's copy after the copy is made.

With `behind_txs`, one node (the last) gets the ledger as it was `behind_txs` txs earlier: the
build stops at that block boundary, copies the store, writes that node's consensus data for the
block that followed, and goes on. That node then catches up by block sync when the cluster
starts, which is the bench's catch-up figure without waiting for a live cluster to commit 10^5
txs first.

Rules it keeps: memory stays bounded whatever N is (one block of songs is signed at a time;
only the tx hashes asked for by `sample_leaves` are kept); LevelDB directories are copied only
while closed; table files (never modified once written) are hard-linked, the rest copied; a
block never crosses the `behind_txs` boundary; a store is copied once LevelDB's background
compactions are done (`LedgerStore.settle`), so no copy redoes them during the measured load,
and with its levels as the build left them: a full `compact_range`, as here until 2026-12-03,
leaves the upper levels empty, a shape no node that grew its store has.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kledger.cluster.bench.workload import TXS_PER_SONG, sign_songs
from kledger.cluster.layout import ClusterLayout
from kledger.consensus import (
    Block,
    Height,
    NodeId,
    QuorumCert,
    Round,
    SafetyData,
    ValidatorSet,
    Vote,
    VoteData,
    genesis_block,
)
from kledger.consensus.leader import round_robin_leader
from kledger.consensus.safety import SafetyRules, consecutive
from kledger.consensus.types import vote_sign_bytes
from kledger.node.chain import keys
from kledger.node.chain.genesis import Genesis, load_genesis
from kledger.node.chain.header import CommitCertificate, Header, sign_header
from kledger.node.chain.payload import encode_payload
from kledger.node.chain.receipt import OK
from kledger.node.chain.tx import decode_tx
from kledger.node.commit.committer import Committer
from kledger.node.config import load_config
from kledger.node.registry import Registry
from kledger.node.storage.store import LedgerStore
from kledger.node.storage.store_parts import PARTS

# Room left in a payload for the msgpack list and bin headers around the tx encodings
# (the node's proposals keep the same margin, node/ordering/proposals.py).
PAYLOAD_MARGIN_BYTES = 64 * 1024
TABLE_SUFFIXES = (".ldb", ".sst")  # LevelDB never rewrites a table file: safe to hard-link

Progress = Callable[[int, int, float], None]  # (txs built, txs to build, seconds so far)


class PreloadFailed(Exception):
    """The preloaded ledger could not be built as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class PreloadPlan:
    txs: int  # committed txs to build: a multiple of TXS_PER_SONG
    block_txs: int  # txs per block at most
    block_bytes: int  # payload bytes per block at most
    behind_txs: int = 0  # the last node gets the ledger at txs - behind_txs (0: no such node)
    sample_leaves: Sequence[int] = ()  # leaf indices whose tx hashes to return, ascending

    def __post_init__(self) -> None:
        if self.txs <= 0 or self.txs % TXS_PER_SONG:
            raise ValueError(f"preload txs: a positive multiple of {TXS_PER_SONG}, got {self.txs}")
        if self.block_txs < TXS_PER_SONG or self.block_bytes <= 0:
            raise ValueError("preload block limits: at least one song per block")
        if not 0 <= self.behind_txs <= self.txs or self.behind_txs % TXS_PER_SONG:
            raise ValueError(f"behind_txs: a multiple of {TXS_PER_SONG} in 0..{self.txs}")


@dataclass(frozen=True, slots=True)
class BehindCopy:
    org: str
    height: int
    txs: int


@dataclass(frozen=True, slots=True)
class PreloadResult:
    txs: int
    height: int  # last committed height (= blocks) on every node but the one behind
    elapsed_s: float
    sampled_hashes: tuple[bytes, ...]  # the txs at plan.sample_leaves, in leaf order
    behind: BehindCopy | None


class ChainSigner:
    """Signs what the validators of a local cluster would have signed for a chain of blocks
    that committed one per round: votes, quorum certificates and header certificates."""

    def __init__(
        self, chain_id: str, validators: ValidatorSet, validator_keys: dict[str, keys.KeyPair]
    ) -> None:
        missing = [v for v in validators.ids if v not in validator_keys]
        assert not missing, f"no validator key for {missing}"
        self.chain_id = chain_id
        self.validators = validators
        self._keys = validator_keys
        # The first q validators by id sign every certificate; any quorum would do.
        self._signers = sorted(validators.ids)[: validators.quorum]

    def block(self, parent: Block, parent_qc: QuorumCert, payload: bytes) -> Block:
        """The next round's block on top of `parent`, proposed by that round's leader."""
        assert parent_qc.block_id == parent.id, "a block carries the QC of its parent"
        round = Round(parent.round + 1)
        return Block(
            chain_id=self.chain_id,
            epoch=self.validators.epoch,
            round=round,
            height=Height(parent.height + 1),
            parent_id=parent.id,
            proposer=round_robin_leader(self.validators.ids, round),
            timestamp_ms=max(time.time_ns() // 1_000_000, parent.timestamp_ms + 1),
            payload=payload,
            qc=parent_qc,
        )

    def vote_data(self, block: Block) -> VoteData:
        """What a replica votes for on `block`: with the commit info of its parent when the
        rounds are consecutive (always, here), so a QC on it commits the parent."""
        certified_parent = block.qc.data.certified
        commit = certified_parent if consecutive(block.round, block.qc.round) else None
        return VoteData(self.validators.epoch, block.info, certified_parent, commit)

    def vote(self, org: str, block: Block) -> Vote:
        data = self.vote_data(block)
        signature = self._keys[org].sign(keys.CONSENSUS_TAG, vote_sign_bytes(self.chain_id, data))
        return Vote(data, NodeId(org), signature)

    def qc(self, block: Block) -> QuorumCert:
        data = self.vote_data(block)
        sign_bytes = vote_sign_bytes(self.chain_id, data)
        signatures = tuple(
            (NodeId(org), self._keys[org].sign(keys.CONSENSUS_TAG, sign_bytes))
            for org in self._signers
        )
        return QuorumCert(data, signatures)

    def certificate(self, header: Header) -> CommitCertificate:
        header_hash = header.hash()
        return CommitCertificate(
            header_hash,
            tuple((org, sign_header(self._keys[org], header_hash)) for org in self._signers),
        )

    def consensus_data(self, org: str, pending: Block) -> SafetyData:
        """The safety data `org` persisted when it voted on `pending` (consensus/safety.py
        record_vote, from a fresh epoch): highest vote round = pending's round, the lock =
        the round of the QC pending carries, high QC = that QC."""
        rules = SafetyRules(SafetyData(self.validators.epoch, Round(0), Round(0), None, None, None))
        return rules.record_vote(self.vote(org, pending), pending.qc.round, pending.qc, None)


def copy_store(source: Path, target: Path) -> None:
    """Copy a closed store (its three LevelDB directories): table files hard-linked, the rest
    copied."""
    if target.exists():
        raise PreloadFailed(f"{target} already exists; a preloaded node needs a fresh data dir")
    for part in PARTS:
        (target / part).mkdir(parents=True)
        for entry in os.scandir(source / part):
            destination = target / part / entry.name
            if entry.name.endswith(TABLE_SUFFIXES):
                os.link(entry.path, destination)
            else:
                shutil.copy2(entry.path, destination)


class _Workload:
    """The preload's songs, signed one block at a time."""

    def __init__(self, chain_id: str, client_keys: dict[str, keys.KeyPair]) -> None:
        self._chain_id = chain_id
        self._client_keys = client_keys
        self.next_song = 0

    def payload(self, *, max_txs: int, max_bytes: int, stop_song: int) -> bytes:
        """The next block's payload, never past `stop_song` (b"" once every song before it was
        handed out)."""
        count = min(max_txs // TXS_PER_SONG, stop_song - self.next_song)
        if count <= 0:
            return b""
        songs = sign_songs(self._chain_id, self._client_keys, self.next_song, count)
        encodings: list[bytes] = []
        size = 0
        for song in songs:
            song_bytes = sum(len(e) for e in song.encodings)
            if encodings and size + song_bytes > max_bytes:
                break  # the rest goes into the next block (signed again then; rare)
            encodings.extend(song.encodings)
            size += song_bytes
        self.next_song += len(encodings) // TXS_PER_SONG
        return encode_payload([decode_tx(e) for e in encodings])


class LedgerBuilder:
    """Builds the ledger in `staging` with the real committer, then hands out copies."""

    def __init__(self, layout: ClusterLayout, staging: Path) -> None:
        self.layout = layout
        self.staging = staging
        self.genesis: Genesis = load_genesis(layout.genesis)
        registry = Registry(self.genesis)
        self._genesis_writes = registry.genesis_writes()
        self._genesis_root = registry.genesis_state_root()
        self.orgs = [node.org for node in layout.nodes()]
        self.configs = {org: load_config(layout.node_config(org)) for org in self.orgs}
        validator_keys = {org: keys.load_key(c.validator_key) for org, c in self.configs.items()}
        self.signer = ChainSigner(self.genesis.chain_id, self.genesis.validator_set, validator_keys)
        self.client_keys = {org: keys.load_key(layout.client_key(org)) for org in self.orgs}
        self._store: LedgerStore | None = None
        self._committer: Committer | None = None

    def _open(self, path: Path) -> LedgerStore:
        return LedgerStore.open(path, self.genesis, self._genesis_writes, self._genesis_root)

    def _open_staging(self) -> None:
        self._store = self._open(self.staging)
        # A fresh registry per opening: nothing it might cache outlives the store it read.
        self._committer = Committer(self._store, Registry(self.genesis), self.genesis)

    def _close_staging(self) -> None:
        if self._store is not None:
            self._store.close()
        self._store, self._committer = None, None

    def hand_out(self, org: str, pending: Block) -> None:
        """Copy the (closed) staging store to org's data dir and write org's consensus data:
        its vote on `pending`, the uncommitted block after the store's last one."""
        data_dir = self.configs[org].data_dir
        copy_store(self.staging, data_dir)
        store = self._open(data_dir)
        try:
            assert store.last_height() + 1 == pending.height, "pending must follow the last block"
            safety = self.signer.consensus_data(org, pending)
            store.save_consensus(safety.encode(), [(pending.height, pending.id, pending.encode())])
        finally:
            store.close()

    def build(self, plan: PreloadPlan, progress: Progress) -> PreloadResult:
        started_s = time.monotonic()
        behind_org = self.orgs[-1] if plan.behind_txs else None
        stop_song = (plan.txs - plan.behind_txs) // TXS_PER_SONG
        workload = _Workload(self.genesis.chain_id, self.client_keys)
        wanted = list(plan.sample_leaves)
        assert wanted == sorted(wanted), "sample_leaves must ascend"
        sampled: list[bytes] = []
        behind: BehindCopy | None = None
        if behind_org is not None and stop_song == 0:
            behind = BehindCopy(behind_org, 0, 0)  # a fresh node: nothing to copy
        self._open_staging()
        try:

            def payload() -> bytes:
                limit = stop_song if workload.next_song < stop_song else plan.txs // TXS_PER_SONG
                return workload.payload(
                    max_txs=plan.block_txs, max_bytes=plan.block_bytes, stop_song=limit
                )

            root, root_qc = genesis_block(
                self.genesis.chain_id, self.signer.validators, self.genesis.genesis_time_ms
            )
            block = self.signer.block(root, root_qc, payload())
            qc = self.signer.qc(block)
            while True:
                child_payload = payload()
                child = self.signer.block(block, qc, child_payload)
                child_qc = self.signer.qc(child)  # the QC on the child commits `block`
                self._commit(block, child_qc, wanted, sampled)
                store = self._store
                assert store is not None
                progress(store.log_size(), plan.txs, time.monotonic() - started_s)
                if behind_org is not None and behind is None:
                    # Blocks end at the boundary (payload() stops there), so one lands on it.
                    assert store.log_size() <= stop_song * TXS_PER_SONG, "crossed the boundary"
                if (
                    behind_org is not None
                    and behind is None
                    and store.log_size() == stop_song * TXS_PER_SONG
                ):
                    behind = BehindCopy(behind_org, store.last_height(), store.log_size())
                    store.settle()
                    self._close_staging()
                    self.hand_out(behind_org, child)
                    self._open_staging()
                if not child_payload:
                    break  # `child` is the empty block of the next round: every node's pending
                block, qc = child, child_qc
            store = self._store
            assert store is not None
            height, txs = store.last_height(), store.log_size()
            store.settle()
            self._close_staging()
            for org in self.orgs:
                if org != behind_org:
                    self.hand_out(org, child)
        finally:
            self._close_staging()
            shutil.rmtree(self.staging, ignore_errors=True)
        if txs != plan.txs:
            raise PreloadFailed(f"built {txs} txs, asked for {plan.txs}")
        return PreloadResult(
            txs=txs,
            height=height,
            elapsed_s=time.monotonic() - started_s,
            sampled_hashes=tuple(sampled),
            behind=behind,
        )

    def _commit(
        self, block: Block, commit_qc: QuorumCert, wanted: list[int], sampled: list[bytes]
    ) -> None:
        store, committer = self._store, self._committer
        assert store is not None and committer is not None
        first_leaf = store.log_size()
        committed = committer.apply_block(block, commit_qc.encode())
        assert committed is not None, f"height {block.height} was already stored"
        failed = [r for r in committed.receipts if r.result.status != OK]
        if failed:
            raise PreloadFailed(
                f"height {block.height}: {len(failed)} workload txs did not execute OK "
                f"(first: {failed[0].result.status} {failed[0].result.message})"
            )
        store.save_certificate(block.height, self.signer.certificate(committed.header))
        end_leaf = first_leaf + len(committed.txs)
        while wanted and wanted[0] < end_leaf:
            sampled.append(committed.txs[wanted.pop(0) - first_leaf].tx_hash)


def preload(
    layout: ClusterLayout, plan: PreloadPlan, progress: Progress, staging: Path | None = None
) -> PreloadResult:
    """Build the ledger of `plan` and give every node of `layout` its copy (see the module
    docstring). The nodes must not be running and must have no data yet."""
    builder = LedgerBuilder(layout, staging or layout.root / "preload-staging")
    return builder.build(plan, progress)


def block_limits(layout: ClusterLayout) -> tuple[int, int]:
    """(txs, bytes) per preloaded block: what the nodes' own proposals may hold."""
    genesis = load_genesis(layout.genesis)
    config = load_config(layout.node_config(layout.nodes()[0].org))
    max_txs = min(config.batching.proposal_max_txs, genesis.block_limits.max_block_txs)
    core_bytes = config.core_config().max_payload_bytes
    max_bytes = min(core_bytes, genesis.block_limits.max_block_bytes) - PAYLOAD_MARGIN_BYTES
    return max_txs - max_txs % TXS_PER_SONG, max_bytes


__all__ = [
    "BehindCopy",
    "ChainSigner",
    "LedgerBuilder",
    "PreloadFailed",
    "PreloadPlan",
    "PreloadResult",
    "block_limits",
    "copy_store",
    "preload",
]
