"""Sparse Merkle tree: roots are order-independent, presence and absence proofs verify at any
committed root (also old ones), and fail after tampering; nodes live in a real LevelDB."""

from __future__ import annotations

import hashlib

import plyvel
from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.node.proof import smt
from kledger.node.storage import state_tree
from kledger.node.storage.keyspace import DictView


def _apply(view: DictView, changes):
    root, writes = state_tree.update(view, state_tree.stored_root(view), changes)
    view.apply(writes)
    return root


def test_empty_tree_and_single_key():
    view = DictView()
    assert state_tree.stored_root(view) == smt.EMPTY_ROOT
    root = _apply(view, {b"s/a": b"1"})
    assert root == smt.leaf_hash(smt.key_path(b"s/a"), b"1")  # one key: the root is its leaf
    value, proof = state_tree.prove(view, root, b"s/a")
    assert value == b"1" and proof == smt.Proof()
    assert smt.verify_proof(root, b"s/a", b"1", proof)
    assert not smt.verify_proof(root, b"s/a", b"2", proof)
    absent, proof = state_tree.prove(view, root, b"s/b")
    assert absent is None and proof.other_leaf is not None
    assert smt.verify_proof(root, b"s/b", None, proof)
    assert not smt.verify_proof(root, b"s/a", None, smt.Proof())
    assert not smt.verify_proof(root, b"s/a", None, proof)  # its own leaf proves no absence


def test_order_and_batching_do_not_change_the_root():
    items = {f"s/k/{i}".encode(): str(i).encode() for i in range(40)}
    one = DictView()
    batch_root = _apply(one, items)
    two = DictView()
    for key in sorted(items, reverse=True):
        _apply(two, {key: items[key]})
    assert state_tree.stored_root(two) == batch_root
    # deleting everything returns to the empty root
    assert _apply(one, dict.fromkeys(items)) == smt.EMPTY_ROOT


def test_old_roots_stay_provable_and_tampering_fails(tmp_path):
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)

    class View:
        def get(self, key):
            return db.get(key)

        def iterate(self, prefix):
            yield from db.iterator(prefix=prefix)

    def commit(changes: dict[bytes, bytes | None]) -> bytes:
        root, writes = state_tree.update(View(), state_tree.stored_root(View()), changes)
        with db.write_batch(sync=True) as batch:
            for key, value in writes.items():
                assert value is not None
                batch.put(key, value)
        return root

    old = commit({b"s/work/1": b"v1", b"s/work/2": b"x"})
    new = commit({b"s/work/1": b"v2", b"s/work/2": None})
    assert old != new
    value, proof = state_tree.prove(View(), old, b"s/work/1")
    assert value == b"v1"
    assert smt.verify_proof(old, b"s/work/1", b"v1", proof)
    value, _ = state_tree.prove(View(), new, b"s/work/2")
    assert value is None
    value, proof = state_tree.prove(View(), new, b"s/work/1")
    assert smt.verify_proof(new, b"s/work/1", b"v2", proof)
    assert not smt.verify_proof(old, b"s/work/1", b"v2", proof)
    forged = smt.Proof([(0, hashlib.sha256(b"forged").digest()), *proof.siblings])
    assert not smt.verify_proof(new, b"s/work/1", b"v2", forged)
    assert not smt.verify_proof(new, b"s/work/1", b"v2", smt.Proof([(300, bytes(32))]))
    db.close()


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.binary(min_size=1, max_size=8), st.binary(max_size=8), min_size=1, max_size=12
    ),
    st.binary(min_size=1, max_size=8),
)
def test_random_sets_prove_every_member_and_an_outsider(entries, outsider):
    view = DictView()
    root = _apply(view, entries)
    for key, value in entries.items():
        got, proof = state_tree.prove(view, root, key)
        assert got == value
        assert smt.verify_proof(root, key, value, proof)
        assert not smt.verify_proof(root, key, None, proof)
        assert not smt.verify_proof(root, key, value + b"!", proof)
    got, proof = state_tree.prove(view, root, outsider)
    assert got == entries.get(outsider)
    assert smt.verify_proof(root, outsider, got, proof)
    if got is None:
        assert not smt.verify_proof(root, outsider, b"", proof)


def _reference_root(entries: dict[bytes, bytes]) -> bytes:
    """The compact tree computed from scratch by its definition: what every root must equal."""

    def subtree(items: list[tuple[bytes, bytes]], depth: int) -> bytes:
        if not items:
            return smt.EMPTY
        if len(items) == 1:
            [(path, value)] = items
            return smt.leaf_hash(path, value)
        left = [i for i in items if not (i[0][depth >> 3] >> (7 - (depth & 7))) & 1]
        right = [i for i in items if (i[0][depth >> 3] >> (7 - (depth & 7))) & 1]
        return smt.node_hash(subtree(left, depth + 1), subtree(right, depth + 1))

    return subtree(sorted((smt.key_path(k), v) for k, v in entries.items()), 0)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.binary(min_size=1, max_size=2),
            st.one_of(st.none(), st.binary(max_size=4)),
            max_size=10,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_roots_equal_the_compact_tree_across_inserts_updates_and_deletes(blocks):
    view = DictView()
    entries: dict[bytes, bytes] = {}
    for changes in blocks:
        root = _apply(view, changes)
        for key, value in changes.items():
            if value is None:
                entries.pop(key, None)
            else:
                entries[key] = value
        assert root == _reference_root(entries)
        for key in list(changes)[:3]:
            value, proof = state_tree.prove(view, root, key)
            assert value == entries.get(key)
            assert smt.verify_proof(root, key, value, proof)


def test_storage_is_about_log_n_nodes_per_key():
    view = DictView()
    _, writes = state_tree.update(
        view, smt.EMPTY_ROOT, {f"s/k/{i}".encode(): b"v" for i in range(1000)}
    )
    assert len(writes) < 1000 * 3  # ~2n: n-1 inner nodes + n leaves + the root pointer


def test_one_key_update_hashes_about_log2_n():
    """The point of the compact form: a key costs ~log2(keys) hashes and records, not 256."""
    view = DictView()
    _apply(view, {f"s/k/{i}".encode(): b"v" for i in range(1024)})
    root, writes = state_tree.update(view, state_tree.stored_root(view), {b"s/k/new": b"w"})
    inner = [
        v
        for k, v in writes.items()
        if k != state_tree.ROOT_KEY and v is not None and v[:1] == b"\x01"
    ]
    assert 5 <= len(inner) <= 30  # log2(1024) = 10 levels, a few more where paths part late
    view.apply(writes)
    value, proof = state_tree.prove(view, root, b"s/k/new")
    assert value == b"w" and proof.other_leaf is None
    assert len(proof.siblings) <= len(inner)


def test_an_other_leaf_that_is_not_on_the_path_is_refused():
    view = DictView()
    root = _apply(view, {f"s/k/{i}".encode(): b"v" for i in range(64)})
    outsiders = [f"s/out/{i}".encode() for i in range(200)]
    proofs = [(key, state_tree.prove(view, root, key)) for key in outsiders]
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
