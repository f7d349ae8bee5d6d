"""Measure the Merkle log in LevelDB (run by scripts/bench_merkle; never part of the test suite).

For each log size: append rate (leaves per second, one synced WriteBatch per block of leaves),
inclusion-proof build time from the store (p50/p99), verify time, proof size, a historical
root and a consistency proof, and bytes on disk. Then a small ledger-store run: commit rate of
signed txs and the open-time self-check.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import plyvel

from kledger.node.chain.genesis import BlockLimits, Genesis, OrgSpec
from kledger.node.chain.header import ZERO_HASH, Header
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import TxBody, TxLimits, sign_tx
from kledger.node.proof import merkle
from kledger.node.proof.receipts import receipts_root
from kledger.node.storage.merkle_log import MerkleLog
from kledger.node.storage.store import BlockRecord, LedgerStore

LEAF_BYTES = 200  # about the size of a signed usage-report tx
DB_OPTIONS = {"bloom_filter_bits": 10, "lru_cache_size": 64 * 1024 * 1024}


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, (len(ordered) * 99) // 100)]
    return p50 / 1000, p99 / 1000


def _timed(call: Callable[[], object], runs: int) -> tuple[float, float]:
    samples: list[int] = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return _percentiles(samples)


def bench_log(size: int, block_leaves: int, samples: int, seed: int) -> float:
    """Print the table rows for one log size; return its bytes on disk per leaf."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="kledger-bench-") as directory:
        db = plyvel.DB(str(Path(directory) / "log"), create_if_missing=True, **DB_OPTIONS)
        log = MerkleLog(db)
        base = rng.randbytes(LEAF_BYTES - 8)
        start = time.perf_counter()
        appended = 0
        while appended < size:
            count = min(block_leaves, size - appended)
            leaves = [base + (appended + i).to_bytes(8, "big") for i in range(count)]
            plan = log.plan_append(leaves)
            batch = db.write_batch(sync=True)
            log.write_plan(plan, batch)
            batch.write()
            log.install(plan)
            appended += count
        append_s = time.perf_counter() - start
        rate = size / append_s
        # Right after a burst of appends LevelDB is still compacting in the background and
        # competes for the (shared) cores; then again once compaction has settled.
        _measure(log, size, rate, samples, rng, phase="after appends")
        db.compact_range()
        time.sleep(1)
        _measure(log, size, rate, samples, rng, phase="settled")
        db.close()
        disk = sum(p.stat().st_size for p in (Path(directory) / "log").iterdir())
    return disk / size


def _measure(
    log: MerkleLog, size: int, rate: float, samples: int, rng: random.Random, *, phase: str
) -> None:
    root = log.root()
    indexes = [rng.randrange(size) for _ in range(samples)]
    proofs: list[list[bytes]] = []
    build_ns: list[int] = []
    for index in indexes:
        begin = time.perf_counter_ns()
        proofs.append(log.inclusion_proof(index, size))
        build_ns.append(time.perf_counter_ns() - begin)
    verify_ns: list[int] = []
    for index, path in zip(indexes, proofs, strict=True):
        leaf = log.leaf_hash(index)
        begin = time.perf_counter_ns()
        ok = merkle.verify_inclusion(leaf, index, size, path, root)
        verify_ns.append(time.perf_counter_ns() - begin)
        assert ok
    old_build: list[int] = []
    for _ in range(samples):
        tree_size = rng.randrange(1, size + 1)
        index = rng.randrange(tree_size)
        begin = time.perf_counter_ns()
        log.inclusion_proof(index, tree_size)
        old_build.append(time.perf_counter_ns() - begin)
    root_p50, root_p99 = _timed(lambda: log.root(rng.randrange(1, size + 1)), samples)
    cons_p50, cons_p99 = _timed(
        lambda: log.consistency_proof(rng.randrange(1, size + 1), size), samples
    )
    build_p50, build_p99 = _percentiles(build_ns)
    old_p50, old_p99 = _percentiles(old_build)
    verify_p50, verify_p99 = _percentiles(verify_ns)
    hashes = [len(p) for p in proofs]
    print(
        f"| {size:>9,} | {phase} | {rate:>9,.0f} | {build_p50:6.1f} / {build_p99:6.1f} "
        f"| {old_p50:6.1f} / {old_p99:6.1f} | {verify_p50:5.1f} / {verify_p99:5.1f} "
        f"| {statistics.mean(hashes):4.1f} ({max(hashes) * 32} B) "
        f"| {root_p50:5.1f} / {root_p99:5.1f} | {cons_p50:5.1f} / {cons_p99:5.1f} |",
        flush=True,
    )


def bench_store(blocks: int, txs_per_block: int) -> None:
    def key(label: str) -> KeyPair:
        return KeyPair.from_seed(hashlib.sha256(b"kledger-bench/" + label.encode()).digest())

    signer = key("client")
    genesis = Genesis(
        chain_id="kledger-bench",
        genesis_time_ms=0,
        orgs=(
            OrgSpec(
                org_id="KOMCA",
                name="KOMCA",
                roles=("REPORTER",),
                validator_key=key("validator").public_key,
                admin_key=key("admin").public_key,
                member_keys=(signer.public_key,),
            ),
        ),
        tx_limits=TxLimits(),
        block_limits=BlockLimits(),
    )
    txs = [
        sign_tx(signer, TxBody(genesis.chain_id, "usage.report", n, {"work": f"T-{n:09d}"}))
        for n in range(blocks * txs_per_block)
    ]
    with tempfile.TemporaryDirectory(prefix="kledger-bench-") as directory:
        path = Path(directory) / "db"
        state_root = hashlib.sha256(b"state").digest()
        store = LedgerStore.open(path, genesis, {}, state_root)
        start = time.perf_counter()
        for height in range(1, blocks + 1):
            chunk = txs[(height - 1) * txs_per_block : height * txs_per_block]
            last = store.last_header()
            size, root = store.root_after([tx.encoding for tx in chunk])
            results = [TxResult()] * len(chunk)
            receipts = [Receipt(height, size - len(chunk) + i, r) for i, r in enumerate(results)]
            header = Header(
                genesis.chain_id, 0, height, height, last.hash(), size, root, state_root,
                last.validator_set_hash, ZERO_HASH, receipts_root(receipts), "KOMCA",
                last.timestamp_ms + 1,
            )  # fmt: skip
            store.commit_block(BlockRecord(header, b"", b""), chunk, results, {})
        commit_s = time.perf_counter() - start
        store.close()
        start = time.perf_counter()
        LedgerStore.open(path, genesis, {}, state_root).close()
        open_s = time.perf_counter() - start
        start = time.perf_counter()
        LedgerStore.open(path, genesis, {}, state_root, deep_check=True).close()
        deep_s = time.perf_counter() - start
    total = blocks * txs_per_block
    print(
        f"store: {blocks} blocks x {txs_per_block} txs: {total / commit_s:,.0f} txs/s committed "
        f"({commit_s / blocks * 1000:.1f} ms per synced block); open self-check "
        f"{open_s * 1000:.0f} ms, deep check {deep_s * 1000:.0f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_merkle", description=__doc__)
    parser.add_argument(
        "--sizes", default="10000,100000,1000000", help="log sizes, comma-separated"
    )
    parser.add_argument("--block-leaves", type=int, default=1000, help="leaves per synced batch")
    parser.add_argument("--samples", type=int, default=2000, help="proofs timed per size")
    parser.add_argument("--store-blocks", type=int, default=1000, help="0 skips the store run")
    parser.add_argument("--store-txs", type=int, default=20, help="txs per block in the store run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(
        "| leaves | when | append leaves/s | proof build µs p50/p99 (current size) "
        "| proof build µs p50/p99 (random historical size) | verify µs p50/p99 "
        "| proof hashes avg (max bytes) | historical root µs p50/p99 "
        "| consistency proof µs p50/p99 |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    disk: dict[int, float] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        disk[size] = bench_log(size, args.block_leaves, args.samples, args.seed)
    print()
    for size, per_leaf in disk.items():
        print(f"disk at {size:,} leaves: {per_leaf:.0f} bytes per leaf (hash nodes and keys)")
    if args.store_blocks:
        bench_store(args.store_blocks, args.store_txs)
    return 0
