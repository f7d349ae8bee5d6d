"""The Python runtime settings of a node process: the garbage collector's.

CPython's cyclic collector starts a young collection after every 700 net new container objects
(allocations minus frees) and a full one, at most every 100 young ones, once the objects that
survived since the last full pass are a quarter of all those it has. A node keeps every tx it
holds from admission to commit (a SignedTx, its decoded body, their lists and dicts: thousands
of objects per block that survive the young collections and then die), so the surviving quarter
came round every block or two, and each full collection walked every tracked object and every
entry of the node's large caches. In one node's pipeline to 10^6 txs (2,000-tx blocks) full
collections took 25 s of 332 s of CPU, 10 % of it (docs/bench.md "The garbage collector").

A node makes little cyclic garbage (its records are trees of tuples, bytes and dicts that
reference counting frees), so the young threshold is raised: collections become rare, and the
cyclic garbage waiting for one stays bounded by that many objects. The objects that exist once
the node's modules are imported never die; `gc.freeze` moves them out of every collection.
"""

from __future__ import annotations

import gc
from typing import Final

# Net new container objects between young collections (CPython's default: 700). 50,000 took
# the collector from 3.6 s to 0.2 s of CPU over 200,000 txs in one node's pipeline (10,000:
# 1.6 s); cyclic garbage waiting for a collection is at most about this many objects.
YOUNG_THRESHOLD: Final = 50_000


def tune_garbage_collector() -> None:
    """Call once in a node process, after its imports and before it starts serving."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
