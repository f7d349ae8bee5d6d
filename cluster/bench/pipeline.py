"""`kledger bench-pipeline`: one node's hot path in one process, without network or consensus
messages, on a real LevelDB store in a temporary directory (run by scripts/bench_pipeline; never
part of the test suite's timing, tests/test_bench_pipeline.py only checks that it works).

Per block of B txs, in the order a node does it, with the node's own code:

  admit          kledger.node.ordering.admission.Admission.admit_gossip, as for txs a peer
                 gossiped (decode, dedup, chain, state check, Ed25519 verify once); its checks
                 run inline here (FairVerifier(threads=0)), not on the node's verifier threads,
                 so the main thread's CPU counts all of admission
  propose_check  the leader's MempoolPayloads.next_payload and consensus Block, then the
                 replica's MempoolPayloads.is_valid_payload of that payload (verified-tx cache hit)
  execute        Committer.apply_block minus the store write: payload decode, registry
                 execution, state tree (reported apart as execute_state_tree), Merkle log root
  commit_write   LedgerStore.commit_block: the block's one synced WriteBatch
  prune          the state pruner's passes after the block (the node runs them on a worker
                 thread): deleting state-tree records older than `--retention-blocks`
  total          all of the above plus freeing the mempool (as the node does after a commit)

Phases are measured in CPU time of the main thread (time.thread_time), so other processes on
a shared machine barely move them; total_wall is reported beside, and background_threads: CPU
the process's other threads used over the window (LevelDB's compaction), per tx.

The workload is the cluster bench's (cluster/bench/workload.py): songs of six registry txs dealt
round-robin to N generic orgs holding every role, signed block by block before that block's clock
starts (so signing is never timed and memory stays flat at any ledger size). After each block its
header is certified by a quorum of the validators (untimed), so proofs can be served.

Figures are taken at ledger-size checkpoints: the per-tx cost of each phase over the window of
the last `--window-txs` txs before the checkpoint (blocks never straddle a checkpoint), then P
inclusion proofs served as the client service does (bundle from the store + protobuf encoding),
spread evenly over the whole ledger: proofs/s and latency p50/p99, and the same for state
proofs of keys spread over the live state (as RegistryService.StateProof builds them); and
bytes on disk per committed tx and per live state key. Whether cost
per tx grows with ledger size is read by comparing checkpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nacl.signing

from kledger.cluster.bench.preload import ChainSigner
from kledger.cluster.bench.report import percentile
from kledger.cluster.bench.workload import sign_songs
from kledger.cluster.local.gen import ALL_ROLES
from kledger.consensus import Block, CoreConfig, Height, NodeId, Round, genesis_block
from kledger.node.api.ledger_service import inclusion_to_proto
from kledger.node.chain import canonical
from kledger.node.chain.genesis import BlockLimits, Genesis, OrgSpec
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.tx import TxLimits
from kledger.node.commit.certified_state import CertifiedState
from kledger.node.commit.committer import Committer
from kledger.node.config import AdmissionSettings, StorageSettings
from kledger.node.ordering.admission import Admission
from kledger.node.ordering.mempool import Mempool, MempoolLimits, StateCheck
from kledger.node.ordering.proposals import MempoolPayloads
from kledger.node.ordering.verifier import FairVerifier
from kledger.node.proof.state_proof import build_bundle
from kledger.node.registry import Registry
from kledger.node.runtime import tune_garbage_collector
from kledger.node.storage import keyspace, state_tree
from kledger.node.storage.proofs import build_inclusion_bundle
from kledger.node.storage.state_pruner import StatePruner
from kledger.node.storage.store import LedgerStore
from kledger.node.telemetry.metrics import NodeMetrics

CHAIN_ID = "kledger-bench-pipeline"
GENESIS_TIME_MS = 1_767_225_600_000
BLOCK_INTERVAL_MS = 1_000
# Per-phase figures are CPU time of the node's (here: the only) main thread, what the node
# spends per tx whatever else the machine runs; total_wall is elapsed time (it includes the
# synced write's wait for the disk and any CPU the machine gave to others), background_threads
# the CPU of the process's other threads over the whole window (LevelDB's compaction).
PHASES = (
    "admit",
    "propose_check",
    "execute",
    "execute_state_tree",
    "commit_write",
    "prune",
    "total",
    "total_wall",
    "background_threads",
)
CPU = time.thread_time
# Ed25519 verifications timed for the reference figure (about 0.15 s).
VERIFY_SAMPLES = 2_000

T = TypeVar("T")


def seed_key(label: str) -> KeyPair:
    """Deterministic keys, so two runs sign the same bytes."""
    return KeyPair.from_seed(hashlib.sha256(b"kledger-bench-pipeline/" + label.encode()).digest())


def bench_genesis(orgs: int) -> Genesis:
    """ORG1..ORGn, every role, one client key each (the cluster bench's generic orgs)."""
    return Genesis(
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_TIME_MS,
        orgs=tuple(
            OrgSpec(
                org_id=f"ORG{i}",
                name=f"Organization {i}",
                roles=tuple(sorted(ALL_ROLES)),
                validator_key=seed_key(f"ORG{i}/validator").public_key,
                admin_key=seed_key(f"ORG{i}/admin").public_key,
                member_keys=(seed_key(f"ORG{i}/client").public_key,),
            )
            for i in range(1, orgs + 1)
        ),
        tx_limits=TxLimits(),
        block_limits=BlockLimits(),
    )


def _background_cpu_s() -> float:
    """CPU seconds used so far by every thread of this process but the calling one."""
    return time.process_time() - time.thread_time()


@dataclass(slots=True)
class PhaseClock:
    """Seconds spent per phase since the last reset."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    txs: int = 0
    _background_start_s: float = 0.0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.txs = 0
        self._background_start_s = _background_cpu_s()

    def timed(self, phase: str, call: Callable[..., T]) -> Callable[..., T]:
        """`call`, adding its duration to `phase` (instrumentation only: same arguments, same
        result, same exceptions)."""

        def wrapper(*args: Any, **kwargs: Any) -> T:
            start = CPU()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[phase] += CPU() - start

        return wrapper

    def per_tx_us(self) -> dict[str, float]:
        assert self.txs > 0
        # Process CPU minus the main thread's, read at two instants: a few µs of noise can make
        # an idle window's difference negative; there is no negative CPU to report.
        self.seconds["background_threads"] = max(
            0.0, _background_cpu_s() - self._background_start_s
        )
        return {phase: round(s * 1e6 / self.txs, 1) for phase, s in self.seconds.items()}


class Pipeline:
    """One node: store, registry, mempool, payload source and committer, as node/app.py wires
    them, driven block by block."""

    def __init__(
        self, directory: Path, genesis: Genesis, block_txs: int, retention_blocks: int
    ) -> None:
        self.genesis = genesis
        self.validators = genesis.validator_set
        self.registry = Registry(genesis)
        self.store = LedgerStore.open(
            directory / "store",
            genesis,
            self.registry.genesis_writes(),
            self.registry.genesis_state_root(),
        )
        self.mempool = Mempool(MempoolLimits(max_txs=max(100_000, 2 * block_txs)))
        self.payloads = MempoolPayloads(
            self.mempool,
            genesis,
            self.store.has_tx,
            block_txs,
            check_payload=self.registry.check_payload,
            max_payload_bytes=CoreConfig().max_payload_bytes,
        )
        self.committer = Committer(self.store, self.registry, genesis)
        self.pruner = StatePruner(self.store, retention_blocks)
        self.metrics = NodeMetrics.create("ORG1")
        self.admission = Admission(
            self.mempool,
            genesis,
            is_committed=self.store.has_tx,
            state_check=self._state_check,
            metrics=self.metrics,
            on_admitted=lambda: None,
            settings=AdmissionSettings(),
            verifier=FairVerifier(threads=0),
        )
        self._loop = asyncio.new_event_loop()
        self.clock = PhaseClock()
        # The store write and the state tree are timed inside Committer.apply_block by wrapping
        # the two calls it makes (the committer's own code runs unchanged).
        timed_write = self.clock.timed("commit_write", self.store.commit_block)
        self.store.commit_block = timed_write  # type: ignore[method-assign]
        self._parent, self._qc = genesis_block(
            genesis.chain_id, self.validators, genesis.genesis_time_ms
        )
        # Certifies each executed header as a quorum of validators would (not timed).
        self._signer = ChainSigner(
            genesis.chain_id,
            self.validators,
            {org.org_id: seed_key(f"{org.org_id}/validator") for org in genesis.orgs},
        )
        self.ok_txs = 0
        self.committed_txs = 0
        self._receipts = hashlib.sha256()
        self._headers = hashlib.sha256()
        self.refused_at_admission = 0

    def _state_check(self) -> StateCheck:
        view = self.store.view
        return lambda tx, body: self.registry.check_admission(view, tx, body)

    def close(self) -> None:
        self._loop.run_until_complete(self.admission.close())
        self._loop.close()
        self.store.close()

    def run_block(self, encodings: tuple[bytes, ...]) -> bytes:
        """Admit, propose, check, execute and commit one block; returns its tx hashes joined."""
        clock = self.clock
        started_wall = time.perf_counter()
        started = CPU()
        admitted = self._loop.run_until_complete(self.admission.admit_gossip("ORG2", encodings))
        self.refused_at_admission += len(encodings) - admitted
        admitted_at = CPU()
        clock.seconds["admit"] += admitted_at - started

        payload = self.payloads.next_payload(())
        parent = self._parent
        height = Height(parent.height + 1)
        block = Block(
            chain_id=self.genesis.chain_id,
            epoch=0,
            round=Round(height),
            height=height,
            parent_id=parent.id,
            proposer=NodeId("ORG1"),
            timestamp_ms=self.genesis.genesis_time_ms + height * BLOCK_INTERVAL_MS,
            payload=payload,
            qc=self._qc,
        )
        valid = self.payloads.is_valid_payload(block.payload, ())
        assert valid, f"height {height}: the replica check refused the leader's payload"
        checked_at = CPU()
        clock.seconds["propose_check"] += checked_at - admitted_at

        write_before = clock.seconds["commit_write"]
        committed = self.committer.apply_block(block, self._qc.encode())
        assert committed is not None
        # As the node announces a height: free the mempool (the core, absent here, would then
        # hear Applied and stop counting the block as in flight).
        self.mempool.remove_committed(tx.tx_hash for tx in committed.txs)
        pruned_from = CPU()
        self.pruner.prune_all()
        clock.seconds["prune"] += CPU() - pruned_from
        done_at = CPU()
        # execute_state_tree is part of execute (its wrapper adds to it on its own).
        write_s = clock.seconds["commit_write"] - write_before
        clock.seconds["execute"] += done_at - checked_at - write_s - (done_at - pruned_from)
        clock.seconds["total"] += done_at - started
        clock.seconds["total_wall"] += time.perf_counter() - started_wall
        clock.txs += len(committed.txs)

        self.committed_txs += len(committed.txs)
        self.ok_txs += sum(1 for receipt in committed.receipts if receipt.result.ok)
        for receipt in committed.receipts:
            self._receipts.update(receipt.encode())
        self._parent = block
        header = committed.header
        self._headers.update(header.encode())
        self.store.save_certificate(header.height, self._signer.certificate(header))
        return b"".join(tx.tx_hash for tx in committed.txs)

    def fingerprint(self) -> dict[str, str]:
        """What the run computed, to compare two versions (or builds) of the code: every registry
        state value (keys and bytes), every receipt, every header, and the last header's roots
        (which fix every proof the store can serve)."""
        values = hashlib.sha256()
        for key, value in self.store.view.iterate(keyspace.STATE):
            values.update(canonical.encode([key, value]))
        header = self.store.last_header()
        return {
            "state_values_sha256": values.hexdigest(),
            "receipts_sha256": self._receipts.hexdigest(),
            "headers_sha256": self._headers.hexdigest(),
            "tx_log_root": header.tx_log_root.hex(),
            "state_root": header.state_root.hex(),
        }

    def serve_state_proofs(self, count: int) -> dict[str, float]:
        """`count` state proofs of keys spread over the live state at the last height, built
        and encoded as RegistryService.StateProof does: proofs/s and latency in ms."""
        keys = [key for key, _ in self.store.view.iterate(keyspace.STATE)]
        certified = CertifiedState(self.store, self.pruner.retention_blocks)
        height = self.store.last_height()
        samples: list[float] = []
        for i in range(count):
            key = keys[(i * len(keys)) // count]
            start = time.perf_counter()
            found = certified.proof_at(height, key)
            bundle = build_bundle(key, found.value, found.proof, found.header, found.certificate)
            json.dumps(bundle, sort_keys=True)
            samples.append(time.perf_counter() - start)
            assert found.value is not None
        p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
        assert p50 is not None and p99 is not None
        return {
            "count": count,
            "live_keys": len(keys),
            "per_s": round(count / sum(samples), 1),
            "p50_ms": round(p50 * 1000, 3),
            "p99_ms": round(p99 * 1000, 3),
        }

    def disk(self, ledger_txs: int, live_keys: int) -> dict[str, float]:
        """Bytes of the store's files as they are (no forced compaction: what a node has,
        deleted records included until LevelDB's background compaction drops them)."""
        size = self.store.size_bytes()
        return {
            "bytes": size,
            "per_tx": round(size / max(ledger_txs, 1), 1),
            "per_live_key": round(size / max(live_keys, 1), 1),
        }

    def serve_proofs(self, tx_hashes: bytes, count: int) -> dict[str, float]:
        """`count` inclusion proofs spread over the ledger, built and encoded as the client
        service does: proofs/s and latency in ms."""
        total = len(tx_hashes) // 32
        samples: list[float] = []
        for i in range(count):
            index = (i * total) // count
            tx_hash = tx_hashes[index * 32 : (index + 1) * 32]
            start = time.perf_counter()
            proto = inclusion_to_proto(build_inclusion_bundle(self.store, tx_hash))
            proto.SerializeToString()
            samples.append(time.perf_counter() - start)
            assert proto.leaf_index == index
        p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
        assert p50 is not None and p99 is not None
        return {
            "count": count,
            "per_s": round(count / sum(samples), 1),
            "p50_ms": round(p50 * 1000, 3),
            "p99_ms": round(p99 * 1000, 3),
        }


@contextmanager
def timed_state_tree(clock: PhaseClock) -> Iterator[None]:
    """Time node.state_tree.update (the registry's state tree update) while the run lasts."""
    original = state_tree.update
    state_tree.update = clock.timed("execute_state_tree", original)
    try:
        yield
    finally:
        state_tree.update = original


def verify_us() -> float:
    """One PyNaCl Ed25519 verify on this core, in µs: the floor of admission."""
    key = nacl.signing.SigningKey(seed_key("verify").seed)
    signed = key.sign(b"kledger/tx/v1\x00" + bytes(300))
    verify_key = key.verify_key
    start = CPU()
    for _ in range(VERIFY_SAMPLES):
        verify_key.verify(signed)
    return round((CPU() - start) * 1e6 / VERIFY_SAMPLES, 1)


def blocks_of(
    genesis: Genesis, total_txs: int, block_txs: int, checkpoints: list[int]
) -> Iterator[tuple[bytes, ...]]:
    """Block after block of signed encodings; a block never straddles a checkpoint."""
    keys = {org.org_id: seed_key(f"{org.org_id}/client") for org in genesis.orgs}
    waiting: list[bytes] = []
    next_song = 0
    produced = 0
    while produced < total_txs:
        boundary = min(c for c in checkpoints if c > produced)
        size = min(block_txs, boundary - produced)
        while len(waiting) < size:
            for song in sign_songs(genesis.chain_id, keys, next_song, 64):
                waiting.extend(song.encodings)
            next_song += 64
        block, waiting = tuple(waiting[:size]), waiting[size:]
        produced += size
        yield block


def run(
    *,
    txs: int,
    block_txs: int,
    checkpoints: list[int],
    window_txs: int,
    proofs: int,
    orgs: int,
    retention_blocks: int = StorageSettings().state_retention_blocks,
    progress: Callable[[str], None] = lambda _line: None,
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """The whole benchmark; returns the report (see main for its fields)."""
    genesis = bench_genesis(orgs)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kledger-bench-pipeline-") as directory:
        pipeline = Pipeline(Path(directory), genesis, block_txs, retention_blocks)
        try:
            hashes = bytearray()
            ledger_txs = 0
            pending = sorted(checkpoints)
            for encodings in blocks_of(genesis, txs, block_txs, pending):
                # Only blocks ending inside the window before the next checkpoint count.
                measured = ledger_txs + len(encodings) > pending[0] - window_txs
                if profile is not None and measured:
                    profile.enable()
                with timed_state_tree(pipeline.clock):
                    hashes += pipeline.run_block(encodings)
                if profile is not None and measured:
                    profile.disable()
                if not measured:
                    pipeline.clock.reset()
                ledger_txs += len(encodings)
                if ledger_txs == pending[0]:
                    state_proofs = pipeline.serve_state_proofs(proofs) if proofs else None
                    live_keys = sum(1 for _ in pipeline.store.view.iterate(keyspace.STATE))
                    figures: dict[str, Any] = {
                        "ledger_txs": ledger_txs,
                        "window_txs": pipeline.clock.txs,
                        "us_per_tx": pipeline.clock.per_tx_us(),
                        "proofs": pipeline.serve_proofs(bytes(hashes), proofs) if proofs else None,
                        "state_proofs": state_proofs,
                        "disk": pipeline.disk(ledger_txs, live_keys),
                        # LevelDB's per-level totals since the store opened (not per window):
                        # the difference of two checkpoints is what compaction did between.
                        "leveldb_levels": {
                            part: [asdict(row) for row in levels]
                            for part, levels in pipeline.store.leveldb_levels().items()
                        },
                    }
                    results.append(figures)
                    progress(_line(figures))
                    pipeline.clock.reset()
                    pending.pop(0)
            ok, committed = pipeline.ok_txs, pipeline.committed_txs
            fingerprint = pipeline.fingerprint()
            refused = pipeline.refused_at_admission
        finally:
            pipeline.close()
    return {
        "txs": txs,
        "committed_txs": committed,
        "ok_txs": ok,
        "refused_at_admission": refused,
        "block_txs": block_txs,
        "orgs": orgs,
        "retention_blocks": retention_blocks,
        "verify_us": verify_us(),
        "checkpoints": results,
        "fingerprint": fingerprint,
    }


def _line(figures: dict[str, Any]) -> str:
    us = figures["us_per_tx"]
    text = (
        f"{figures['ledger_txs']:>9,} txs: µs/tx admit {us['admit']:.0f}, propose+check "
        f"{us['propose_check']:.0f}, execute {us['execute']:.0f} (state tree "
        f"{us['execute_state_tree']:.0f}), commit write {us['commit_write']:.0f}, "
        f"prune {us['prune']:.0f}, "
        f"total {us['total']:.0f} (wall {us['total_wall']:.0f}), other threads "
        f"{us['background_threads']:.0f}"
    )
    if figures["proofs"] is not None:
        p = figures["proofs"]
        text += f"; proofs {p['per_s']:,.0f}/s p50 {p['p50_ms']:.2f} ms p99 {p['p99_ms']:.2f} ms"
    if figures["state_proofs"] is not None:
        p = figures["state_proofs"]
        text += (
            f"; state proofs ({p['live_keys']:,} keys) p50 {p['p50_ms']:.2f} ms "
            f"p99 {p['p99_ms']:.2f} ms"
        )
    disk = figures["disk"]
    text += f"; disk {disk['per_tx']:.0f} B/tx, {disk['per_live_key']:.0f} B/live key"
    return text


def _checkpoints(text: str | None, txs: int) -> list[int]:
    if not text:
        return [txs]
    values = sorted({int(part) for part in text.split(",")})
    if values[0] <= 0 or values[-1] > txs:
        raise ValueError(f"--checkpoints: each must be in 1..--txs ({txs})")
    return values if values[-1] == txs else [*values, txs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kledger bench-pipeline",
        description="One node's admission, proposal, execution and commit path in one process.",
    )
    parser.add_argument("--txs", type=int, default=20_000, help="txs committed in all")
    parser.add_argument("--block-txs", type=int, default=2_000, help="txs per block")
    parser.add_argument(
        "--checkpoints", help="ledger sizes to report at, comma-separated (default: --txs)"
    )
    parser.add_argument(
        "--window-txs", type=int, default=10_000, help="txs measured before each checkpoint"
    )
    parser.add_argument("--proofs", type=int, default=1_000, help="proofs served per checkpoint")
    parser.add_argument("--orgs", type=int, default=4, help="orgs (validators) in the genesis")
    parser.add_argument(
        "--retention-blocks",
        type=int,
        default=StorageSettings().state_retention_blocks,
        help="storage.state_retention_blocks: heights whose state stays provable",
    )
    parser.add_argument("--profile", type=Path, help="write a cProfile of the measured windows")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        if args.txs < 1 or args.block_txs < 1 or args.window_txs < 1 or args.proofs < 0:
            raise ValueError("--txs, --block-txs and --window-txs must be >= 1, --proofs >= 0")
        if args.retention_blocks < 1:
            raise ValueError("--retention-blocks: must be >= 1")
        if not 1 <= args.orgs <= 64:
            raise ValueError("--orgs: must be 1..64")
        checkpoints = _checkpoints(args.checkpoints, args.txs)
    except ValueError as exc:
        print(f"kledger bench-pipeline: {exc}", file=sys.stderr)
        return 2
    profile = cProfile.Profile() if args.profile else None
    tune_garbage_collector()  # as in a node process (node/main.py)
    report = run(
        txs=args.txs,
        block_txs=args.block_txs,
        checkpoints=checkpoints,
        window_txs=args.window_txs,
        proofs=args.proofs,
        orgs=args.orgs,
        retention_blocks=args.retention_blocks,
        progress=lambda line: print(line, file=sys.stderr if args.json else sys.stdout, flush=True),
        profile=profile,
    )
    if profile is not None:
        profile.dump_stats(args.profile)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"committed {report['committed_txs']:,} of {report['txs']:,} txs, "
            f"{report['ok_txs']:,} OK; one Ed25519 verify: {report['verify_us']} µs"
        )
    complete = report["committed_txs"] == report["ok_txs"] == args.txs
    return 0 if complete else 1
