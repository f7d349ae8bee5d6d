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
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Final, NamedTuple

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
# Decoded pages kept in memory per store: the upper levels (1 + 16 + 256 + 4,096 pages) are on
# every key's path and stay; an entry (slots, their bytes, 1 KiB of hashes) is ~3 KiB, so the
# cache holds ~48 MiB at most.
PAGE_CACHE_ENTRIES: Final = 16_384

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


class Page(NamedTuple):
    """A decoded page: its slots, which of them hold something and which a leaf (bit masks),
    its binary subtree's hashes (so a proof hashes nothing and the next update of the page
    rehashes only above what changed) and each slot's record bytes. A tuple of atoms and
    tuples of atoms, so the garbage collector stops tracking cached pages."""

    slots: Slots
    filled: int
    leaves: int
    hashes: bytes
    encoded: tuple[bytes, ...]


class PageCache:
    """Decoded pages by record key, bounded (least recently used goes). Records never change,
    so a hit is always the stored page; a pruned page is only asked for by a pruned height.

    Pages a block's update writes are staged, not cached: `promote()` (after the block's batch
    is written) caches them, and the next update drops what a dropped batch left staged, so the
    cache never holds a page that is not on disk."""

    def __init__(self, entries: int = PAGE_CACHE_ENTRIES) -> None:
        self._entries = entries
        self._pages: OrderedDict[bytes, Page] = OrderedDict()
        self._staged: dict[bytes, Page] = {}
        # The commit thread, the pruner and the proof-serving threads share one cache.
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Page | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, key: bytes, page: Page) -> None:
        with self._lock:
            self._put(key, page)

    def _put(self, key: bytes, page: Page) -> None:
        self._pages[key] = page
        if len(self._pages) > self._entries:
            self._pages.popitem(last=False)

    def stage(self, pages: dict[bytes, Page]) -> None:
        """The pages one update wrote (replacing whatever an earlier update staged)."""
        with self._lock:
            self._staged = pages

    def promote(self) -> None:
        """The staged pages are on disk now."""
        with self._lock:
            for key, page in self._staged.items():
                self._put(key, page)
            self._staged = {}


# ---- record encoding ---------------------------------------------------------------------


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


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
    return _decode_page(data, width, EMPTY).slots


def _decode_page(data: bytes, width: int, root_hash: bytes) -> Page:
    """The page of a record: the masks of its filled and of its leaf slots, each filled slot
    in slot order (a leaf: version, hash, key path, value hash; a child page: version, hash),
    then the hashes of its inner nodes below its root (node order; whether a node is inner the
    masks decide), so reading a page hashes nothing and skips its empty slots. Each slot keeps
    its record bytes."""
    size = _mask_bytes(width)
    filled = int.from_bytes(data[:size], "big")
    leaves = int.from_bytes(data[size : 2 * size], "big")
    at = 2 * size
    slots = [EMPTY_REF] * width
    encoded = [b""] * width
    hashes = [EMPTY] * (2 * width)
    rest = filled
    while rest:
        index = (rest & -rest).bit_length() - 1
        rest &= rest - 1
        version = int.from_bytes(data[at : at + 8], "big")
        hashed = data[at + 8 : at + 40]
        if leaves >> index & 1:
            end = at + _LEAF_BYTES - 1
            slots[index] = (_LEAF_KIND, hashed, version, data[at + 40 : at + 72],
                            data[at + 72 : end])  # fmt: skip
        else:
            end = at + _PAGE_BYTES - 1
            slots[index] = (_PAGE_KIND, hashed, version, b"", b"")
        encoded[index] = data[at:end]
        hashes[width + index] = hashed
        at = end
    assert at <= len(data), "truncated page record"
    hashes[1] = root_hash
    kinds = _node_kinds(filled, leaves, width)
    for index in range(2, width):
        kind = kinds[index]
        if kind == _INNER_NODE_KIND:
            hashes[index] = data[at : at + 32]
            at += 32
        elif kind >= 0:
            hashes[index] = slots[kind][1]
    assert at == len(data), "a page record holds its masks, slots and inner hashes, no more"
    return Page(tuple(slots), filled, leaves, b"".join(hashes), tuple(encoded))


def _inner_hashes(hashes: bytes, filled: int, leaves: int, width: int) -> bytes:
    """What a page record stores after its slots (see _decode_page)."""
    return b"".join(
        hashes[index * 32 : index * 32 + 32] for index in _inner_nodes(filled, leaves, width)
    )


# ---- hashing a page ------------------------------------------------------------------------

# A page's binary subtree as a heap: node 1 is the page's root, the children of node i are 2i
# and 2i + 1, slot j is node (width + j); node 0 is unused. Its hashes are kept as one bytes
# object (32 bytes per node), and whether a node is empty or one lifted leaf comes from the
# page's bit masks: no per-node Python objects, which the garbage collector would walk (the
# page cache holds thousands of pages; with lists of tuples, full collections tripled the
# update's CPU at 10^5 keys).


def _node_masks(width: int) -> tuple[int, ...]:
    """For each node of a page of `width` slots, the mask of the slots below it."""
    masks = [0] * (2 * width)
    for index in range(1, 2 * width):
        level = index.bit_length() - 1
        span = width >> level
        masks[index] = ((1 << span) - 1) << ((index - (1 << level)) * span)
    return tuple(masks)


_NODE_MASKS: Final = {1 << bits: _node_masks(1 << bits) for bits in (1, 2, 4, 8)}


def _masks(slots: Slots | list[Ref]) -> tuple[int, int]:
    """(slots holding something, slots holding a leaf) as bit masks, slot j = bit j."""
    filled = leaves = 0
    for index, slot in enumerate(slots):
        if slot[0] != _EMPTY_KIND:
            filled |= 1 << index
            if slot[0] == _LEAF_KIND:
                leaves |= 1 << index
    return filled, leaves


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


@functools.lru_cache(maxsize=65_536)
def _inner_nodes(filled: int, leaves: int, width: int) -> tuple[int, ...]:
    """The inner nodes below the root, in node order: whose hashes a page record stores."""
    kinds = _node_kinds(filled, leaves, width)
    return tuple(index for index in range(2, width) if kinds[index] == _INNER_NODE_KIND)


def page_hashes(slots: Slots, filled: int, leaves: int) -> bytes:
    """The hashes of the page's binary subtree (the heap above), under smt's compact rule."""
    width = len(slots)
    kinds = _node_kinds(filled, leaves, width)
    hashes = [EMPTY] * width + [slot[1] for slot in slots]  # an empty slot's hash is EMPTY
    for index in range(width - 1, 0, -1):
        kind = kinds[index]
        if kind == _INNER_NODE_KIND:
            hashes[index] = node_hash(hashes[2 * index], hashes[2 * index + 1])
        elif kind >= 0:
            hashes[index] = slots[kind][1]
    return b"".join(hashes)


def _rehash(old: bytes, slots: Slots, filled: int, leaves: int, changed: list[int]) -> bytes:
    """page_hashes of `slots` from the hashes of a page that differs in the `changed` slots:
    only their ancestors are rehashed."""
    width = len(slots)
    kinds = _node_kinds(filled, leaves, width)
    hashes = bytearray(old)
    for slot in changed:
        at = (width + slot) * 32
        hashes[at : at + 32] = slots[slot][1]
    if len(changed) == 1:  # the usual case: one path up to the root
        index = (width + changed[0]) >> 1
        while index:
            kind = kinds[index]
            at = index * 32
            if kind == _INNER_NODE_KIND:
                hashes[at : at + 32] = node_hash(
                    bytes(hashes[2 * at : 2 * at + 32]), bytes(hashes[2 * at + 32 : 2 * at + 64])
                )
            elif kind >= 0:
                hashes[at : at + 32] = slots[kind][1]
            else:
                hashes[at : at + 32] = EMPTY
            index >>= 1
        return bytes(hashes)
    dirty = {(width + slot) >> 1 for slot in changed}  # one level at a time, towards the root
    while dirty:
        for index in dirty:
            kind = kinds[index]
            at = index * 32
            if kind == _INNER_NODE_KIND:
                hashes[at : at + 32] = node_hash(
                    bytes(hashes[2 * at : 2 * at + 32]), bytes(hashes[2 * at + 32 : 2 * at + 64])
                )
            elif kind >= 0:
                hashes[at : at + 32] = slots[kind][1]
            else:
                hashes[at : at + 32] = EMPTY
        dirty = {index >> 1 for index in dirty if index > 1}
    return bytes(hashes)


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
        self._width = 1 << bits
        # The store's LevelView carries a cache; any other view (tests, overlays) reads through.
        self._cache: PageCache | None = getattr(view, "page_cache", None)

    def page(self, ref: Ref, path: bytes, depth: int) -> tuple[bytes, Page]:
        key = page_key(ref[2], path, depth)
        cache = self._cache
        if cache is not None:
            cached = cache.get(key)
            if cached is not None:
                return key, cached
        raw = self._view.get(key)
        assert raw is not None, f"state tree page {key.hex()} missing"
        page = _decode_page(raw, self._width, ref[1])
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
        cache.stage(updater.written)
    encoded = encode_ref(ref)
    writes[root_at_key(height)] = encoded
    writes[ROOT_KEY] = encoded
    return ref[1], writes


class _Updater:
    def __init__(self, view: ReadView, writes: WriteSet, version: int, bits: int) -> None:
        assert bits in (1, 2, 4, 8), "a page covers 1, 2, 4 or 8 binary levels"
        self._bits = bits
        self._reader = _Reader(view, bits)
        self._writes = writes
        self._version = version
        self._stale_prefix = STALE + _u64(version)
        self.written: dict[bytes, Page] = {}

    def update(self, ref: Ref, depth: int, items: list[Item]) -> Ref:
        """The subtree `ref` at `depth` after `items` (sorted by path, all under it)."""
        kind = ref[0]
        if kind == _EMPTY_KIND:
            return self.build(depth, [(p, v, None) for p, v in items if v is not None])
        if kind == _LEAF_KIND:
            path = ref[3]
            present: list[_Present] = [(p, v, None) for p, v in items if v is not None]
            if any(p == path for p, _ in items):
                self.stale(leaf_key(ref[2], path))
            elif not present:
                return ref  # only deletes of absent keys: nothing changes
            else:
                present.append((path, None, ref))
                present.sort(key=lambda item: item[0])
            return self.build(depth, present)
        key, old = self._reader.page(ref, items[0][0], depth)
        page = old.slots
        slots = list(page)
        bits = self._bits
        changed: list[int] = []
        start = 0
        while start < len(items):
            slot = _chunk(items[start][0], depth, bits)
            end = start + 1
            while end < len(items) and _chunk(items[end][0], depth, bits) == slot:
                end += 1
            new = self.update(page[slot], depth + bits, items[start:end])
            if new != page[slot]:
                slots[slot] = new
                changed.append(slot)
            start = end
        if not changed:
            return ref
        self.stale(key)
        return self.finish(depth, items[0][0], slots, (old, changed))

    def build(self, depth: int, present: list[_Present]) -> Ref:
        """A fresh subtree at `depth` of the present leaves (sorted by path)."""
        if not present:
            return EMPTY_REF
        if len(present) == 1:
            path, value, kept = present[0]
            if kept is not None:
                return kept
            assert value is not None
            self._writes[leaf_key(self._version, path)] = value
            hashed = value_hash(value)
            return _LEAF_KIND, leaf_hash_of(path, hashed), self._version, path, hashed
        bits = self._bits
        slots = [EMPTY_REF] * (1 << bits)
        start = 0
        while start < len(present):
            slot = _chunk(present[start][0], depth, bits)
            end = start + 1
            while end < len(present) and _chunk(present[end][0], depth, bits) == slot:
                end += 1
            slots[slot] = self.build(depth + bits, present[start:end])
            start = end
        return self.finish(depth, present[0][0], slots)

    def finish(
        self,
        depth: int,
        path: bytes,
        slots: list[Ref],
        replaces: tuple[Page, list[int]] | None = None,
    ) -> Ref:
        """The page of `slots` written at this version, or what it collapses to. `replaces`:
        the page it replaces and the slots that changed (only their ancestors are rehashed)."""
        if replaces is None:
            masks = _masks(slots)
        else:  # the old page's masks with the changed slots' bits redone
            filled, leaves = replaces[0].filled, replaces[0].leaves
            for index in replaces[1]:
                bit = 1 << index
                kind = slots[index][0]
                filled = filled | bit if kind != _EMPTY_KIND else filled & ~bit
                leaves = leaves | bit if kind == _LEAF_KIND else leaves & ~bit
            masks = filled, leaves
        if masks[0] == 0:
            return EMPTY_REF
        lone = _lone_leaf(*masks)
        if lone >= 0:
            return slots[lone]  # one leaf left: it moves up to the parent's slot
        page = tuple(slots)
        if replaces is None:
            hashes = page_hashes(page, *masks)
            encoded = tuple(_encode_slot(slot) for slot in page)
        else:
            old, changed = replaces
            hashes = _rehash(old.hashes, page, *masks, changed)
            slot_bytes = list(old.encoded)
            for index in changed:
                slot_bytes[index] = _encode_slot(page[index])
            encoded = tuple(slot_bytes)
        key = page_key(self._version, path, depth)
        size = _mask_bytes(len(page))
        self._writes[key] = b"".join(
            (
                masks[0].to_bytes(size, "big"),
                masks[1].to_bytes(size, "big"),
                *encoded,
                _inner_hashes(hashes, *masks, len(page)),
            )
        )
        self.written[key] = Page(page, masks[0], masks[1], hashes, encoded)
        return _PAGE_KIND, hashes[32:64], self._version, b"", b""

    def stale(self, record_key: bytes) -> None:
        self._writes[self._stale_prefix + record_key] = b""


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
    siblings: list[tuple[int, bytes]] = []
    bits = page_bits
    depth = 0
    while ref[0] == _PAGE_KIND:
        _, stored = reader.page(ref, path, depth)
        page, hashes = stored.slots, stored.hashes
        assert len(page) == 1 << bits, "page of another size"
        kinds = _node_kinds(stored.filled, stored.leaves, 1 << bits)
        slot = _chunk(path, depth, bits)
        for step in range(bits):
            kind = kinds[(1 << step) + (slot >> (bits - step))]
            if kind == _EMPTY_NODE_KIND:
                return None, Proof(siblings)
            if kind >= 0:
                return _at_leaf(view, page[kind], path, siblings)
            sibling_at = ((2 << step) + (slot >> (bits - 1 - step))) ^ 1  # the path's sibling
            sibling = hashes[sibling_at * 32 : sibling_at * 32 + 32]
            if sibling != EMPTY:
                siblings.append((depth + step, sibling))
        ref = page[slot]
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


def prune_writes(view: ReadView, keep_from: int, max_records: int) -> tuple[WriteSet, bool]:
    """Deletes of at most `max_records` records no height >= `keep_from` needs: records stale
    since a height <= keep_from (with their stale entries), and root references below it.
    Returns the deletes and whether more remain."""
    assert max_records > 0
    deletes: WriteSet = {}
    stop = STALE + _u64(keep_from + 1)
    for stale_key, _ in _scan(view, STALE, stop):
        if len(deletes) >= max_records:
            return deletes, True
        deletes[stale_key] = None
        deletes[stale_key[len(STALE) + 8 :]] = None
    stop = root_at_key(keep_from)
    for root_key, _ in _scan(view, ROOT_AT, stop):
        if len(deletes) >= max_records:
            return deletes, True
        deletes[root_key] = None
    return deletes, False


def _scan(view: ReadView, prefix: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
    for key, value in view.iterate(prefix):
        if key >= stop:
            return
        yield key, value


__all__ = [
    "EMPTY_ROOT",
    "Page",
    "PageCache",
    "current_ref",
    "decode_ref",
    "page_hashes",
    "prove",
    "prove_ref",
    "prune_writes",
    "root_at",
    "stored_root",
    "update",
]
