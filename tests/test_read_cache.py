"""The store's read cache (node/storage/read_cache.py): exact for the latest committed state,
whatever the order of reads and commits."""

from __future__ import annotations

from kledger.node.storage.read_cache import ReadCache
from tests.ledger_builders import commit, make_tx, open_store


class CountingReads:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data
        self.reads: list[bytes] = []

    def __call__(self, key: bytes) -> bytes | None:
        self.reads.append(key)
        return self.data.get(key)


def test_a_key_is_read_once_until_a_commit_writes_it():
    cache, source = ReadCache(), CountingReads({b"s/a": b"1"})
    assert [cache.get(b"s/a", source) for _ in range(3)] == [b"1"] * 3
    assert [cache.get(b"s/b", source) for _ in range(3)] == [None] * 3  # absent, cached too
    assert source.reads == [b"s/a", b"s/b"]
    cache.committed([(b"s/a", b"2"), (b"s/b", b"3"), (b"s/c", b"4")])
    assert (cache.get(b"s/a", source), cache.get(b"s/b", source)) == (b"2", b"3")
    cache.committed([(b"s/a", None)])
    assert cache.get(b"s/a", source) is None
    assert source.reads == [b"s/a", b"s/b"]  # every answer since came from the commits
    assert cache.get(b"s/c", source) is None and source.reads[-1] == b"s/c"  # never cached


def test_a_value_read_while_a_commit_lands_is_not_cached():
    """The read saw the store before the commit; the commit's update came before the read's
    insert: caching that value would keep a stale one."""
    cache = ReadCache()
    source = CountingReads({b"s/a": b"old"})

    def read_then_commit(key: bytes) -> bytes | None:
        value = source(key)
        source.data[key] = b"new"
        cache.committed([(key, b"new")])  # not cached yet: nothing to update
        return value

    assert cache.get(b"s/a", read_then_commit) == b"old"
    assert cache.get(b"s/a", source) == b"new"


def test_the_least_recently_used_entry_goes():
    cache, source = ReadCache(entries=2), CountingReads({})
    for key in (b"a", b"b", b"a", b"c"):  # b is the least recently used when c comes
        cache.get(key, source)
    source.reads.clear()
    for key in (b"a", b"c", b"b"):
        cache.get(key, source)
    assert source.reads == [b"b"]


def test_the_store_answers_has_tx_and_state_from_its_cache_exactly(tmp_path):
    store = open_store(tmp_path / "db")
    try:
        txs = [make_tx(i) for i in range(3)]
        assert not any(store.has_tx(tx.tx_hash) for tx in txs)  # cached as absent
        assert store.view.get(b"s/work/1") is None
        commit(store, txs, {b"s/work/1": b"v1"})
        assert all(store.has_tx(tx.tx_hash) for tx in txs)
        assert store.view.get(b"s/work/1") == b"v1"
        commit(store, [make_tx(9)], {b"s/work/1": b"v2"})
        assert store.view.get(b"s/work/1") == b"v2"
        commit(store, [make_tx(10)], {b"s/work/1": None})
        assert store.view.get(b"s/work/1") is None
        store.close()
        store = open_store(tmp_path / "db")
        assert all(store.has_tx(tx.tx_hash) for tx in txs) and store.view.get(b"s/work/1") is None
    finally:
        store.close()
