"""Sparse Merkle tree kept by position and version: roots equal the compact tree's definition
and do not depend on order, presence and absence proofs verify at the current and at every
kept older height and fail after tampering, a one-key update touches about log16(n) pages,
and pruning keeps every height in the window provable while the records left match the live
tree (disk follows the live state); the page cache holds what was written and drops what a
block replaced. Nodes live in a real LevelDB where it matters."""

from __future__ import annotations

import gc
import hashlib
import random

import plyvel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.node.proof import smt
from kledger.node.storage import keyspace, state_tree
from kledger.node.storage.keyspace import DictView


class Tree:
    """A DictView with the height the next update writes at (one update per height)."""

    def __init__(self) -> None:
        self.view = DictView()
        self.height = -1
        self.cursor = state_tree.PruneCursor()

    def apply(self, changes: dict[bytes, bytes | None]) -> bytes:
        self.height += 1
        root, writes = state_tree.update(self.view, self.height, changes)
        self.view.apply(writes)
        return root

    def prove(self, key: bytes, height: int | None = None) -> tuple[bytes | None, smt.Proof]:
        return state_tree.prove(self.view, self.height if height is None else height, key)

    def prune(self, keep_from: int) -> None:
        more = True
        while more:
            deletes, more, self.cursor = state_tree.prune_writes(
                keyspace.range_scan(self.view), keep_from, 7, self.cursor
            )
            self.view.apply(deletes)


def _reference_root(entries: dict[bytes, bytes | None]) -> bytes:
    """The compact tree computed from scratch by its definition: what every root must equal."""

    def subtree(items: list[tuple[bytes, bytes]], depth: int) -> bytes:
        if not items:
            return smt.EMPTY
        if len(items) == 1:
            [(path, value)] = items
            return smt.leaf_hash(path, value)
        left = [i for i in items if not smt.path_bit(i[0], depth)]
        right = [i for i in items if smt.path_bit(i[0], depth)]
        return smt.node_hash(subtree(left, depth + 1), subtree(right, depth + 1))

    present = sorted((smt.key_path(k), v) for k, v in entries.items() if v is not None)
    return subtree(present, 0)


def test_empty_tree_and_single_key():
    tree = Tree()
    assert state_tree.stored_root(tree.view) == smt.EMPTY_ROOT
    root = tree.apply({b"s/a": b"1"})
    assert root == smt.leaf_hash(smt.key_path(b"s/a"), b"1")  # one key: the root is its leaf
    value, proof = tree.prove(b"s/a")
    assert value == b"1" and proof == smt.Proof()
    assert smt.verify_proof(root, b"s/a", b"1", proof)
    assert not smt.verify_proof(root, b"s/a", b"2", proof)
    absent, proof = tree.prove(b"s/b")
    assert absent is None and proof.other_leaf is not None
    assert smt.verify_proof(root, b"s/b", None, proof)
    assert not smt.verify_proof(root, b"s/a", None, smt.Proof())
    assert not smt.verify_proof(root, b"s/a", None, proof)  # its own leaf proves no absence


def test_order_and_batching_do_not_change_the_root():
    items: dict[bytes, bytes | None] = {f"s/k/{i}".encode(): str(i).encode() for i in range(40)}
    one = Tree()
    batch_root = one.apply(items)
    two = Tree()
    for key in sorted(items, reverse=True):
        two.apply({key: items[key]})
    assert state_tree.stored_root(two.view) == batch_root == _reference_root(items)
    # deleting everything returns to the empty root, and leaves no page or leaf behind
    assert one.apply(dict.fromkeys(items)) == smt.EMPTY_ROOT
    one.prune(one.height)
    assert not [k for k in one.view.data if k.startswith((state_tree.PAGE, state_tree.LEAF))]


def test_old_heights_stay_provable_in_leveldb_and_tampering_fails(tmp_path):
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)

    class View:
        def get(self, key):
            return db.get(key)

        def iterate(self, prefix):
            yield from db.iterator(prefix=prefix)

    def commit(height: int, changes: dict[bytes, bytes | None]) -> bytes:
        root, writes = state_tree.update(View(), height, changes)
        with db.write_batch(sync=True) as batch:
            for key, value in writes.items():
                assert value is not None
                batch.put(key, value)
        return root

    old = commit(1, {b"s/work/1": b"v1", b"s/work/2": b"x"})
    new = commit(2, {b"s/work/1": b"v2", b"s/work/2": None})
    assert old != new
    value, proof = state_tree.prove(View(), 1, b"s/work/1")
    assert value == b"v1"  # the old value, from its own leaf record
    assert smt.verify_proof(old, b"s/work/1", b"v1", proof)
    value, _ = state_tree.prove(View(), 2, b"s/work/2")
    assert value is None
    value, proof = state_tree.prove(View(), 2, b"s/work/1")
    assert smt.verify_proof(new, b"s/work/1", b"v2", proof)
    assert not smt.verify_proof(old, b"s/work/1", b"v2", proof)
    forged = smt.Proof([(0, hashlib.sha256(b"forged").digest()), *proof.siblings])
    assert not smt.verify_proof(new, b"s/work/1", b"v2", forged)
    assert not smt.verify_proof(new, b"s/work/1", b"v2", smt.Proof([(300, bytes(32))]))
    db.close()


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.binary(min_size=1, max_size=8), st.binary(max_size=8), min_size=1, max_size=40
    ),
    st.binary(min_size=1, max_size=8),
)
def test_random_sets_prove_every_member_and_an_outsider(entries, outsider):
    tree = Tree()
    root = tree.apply(entries)
    for key, value in entries.items():
        got, proof = tree.prove(key)
        assert got == value
        assert smt.verify_proof(root, key, value, proof)
        assert not smt.verify_proof(root, key, None, proof)
        assert not smt.verify_proof(root, key, value + b"!", proof)
    got, proof = tree.prove(outsider)
    assert got == entries.get(outsider)
    assert smt.verify_proof(root, outsider, got, proof)
    if got is None:
        assert not smt.verify_proof(root, outsider, b"", proof)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.binary(min_size=1, max_size=2),
            st.one_of(st.none(), st.binary(max_size=4)),
            max_size=40,
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(min_value=0, max_value=6),
)
def test_roots_and_historic_proofs_across_inserts_updates_deletes_and_pruning(blocks, keep):
    tree = Tree()
    entries: dict[bytes, bytes | None] = {}
    history: list[tuple[bytes, dict[bytes, bytes | None]]] = []
    for changes in blocks:
        root = tree.apply(changes)
        entries.update(changes)
        assert root == _reference_root(entries)
        history.append((root, dict(entries)))
    keep_from = min(keep, tree.height)
    tree.prune(keep_from)
    assert state_tree.root_at(tree.view, keep_from) is not None
    if keep_from > 0:
        assert state_tree.root_at(tree.view, keep_from - 1) is None
    for height in range(keep_from, tree.height + 1):
        root, at_height = history[height]
        for key in list(at_height)[:8]:
            value, proof = tree.prove(key, height)
            assert value == at_height[key]
            assert smt.verify_proof(root, key, value, proof)


def _records(view: DictView) -> set[bytes]:
    return {k for k in view.data if k.startswith((state_tree.PAGE, state_tree.LEAF))}


def _reachable(view: DictView) -> set[bytes]:
    """The page and leaf records the current root reaches."""
    found: set[bytes] = set()

    def walk(ref: state_tree.Ref, depth: int, path: bytes) -> None:
        kind, _, version, leaf_path, _ = ref
        if kind == 1:
            found.add(state_tree.leaf_key(version, leaf_path))
        elif kind == 2:
            key = state_tree.page_key(version, path, depth)
            found.add(key)
            page = state_tree.decode_page(view.data[key])
            for nibble, slot in enumerate(page):
                child = bytearray(path)
                byte = depth >> 3
                child[byte] = (
                    (child[byte] & 0x0F) | (nibble << 4)
                    if depth & 4 == 0
                    else (child[byte] & 0xF0) | nibble
                )
                walk(slot, depth + 4, bytes(child))

    walk(state_tree.current_ref(view), 0, bytes(32))
    return found


def test_pruning_leaves_exactly_the_live_tree():
    """Disk follows the live state: once nothing older than the current height is kept, the
    page and leaf records left are exactly those the current root reaches."""
    tree = Tree()
    for block in range(30):
        tree.apply(
            {f"s/k/{(block * 7 + i) % 300}".encode(): f"{block}".encode() for i in range(25)}
        )
    assert _records(tree.view) > _reachable(tree.view)  # history is kept until pruned
    tree.prune(tree.height - 5)
    assert _records(tree.view) > _reachable(tree.view)  # the window still holds 5 heights
    tree.prune(tree.height)
    assert _records(tree.view) == _reachable(tree.view)
    for i in range(0, 300, 11):
        value, proof = tree.prove(f"s/k/{i}".encode())
        assert smt.verify_proof(
            state_tree.stored_root(tree.view), f"s/k/{i}".encode(), value, proof
        )


def test_one_key_update_writes_about_log16_n_pages():
    """The point of pages: a key costs ~log16(keys) records to rewrite and to read."""
    tree = Tree()
    tree.apply({f"s/k/{i}".encode(): b"v" for i in range(4096)})
    root, writes = state_tree.update(tree.view, tree.height + 1, {b"s/k/new": b"w"})
    pages = [k for k in writes if k.startswith(state_tree.PAGE)]
    assert 2 <= len(pages) <= 5  # log16(4096) = 3 levels, one more where paths part late
    stale = [k for k in writes if k.startswith(state_tree.STALE)]
    assert len(stale) == len(pages) - 1 or len(stale) == len(pages)  # each rewritten page
    tree.view.apply(writes)
    tree.height += 1

    reads: list[bytes] = []
    real_get = tree.view.get

    def counting_get(key: bytes) -> bytes | None:
        reads.append(key)
        return real_get(key)

    tree.view.get = counting_get  # type: ignore[method-assign]
    value, proof = tree.prove(b"s/k/new")
    assert value == b"w" and proof.other_leaf is None
    assert smt.verify_proof(root, b"s/k/new", b"w", proof)
    assert len(reads) <= 1 + 5 + 1  # root reference, the pages on the path, the leaf value


def test_an_other_leaf_that_is_not_on_the_path_is_refused():
    tree = Tree()
    root = tree.apply({f"s/k/{i}".encode(): b"v" for i in range(64)})
    outsiders = [f"s/out/{i}".encode() for i in range(200)]
    proofs = [(key, tree.prove(key)) for key in outsiders]
    by_leaf = [(key, proof) for key, (value, proof) in proofs if proof.other_leaf is not None]
    by_empty = [(key, proof) for key, (value, proof) in proofs if proof.other_leaf is None]
    assert by_leaf and by_empty  # both kinds of absence occur
    for key, (value, proof) in proofs:
        assert value is None and smt.verify_proof(root, key, None, proof)
    key, proof = by_leaf[0]
    assert proof.other_leaf is not None
    path, value_hash = proof.other_leaf
    flipped = bytes([path[0] ^ 0x80]) + path[1:]  # leaves the key's path at depth 0
    assert not smt.verify_proof(root, key, None, smt.Proof(proof.siblings, (flipped, value_hash)))
    own = smt.key_path(key)
    assert not smt.verify_proof(root, key, None, smt.Proof(proof.siblings, (own, value_hash)))
    assert not smt.verify_proof(root, key, None, smt.Proof(proof.siblings))  # not empty there


@pytest.mark.parametrize("page_bits", [1, 2, 4, 8])
def test_every_page_size_gives_the_same_roots_and_proofs(page_bits):
    """The page size is a storage layout only: binary records (1 bit), 16-ary pages (4) and
    256-ary pages (8) commit to the same compact tree."""
    rng = random.Random(page_bits)
    view = DictView()
    # With a page cache, as the store's view has: updates rehash only the changed slots.
    view.page_cache = state_tree.PageCache()  # type: ignore[attr-defined]
    entries: dict[bytes, bytes | None] = {}
    for height in range(12):
        changes: dict[bytes, bytes | None] = {}
        for _ in range(rng.randint(1, 60)):
            key = f"s/k/{rng.randint(0, 400)}".encode()
            changes[key] = None if rng.random() < 0.25 else rng.randbytes(rng.randint(0, 9))
        root, writes = state_tree.update(view, height, changes, page_bits)
        view.apply(writes)
        view.page_cache.promote()  # type: ignore[attr-defined]
        entries.update(changes)
        assert root == _reference_root(entries)
        for i in range(0, 400, 37):
            key = f"s/k/{i}".encode()
            value, proof = state_tree.prove(view, height, key, page_bits)
            assert value == entries.get(key)
            assert smt.verify_proof(root, key, value, proof)


def _tree_written_through_a_cache(
    size: int,
) -> tuple[DictView, state_tree.PageCache, list[bytes], bytes, dict[bytes, bytes | None]]:
    """A view whose page cache holds what one update of `size` keys wrote (its batch written
    and promoted): (view, cache, keys, root, the update's writes)."""
    view = DictView()
    cache = state_tree.PageCache()
    view.page_cache = cache  # type: ignore[attr-defined]
    keys = [f"s/k/{i}".encode() for i in range(size)]
    root, writes = state_tree.update(view, 0, dict.fromkeys(keys, b"a"))
    view.apply(writes)
    cache.promote()
    return view, cache, keys, root, writes


def test_the_page_cache_keeps_the_current_pages_and_drops_what_a_block_replaced():
    """Once a block's batch is written (promote), its pages are cached and the pages it
    replaced leave the cache, so a full cache holds the current tree, not superseded versions;
    an older height stays provable, its pages read from the store again."""
    view, cache, keys, root0, writes = _tree_written_through_a_cache(500)
    first = {k for k in writes if k.startswith(state_tree.PAGE)}
    assert first and all(cache.get(k) is not None for k in first)

    root1, writes = state_tree.update(view, 1, {keys[7]: b"b"})
    replaced = {k[len(state_tree.STALE) + 8 :] for k in writes if k.startswith(state_tree.STALE)}
    written = {k for k in writes if k.startswith(state_tree.PAGE)}
    assert replaced & first and written
    assert all(cache.get(k) is None for k in written)  # staged until the batch is written
    view.apply(writes)
    cache.promote()
    assert all(cache.get(k) is not None for k in written)
    assert all(cache.get(k) is None for k in replaced & first)

    value, proof = state_tree.prove(view, 0, keys[7])
    assert value == b"a" and smt.verify_proof(root0, keys[7], b"a", proof)
    value, proof = state_tree.prove(view, 1, keys[7])
    assert value == b"b" and smt.verify_proof(root1, keys[7], b"b", proof)


def test_cached_pages_are_not_tracked_by_the_garbage_collector():
    """A full collection walks every tracked object: ~86,000 cached pages at 10^6 keys, and a
    block replaces thousands of them. Pages read from the store and pages an update wrote are
    both cached; none of them may be a container the collector keeps tracking (an instance of
    a tuple subclass, such as a NamedTuple, always is)."""
    view, written, keys, _, writes = _tree_written_through_a_cache(300)  # pages it wrote
    read = state_tree.PageCache()
    view.page_cache = read  # type: ignore[attr-defined]
    state_tree.update(view, 1, {keys[3]: b"b"})  # caches the pages it read from the store
    page_keys = [k for k in writes if k.startswith(state_tree.PAGE)]
    pages = [cache.get(k) for cache in (written, read) for k in page_keys]
    assert sum(page is not None for page in pages) > len(page_keys)  # both caches hold pages
    gc.collect()
    assert not any(gc.is_tracked(page) for page in pages if page is not None)


def test_the_page_cache_is_bounded():
    cache = state_tree.PageCache(entries=3)
    page: state_tree.Page = (b"", 0, 0, smt.EMPTY)
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(key, page)
    assert cache.get(b"a") is None
    assert all(cache.get(key) is page for key in (b"b", b"c", b"d"))


def test_deep_pages_never_push_the_shallow_ones_out():
    """Every block reads the pages down to depth 16 many times and each deeper page about once:
    deep pages have a tier of their own."""
    cache = state_tree.PageCache(entries=2, deep_entries=2)
    page: state_tree.Page = (b"", 0, 0, smt.EMPTY)
    path = bytes(range(32))
    shallow = [state_tree.page_key(1, path, depth) for depth in (12, 16)]
    deep = [state_tree.page_key(v, path, 20) for v in range(1, 6)]
    for key in shallow + deep:
        cache.put(key, page)
    assert all(cache.get(key) is page for key in shallow + deep[-2:])
    assert all(cache.get(key) is None for key in deep[:-2])
    cache.put(state_tree.page_key(2, path, 0), page)  # the shallow tier's own LRU
    assert cache.get(shallow[0]) is None and cache.get(shallow[1]) is page
