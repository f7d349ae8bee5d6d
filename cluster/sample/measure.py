"""Measure the registry on this machine: sparse Merkle tree updates and proofs, block execution,
loading the whole sample catalog, and a distribution over its usage report. Prints figures;
never asserts on time.

    python -m kledger.cluster.sample.measure
    python -m kledger.cluster.sample.measure --cwr-works 100000   # a big CWR file, imported
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

from kledger.node.chain.genesis import BlockLimits, Genesis, OrgSpec
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.receipt import TxResult
from kledger.node.chain.tx import TxBody, TxLimits, admit_tx, sign_tx
from kledger.node.registry import BlockContext, Registry, bulk
from kledger.node.storage import state_tree
from kledger.node.storage.keyspace import DictView

SAMPLE = Path(__file__).resolve().parent
ORGS = {
    "KOMCA": ("AUTHOR_CMO", "REPORTER"),
    "KOSCAP": ("AUTHOR_CMO", "REPORTER"),
    "RIAK": ("PRODUCER_CMO", "ID_AGENCY", "REPORTER"),
    "KEPA": ("PRODUCER_ASSOC",),
    "FKMP": ("PERFORMER_CMO", "REPORTER"),
    "KMCA": ("ID_AGENCY", "REPORTER"),
}
LOAD_ORDER = [
    ("KOMCA", "works", "CW260001301_118.V22"), ("KOSCAP", "works", "CW260001WR0_000.V22"),
    ("KOMCA", "txs", "komca-ai.jsonl"), ("FKMP", "txs", "fkmp-parties.jsonl"),
    ("RIAK", "txs", "riak-recordings.jsonl"), ("KOMCA", "txs", "komca-links.jsonl"),
    ("KMCA", "txs", "kmca-links.jsonl"), ("FKMP", "txs", "fkmp-rights.jsonl"),
    ("KOSCAP", "txs", "koscap-overclaim.jsonl"),
    ("KMCA", "usage", "DSR_KMCA_MELON_Subscription_2026-01_KR_1of1_20260205T090000.tsv"),
]  # fmt: skip


def key(label: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(b"kledger-measure/" + label.encode()).digest())


def genesis() -> Genesis:
    orgs = tuple(
        OrgSpec(org, org, roles, key(f"{org}/validator").public_key, key(f"{org}/admin").public_key, (key(org).public_key,))  # noqa: E501
        for org, roles in sorted(ORGS.items())
    )  # fmt: skip
    return Genesis("kledger-measure", 1_767_225_600_000, orgs, TxLimits(), BlockLimits())


class Node:
    def __init__(self) -> None:
        self.genesis = genesis()
        self.registry = Registry(self.genesis)
        self.view = DictView()
        self.view.apply(self.registry.genesis_writes())
        self.height = 0

    def submit(self, encodings: list[bytes]) -> list[TxResult]:
        txs = [admit_tx(data, self.genesis.chain_id) for data in encodings]
        self.height += 1
        ctx = BlockContext(
            self.genesis.chain_id, 0, self.height, 1_767_225_600_000 + self.height * 1000
        )
        outcome = self.registry.execute_block(self.view, txs, ctx)
        self.view.apply(outcome.writes)
        return list(outcome.results)


def _ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.0f} ms"


def main() -> None:
    view = DictView()
    changes: dict[bytes, bytes | None] = {f"s/k/{i}".encode(): b"v" * 40 for i in range(1000)}
    start = time.perf_counter()
    _, writes = state_tree.update(view, 1, changes)
    print(f"SMT: 1000 new keys in one update: {_ms(start)}, {len(writes)} node writes")
    view.apply(writes)
    start = time.perf_counter()
    for i in range(100):
        state_tree.update(view, 2, {f"s/k/{i}".encode(): b"w"})
    print(f"SMT: one-key update in a 1000-key tree: {(time.perf_counter() - start) * 10:.2f} ms")
    start = time.perf_counter()
    for i in range(1000):
        state_tree.prove(view, 1, f"s/k/{i}".encode())
    print(f"SMT: proof: {(time.perf_counter() - start):.3f} ms each")
    node = Node()
    start = time.perf_counter()
    nonce = 1
    for org, kind, name in LOAD_ORDER:
        path = SAMPLE / name

        def lines(path: Path = path) -> list[bytes]:
            return path.read_bytes().splitlines(keepends=True)

        plan = bulk.plan_file(lines, kind, org, name)
        summary = bulk.submit_file(
            plan, key(org), node.genesis.chain_id, node.submit, first_nonce=nonce
        )
        nonce += 100_000
        print(
            f"  {name}: accepted {summary.accepted}, refused {len(summary.refused)}, not sent {len(summary.not_sent)}"  # noqa: E501
        )
    state_keys = sum(1 for k in node.view.data if k.startswith(b"s/"))
    print(
        f"sample catalog: {node.height} blocks in {_ms(start)}; {state_keys} state keys, {len(node.view.data)} keys in all"  # noqa: E501
    )
    body = TxBody(
        node.genesis.chain_id,
        "RunDistribution",
        nonce,
        {
            "distribution_id": "KR-2026-01",
            "period": "2026-01",
            "territory": "KR",
            "currency": "KRW",
        },
    )
    start = time.perf_counter()
    [result] = node.submit([sign_tx(key("KOMCA"), body).encoding])
    print(f"RunDistribution over the sample usage: {_ms(start)} -> {result}")


def measure_cwr(works: int) -> None:
    """Write a CWR 2.2 file of `works` works (cluster/sample/big.py), plan it (the dry run),
    then sign, admit and execute every tx in an in-process registry: works per second and the
    process's peak resident memory, which stays flat as files grow (the import reads a file
    twice, unit by unit; the in-process registry's state is the rest)."""
    import resource
    import sys
    import tempfile

    from kledger.cluster.sample.big import write

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "BIG.V22"
        write(path, works)

        def lines() -> Iterator[bytes]:
            with path.open("rb") as file:
                yield from file

        start = time.perf_counter()
        report = bulk.dry_run(bulk.plan_file(lines, "works", "KOMCA", path.name))
        planned = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(
            f"CWR {works} works ({path.stat().st_size // 1_000_000} MB): dry run {planned:.1f} s, "
            f"{works / planned:,.0f} works/s, {report['planned']} txs planned, "
            f"{len(report['refused'])} refused; peak RSS {peak} MiB"
        )
        node = Node()
        start = time.perf_counter()
        summary = bulk.submit_file(
            bulk.plan_file(lines, "works", "KOMCA", path.name), key("KOMCA"),
            node.genesis.chain_id, node.submit, first_nonce=1, progress=sys.stderr,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        print(
            f"imported (signed, admitted, executed in-process): {elapsed:.1f} s, "
            f"{works / elapsed:,.0f} works/s, {summary.accepted / elapsed:,.0f} txs/s, "
            f"accepted {summary.accepted}, refused {len(summary.refused)}; peak RSS "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB"
        )


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 2 and sys.argv[1] == "--cwr-works":
        measure_cwr(int(sys.argv[2]))
    else:
        main()
