"""The state tree in the store, keyed by position and version (docs/design.md §7): its records,
how a block's changes update it, proofs of a key's value or absence at any height still kept,
and what the pruner may delete. The hashing rules and proof verification live in
kledger.node.proof.smt (the verifier's core); the tree they describe is unchanged, so roots
and proofs are the same bytes as before this layout (a v2 proof bundle stays valid).

Layout (Aptos's Jellyfish Merkle tree, over our binary hash rules): the binary tree is cut
into 16-ary pages, one page per 4 binary levels. A page at nibble path P (depth 4*len(P))
holds 16 slots, one per next nibble: empty, a leaf (its version, key path, value hash), or a
child page (its version and subtree hash); its record is the masks of filled and leaf slots,
the filled slots, then the hashes of its inner binary nodes (so a page read from disk needs
no hashing, and an empty slot costs nothing). The page's hash is its 4-level binary subtree of
those slots under smt's compact rule (a one-leaf subtree is the leaf's hash), so a leaf may
sit in a slot while its hash belongs to a shallower binary depth: the same root as a tree of
binary records. A subtree of two or more leaves is a page; one leaf is a slot; none is empty.

Records (all under keyspace.SMT, version = the block height that wrote them, 8 bytes BE):

    z/n/<version><depth><path bits>       a page       version first: a block's writes are
    z/l/<version><key path>               a leaf's value  one run of adjacent keys, appended
    z/r/<height>                          the root reference at that height
    z/x/<since><record key>               the record became stale at height `since`
    z/root                                the current root reference

Rules kept here:
- A record is written once and never changed; a parent names its child's version, so every
  read is one exact get (and a record can be cached by its key).
- Each block updates the tree once, its changed keys sorted, bottom-up through the touched
  pages; a replaced or removed page or leaf gets a stale entry at the block's height.
- A record stale since `since` is needed only by heights below `since`: `prune_writes` deletes
  it once `since` <= the oldest height kept, and the root references below that height.

Two builds of the per-page work, one rule (as kledger.node.chain.canonical's encoder): reading a
page's masks and slots, writing a page with its inner hashes, hashing a new leaf. The C
extension `_state_tree_native` (node/storage/_state_tree.c, compiled by `pip install`, 16-ary
pages) runs unless KLEDGER_PURE=1 or it is missing; `page_masks_pure`, `page_slot_pure`,
`page_write_pure` and `leaf_hashes_pure` here are its twins (and run every other page size).
tests/test_native_state_tree.py checks that both give the same bytes and the same refusals.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Final, NamedTuple

from kledger.node.chain.canonical import PURE_ENV
from kledger.node.proof.smt import (
    EMPTY,
    EMPTY_ROOT,
    Proof,
    key_path,
    leaf_hash_of,
    node_hash,
    value_hash,
)
from kledger.node.storage import keyspace
from kledger.node.storage.keyspace import ReadView, WriteSet

ROOT_KEY = keyspace.SMT + b"root"
PAGE = keyspace.SMT + b"n/"
LEAF = keyspace.SMT + b"l/"
ROOT_AT = keyspace.SMT + b"r/"
STALE = keyspace.SMT + b"x/"
# Pages kept in memory per store, in two tiers. A block's update reads the path of every key it
# changes: the pages down to binary depth 16 (1 + 16 + 256 + 4,096 + 65,536 of 16-ary pages)
# are crossed by many keys of every block, the ones below by about one key each. In one LRU of
# 65,536 the deep pages a block reads pushed the depth-16 pages out before their next use (at
# 10^6 keys a depth-16 page is read every ~18 blocks), so a key's update read its depth-16
# page from LevelDB too, not only the deeper one: the state tree's µs per tx at 10^6 in one
# node's pipeline went from 67 to 49 with the tiers (one window each, docs/bench.md "Values in
# the leaves (store v6)"). Now the shallow tier holds every page of depth <= 16 of the
# current tree (≈ 1.1 KB each with the entry: ≈ 75 MiB at most), the deep tier the most recent
# deep pages (≈ 8 MiB).
PAGE_CACHE_DEPTH: Final = 16
PAGE_CACHE_ENTRIES: Final = sum(16**level for level in range(5))
DEEP_PAGE_CACHE_ENTRIES: Final = 16_384

# Binary levels per page: 4 makes 16-ary pages (measured against 1, binary records, and 8 in
# docs/bench.md "State tree layout"). Part of the store format; a parameter only so the tests and
# that measurement can run the same code with other page sizes.
PAGE_BITS: Final = 4

_EMPTY_KIND, _LEAF_KIND, _PAGE_KIND = 0, 1, 2
_LEAF_BYTES = 1 + 8 + 32 + 32 + 32  # kind, version, hash, key path, value hash
_PAGE_BYTES = 1 + 8 + 32  # kind, version, hash

# A reference to a subtree: (kind, hash, version, key path, value hash); the last two are
# b"" unless the subtree is one leaf. Tuples, not dataclasses: the update builds millions.
Ref = tuple[int, bytes, int, bytes, bytes]
EMPTY_REF: Final[Ref] = (_EMPTY_KIND, EMPTY, 0, b"", b"")
Slots = tuple[Ref, ...]  # a page: 16 references


# A page as read or written: (record, filled, leaves, root). The record is the stored bytes,
# which already hold every slot and every inner hash; filled and leaves are the masks of its
# filled and leaf slots; root is its root hash (which its parent's reference holds, not the
# record). Reading a page parses its two masks and nothing else: a slot, or a node's hash, is
# sliced out of the record when asked for, at the offsets its masks give (_layout).
# A plain tuple of four atoms, not a NamedTuple: the garbage collector stops tracking an exact
# tuple of atoms, never an instance of a tuple subclass, and the page cache holds ~86,000 pages
# that a block replaces by the thousand. As NamedTuples every full collection walked them all,
# and the churn made full collections frequent: 16 % of the CPU of one node's pipeline to 10^6
# txs went to the collector (docs/bench.md "The garbage collector").
Page = tuple[bytes, int, int, bytes]


class PageCache:
    """Pages (records and masks) by record key, bounded, in two tiers by depth (least recently
    used goes within each; see PAGE_CACHE_DEPTH). Records never change, so a hit is always the
    stored page; a pruned page is only asked for by a pruned height.

    Pages a block's update writes are staged, not cached: `promote()` (after the block's batch
    is written) caches them, and the next update drops what a dropped batch left staged, so the
    cache never holds a page that is not on disk."""

    def __init__(
        self, entries: int = PAGE_CACHE_ENTRIES, deep_entries: int = DEEP_PAGE_CACHE_ENTRIES
    ) -> None:
        self._tiers: tuple[tuple[OrderedDict[bytes, Page], int], ...] = (
            (OrderedDict(), entries),
            (OrderedDict(), deep_entries),
        )
        self._staged: dict[bytes, Page] = {}
        self._replaced: list[bytes] = []
        # The commit thread, the pruner and the proof-serving threads share one cache.
        self._lock = threading.Lock()

    @staticmethod
    def _tier_of(key: bytes) -> int:
        """0 for a page of depth <= PAGE_CACHE_DEPTH (or any other key), 1 below."""
        return int(len(key) > _DEPTH_AT and key[_DEPTH_AT] > PAGE_CACHE_DEPTH)

    def get(self, key: bytes) -> Page | None:
        with self._lock:
            pages = self._tiers[self._tier_of(key)][0]
            page = pages.get(key)
            if page is not None:
                pages.move_to_end(key)
            return page

    def put(self, key: bytes, page: Page) -> None:
        with self._lock:
            self._put(key, page)

    def _put(self, key: bytes, page: Page) -> None:
        pages, entries = self._tiers[self._tier_of(key)]
        pages[key] = page
        if len(pages) > entries:
            pages.popitem(last=False)

    def stage(self, pages: dict[bytes, Page], replaced: list[bytes]) -> None:
        """The pages one update wrote and the keys of the pages they replace (replacing
        whatever an earlier update staged)."""
        with self._lock:
            self._staged = pages
            self._replaced = replaced

    def promote(self) -> None:
        """The staged pages are on disk now. The pages they replace leave the cache: only
        a proof at an older height still reads them, and a cache full of superseded versions
        would push the current tree out (at 10^5 keys a block replaces ~2,000 pages)."""
        with self._lock:
            for key in self._replaced:
                self._tiers[self._tier_of(key)][0].pop(key, None)
            for key, page in self._staged.items():
                self._put(key, page)
            self._staged = {}
            self._replaced = []


# ---- record encoding ---------------------------------------------------------------------


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


_DEPTH_AT: Final = len(PAGE) + 8  # a page key's depth byte: after the prefix and the version


def page_key(version: int, path: bytes, depth: int) -> bytes:
    """The record key of the page at binary `depth` (a multiple of the page bits) on key path
    `path`: the version, the depth, then the path's first `depth` bits."""
    return PAGE + _u64(version) + _position(path, depth)


def _position(path: bytes, depth: int) -> bytes:
    """A page's position: its depth and the first `depth` bits of the path."""
    if depth & 7:
        cut = depth >> 3
        return bytes((depth,)) + path[:cut] + bytes((path[cut] & (0xFF00 >> (depth & 7)) & 0xFF,))
    return bytes((depth,)) + path[: depth >> 3]


def leaf_key(version: int, path: bytes) -> bytes:
    return LEAF + _u64(version) + path


def root_at_key(height: int) -> bytes:
    return ROOT_AT + _u64(height)


def encode_ref(ref: Ref) -> bytes:
    kind = ref[0]
    if kind == _EMPTY_KIND:
        return b"\x00"
    if kind == _LEAF_KIND:
        return b"\x01" + _u64(ref[2]) + ref[1] + ref[3] + ref[4]
    return b"\x02" + _u64(ref[2]) + ref[1]


def _decode_ref(data: bytes, at: int) -> tuple[Ref, int]:
    kind = data[at]
    if kind == _EMPTY_KIND:
        return EMPTY_REF, at + 1
    version = int.from_bytes(data[at + 1 : at + 9], "big")
    if kind == _LEAF_KIND:
        end = at + _LEAF_BYTES
        assert len(data) >= end, "truncated leaf reference"
        return (_LEAF_KIND, data[at + 9 : at + 41], version, data[at + 41 : at + 73],
                data[at + 73 : end]), end  # fmt: skip
    assert kind == _PAGE_KIND, f"unknown reference kind {kind}"
    end = at + _PAGE_BYTES
    assert len(data) >= end, "truncated page reference"
    return (_PAGE_KIND, data[at + 9 : end], version, b"", b""), end


def decode_ref(data: bytes) -> Ref:
    ref, end = _decode_ref(data, 0)
    assert end == len(data), "trailing bytes after a reference"
    return ref


def _encode_slot(ref: Ref) -> bytes:
    """A slot inside a page record: its kind is in the page's masks, an empty slot is nothing."""
    kind = ref[0]
    if kind == _EMPTY_KIND:
        return b""
    if kind == _LEAF_KIND:
        return _u64(ref[2]) + ref[1] + ref[3] + ref[4]
    return _u64(ref[2]) + ref[1]


def _mask_bytes(width: int) -> int:
    return max(1, width >> 3)


def decode_page(data: bytes, width: int = 1 << PAGE_BITS) -> Slots:
    filled, leaves = page_masks_pure(data, width)
    return tuple(page_slot_pure(data, filled, leaves, index, width) for index in range(width))


_MASKS_RULE: Final = "a page's leaf slots are filled slots"
_SIZE_RULE: Final = "a page record holds its masks, slots and inner hashes, no more"
_UNCHANGED_RULE: Final = "a page is written for a change"


def page_masks_pure(record: bytes, width: int = 1 << PAGE_BITS) -> tuple[int, int]:
    """The masks of a page record's filled and leaf slots, checked against its length. The
    record: the two masks, each filled slot in slot order (a leaf: version, hash, key path,
    value hash; a child page: version, hash), then the hashes of its inner nodes below its
    root (node order; whether a node is inner the masks decide), so reading a page hashes
    nothing and skips its empty slots."""
    size = _mask_bytes(width)
    filled = int.from_bytes(record[:size], "big")
    leaves = int.from_bytes(record[size : 2 * size], "big")
    assert leaves & ~filled == 0, _MASKS_RULE
    assert len(record) == _layout(filled, leaves, width).size, _SIZE_RULE
    return filled, leaves


class _Layout(NamedTuple):
    """Where things are in the record of a page with given masks (shared by all such pages).
    Offsets of -1: the slot or node is empty."""

    slot_at: tuple[int, ...]  # each slot's bytes: from here ...
    slot_end: tuple[int, ...]  # ... to here
    node_at: tuple[int, ...]  # each heap node's hash below the root (nodes 0 and 1: -1)
    inner: tuple[int, ...]  # the inner nodes below the root, in node order: stored hashes
    kinds: tuple[int, ...]  # _node_kinds
    filled_nodes: tuple[int, ...]  # the nodes above the slots that hold something, bottom-up
    size: int  # the record's length


@functools.lru_cache(maxsize=65_536)
def _layout(filled: int, leaves: int, width: int) -> _Layout:
    """The record layout for these masks (a page's shape is one of few mask pairs, so this is
    mostly a cache hit)."""
    kinds = _node_kinds(filled, leaves, width)
    at = 2 * _mask_bytes(width)
    slot_at = [-1] * width
    slot_end = [-1] * width
    node_at = [-1] * (2 * width)
    for index in range(width):
        if filled >> index & 1:
            slot_at[index] = at
            node_at[width + index] = at + 8  # after the version
            at += _LEAF_BYTES - 1 if leaves >> index & 1 else _PAGE_BYTES - 1
            slot_end[index] = at
    inner = []
    for index in range(2, width):
        kind = kinds[index]
        if kind == _INNER_NODE_KIND:
            node_at[index] = at
            inner.append(index)
            at += 32
        elif kind >= 0:
            node_at[index] = slot_at[kind] + 8  # the lone leaf lifted here
    filled_nodes = tuple(i for i in range(width - 1, 0, -1) if kinds[i] != _EMPTY_NODE_KIND)
    return _Layout(
        tuple(slot_at), tuple(slot_end), tuple(node_at), tuple(inner), kinds, filled_nodes, at
    )


def page_slot_pure(
    record: bytes, filled: int, leaves: int, index: int, width: int = 1 << PAGE_BITS
) -> Ref:
    """The reference in one slot of a page, sliced out of its record."""
    assert leaves & ~filled == 0, _MASKS_RULE
    layout = _layout(filled, leaves, width)
    assert len(record) == layout.size, _SIZE_RULE
    at = layout.slot_at[index]
    if at < 0:
        return EMPTY_REF
    version = int.from_bytes(record[at : at + 8], "big")
    if leaves >> index & 1:
        return (_LEAF_KIND, record[at + 8 : at + 40], version, record[at + 40 : at + 72],
                record[at + 72 : at + 104])  # fmt: skip
    return _PAGE_KIND, record[at + 8 : at + 40], version, b"", b""


# ---- hashing a page ------------------------------------------------------------------------

# A page's binary subtree as a heap: node 1 is the page's root, the children of node i are 2i
# and 2i + 1, slot j is node (width + j); node 0 is unused. Whether a node is empty, inner or
# one lifted leaf comes from the page's bit masks, and an inner node's hash is in the record:
# no per-node Python objects, which the garbage collector would walk (the page cache holds
# thousands of pages; with lists of tuples, full collections tripled the update's CPU at 10^5
# keys).


def _node_masks(width: int) -> tuple[int, ...]:
    """For each node of a page of `width` slots, the mask of the slots below it."""
    masks = [0] * (2 * width)
    for index in range(1, 2 * width):
        level = index.bit_length() - 1
        span = width >> level
        masks[index] = ((1 << span) - 1) << ((index - (1 << level)) * span)
    return tuple(masks)


_NODE_MASKS: Final = {1 << bits: _node_masks(1 << bits) for bits in (1, 2, 4, 8)}


def _lone_leaf(below: int, leaves: int) -> int:
    """The slot of the one leaf under a node whose filled slots are `below`, or -1 (none, or
    more than one slot filled, or one child page): smt's compact rule lifts that leaf."""
    if below & (below - 1) == 0 and below & leaves:
        return below.bit_length() - 1
    return -1


_EMPTY_NODE_KIND, _INNER_NODE_KIND = -2, -1


@functools.lru_cache(maxsize=65_536)
def _node_kinds(filled: int, leaves: int, width: int) -> tuple[int, ...]:
    """What each node of a page with these masks is: _EMPTY_NODE_KIND, _INNER_NODE_KIND, or
    the slot of the one leaf lifted to it (node 0 unused). A page's shape is one of few mask
    pairs, so this is mostly a cache hit."""
    masks = _NODE_MASKS[width]
    kinds = [_EMPTY_NODE_KIND] * width
    for index in range(1, width):
        below = filled & masks[index]
        if below:
            lone = _lone_leaf(below, leaves)
            kinds[index] = lone if lone >= 0 else _INNER_NODE_KIND
    return tuple(kinds)


def _chunk(path: bytes, depth: int, bits: int) -> int:
    """The `bits` bits of `path` from binary `depth` on: the slot the path takes in a page."""
    if bits == 4:
        byte = path[depth >> 3]
        return byte & 0x0F if depth & 4 else byte >> 4
    start, end = depth >> 3, (depth + bits + 7) >> 3
    value = int.from_bytes(path[start:end], "big")
    return (value >> ((end - start) * 8 - (depth & 7) - bits)) & ((1 << bits) - 1)


# ---- reading ---------------------------------------------------------------------------------


class _Reader:
    def __init__(self, view: ReadView, bits: int) -> None:
        self._view = view
        self._masks = page_ops(bits).masks
        # The store's LevelView carries a cache; any other view (tests, overlays) reads through.
        self._cache: PageCache | None = getattr(view, "page_cache", None)

    def page(self, ref: Ref, path: bytes, depth: int) -> tuple[bytes, Page]:
        return self.page_at(ref, page_key(ref[2], path, depth))

    def page_at(self, ref: Ref, key: bytes) -> tuple[bytes, Page]:
        """The page `ref` names, whose record key is `key`."""
        cache = self._cache
        if cache is not None:
            cached = cache.get(key)
            if cached is not None:
                return key, cached
        raw = self._view.get(key)
        assert raw is not None, f"state tree page {key.hex()} missing"
        filled, leaves = self._masks(raw)
        page = (raw, filled, leaves, ref[1])
        if cache is not None:
            cache.put(key, page)
        return key, page


def current_ref(view: ReadView) -> Ref:
    raw = view.get(ROOT_KEY)
    return EMPTY_REF if raw is None else decode_ref(raw)


def stored_root(view: ReadView) -> bytes:
    """The current root hash."""
    return current_ref(view)[1]


def root_at(view: ReadView, height: int) -> Ref | None:
    """The root reference at `height`, or None if that height was never written or is pruned."""
    raw = view.get(root_at_key(height))
    return None if raw is None else decode_ref(raw)


# ---- updating ------------------------------------------------------------------------------

Item = tuple[bytes, bytes | None]  # (key path, new value or None to delete)
_Present = tuple[bytes, bytes | None, Ref | None]  # (path, new value, or the kept leaf's ref)


def update(
    view: ReadView,
    height: int,
    changes: Mapping[bytes, bytes | None],
    page_bits: int = PAGE_BITS,
) -> tuple[bytes, WriteSet]:
    """Apply one block's state changes (state key -> new value or None) at `height` to the
    current tree. Returns the new root and the record writes: new pages and leaves at version
    `height`, stale entries for what they replace, the root at `height` and the current root."""
    writes: WriteSet = {}
    items = sorted((key_path(key), value) for key, value in changes.items())
    assert len({path for path, _ in items}) == len(items)
    ref = current_ref(view)
    assert ref[0] == _EMPTY_KIND or ref[2] < height, "the tree is updated once per height"
    updater = _Updater(view, writes, height, page_bits)
    if items:
        ref = updater.update(ref, 0, items)
    cache: PageCache | None = getattr(view, "page_cache", None)
    if cache is not None:
        cache.stage(updater.written, updater.replaced)
    encoded = encode_ref(ref)
    writes[root_at_key(height)] = encoded
    writes[ROOT_KEY] = encoded
    return ref[1], writes


class _Updater:
    def __init__(self, view: ReadView, writes: WriteSet, version: int, bits: int) -> None:
        assert bits in (1, 2, 4, 8), "a page covers 1, 2, 4 or 8 binary levels"
        self._bits = bits
        self._width = 1 << bits
        self._ops = page_ops(bits)
        self._reader = _Reader(view, bits)
        self._writes = writes
        self._version = version
        self._stale_prefix = STALE + _u64(version)
        self._page_prefix = PAGE + _u64(version)  # + a page's position: its record key
        self._leaf_prefix = LEAF + _u64(version)  # + a key path: its leaf value's key
        self._empty_record = bytes(2 * _mask_bytes(self._width))  # a page of no slots
        self.written: dict[bytes, Page] = {}
        self.replaced: list[bytes] = []

    def update(self, ref: Ref, depth: int, items: list[Item]) -> Ref:
        """The subtree `ref` at `depth` after `items` (sorted by path, all under it)."""
        kind = ref[0]
        if kind == _EMPTY_KIND:
            return self.build(depth, [(p, v, None) for p, v in items if v is not None])
        if kind == _LEAF_KIND:
            path = ref[3]
            if len(items) == 1 and items[0][0] == path and items[0][1] is not None:
                # the usual change: a key's value overwritten where its leaf already sits
                self.stale(leaf_key(ref[2], path))
                return self.leaf(path, items[0][1])
            present: list[_Present] = [(p, v, None) for p, v in items if v is not None]
            if any(p == path for p, _ in items):
                self.stale(leaf_key(ref[2], path))
            elif not present:
                return ref  # only deletes of absent keys: nothing changes
            else:
                present.append((path, None, ref))
                present.sort(key=lambda item: item[0])
            return self.build(depth, present)
        position = _position(items[0][0], depth)
        key, old = self._reader.page_at(ref, PAGE + _u64(ref[2]) + position)
        slot_of = self._ops.slot
        record, old_filled, old_leaves, _ = old
        bits = self._bits
        changes: dict[int, Ref] = {}
        start = 0
        while start < len(items):
            slot = _chunk(items[start][0], depth, bits)
            end = start + 1
            while end < len(items) and _chunk(items[end][0], depth, bits) == slot:
                end += 1
            child = slot_of(record, old_filled, old_leaves, slot)
            new = self.update(child, depth + bits, items[start:end])
            if new != child:
                changes[slot] = new
            start = end
        if not changes:
            return ref
        self.stale(key)
        self.replaced.append(key)
        return self.finish(position, old, changes)

    def build(self, depth: int, present: list[_Present]) -> Ref:
        """A fresh subtree at `depth` of the present leaves (sorted by path)."""
        if not present:
            return EMPTY_REF
        if len(present) == 1:
            path, value, kept = present[0]
            if kept is not None:
                return kept
            assert value is not None
            return self.leaf(path, value)
        bits = self._bits
        slots: dict[int, Ref] = {}
        start = 0
        while start < len(present):
            slot = _chunk(present[start][0], depth, bits)
            end = start + 1
            while end < len(present) and _chunk(present[end][0], depth, bits) == slot:
                end += 1
            slots[slot] = self.build(depth + bits, present[start:end])
            start = end
        return self.write(_position(present[0][0], depth), self._empty_record, 0, 0, slots)

    def leaf(self, path: bytes, value: bytes) -> Ref:
        """A leaf written at this version."""
        self._writes[self._leaf_prefix + path] = value
        hashed, value_hashed = self._ops.leaf_hashes(path, value)
        return _LEAF_KIND, hashed, self._version, path, value_hashed

    def finish(self, position: bytes, old: Page, changes: dict[int, Ref]) -> Ref:
        """The page `old` with the slots in `changes` replaced, written at this version, or
        what it collapses to (nothing, or its one leaf left, which moves up to the parent's
        slot)."""
        record, old_filled, old_leaves, _ = old
        filled, leaves = old_filled, old_leaves
        for index, ref in changes.items():
            bit = 1 << index
            kind = ref[0]
            filled = filled | bit if kind != _EMPTY_KIND else filled & ~bit
            leaves = leaves | bit if kind == _LEAF_KIND else leaves & ~bit
        if filled == 0:
            return EMPTY_REF
        lone = _lone_leaf(filled, leaves)
        if lone >= 0:
            kept = changes.get(lone)
            if kept is not None:
                return kept
            return self._ops.slot(record, old_filled, old_leaves, lone)
        return self.write(position, record, old_filled, old_leaves, changes)

    def write(
        self, position: bytes, record: bytes, filled: int, leaves: int, changes: dict[int, Ref]
    ) -> Ref:
        """Write the page at `position` made of the page (record, filled, leaves) with the
        slots in `changes` replaced; its reference."""
        encoded, filled, leaves, root = self._ops.write(record, filled, leaves, changes)
        key = self._page_prefix + position
        self._writes[key] = encoded
        self.written[key] = (encoded, filled, leaves, root)
        return _PAGE_KIND, root, self._version, b"", b""

    def stale(self, record_key: bytes) -> None:
        self._writes[self._stale_prefix + record_key] = b""


# ---- writing a page: the pure build ----------------------------------------------------------


def page_write_pure(
    record: bytes, filled: int, leaves: int, changes: dict[int, Ref], width: int = 1 << PAGE_BITS
) -> tuple[bytes, int, int, bytes]:
    """(record, filled mask, leaf mask, root hash) of the page whose record and masks are
    given (the empty record for a new page) with the slots in `changes` replaced; the result
    holds two or more leaves (the caller handles a page that collapses). Only the changed
    slots' ancestors are hashed; every other hash, and every unchanged slot's bytes, is copied
    from the old record."""
    assert leaves & ~filled == 0, _MASKS_RULE
    old_layout = _layout(filled, leaves, width)
    assert len(record) == old_layout.size, _SIZE_RULE
    assert changes, _UNCHANGED_RULE
    new_filled, new_leaves = filled, leaves
    for index, ref in changes.items():
        bit = 1 << index
        kind = ref[0]
        new_filled = new_filled | bit if kind != _EMPTY_KIND else new_filled & ~bit
        new_leaves = new_leaves | bit if kind == _LEAF_KIND else new_leaves & ~bit
    assert new_filled and _lone_leaf(new_filled, new_leaves) < 0, (
        "a written page holds two or more leaves"
    )
    if filled == 0:
        return _fresh(new_filled, new_leaves, changes, width)
    dirty = _above(changes, width)
    if (new_filled, new_leaves) == (filled, leaves):
        rewritten, root = _rewrite(record, old_layout, changes, dirty)
        return rewritten, filled, leaves, root
    layout = _layout(new_filled, new_leaves, width)
    kinds = layout.kinds
    old_at = old_layout.node_at
    fresh = {width + index: ref[1] for index, ref in changes.items()}
    for node in dirty:
        kind = kinds[node]
        if kind == _INNER_NODE_KIND:
            left = fresh.get(2 * node)
            if left is None:
                at = old_at[2 * node]
                left = EMPTY if at < 0 else record[at : at + 32]
            right = fresh.get(2 * node + 1)
            if right is None:
                at = old_at[2 * node + 1]
                right = EMPTY if at < 0 else record[at : at + 32]
            fresh[node] = node_hash(left, right)
        elif kind >= 0:  # a lone leaf lifted here: its hash
            lifted = fresh.get(width + kind)
            if lifted is None:
                at = old_at[width + kind]
                lifted = record[at : at + 32]
            fresh[node] = lifted
        else:
            fresh[node] = EMPTY
    size = _mask_bytes(width)
    parts = [new_filled.to_bytes(size, "big"), new_leaves.to_bytes(size, "big")]
    slot_at, slot_end = old_layout.slot_at, old_layout.slot_end
    rest = new_filled
    while rest:
        index = (rest & -rest).bit_length() - 1
        rest &= rest - 1
        new = changes.get(index)
        parts.append(
            _encode_slot(new) if new is not None else record[slot_at[index] : slot_end[index]]
        )
    for node in layout.inner:
        hashed = fresh.get(node)
        if hashed is None:  # not above a change: the old page's inner node, unchanged
            at = old_at[node]
            hashed = record[at : at + 32]
        parts.append(hashed)
    encoded = b"".join(parts)
    assert len(encoded) == layout.size
    return encoded, new_filled, new_leaves, fresh[1]


def _fresh(
    filled: int, leaves: int, slots: dict[int, Ref], width: int
) -> tuple[bytes, int, int, bytes]:
    """page_write_pure for a new page (no old record): its heap hashed bottom-up over the
    nodes that hold something."""
    layout = _layout(filled, leaves, width)
    kinds = layout.kinds
    hashes = [EMPTY] * (2 * width)
    for index, ref in slots.items():
        hashes[width + index] = ref[1]
    for node in layout.filled_nodes:
        kind = kinds[node]
        if kind == _INNER_NODE_KIND:
            hashes[node] = node_hash(hashes[2 * node], hashes[2 * node + 1])
        else:  # a lone leaf lifted here
            hashes[node] = hashes[width + kind]
    size = _mask_bytes(width)
    encoded = b"".join(
        (
            filled.to_bytes(size, "big"),
            leaves.to_bytes(size, "big"),
            *(_encode_slot(slots[index]) for index in sorted(slots)),
            *(hashes[node] for node in layout.inner),
        )
    )
    assert len(encoded) == layout.size
    return encoded, filled, leaves, hashes[1]


def _rewrite(
    old: bytes,
    layout: _Layout,
    changes: dict[int, Ref],
    dirty: tuple[int, ...],
) -> tuple[bytes, bytes]:
    """page_write_pure for the usual case, a page whose slots keep their kinds (values
    overwritten, child pages rewritten): the record keeps its layout, so it is the old record
    with the changed slots' bytes and the hashes above them overwritten in place; a node's
    children's hashes are read back from it (a slot's hash is in its bytes)."""
    record = bytearray(old)
    slot_at, slot_end, node_at, kinds = (
        layout.slot_at,
        layout.slot_end,
        layout.node_at,
        layout.kinds,
    )
    for index, ref in changes.items():
        record[slot_at[index] : slot_end[index]] = _encode_slot(ref)
    root = EMPTY
    for node in dirty:  # children before parents; only inner nodes have a hash of their own
        if kinds[node] != _INNER_NODE_KIND:
            continue
        left, right = node_at[2 * node], node_at[2 * node + 1]
        hashed = node_hash(
            EMPTY if left < 0 else bytes(record[left : left + 32]),
            EMPTY if right < 0 else bytes(record[right : right + 32]),
        )
        at = node_at[node]
        if at < 0:  # node 1, the root: its hash is the parent's, not in the record
            root = hashed
        else:
            record[at : at + 32] = hashed
    assert root != EMPTY, "a page of two or more leaves has an inner root"
    return bytes(record), root


def leaf_hashes_pure(path: bytes, value: bytes) -> tuple[bytes, bytes]:
    """(the leaf's hash, its value's hash) of `value` at key path `path` (smt's rules)."""
    hashed = value_hash(value)
    return leaf_hash_of(path, hashed), hashed


def _above(changes: dict[int, Ref], width: int) -> tuple[int, ...]:
    """The nodes above the changed slots of a page, children before parents."""
    if len(changes) == 1:  # the usual case below the top levels: one path to the root
        return _PATHS_UP[width][next(iter(changes))]
    above: set[int] = set()
    for index in changes:
        node = (width + index) >> 1
        while node and node not in above:
            above.add(node)
            node >>= 1
    return tuple(sorted(above, reverse=True))


def _path_up(width: int, slot: int) -> tuple[int, ...]:
    node = (width + slot) >> 1
    path = []
    while node:
        path.append(node)
        node >>= 1
    return tuple(path)


_PATHS_UP: Final = {
    1 << bits: [_path_up(1 << bits, slot) for slot in range(1 << bits)] for bits in (1, 2, 4, 8)
}


# ---- the two builds of the page functions ----------------------------------------------------


class PageOps(NamedTuple):
    """The per-page functions an update and a proof call, for one page width: the native
    build's (node/storage/_state_tree.c, 16-ary pages only) or the pure ones above. The two
    are one rule: tests/test_native.py checks they give the same bytes and refusals."""

    masks: Callable[[bytes], tuple[int, int]]
    slot: Callable[[bytes, int, int, int], Ref]
    write: Callable[[bytes, int, int, dict[int, Ref]], tuple[bytes, int, int, bytes]]
    leaf_hashes: Callable[[bytes, bytes], tuple[bytes, bytes]]


PURE_OPS: Final = PageOps(page_masks_pure, page_slot_pure, page_write_pure, leaf_hashes_pure)


def _native_ops() -> PageOps | None:
    if os.environ.get(PURE_ENV) == "1":
        return None
    try:
        from kledger.node.storage import _state_tree_native as native
    except ImportError:  # not compiled (a source checkout without `pip install`)
        return None
    return PageOps(native.page_masks, native.page_slot, native.page_write, native.leaf_hashes)


_NATIVE_OPS = _native_ops()
NATIVE: Final = _NATIVE_OPS is not None
OPS: Final = _NATIVE_OPS if _NATIVE_OPS is not None else PURE_OPS
"""The 16-ary pages' functions: the native build unless KLEDGER_PURE=1 or it is missing."""


@functools.cache
def page_ops(bits: int) -> PageOps:
    """The page functions for pages of `bits` binary levels (other sizes than the store's
    run the pure build: only the tests and the layout bench use them)."""
    if bits == PAGE_BITS:
        return OPS
    width = 1 << bits
    return PageOps(
        functools.partial(page_masks_pure, width=width),
        functools.partial(page_slot_pure, width=width),
        functools.partial(page_write_pure, width=width),
        OPS.leaf_hashes,
    )


# ---- proving ---------------------------------------------------------------------------------


def prove(
    view: ReadView, height: int, state_key: bytes, page_bits: int = PAGE_BITS
) -> tuple[bytes | None, Proof]:
    """(value at `state_key` at `height` or None, the proof of that under that height's root).
    The height must be kept (not pruned): callers check the retention window first."""
    ref = root_at(view, height)
    assert ref is not None, f"state tree root at height {height} missing"
    return prove_ref(view, ref, state_key, page_bits)


def prove_ref(
    view: ReadView, ref: Ref, state_key: bytes, page_bits: int = PAGE_BITS
) -> tuple[bytes | None, Proof]:
    path = key_path(state_key)
    reader = _Reader(view, page_bits)
    slot_of = page_ops(page_bits).slot
    siblings: list[tuple[int, bytes]] = []
    bits = page_bits
    depth = 0
    while ref[0] == _PAGE_KIND:
        _, (record, filled, leaves, _) = reader.page(ref, path, depth)
        layout = _layout(filled, leaves, 1 << bits)
        kinds, node_at = layout.kinds, layout.node_at
        slot = _chunk(path, depth, bits)
        for step in range(bits):
            kind = kinds[(1 << step) + (slot >> (bits - step))]
            if kind == _EMPTY_NODE_KIND:
                return None, Proof(siblings)
            if kind >= 0:
                leaf = slot_of(record, filled, leaves, kind)
                return _at_leaf(view, leaf, path, siblings)
            at = node_at[((2 << step) + (slot >> (bits - 1 - step))) ^ 1]  # the path's sibling
            if at >= 0:
                siblings.append((depth + step, record[at : at + 32]))
        ref = slot_of(record, filled, leaves, slot)
        depth += bits
    if ref[0] == _EMPTY_KIND:
        return None, Proof(siblings)
    return _at_leaf(view, ref, path, siblings)


def _at_leaf(
    view: ReadView, leaf: Ref, path: bytes, siblings: list[tuple[int, bytes]]
) -> tuple[bytes | None, Proof]:
    if leaf[3] != path:
        return None, Proof(siblings, (leaf[3], leaf[4]))
    value = view.get(leaf_key(leaf[2], path))
    assert value is not None, f"state tree leaf {path.hex()} at version {leaf[2]} missing"
    return value, Proof(siblings)


# ---- pruning ---------------------------------------------------------------------------------


# Records of a key range [start, stop) in key order: how the pruner reads (LedgerStore passes
# LevelDB's own range iterator; keyspace.range_scan serves any ReadView).
Scan = Callable[[bytes, bytes], Iterator[tuple[bytes, bytes]]]


class PruneCursor(NamedTuple):
    """Where the next prune pass starts: every stale entry below `stale` and every root
    reference below `roots` is deleted already. Passes must not scan from the families' start:
    LevelDB keeps a deleted key as a tombstone until a compaction reaches it, and a scan walks
    every tombstone in its range, so each pass from the start walked all the deletes of the
    passes before it and pruning cost grew with the ledger's age (in one node's pipeline with
    35-tx blocks, 52 -> 1,406 µs per tx from 50,000 to 150,000 txs; docs/bench.md "The
    pruner's scans"). A new stale entry is always above the cursor: it is written at the
    committing height, above every height the window has let go."""

    stale: bytes = STALE
    roots: bytes = ROOT_AT


def prune_writes(
    scan: Scan, keep_from: int, max_records: int, cursor: PruneCursor | None = None
) -> tuple[WriteSet, bool, PruneCursor]:
    """Deletes of at most `max_records` records no height >= `keep_from` needs: records stale
    since a height <= keep_from (with their stale entries), and root references below it,
    scanned from `cursor`. Returns the deletes, whether more remain, and the next cursor."""
    assert max_records > 0
    cursor = cursor or PruneCursor()
    deletes: WriteSet = {}
    stop = STALE + _u64(keep_from + 1)
    for stale_key, _ in scan(cursor.stale, stop):
        if len(deletes) >= max_records:
            return deletes, True, cursor._replace(stale=stale_key)
        deletes[stale_key] = None
        deletes[stale_key[len(STALE) + 8 :]] = None
    cursor = cursor._replace(stale=max(cursor.stale, stop))
    stop = root_at_key(keep_from)
    for root_key, _ in scan(cursor.roots, stop):
        if len(deletes) >= max_records:
            return deletes, True, cursor._replace(roots=root_key)
        deletes[root_key] = None
    return deletes, False, cursor._replace(roots=max(cursor.roots, stop))


__all__ = [
    "EMPTY_ROOT",
    "Page",
    "PageCache",
    "PruneCursor",
    "Scan",
    "current_ref",
    "decode_ref",
    "prove",
    "prove_ref",
    "prune_writes",
    "root_at",
    "stored_root",
    "update",
]
