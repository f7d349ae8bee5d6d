"""`kledger bench-catalog`: load a national-size catalog through the import path and measure
works per second, and how the rate changes from the first to the last 10 % of the load
(issue #11, "Measure"; docs/bench.md "National catalog import").

    kledger bench-catalog --works N [--nodes 4] [--files F] [--seed S] [--json] [--keep DIR]

Phases, in order:
1. write the synthetic catalog (cluster/bench/catalog_data.py: F CWR 2.2 files from F society
   senders, dealt to the orgs, and the RegisterRecording JSON-lines files), timed but outside
   the measured time; measure this process's Ed25519 signing rate on the catalog's own txs
   (the client's share of the import's time);
2. `kledger cluster init` of the nodes' generic orgs ORG1..N (every role) and start them;
3. works: one importer process per org (cluster/bench/catalog_client.py), each importing its
   CWR files one after another through bulk.submit_file over gRPC to its own node, exactly as
   `kledger import works FILE --as ORG` does; the orgs in parallel, as societies send;
4. recordings: the same for the JSON-lines files (`kledger import txs`): each recording is
   registered by the org after the one that imported its work, which confirms the
   work-ISRC link the CWR import asserted;
5. stop the nodes, then read the disk used and count the live state keys (s/ records) in the
   first node's store.

Figures (cluster/bench/catalog_report.py): works/s and txs/s, the works phase's works/s over
its first and last 10 % of works and their ratio, refusals by status, node CPU per tx, disk
bytes per work, live state keys, and the import's profile (time in submit, i.e. SubmitBatch and
the commit wait, per batch; the rest of the importers' time; the signing estimate).

Rules it keeps: every process it starts (nodes, importers) is stopped on every exit path,
Ctrl-C and SIGTERM included; the directory is a temporary one removed at the end unless --keep
names one; nothing binds outside 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from kledger.cluster.bench import catalog_report
from kledger.cluster.bench import probe as bench_probe
from kledger.cluster.bench import report as bench_report
from kledger.cluster.bench.catalog_client import ImportJob, ImportResult, run_import
from kledger.cluster.bench.catalog_data import Catalog, CatalogSpec, default_files, write_catalog
from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.client.import_cli import open_lines
from kledger.cluster.local import launcher
from kledger.cluster.local.gen import ClusterSpec, generic_orgs, init_cluster
from kledger.node.chain.keys import KeyPair, load_key
from kledger.node.chain.tx import TxBody, sign_tx
from kledger.node.registry import bulk
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

CHAIN_ID = "kledger-bench-catalog"
DEFAULT_NODES = 4
DEFAULT_TIMEOUT_S = 24 * 3_600.0
READY_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 0.5
SIGN_SAMPLE_TXS = 2_000  # txs of the catalog signed once to measure the client's signing rate


class BenchError(Exception):
    """The run could not produce its figures; the message says why."""


@dataclass(frozen=True, slots=True)
class Settings:
    works: int
    nodes: int
    files: int
    seed: int
    timeout_s: float


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger bench-catalog",
        description="load a synthetic national catalog through `kledger import` into a fresh "
        "cluster: works/s, first vs last 10 %%, CPU, disk, state keys",
    )
    parser.add_argument("--works", type=int, required=True, help="works in the catalog")
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="cluster size (>= 2)")
    parser.add_argument(
        "--files",
        type=int,
        help="CWR files, one per society sender (default: one per org, or one per 25,000 works)",
    )
    parser.add_argument("--seed", type=int, default=1, help="the catalog generator's seed")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--keep", type=Path, help="create the catalog and cluster here, keep them")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    if not 2 <= args.nodes <= 64:
        raise ValueError(f"--nodes: must be 2..64, got {args.nodes}")
    if args.timeout_s <= 0:
        raise ValueError(f"--timeout-s: must be > 0, got {args.timeout_s}")
    files = args.files if args.files is not None else default_files(args.works, args.nodes)
    settings = Settings(args.works, args.nodes, files, args.seed, args.timeout_s)
    CatalogSpec(settings.works, settings.files, _orgs(settings.nodes), settings.seed)  # checks
    return settings


def _orgs(nodes: int) -> tuple[str, ...]:
    return tuple(org for org, _, _ in generic_orgs(nodes))


def _say(message: str) -> None:
    sys.stderr.write(f"bench-catalog: {message}\n")
    sys.stderr.flush()


def signing_us_per_tx(catalog: Catalog, key: KeyPair) -> float:
    """µs to sign one of the catalog's txs (the first SIGN_SAMPLE_TXS planned from its first
    CWR file), as bulk.submit_file signs them."""
    first = catalog.of_kind("works")[0]
    plan = bulk.plan_file(open_lines(first.path), "works", first.org, first.path.name)
    bodies: list[TxBody] = []
    for unit in plan.units():
        bodies += [TxBody(CHAIN_ID, tx.type, len(bodies), tx.payload) for tx in unit.txs]
        if len(bodies) >= SIGN_SAMPLE_TXS:
            break
    started = time.perf_counter()
    for body in bodies:
        sign_tx(key, body)
    return 1e6 * (time.perf_counter() - started) / max(len(bodies), 1)


class Run:
    """One run: owns the cluster directory, the node processes and the importer processes."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.settings = settings
        self.layout = init_cluster(
            root, ClusterSpec(orgs=generic_orgs(settings.nodes), chain_id=CHAIN_ID)
        )
        self.nodes = self.layout.nodes()
        self.ca_cert = self.layout.ca_cert.read_bytes()
        self._processes: list[BaseProcess] = []
        first = self.nodes[0]
        self._channel = open_channel(
            f"{first.host}:{first.client_port}",
            self.ca_cert,
            ClientCert.member(self.layout, first.org),
        )
        self._stub = ledger_pb2_grpc.LedgerStub(self._channel)  # type: ignore[no-untyped-call]

    def start(self) -> None:
        orgs = [n.org for n in self.nodes]
        for org in orgs:
            launcher.start_node(self.layout, org)
        late = launcher.wait_serving(self.layout, orgs, timeout_s=READY_TIMEOUT_S)
        if late:
            raise BenchError(f"not serving: {late}; logs in {self.layout.root}/nodes/*/node.log")

    def close(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        self._processes.clear()
        self._channel.close()
        launcher.down(self.layout)

    def pids(self) -> dict[str, int | None]:
        return {n.org: launcher.node_pid(self.layout, n.org) for n in self.nodes}

    def tx_log_size(self) -> int | None:
        """The first node's committed txs, or None while it is too busy to answer."""
        try:
            reply = self._stub.GetStatus(ledger_pb2.GetStatusRequest(), timeout=5)
        except grpc.RpcError:
            return None
        return int(reply.tx_log_size)

    def _check_alive(self) -> None:
        gone = [n.org for n in self.nodes if launcher.node_pid(self.layout, n.org) is None]
        if gone:
            logs = ", ".join(str(self.layout.node_dir(org) / "node.log") for org in gone)
            raise BenchError(f"node process exited during the run: {gone}; see {logs}")

    def phase(self, name: str, catalog: Catalog, kind: str, total_txs: int) -> dict[str, Any]:
        """Import every file of `kind`, one importer process per org with files, released
        together; returns the phase's results and the nodes' CPU over it."""
        by_org: dict[str, list[tuple[str, str]]] = {}
        for item in catalog.of_kind(kind):
            by_org.setdefault(item.org, []).append((str(item.path), kind))
        jobs = [
            ImportJob(
                index=index,
                org=node.org,
                target=f"{node.host}:{node.client_port}",
                ca_cert=self.ca_cert,
                client=ClientCert.member(self.layout, node.org),
                key_seed=load_key(self.layout.client_key(node.org)).seed,
                chain_id=CHAIN_ID,
                files=tuple(by_org[node.org]),
            )
            for index, node in enumerate(n for n in self.nodes if n.org in by_org)
        ]
        _say(f"{name}: {len(jobs)} importers, {sum(len(j.files) for j in jobs)} files")
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        results = context.Queue()
        go = context.Event()
        for job in jobs:
            process = context.Process(
                target=run_import, args=(job, ready, go, results), name=f"importer-{job.org}"
            )
            process.start()
            self._processes.append(process)
        connected = 0
        ready_by_s = time.monotonic() + READY_TIMEOUT_S
        while connected < len(jobs):
            try:
                ready.get(timeout=PROGRESS_EVERY_S)
                connected += 1
            except queue.Empty:
                self._check_alive()
                if time.monotonic() > ready_by_s or any(not p.is_alive() for p in self._processes):
                    raise BenchError(f"{name}: importers not ready") from None
        pids = self.pids()
        before_txs = self.tx_log_size() or 0
        cpu_before = {org: bench_probe.cpu_s(pid) if pid else None for org, pid in pids.items()}

        def nodes_cpu_s() -> float:
            return sum(bench_probe.cpu_s(pid) or 0.0 for pid in pids.values() if pid)

        cpu_start_s = nodes_cpu_s()
        ticks: list[tuple[int, float]] = []  # (txs committed, all nodes' CPU s) per tick
        go.set()
        started_s = time.monotonic()
        finished: list[ImportResult] = []
        deadline_s = started_s + self.settings.timeout_s
        while len(finished) < len(jobs):
            try:
                result: ImportResult = results.get(timeout=PROGRESS_EVERY_S)
            except queue.Empty:
                self._check_alive()
                if time.monotonic() > deadline_s:
                    raise BenchError(f"{name}: not done in --timeout-s") from None
                if any(p.exitcode not in (None, 0) for p in self._processes):
                    raise BenchError(f"{name}: an importer process failed") from None
                seen = self.tx_log_size()
                if seen is not None:
                    elapsed_s = time.monotonic() - started_s
                    bench_report.progress(seen - before_txs, total_txs, elapsed_s)
                    ticks.append((seen - before_txs, nodes_cpu_s() - cpu_start_s))
                continue
            if result.error:
                self._check_alive()
                raise BenchError(f"{name}: importer {result.org}: {result.error}")
            finished.append(result)
        ended_s = time.monotonic()
        sys.stderr.write("\n")
        cpu_after = {org: bench_probe.cpu_s(pid) if pid else None for org, pid in pids.items()}
        for started in self._processes:
            started.join(timeout=10)
        self._processes.clear()
        node_cpu_s: dict[str, float | None] = {}
        for org, before in cpu_before.items():
            after = cpu_after[org]
            node_cpu_s[org] = None if before is None or after is None else after - before
        return {
            "results": finished,
            "started_s": started_s,
            "ended_s": ended_s,
            "node_cpu_s": node_cpu_s,
            "cpu_ticks": ticks,
        }

    def disk_bytes(self) -> dict[str, int]:
        return {
            n.org: bench_probe.tree_bytes(self.layout.node_dir(n.org) / "data") for n in self.nodes
        }

    def live_state_keys(self) -> int:
        """s/ records in the first node's store; call once the nodes are stopped (LevelDB
        allows one process a store)."""
        return bench_probe.live_state_keys(self.layout.node_dir(self.nodes[0].org) / "data")


def run(settings: Settings, root: Path) -> dict[str, Any]:
    """One whole run in directory `root`; returns the JSON object."""
    spec = CatalogSpec(settings.works, settings.files, _orgs(settings.nodes), settings.seed)
    _say(f"writing the catalog: {settings.works} works in {settings.files} CWR files")
    started = time.monotonic()
    catalog = write_catalog(root / "catalog", spec)
    generated_s = time.monotonic() - started
    _say(f"catalog written in {generated_s:.1f} s: {catalog.recordings} recordings")
    planned = {
        item.path.name: bulk.dry_run(
            bulk.plan_file(open_lines(item.path), item.kind, item.org, item.path.name)
        )
        for item in catalog.files
    }
    planned_txs = sum(p["planned"] for p in planned.values())
    unplanned = sum(len(p["refused"]) for p in planned.values())
    if unplanned:
        raise BenchError(f"the generated catalog has {unplanned} refusals (a generator bug)")
    sign_us = signing_us_per_tx(catalog, KeyPair.from_seed(b"\x01" * 32))
    bench = Run(root / "cluster", settings)
    try:
        _say(f"starting {settings.nodes} nodes in {bench.layout.root}")
        bench.start()
        works_txs = sum(p["planned"] for p in planned.values() if p["format"].startswith("CWR"))
        works = bench.phase("works", catalog, "works", works_txs)
        recordings = bench.phase("recordings", catalog, "txs", planned_txs - works_txs)
        pids = bench.pids()
        peak_rss = {
            org: bench_probe.peak_rss_bytes(pid) if pid else None for org, pid in pids.items()
        }
    finally:
        bench.close()
    disk = bench.disk_bytes()
    live_keys = bench.live_state_keys()
    return catalog_report.figures(
        settings=settings,
        catalog=catalog,
        generated_s=generated_s,
        planned=planned,
        sign_us_per_tx=sign_us,
        phases={"works": works, "recordings": recordings},
        disk=disk,
        live_state_keys=live_keys,
        peak_rss=peak_rss,
        cores=bench_probe.cores(),
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"kledger bench-catalog: {exc}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _interrupt)
    temporary = None if args.keep else tempfile.mkdtemp(prefix="kledger-bench-catalog-")
    root = args.keep if args.keep else Path(temporary or "")
    try:
        report = run(settings, root)
    except BenchError as exc:
        print(f"kledger bench-catalog: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # init_cluster refuses a directory that already holds a cluster
        print(f"kledger bench-catalog: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        message = "interrupted; every process it started is stopped"
        print(f"\nkledger bench-catalog: {message}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else catalog_report.table(report))
    return 0
