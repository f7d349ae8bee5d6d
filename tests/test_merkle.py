"""RFC 6962 functions (node/proof/merkle.py) and the LevelDB log (node/storage/merkle_log.py)
against a naive recursive reference written straight from RFC 6962 section 2.1, for random sizes
and indexes; plus the storage costs: O(1) amortized writes per append, O(log n) node reads per
proof or historical root, and a dropped batch leaving the log unchanged."""

from __future__ import annotations

import hashlib

import plyvel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.node.errors import Refused
from kledger.node.proof import merkle
from kledger.node.storage.merkle_log import NODE_KEY, LogCorrupt, MerkleLog, node_key, nodes_from


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [ref_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, leaves[:k], complete), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def _leaves(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") * (i % 3 + 1) for i in range(n)]


def _memory(leaves: list[bytes]) -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for leaf in leaves:
        tree.append(leaf)
    return tree


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300), st.data())
def test_memory_tree_equals_reference(size, data):
    leaves = _leaves(size)
    tree = _memory(leaves)
    old = data.draw(st.integers(1, size))
    index = data.draw(st.integers(0, size - 1))
    assert tree.root() == ref_mth(leaves)
    assert tree.root(old) == ref_mth(leaves[:old])
    path = tree.inclusion_path(index)
    assert path == ref_path(index, leaves)
    assert merkle.verify_inclusion(merkle.leaf_hash(leaves[index]), index, size, path, tree.root())
    proof = tree.consistency_proof(old)
    assert proof == ref_subproof(old, leaves, True)
    assert merkle.verify_consistency(old, size, proof, tree.root(old), tree.root())


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 200), st.data())
def test_any_changed_proof_is_rejected(size, data):
    leaves = _leaves(size)
    tree = _memory(leaves)
    index = data.draw(st.integers(0, size - 1))
    leaf = merkle.leaf_hash(leaves[index])
    path = tree.inclusion_path(index)
    root = tree.root()
    other_index = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
    assert not merkle.verify_inclusion(leaf, other_index, size, path, root)
    # (No "size + 1" probe: an RFC 6962 path can hold for two sizes, e.g. leaf 0 of sizes 3
    # and 4; the size is bound by the signed header, which is why bundles check it.)
    assert not merkle.verify_inclusion(leaf, index, size, [*path, root], root)
    if path:
        position = data.draw(st.integers(0, len(path) - 1))
        bit = data.draw(st.integers(0, 255))
        changed = list(path)
        flipped = bytearray(changed[position])
        flipped[bit // 8] ^= 1 << (bit % 8)
        changed[position] = bytes(flipped)
        assert not merkle.verify_inclusion(leaf, index, size, changed, root)
        assert not merkle.verify_inclusion(leaf, index, size, path[:-1], root)
    old = data.draw(st.integers(1, size - 1))
    proof = tree.consistency_proof(old)
    assert not merkle.verify_consistency(old, size, proof, root, root)
    assert not merkle.verify_consistency(old, size, proof[:-1], tree.root(old), root)
    if old > 1:
        assert not merkle.verify_consistency(old - 1, size, proof, tree.root(old - 1), root)


def test_rejections_name_the_rule():
    tree = _memory(_leaves(8))
    leaf, root = tree.levels[0][2], tree.root()
    assert "not below" in str(merkle.inclusion_problem(leaf, 8, 8, [], root))
    assert "is 1 bytes" in str(merkle.inclusion_problem(leaf, 2, 8, tree.inclusion_path(1), b"x"))
    assert "lead to the root" in str(
        merkle.inclusion_problem(leaf, 2, 8, tree.inclusion_path(1), root)
    )
    assert "has 3" in str(merkle.inclusion_problem(leaf, 2, 8, [root], root))
    assert "size 0" in str(merkle.consistency_problem(0, 8, [], merkle.EMPTY_ROOT, root))
    assert "exceeds" in str(merkle.consistency_problem(8, 4, [], root, tree.root(4)))
    assert "empty proof" in str(merkle.consistency_problem(8, 8, [root], root, root))
    assert "differ" in str(merkle.consistency_problem(8, 8, [], root, tree.root(7)))
    assert merkle.consistency_problem(8, 8, [], root, root) is None


def test_split_point_is_rfc_6962s_not_the_midpoint():
    for n, k in {2: 1, 3: 2, 5: 4, 8: 4, 9: 8, 1000: 512, 2**40: 2**39}.items():
        assert merkle.split_point(n) == k


# ---- the LevelDB log ------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path):
    handle = plyvel.DB(str(tmp_path / "log"), create_if_missing=True)
    yield handle
    handle.close()


def _append(db, log: MerkleLog, leaves: list[bytes]):
    plan = log.plan_append(leaves)
    batch = db.write_batch(sync=True)
    log.write_plan(plan, batch)
    batch.write()
    log.install(plan)
    return plan


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=8), st.data())
def test_leveldb_log_equals_reference_at_every_historical_size(tmp_path_factory, blocks, data):
    path = tmp_path_factory.mktemp("log")
    db = plyvel.DB(str(path), create_if_missing=True)
    try:
        log = MerkleLog(db)
        leaves: list[bytes] = []
        for count in blocks:
            new = _leaves(len(leaves) + count)[len(leaves) :]
            assert log.root_after(new) == (len(leaves) + count, ref_mth(leaves + new))
            _append(db, log, new)
            leaves += new
        reopened = MerkleLog(db)  # state rebuilt from the stored frontier
        size = len(leaves)
        assert reopened.size == size and reopened.root() == ref_mth(leaves)
        if size:
            k = data.draw(st.integers(1, size))
            index = data.draw(st.integers(0, k - 1))
            old = data.draw(st.integers(1, k))
            assert reopened.root(k) == ref_mth(leaves[:k])
            assert reopened.inclusion_proof(index, k) == ref_path(index, leaves[:k])
            assert reopened.consistency_proof(old, k) == ref_subproof(old, leaves[:k], True)
    finally:
        db.close()


def test_append_writes_are_amortized_constant(db):
    log = MerkleLog(db)
    total = 0
    for _ in range(64):
        plan = _append(db, log, _leaves(100))
        total += len(plan.writes)
    # n leaf nodes + (n - popcount(n)) parents + one size record per batch.
    assert total == 6400 + (6400 - bin(6400).count("1")) + 64
    assert total <= 2 * 6400 + 64


def test_every_append_writes_node_keys_above_every_key_written_before(db):
    """Nodes are keyed by the leaf that completes them (store v6), so the log's writes come in
    rising key order: in a LevelDB of their own, files move down the levels unrewritten."""
    log = MerkleLog(db)
    highest = b""
    for count in (1, 2, 3, 5, 8, 13, 100, 1):
        keys = [
            key for key, _ in _append(db, log, _leaves(count)).writes if key.startswith(NODE_KEY)
        ]
        assert keys == sorted(keys) and len(set(keys)) == len(keys) and keys[0] > highest
        assert keys[-1] < nodes_from(log.size) <= min(nodes_from(log.size + 1), nodes_from(1 << 40))
        highest = keys[-1]
    assert node_key(0, 7) < node_key(3, 0) < node_key(0, 8)  # leaf 7 completes [0, 8)


def test_proofs_read_logarithmically_many_nodes(db):
    log = MerkleLog(db)
    size = 5000
    _append(db, log, _leaves(size))
    reads = 0

    def counted(level: int, index: int) -> bytes:
        nonlocal reads
        reads += 1
        return log.node(level, index)

    bound = 2 * (size.bit_length() + 1)
    for tree_size in (size, 4097, 3333, 1025, 17):
        for index in (0, tree_size // 2, tree_size - 1):
            reads = 0
            path = merkle.inclusion_path(index, tree_size, counted)
            assert reads <= bound and len(path) <= tree_size.bit_length()
        reads = 0
        merkle.range_root(0, tree_size, counted)
        assert reads <= tree_size.bit_length()
        reads = 0
        merkle.consistency_proof(tree_size // 3 + 1, tree_size, counted)
        assert reads <= bound


def test_dropped_batch_leaves_the_log_unchanged(db):
    log = MerkleLog(db)
    _append(db, log, _leaves(10))
    root = log.root()
    plan = log.plan_append(_leaves(20)[10:])
    batch = db.write_batch(sync=True)
    log.write_plan(plan, batch)  # never written: a crash right here
    del batch
    reopened = MerkleLog(db)
    assert (reopened.size, reopened.root()) == (10, root)


def test_out_of_range_requests_are_refused(db):
    log = MerkleLog(db)
    _append(db, log, _leaves(10))
    for call in (
        lambda: log.inclusion_proof(10, 10),
        lambda: log.inclusion_proof(0, 11),
        lambda: log.consistency_proof(0, 5),
        lambda: log.consistency_proof(6, 5),
        lambda: log.root(11),
    ):
        with pytest.raises(Refused):
            call()
    assert log.consistency_proof(5, 5) == []


def test_missing_node_is_reported(db):
    log = MerkleLog(db)
    _append(db, log, _leaves(12))
    db.delete(node_key(3, 0))  # the left half of the frontier
    with pytest.raises(LogCorrupt, match=r"level 3, index 0\) is missing"):
        MerkleLog(db)


@pytest.mark.slow
def test_large_leveldb_log_matches_memory_tree(db):
    """Sweep: 50,000 leaves appended in uneven blocks; 3,000 random proofs at random historical
    sizes equal the in-memory tree's and verify."""
    import random

    rng = random.Random(7)
    log, tree = MerkleLog(db), merkle.MemoryTree()
    while tree.size < 50_000:
        block = [rng.randbytes(rng.randrange(1, 64)) for _ in range(rng.randrange(1, 2_000))]
        _append(db, log, block)
        for leaf in block:
            tree.append(leaf)
    log = MerkleLog(db)
    for _ in range(3_000):
        size = rng.randrange(1, tree.size + 1)
        index, old = rng.randrange(size), rng.randrange(1, size + 1)
        assert log.root(size) == tree.root(size)
        path = log.inclusion_proof(index, size)
        assert path == tree.inclusion_path(index, size)
        assert merkle.verify_inclusion(tree.levels[0][index], index, size, path, tree.root(size))
        proof = log.consistency_proof(old, size)
        assert proof == tree.consistency_proof(old, size)
        assert merkle.verify_consistency(old, size, proof, tree.root(old), tree.root(size))
