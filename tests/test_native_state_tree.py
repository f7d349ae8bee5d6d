"""The state tree's native page functions (node/storage/_state_tree.c) against their pure twins
in state_tree.py: the same record, masks and root for any page and any changes (edge masks
included: empty, full, one leaf, leaves at every slot), the same slots, the same leaf hashes,
the same refusal for a damaged record (never a crash: every offset is bounds-checked), whole
updates writing byte-identical records, and SHA-256 equal to hashlib's on both of the C code's
paths (the x86 SHA extensions and the portable one)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.node.proof import smt
from kledger.node.storage import state_tree
from kledger.node.storage.keyspace import DictView

native = pytest.importorskip("kledger.node.storage._state_tree_native")

Ref = state_tree.Ref
EMPTY_RECORD = bytes(4)
hashes = st.binary(min_size=32, max_size=32)
versions = st.one_of(
    st.sampled_from([0, 1, 255, 2**32, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1)
)
leaf_refs = st.tuples(st.just(1), hashes, versions, hashes, hashes)
page_refs = st.tuples(st.just(2), hashes, versions, st.just(b""), st.just(b""))
refs = st.one_of(leaf_refs, page_refs)
slot_maps = st.dictionaries(st.integers(0, 15), refs, max_size=16)


def _outcome(function: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "value", function(*args)
    except (AssertionError, ValueError, IndexError, TypeError, OverflowError) as refusal:
        return type(refusal).__name__, str(refusal)


def _write_both(record: bytes, filled: int, leaves: int, changes: dict[int, Ref]) -> Any:
    outcome = _outcome(native.page_write, record, filled, leaves, changes)
    assert outcome == _outcome(state_tree.page_write_pure, record, filled, leaves, changes)
    return outcome


def _page(slots: dict[int, Ref]) -> tuple[bytes, int, int, bytes]:
    """A page of these slots (two or more leaves under it), written by both builds."""
    kind, page = _write_both(EMPTY_RECORD, 0, 0, slots)
    assert kind == "value"
    return page  # type: ignore[no-any-return]


def _is_a_page(slots: dict[int, Ref]) -> bool:
    """Whether these slots make a page (not nothing, not one leaf alone)."""
    kinds = [ref[0] for ref in slots.values() if ref[0]]
    return len(kinds) >= 2 or kinds == [2]


def _check_reads_agree(record: bytes, filled: int, leaves: int) -> None:
    assert native.page_masks(record) == state_tree.page_masks_pure(record) == (filled, leaves)
    for index in range(16):
        assert native.page_slot(record, filled, leaves, index) == state_tree.page_slot_pure(
            record, filled, leaves, index
        )


@settings(max_examples=200, deadline=None)
@given(
    slot_maps,
    st.dictionaries(
        st.integers(0, 15), st.one_of(refs, st.just(state_tree.EMPTY_REF)), max_size=16
    ),
)
def test_a_page_and_its_rewrite_are_the_same_bytes_in_both_builds(
    slots: dict[int, Ref], changes: dict[int, Ref]
) -> None:
    if not _is_a_page(slots):
        # nothing or one leaf alone never makes a page: both refuse it alike
        outcome = _write_both(EMPTY_RECORD, 0, 0, slots)
        assert outcome[0] == "AssertionError"
        return
    record, filled, leaves, _ = _page(slots)
    _check_reads_agree(record, filled, leaves)
    outcome = _write_both(record, filled, leaves, changes)
    merged = {**slots, **changes}
    if not changes or not _is_a_page(merged):
        assert outcome[0] == "AssertionError"
        return
    _, (new_record, new_filled, new_leaves, root) = outcome
    _check_reads_agree(new_record, new_filled, new_leaves)
    # the rewrite is the page made from scratch of the same slots
    assert (new_record, new_filled, new_leaves, root) == _page(
        {i: ref for i, ref in merged.items() if ref[0]}
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(hashes, min_size=16, max_size=16), st.integers(0, 2**16 - 1), st.data())
def test_every_mask_pair_agrees(paths: list[bytes], leaf_mask: int, data: st.DataObject) -> None:
    """A page with every slot filled, leaves wherever `leaf_mask` says; then each slot emptied
    or flipped in kind, one at a time down to the edge masks."""
    slots: dict[int, Ref] = {
        i: (1, paths[i], i, paths[i], paths[15 - i])
        if leaf_mask >> i & 1
        else (2, paths[i], i, b"", b"")
        for i in range(16)
    }
    record, filled, leaves, _ = _page(slots)
    assert filled == 0xFFFF and leaves == leaf_mask
    order = data.draw(st.permutations(range(16)))
    for index in order:
        change: Ref = data.draw(
            st.sampled_from(
                [
                    state_tree.EMPTY_REF,
                    (1, paths[index], 7, paths[index], paths[0]),
                    (2, paths[index], 7, b"", b""),
                ]
            )
        )
        slots[index] = change
        outcome = _write_both(record, filled, leaves, {index: change})
        if not _is_a_page(slots):
            assert outcome[0] == "AssertionError"
            break
        record, filled, leaves, _ = outcome[1]
        _check_reads_agree(record, filled, leaves)


def test_edge_pages_agree() -> None:
    leaf: Ref = (1, b"\x11" * 32, 3, b"\x22" * 32, b"\x33" * 32)
    page: Ref = (2, b"\x44" * 32, 2**64 - 1, b"", b"")
    _check_reads_agree(EMPTY_RECORD, 0, 0)  # the empty page's record: masks only
    for slots in (
        dict.fromkeys(range(16), leaf),  # all leaves
        dict.fromkeys(range(16), page),  # all pages
        {0: leaf, 15: leaf},  # the two ends
        {7: page},  # one child page alone is a page
        {0: page, 1: leaf},
    ):
        record, filled, leaves, root = _page(slots)
        _check_reads_agree(record, filled, leaves)
        assert root != smt.EMPTY
    for slot in range(16):  # one leaf alone, in every slot, is never a page
        assert _write_both(EMPTY_RECORD, 0, 0, {slot: leaf})[0] == "AssertionError"
    assert _write_both(EMPTY_RECORD, 0, 0, {}) == (
        "AssertionError",
        "a page is written for a change",
    )


def test_a_two_leaf_page_hashes_by_smt_rules() -> None:
    """The native hashes are smt.py's: two leaves in slots 0 and 15 meet at the page's root."""
    a = (1, smt.leaf_hash(b"\x00" * 32, b"x"), 1, b"\x00" * 32, smt.value_hash(b"x"))
    b = (1, smt.leaf_hash(b"\xff" * 32, b"y"), 1, b"\xff" * 32, smt.value_hash(b"y"))
    _, _, _, root = native.page_write(EMPTY_RECORD, 0, 0, {0: a, 15: b})
    assert root == smt.node_hash(a[1], b[1])


@settings(max_examples=200, deadline=None)
@given(hashes, st.binary(max_size=300))
def test_leaf_hashes_agree(path: bytes, value: bytes) -> None:
    assert native.leaf_hashes(path, value) == state_tree.leaf_hashes_pure(path, value)
    assert native.leaf_hashes(path, value) == (smt.leaf_hash(path, value), smt.value_hash(value))


@settings(max_examples=150, deadline=None)
@given(slot_maps, st.data())
def test_a_damaged_record_is_refused_alike(slots: dict[int, Ref], data: st.DataObject) -> None:
    if not _is_a_page(slots):
        return
    record, filled, leaves, _ = _page(slots)
    damage = data.draw(
        st.one_of(
            st.integers(0, len(record) - 1).map(lambda cut: record[:cut]),  # truncated
            st.binary(min_size=1, max_size=64).map(lambda extra: record + extra),  # trailing
            st.tuples(st.integers(0, 3), st.integers(1, 255)).map(  # a mask byte flipped
                lambda at: record[: at[0]] + bytes((record[at[0]] ^ at[1],)) + record[at[0] + 1 :]
            ),
            st.binary(max_size=700),  # anything
        )
    )
    masks = _outcome(native.page_masks, damage)
    assert masks == _outcome(state_tree.page_masks_pure, damage)
    if masks[0] == "value":
        return
    assert masks[0] == "AssertionError"
    # the damaged bytes under the old masks (which a page read from the store never has: its
    # masks are parsed from its record): a refusal from both builds when the length does not
    # fit them; when it does, the same slots (page_write then writes the masks it was given)
    change = {0: state_tree.EMPTY_REF, 1: (2, b"\x05" * 32, 9, b"", b"")}
    for index in (0, 15):
        outcome = _outcome(native.page_slot, damage, filled, leaves, index)
        assert outcome == _outcome(state_tree.page_slot_pure, damage, filled, leaves, index)
    if len(damage) != len(record):
        outcome = _outcome(native.page_write, damage, filled, leaves, change)
        assert outcome == _outcome(state_tree.page_write_pure, damage, filled, leaves, change)
        assert outcome[0] == "AssertionError"


def test_malformed_arguments_raise_not_crash() -> None:
    record, filled, leaves, _ = _page(
        {0: (2, b"\x01" * 32, 1, b"", b""), 1: (2, b"\x02" * 32, 1, b"", b"")}
    )
    for changes in (
        {0: (2, b"\x01" * 31, 1, b"", b"")},  # short hash
        {0: (1, b"\x01" * 32, 1, b"", b"")},  # a leaf without its path
        {0: (3, b"\x01" * 32, 1, b"", b"")},  # unknown kind
        {0: (2, b"\x01" * 32, -1, b"", b"")},  # negative version
        {0: (2, b"\x01" * 32)},  # not a reference
        {16: (2, b"\x01" * 32, 1, b"", b"")},  # no such slot
    ):
        kind, _ = _outcome(native.page_write, record, filled, leaves, changes)
        assert kind in {"ValueError", "TypeError", "IndexError", "OverflowError"}, changes
    assert _outcome(native.page_slot, record, filled, leaves, 16)[0] == "IndexError"
    assert _outcome(native.page_masks, bytearray(record))[0] == "TypeError"
    assert _outcome(native.leaf_hashes, b"short", b"v")[0] == "ValueError"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.binary(min_size=1, max_size=3),  # a small key space: overwrites and deletes
            st.one_of(st.none(), st.binary(max_size=20)),
            max_size=120,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_updates_write_the_same_records_in_both_builds(
    blocks: list[dict[bytes, bytes | None]],
) -> None:
    _updates_agree(blocks)


def test_a_larger_tree_is_the_same_in_both_builds() -> None:
    """Three blocks over 3,000 keys (pages two levels deep, every kind of change): the native
    build wrote pages, and the same as the pure one."""
    keys = [i.to_bytes(4, "big") for i in range(3000)]
    blocks: list[dict[bytes, bytes | None]] = [
        dict.fromkeys(keys[:2000], b"v0"),
        {**dict.fromkeys(keys[::3], b"v1"), **dict.fromkeys(keys[1:2000:7])},
        {**dict.fromkeys(keys[::2]), **dict.fromkeys(keys[2000:], b"v2")},
    ]
    assert len(_updates_agree(blocks)) > 100


def _updates_agree(blocks: list[dict[bytes, bytes | None]]) -> list[bytes]:
    """Run the blocks through both builds; assert the same roots, writes, proofs and store;
    the pages the native build wrote."""
    written: list[bytes] = []

    def native_write(
        record: bytes, filled: int, leaves: int, changes: dict[int, Ref]
    ) -> tuple[bytes, int, int, bytes]:
        page: tuple[bytes, int, int, bytes] = native.page_write(record, filled, leaves, changes)
        written.append(page[0])
        return page

    native_ops = state_tree.PageOps(
        native.page_masks, native.page_slot, native_write, native.leaf_hashes
    )
    views = {}
    for name, ops in (("native", native_ops), ("pure", state_tree.PURE_OPS)):
        view = DictView()
        history = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(state_tree, "page_ops", lambda bits, ops=ops: ops)
            for height, changes in enumerate(blocks):
                root, writes = state_tree.update(view, height, changes)
                view.apply(writes)
                proofs = [state_tree.prove(view, height, key) for key in sorted(changes)[:50]]
                history.append((root, sorted(writes.items()), proofs))
        views[name] = (history, dict(view.data))
    assert views["native"] == views["pure"]
    stored = set(views["native"][1].values())
    assert all(page in stored for page in written)  # what the native build wrote is stored
    return written


def test_the_native_page_functions_are_what_runs_unless_pure_is_asked_for() -> None:
    ops = state_tree.page_ops(state_tree.PAGE_BITS)
    if os.environ.get("KLEDGER_PURE") == "1":
        assert not state_tree.NATIVE and ops is state_tree.PURE_OPS
    else:
        assert state_tree.NATIVE
        assert (ops.masks, ops.slot, ops.write, ops.leaf_hashes) == (
            native.page_masks,
            native.page_slot,
            native.page_write,
            native.leaf_hashes,
        )


_SHA_CHECK = """
import hashlib, random, sys
from kledger.node.storage import _state_tree_native as native
rng = random.Random(7)
for size in [*range(0, 300), 1000, 4096, 65537]:
    data = rng.randbytes(size)
    assert native.sha256(data) == hashlib.sha256(data).digest(), size
print(native.sha_extensions())
"""


@pytest.mark.parametrize("portable", [False, True], ids=["cpu", "portable"])
def test_sha256_is_hashlibs_on_both_paths(portable: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KLEDGER_PORTABLE_SHA256"}
    if portable:
        env["KLEDGER_PORTABLE_SHA256"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _SHA_CHECK], env=env, capture_output=True, text=True, check=True
    )
    uses_extensions = done.stdout.strip() == "True"
    assert not uses_extensions if portable else uses_extensions == _cpu_has_sha()
    assert native.sha256(b"abc") == hashlib.sha256(b"abc").digest()


def _cpu_has_sha() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return " sha_ni" in cpuinfo.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo to tell whether the CPU has the SHA extensions")
