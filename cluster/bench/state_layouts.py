"""Measure state-tree layouts in a real LevelDB (run by scripts/bench_state_tree; never part of
the test suite): the content-addressed binary tree of store format v1 (hash_keyed_tree.py)
against the position-and-version keyed pages of node/storage/state_tree.py with 1 binary level
per record (binary), 4 (16-ary, the store's) and 8 (256-ary).

For each size n (live keys): preload n keys in blocks of PRELOAD_BLOCK_KEYS, then time
`blocks` blocks of `block_keys` changes each (80 % overwrites of random live keys, 20 % new
keys, the registry's mix of updates and inserts): the tree update's CPU per key, its LevelDB
write per key, LevelDB gets per key; then proofs of random keys (µs each, gets each); then
bytes on disk per live key after a full compaction (history included: nothing is pruned here).
CPU is the main thread's (time.thread_time), LevelDB's background compaction apart (the other
threads' CPU over the measured blocks, per changed key).
The LevelDB options are the store's (node/storage/store.py).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plyvel

from kledger.cluster.bench import hash_keyed_tree
from kledger.node.proof import smt
from kledger.node.storage import state_tree, store
from kledger.node.storage.keyspace import WriteSet

PRELOAD_BLOCK_KEYS = 10_000
VALUE_BYTES = 120  # about a registry work record's canonical msgpack


class CountingView:
    """A ReadView over LevelDB that counts gets (and carries the page cache, as LevelView)."""

    def __init__(self, db: Any, page_cache: state_tree.PageCache | None) -> None:
        self._db = db
        self.page_cache = page_cache
        self.gets = 0

    def get(self, key: bytes) -> bytes | None:
        self.gets += 1
        value: bytes | None = self._db.get(key)
        return value

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        yield from self._db.iterator(prefix=prefix)


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    update: Callable[[CountingView, int, dict[bytes, bytes | None]], WriteSet]
    prove: Callable[[CountingView, int, bytes], tuple[bytes | None, smt.Proof]]
    cached: bool


def _hash_keyed() -> Layout:
    roots: dict[int, bytes] = {}

    def update(view: CountingView, height: int, changes: dict[bytes, bytes | None]) -> WriteSet:
        root, writes = hash_keyed_tree.update(view, hash_keyed_tree.stored_root(view), changes)
        roots[height] = root
        return writes

    def prove(view: CountingView, height: int, key: bytes) -> tuple[bytes | None, smt.Proof]:
        return hash_keyed_tree.prove(view, roots[height], key)

    return Layout("binary, keyed by hash (v1)", update, prove, cached=False)


def _paged(bits: int, name: str) -> Layout:
    def update(view: CountingView, height: int, changes: dict[bytes, bytes | None]) -> WriteSet:
        return state_tree.update(view, height, changes, bits)[1]

    def prove(view: CountingView, height: int, key: bytes) -> tuple[bytes | None, smt.Proof]:
        return state_tree.prove(view, height, key, bits)

    return Layout(name, update, prove, cached=True)


LAYOUTS: dict[str, Callable[[], Layout]] = {
    "hash": _hash_keyed,
    "binary": lambda: _paged(1, "binary, keyed by position"),
    "16": lambda: _paged(4, "16-ary pages, keyed by position"),
    "256": lambda: _paged(8, "256-ary pages, keyed by position"),
}


def _open(path: Path) -> Any:
    return plyvel.DB(
        str(path),
        create_if_missing=True,
        bloom_filter_bits=store.BLOOM_FILTER_BITS,
        lru_cache_size=store.BLOCK_CACHE_BYTES,
        write_buffer_size=store.WRITE_BUFFER_BYTES,
        max_file_size=store.TABLE_FILE_BYTES,
        compression=None,
    )


def _write(db: Any, writes: WriteSet, cache: state_tree.PageCache | None) -> None:
    with db.write_batch(sync=False) as batch:
        for key, value in writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
    if cache is not None:
        cache.promote()  # as the store does once the block's batch is written


def _dir_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.iterdir() if entry.is_file())


def measure(layout: Layout, size: int, blocks: int, block_keys: int, proofs: int) -> str:
    rng = random.Random(size)
    workdir = Path(tempfile.mkdtemp(prefix="kledger-state-layout-"))
    try:
        db = _open(workdir / "db")
        cache = state_tree.PageCache() if layout.cached else None
        view = CountingView(db, cache)
        height = 0
        value = bytes(VALUE_BYTES)
        for start in range(0, size, PRELOAD_BLOCK_KEYS):
            height += 1
            chunk = range(start, min(size, start + PRELOAD_BLOCK_KEYS))
            changes: dict[bytes, bytes | None] = {f"s/work/{i}".encode(): value for i in chunk}
            _write(db, layout.update(view, height, changes), cache)
        live = size
        update_s = write_s = 0.0
        gets = changed = 0
        background_from = time.process_time() - time.thread_time()
        for _ in range(blocks):
            height += 1
            changes = {}
            for _ in range(block_keys):
                if rng.random() < 0.8:
                    key = f"s/work/{rng.randrange(live)}".encode()
                else:
                    key = f"s/work/{live}".encode()
                    live += 1
                changes[key] = rng.randbytes(VALUE_BYTES)
            view.gets = 0
            started = time.thread_time()
            writes = layout.update(view, height, changes)
            update_s += time.thread_time() - started
            gets += view.gets
            started = time.thread_time()
            _write(db, writes, cache)
            write_s += time.thread_time() - started
            changed += len(changes)
        background_s = time.process_time() - time.thread_time() - background_from
        keys = [f"s/work/{rng.randrange(live)}".encode() for _ in range(proofs)]
        for key in keys[: proofs // 4]:  # warm the caches as a serving node's are
            layout.prove(view, height, key)
        view.gets = 0
        started = time.thread_time()
        for key in keys:
            layout.prove(view, height, key)
        prove_s = time.thread_time() - started
        proof_gets = view.gets / len(keys)
        db.compact_range()
        db.close()
        disk = _dir_bytes(workdir / "db")
        return (
            f"| {size:,} | {layout.name} | {update_s / changed * 1e6:.1f} | "
            f"{write_s / changed * 1e6:.1f} | {background_s / changed * 1e6:.1f} | "
            f"{gets / changed:.1f} | "
            f"{prove_s / len(keys) * 1e6:.1f} | {proof_gets:.1f} | {disk / live:.0f} |"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_state_tree", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--layouts", default="hash,binary,16,256", help=",".join(LAYOUTS))
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--block-keys", type=int, default=1_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    args = parser.parse_args(argv)
    print(
        "| live keys | layout | update CPU µs/key | write µs/key | compaction µs/key | "
        "gets/key | proof µs | gets/proof | disk bytes/key |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        for name in args.layouts.split(","):
            row = measure(LAYOUTS[name](), size, args.blocks, args.block_keys, args.proofs)
            print(row, flush=True)
    return 0
