"""Sparse Merkle tree: roots are order-independent, presence and absence proofs verify at any
committed root (also old ones), and fail after tampering; nodes live in a real LevelDB."""

from __future__ import annotations

import hashlib

import plyvel
from hypothesis import given, settings
from hypothesis import strategies as st

from node import smt
from node.keyspace import DictView


def _apply(view: DictView, changes):
    root, writes = smt.update(view, smt.stored_root(view), changes)
    view.apply(writes)
    return root


def test_empty_tree_and_single_key():
    view = DictView()
    assert smt.stored_root(view) == smt.EMPTY_ROOT
    root = _apply(view, {b"s/a": b"1"})
    value, siblings = smt.prove(view, root, b"s/a")
    assert value == b"1" and siblings == []
    assert smt.verify_proof(root, b"s/a", b"1", [])
    assert not smt.verify_proof(root, b"s/a", b"2", [])
    absent, proof = smt.prove(view, root, b"s/b")
    assert absent is None
    assert smt.verify_proof(root, b"s/b", None, proof)
    assert not smt.verify_proof(root, b"s/a", None, [])


def test_order_and_batching_do_not_change_the_root():
    items = {f"s/k/{i}".encode(): str(i).encode() for i in range(40)}
    one = DictView()
    batch_root = _apply(one, items)
    two = DictView()
    for key in sorted(items, reverse=True):
        _apply(two, {key: items[key]})
    assert smt.stored_root(two) == batch_root
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
        root, writes = smt.update(View(), smt.stored_root(View()), changes)
        with db.write_batch(sync=True) as batch:
            for key, value in writes.items():
                assert value is not None
                batch.put(key, value)
        return root

    old = commit({b"s/work/1": b"v1", b"s/work/2": b"x"})
    new = commit({b"s/work/1": b"v2", b"s/work/2": None})
    assert old != new
    value, siblings = smt.prove(View(), old, b"s/work/1")
    assert value == b"v1"
    assert smt.verify_proof(old, b"s/work/1", b"v1", siblings)
    value, _ = smt.prove(View(), new, b"s/work/2")
    assert value is None
    value, siblings = smt.prove(View(), new, b"s/work/1")
    pairs = siblings
    assert smt.verify_proof(new, b"s/work/1", b"v2", pairs)
    assert not smt.verify_proof(old, b"s/work/1", b"v2", pairs)
    forged = [(0, hashlib.sha256(b"forged").digest()), *pairs]
    assert not smt.verify_proof(new, b"s/work/1", b"v2", forged)
    assert not smt.verify_proof(new, b"s/work/1", b"v2", [(300, bytes(32))])
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
        got, siblings = smt.prove(view, root, key)
        assert got == value
        assert smt.verify_proof(root, key, value, siblings)
    got, siblings = smt.prove(view, root, outsider)
    assert got == entries.get(outsider)
    assert smt.verify_proof(root, outsider, got, siblings)
