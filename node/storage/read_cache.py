"""The latest committed values of recently read keys, in front of the store's live reads (the
tx index for `has_tx`, the registry state for the live view): a node asks the same things
again and again for every tx.

What it saves (docs/bench.md "Values in the leaves (store v6)"): per tx a node asked LevelDB
about 11 times; five were `has_tx` of the same new hash (admission twice, the proposal check,
the committer, the commit's own check) and four were the same few records every signed tx
needs (the signer's member record and org). Each such get of a large store passes the bloom
filters of every level, and a get that passes two files counts against the first towards a
"seek compaction", which LevelDB cannot turn off and which then rewrites that file into the
next level.

Rules kept here:
- Exact, never stale for the latest committed state: a commit updates every cached key it
  writes after its batch is on disk (`committed`), and a value read from LevelDB is cached only
  if no commit was installed while it was read (the generation did not move), so a value read
  before a commit can never be cached after it.
- Only the store's live reads use it; snapshots (queries, proofs) read LevelDB as of their
  height.
- Bounded: the least recently used entry goes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

# Enough for every member and org record of the consortium many times over, and for the txs in
# flight (each cached hash is ≈ 150 bytes with its entry): ≈ 10 MiB at most.
READ_CACHE_ENTRIES: Final = 65_536

Read = Callable[[bytes], bytes | None]


class ReadCache:
    def __init__(self, entries: int = READ_CACHE_ENTRIES) -> None:
        assert entries > 0
        self._entries = entries
        self._values: OrderedDict[bytes, bytes | None] = OrderedDict()
        self._generation = 0
        # Admission (event loop), execution and commit (the commit worker) share one cache.
        self._lock = threading.Lock()

    def get(self, key: bytes, read: Read) -> bytes | None:
        """The latest committed value of `key` (None: absent), from the cache or `read`."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            generation = self._generation
        value = read(key)
        with self._lock:
            if self._generation == generation:
                self._values[key] = value
                if len(self._values) > self._entries:
                    self._values.popitem(last=False)
        return value

    def committed(self, writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """A block's writes (key, new value or None) are on disk: cached keys take their new
        values, and reads in flight are not cached."""
        with self._lock:
            self._generation += 1
            values = self._values
            for key, value in writes:
                if key in values:
                    values[key] = value
