"""Every node's Prometheus exposition text, read once before and once after the load, for the
figures taken from it (cluster/bench/phases.py, cluster/bench/leveldb_levels.py). A node that
does not answer its metrics port gives None; the figures leave it out."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar

from kledger.cluster.layout import NodeAddress

READ_TIMEOUT_S = 5.0
T = TypeVar("T")


def read_text(node: NodeAddress) -> str | None:
    url = f"http://{node.host}:{node.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as reply:
            return str(reply.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def read_all(nodes: Sequence[NodeAddress]) -> dict[str, str | None]:
    return {node.org: read_text(node) for node in nodes}


def read_both(
    before: Mapping[str, T | None], after: Mapping[str, T | None]
) -> Iterator[tuple[T, T]]:
    """(before, after) of each node that answered both times."""
    for org, end in after.items():
        start = before.get(org)
        if start is not None and end is not None:
            yield start, end
