"""`kledger bench`: a fresh local cluster measured against this machine's physical limit.

    kledger bench [--nodes N] [--txs M] [--clients C] [--json] [--keep DIR]

Phases, in order: measure this core's Ed25519 verify rate; init and start a cluster of N generic
orgs (ORG1..N, every role) on 127.0.0.1 with ephemeral ports; pre-sign M realistic registry txs
(cluster/bench_workload.py) before the clock starts; C client processes (cluster/bench_client.py)
submit them over SubmitStream, batches round-robin to all nodes, until every accepted tx is seen
committed; then inclusion proofs from one client, then the catch-up of a node killed and
restarted behind. Figures: cluster/bench_report.py.

Rules it keeps: every process it starts (nodes, clients) is stopped on every exit path,
including Ctrl-C, SIGTERM and errors; the cluster directory is a temporary one removed at the end
unless --keep names a directory; nothing binds outside 127.0.0.1.
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
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

from cluster import bench_probe, bench_report, launcher
from cluster.bench_client import Batch, ClientJob, ClientResult, run_client
from cluster.bench_workload import TXS_PER_SONG, SignedSong, sign_songs
from cluster.connect import open_channel
from cluster.gen import ClusterSpec, generic_orgs, init_cluster
from node.keys import load_key

CHAIN_ID = "kledger-bench"
DEFAULT_NODES = 4
DEFAULT_TXS = 20_000
DEFAULT_CLIENTS = 2
DEFAULT_BATCH_TXS = 120  # a multiple of TXS_PER_SONG: a song never straddles two batches
DEFAULT_WINDOW_TXS = 1_200
DEFAULT_PROOFS = 1_000
DEFAULT_CATCHUP_TXS = 6_000
DEFAULT_TIMEOUT_S = 900.0
MAX_TXS = 10_000_000
MAX_CLIENTS = 64
RECEIPTS_SAMPLED = 300
PROGRESS_EVERY_S = 0.5
READY_TIMEOUT_S = 120.0
POLL_S = 0.05


class BenchError(Exception):
    """The run could not produce its figures (a node or client failed); the message says why."""


@dataclass(frozen=True, slots=True)
class Settings:
    nodes: int
    txs: int
    clients: int
    batch_txs: int
    window_txs: int
    proofs: int
    catchup_txs: int
    timeout_s: float
    proposal_max_txs: int | None = None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger bench", description="benchmark a fresh local cluster"
    )
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="cluster size")
    parser.add_argument("--txs", type=int, default=DEFAULT_TXS, help="txs in the measured load")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="client processes")
    parser.add_argument("--batch-txs", type=int, default=DEFAULT_BATCH_TXS, help="txs per batch")
    parser.add_argument(
        "--window-txs",
        type=int,
        default=DEFAULT_WINDOW_TXS,
        help="uncommitted txs each client keeps in flight at most",
    )
    parser.add_argument(
        "--proofs", type=int, default=DEFAULT_PROOFS, help="inclusion proofs to fetch (0: skip)"
    )
    parser.add_argument(
        "--catchup-txs",
        type=int,
        default=DEFAULT_CATCHUP_TXS,
        help="txs committed while one node is down (0: skip the catch-up phase)",
    )
    parser.add_argument(
        "--proposal-max-txs",
        type=int,
        help="set batching.proposal_max_txs in every node.json (default: the node's default)",
    )
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--keep", type=Path, help="create the cluster here and keep it")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    if not 1 <= args.nodes <= 64:
        raise ValueError(f"--nodes: must be 1..64, got {args.nodes}")
    if not TXS_PER_SONG <= args.txs <= MAX_TXS:
        raise ValueError(f"--txs: must be {TXS_PER_SONG}..{MAX_TXS}, got {args.txs}")
    if not 1 <= args.clients <= MAX_CLIENTS:
        raise ValueError(f"--clients: must be 1..{MAX_CLIENTS}, got {args.clients}")
    if args.batch_txs < TXS_PER_SONG or args.batch_txs % TXS_PER_SONG:
        raise ValueError(f"--batch-txs: must be a positive multiple of {TXS_PER_SONG}")
    if args.window_txs < args.batch_txs:
        raise ValueError("--window-txs: must be at least --batch-txs")
    if args.proofs < 0 or args.catchup_txs < 0 or args.timeout_s <= 0:
        raise ValueError("--proofs, --catchup-txs must be >= 0 and --timeout-s > 0")
    if args.proposal_max_txs is not None and args.proposal_max_txs < 1:
        raise ValueError("--proposal-max-txs: must be >= 1")
    return Settings(
        proposal_max_txs=args.proposal_max_txs,
        nodes=args.nodes,
        txs=args.txs - args.txs % TXS_PER_SONG,
        clients=args.clients,
        batch_txs=args.batch_txs,
        window_txs=args.window_txs,
        proofs=args.proofs,
        catchup_txs=args.catchup_txs - args.catchup_txs % TXS_PER_SONG,
        timeout_s=args.timeout_s,
    )


def _say(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


class Bench:
    """One run: owns the cluster directory, the node processes and the client processes."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.settings = settings
        self.layout = init_cluster(
            root, ClusterSpec(orgs=generic_orgs(settings.nodes), chain_id=CHAIN_ID)
        )
        self.nodes = self.layout.nodes()
        if settings.proposal_max_txs is not None:
            for node in self.nodes:
                path = self.layout.node_config(node.org)
                config = json.loads(path.read_text())
                config["batching"]["proposal_max_txs"] = settings.proposal_max_txs
                path.write_text(json.dumps(config, indent=2))
        self.ca_cert = self.layout.ca_cert.read_bytes()
        self._channels: dict[str, grpc.Channel] = {}
        self._clients: list[BaseProcess] = []

    # -- plumbing -------------------------------------------------------------------------------

    def stub(self, org: str) -> ledger_pb2_grpc.LedgerStub:
        if org not in self._channels:
            node = next(n for n in self.nodes if n.org == org)
            self._channels[org] = open_channel(f"{node.host}:{node.client_port}", self.ca_cert)
        return ledger_pb2_grpc.LedgerStub(self._channels[org])  # type: ignore[no-untyped-call]

    def status(self, org: str) -> ledger_pb2.NodeStatus:
        reply: ledger_pb2.NodeStatus = self.stub(org).GetStatus(
            ledger_pb2.GetStatusRequest(), timeout=5
        )
        return reply

    def try_status(self, org: str) -> ledger_pb2.NodeStatus | None:
        """GetStatus, or None while the node is too busy (applying a large block) to answer."""
        try:
            return self.status(org)
        except grpc.RpcError:
            return None

    def close(self) -> None:
        for process in self._clients:
            if process.is_alive():
                process.terminate()
        for process in self._clients:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        self._clients.clear()
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        launcher.down(self.layout)

    def pids(self) -> dict[str, int | None]:
        return {n.org: launcher.node_pid(self.layout, n.org) for n in self.nodes}

    # -- phases ---------------------------------------------------------------------------------

    def start(self) -> None:
        late = launcher.up(self.layout, timeout_s=READY_TIMEOUT_S)
        if late:
            raise BenchError(f"not serving: {late}; logs in {self.layout.root}/nodes/*/node.log")

    def sign(self, first_song: int, songs: int) -> list[SignedSong]:
        keys = {n.org: load_key(self.layout.client_key(n.org)) for n in self.nodes}
        return sign_songs(CHAIN_ID, keys, first_song, songs)

    def _jobs(self, songs: list[SignedSong], from_height: int) -> list[ClientJob]:
        s = self.settings
        per_batch = s.batch_txs // TXS_PER_SONG
        targets = tuple(f"{n.host}:{n.client_port}" for n in self.nodes)
        batches: list[list[Batch]] = [[] for _ in range(s.clients)]
        for number, first in enumerate(range(0, len(songs), per_batch)):
            chunk = songs[first : first + per_batch]
            batch = Batch(
                node=number % len(self.nodes),
                encodings=tuple(e for song in chunk for e in song.encodings),
                tx_hashes=tuple(h for song in chunk for h in song.tx_hashes),
            )
            batches[number % s.clients].append(batch)
        return [
            ClientJob(
                index=i,
                targets=targets,
                ca_cert=self.ca_cert,
                batches=tuple(batches[i]),
                watch_node=i % len(self.nodes),
                from_height=from_height,
                window_txs=s.window_txs,
                timeout_s=s.timeout_s,
            )
            for i in range(s.clients)
        ]

    def load(self, songs: list[SignedSong]) -> dict[str, Any]:
        """The measured phase: clients submit everything; returns the throughput figures."""
        s = self.settings
        first = self.nodes[0].org
        before = self.status(first)
        jobs = self._jobs(songs, before.height + 1)
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        results = context.Queue()
        go = context.Event()
        for job in jobs:
            process = context.Process(
                target=run_client, args=(job, ready, go, results), name=f"bench-client-{job.index}"
            )
            process.start()
            self._clients.append(process)
        for _ in jobs:
            ready.get(timeout=READY_TIMEOUT_S)
        pids = self.pids()
        cpu_before = {org: bench_probe.cpu_s(pid) if pid else None for org, pid in pids.items()}
        go.set()
        start_s = time.monotonic()
        finished: list[ClientResult] = []
        last_progress_s = 0.0
        while len(finished) < len(jobs):
            try:
                finished.append(results.get(timeout=PROGRESS_EVERY_S))
                continue
            except queue.Empty:  # time to draw the bar and check the clients
                pass
            now = time.monotonic()
            if now - last_progress_s >= PROGRESS_EVERY_S:
                last_progress_s = now
                seen = self.try_status(first)
                if seen is not None:  # a node too busy to answer only delays the bar
                    bench_report.progress(
                        seen.tx_log_size - before.tx_log_size, s.txs, now - start_s
                    )
            dead = [p.name for p in self._clients if not p.is_alive() and p.exitcode]
            if dead:
                raise BenchError(f"client process failed: {dead}")
        cpu_after = {org: bench_probe.cpu_s(pid) if pid else None for org, pid in pids.items()}
        bench_report.progress(
            sum(r.committed_txs for r in finished), s.txs, time.monotonic() - start_s
        )
        sys.stderr.write("\n")
        errors = [f"client {r.index}: {r.error}" for r in finished if r.error]
        if errors:
            raise BenchError("; ".join(errors))
        for client in self._clients:
            client.join(timeout=10)
        self._clients.clear()
        committed = sum(r.committed_txs for r in finished)
        first_submit_s = min(r.first_submit_s for r in finished)
        last_commit_s = max(r.last_commit_s for r in finished)
        elapsed_s = max(last_commit_s - first_submit_s, 1e-9)
        latencies = [x for r in finished for x in r.latencies_s]
        refused: dict[str, int] = {}
        for r in finished:
            for status, count in r.refused.items():
                refused[status] = refused.get(status, 0) + count
        per_node: list[dict[str, Any]] = []
        for org, pid in pids.items():
            before_s, after_s = cpu_before[org], cpu_after[org]
            used_s = None if before_s is None or after_s is None else after_s - before_s
            per_node.append(
                {
                    "org": org,
                    "pid": pid,
                    "cpu_s": used_s,
                    "cpu_ms_per_tx": None if used_s is None else 1000 * used_s / max(committed, 1),
                    "peak_rss_bytes": bench_probe.peak_rss_bytes(pid) if pid else None,
                    "view_changes": _view_changes(self.try_status(org)),
                }
            )
        node_cpu = [n["cpu_s"] for n in per_node if n["cpu_s"] is not None]
        return {
            "committed_txs": committed,
            "elapsed_s": round(elapsed_s, 3),
            "committed_tx_per_s": round(committed / elapsed_s, 1),
            "latency_ms": bench_report.latency_ms(latencies),
            "refused": refused,
            "retries": sum(r.retries for r in finished),
            "client_cpu_s": round(sum(r.cpu_s for r in finished), 3),
            "node_cpu_ms_per_tx": 1000 * sum(node_cpu) / max(committed, 1),
            "per_node": per_node,
            "tx_hashes": [h for song in songs for h in song.tx_hashes],
        }

    def receipts_ok(self, tx_hashes: list[bytes]) -> tuple[int, int]:
        """(sampled, OK) over an even sample of committed txs' receipts."""
        step = max(1, len(tx_hashes) // RECEIPTS_SAMPLED)
        sample = tx_hashes[::step][:RECEIPTS_SAMPLED]
        stub = self.stub(self.nodes[0].org)
        ok = 0
        for tx_hash in sample:
            reply = stub.GetTx(ledger_pb2.GetTxRequest(tx_hash=tx_hash), timeout=10)
            ok += reply.receipt.status == "OK"
        return len(sample), ok

    def proofs(self, tx_hashes: list[bytes]) -> dict[str, Any] | None:
        """GetInclusionProof for up to `proofs` committed txs, one at a time from one client."""
        count = min(self.settings.proofs, len(tx_hashes))
        if count == 0:
            return None
        step = max(1, len(tx_hashes) // count)
        sample = tx_hashes[::step][:count]
        stub = self.stub(self.nodes[0].org)
        deadline = time.monotonic() + 30
        while True:  # the last block's txs are covered once a later header is certified
            try:
                stub.GetInclusionProof(
                    ledger_pb2.GetInclusionProofRequest(tx_hash=sample[-1]), timeout=5
                )
                break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                    raise
                time.sleep(0.1)
        latencies: list[float] = []
        start = time.perf_counter()
        for tx_hash in sample:
            sent = time.perf_counter()
            reply = stub.GetInclusionProof(
                ledger_pb2.GetInclusionProofRequest(tx_hash=tx_hash), timeout=10
            )
            latencies.append(time.perf_counter() - sent)
            assert reply.leaf, "a proof carries its leaf"
        elapsed = time.perf_counter() - start
        return {
            "count": count,
            "tree_size": int(reply.tree_size),
            "per_s": round(count / elapsed, 1),
            "latency_ms": bench_report.latency_ms(latencies),
        }

    def catchup(self, songs: list[SignedSong]) -> dict[str, Any] | None:
        """Kill the last node, commit `songs` on the others, restart it, time its catch-up."""
        if not songs or len(self.nodes) < 4:
            return None  # with n < 4 no node can be down and the rest still commit
        behind, live = self.nodes[-1].org, self.nodes[0].org
        start_status = self.status(behind)
        launcher.kill_node(self.layout, behind)
        dropped = self._channels.pop(behind, None)
        if dropped is not None:
            dropped.close()
        hashes = [h for song in songs for h in song.tx_hashes]
        per_batch = self.settings.batch_txs // TXS_PER_SONG
        stub = self.stub(live)
        for first in range(0, len(songs), per_batch):
            chunk = songs[first : first + per_batch]
            request = ledger_pb2.SubmitBatchRequest(txs=[e for s in chunk for e in s.encodings])
            for result in stub.SubmitBatch(request, timeout=30).results:
                if result.status != "OK":
                    raise BenchError(f"catch-up load refused: {result.status} {result.message}")
        stub.WaitForCommit(
            ledger_pb2.WaitForCommitRequest(tx_hash=hashes[-1], timeout_ms=300_000), timeout=310
        )
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            target = self.try_status(live)
            if target is not None and target.tx_log_size >= start_status.tx_log_size + len(hashes):
                break
            if time.monotonic() > deadline:
                raise BenchError("catch-up load did not commit in time")
            time.sleep(POLL_S)
        started_s = time.monotonic()
        launcher.start_node(self.layout, behind)
        if launcher.wait_serving(self.layout, [behind], timeout_s=READY_TIMEOUT_S):
            raise BenchError(f"{behind} did not serve again after its restart")
        serving_s = time.monotonic()
        while True:
            status = self.try_status(behind)
            if status is not None and status.height >= target.height:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{behind} did not catch up in time")
            time.sleep(POLL_S)
        done_s = time.monotonic()
        blocks = target.height - start_status.height
        txs = target.tx_log_size - start_status.tx_log_size
        elapsed_s = max(done_s - started_s, 1e-9)
        return {
            "node": behind,
            "behind_blocks": blocks,
            "behind_txs": txs,
            "restart_to_serving_s": round(serving_s - started_s, 3),
            "restart_to_caught_up_s": round(elapsed_s, 3),
            "blocks_per_s": round(blocks / elapsed_s, 1),
            "tx_per_s": round(txs / elapsed_s, 1),
        }

    def disk(self) -> dict[str, int]:
        return {
            n.org: bench_probe.tree_bytes(self.layout.node_dir(n.org) / "data") for n in self.nodes
        }


def _view_changes(status: ledger_pb2.NodeStatus | None) -> int | None:
    """Rounds the node entered by a timeout since it started (None: it did not answer)."""
    return None if status is None else int(status.view_changes)


def run(settings: Settings, root: Path) -> dict[str, Any]:
    """One whole run in cluster directory `root`; returns the JSON object."""
    _say("measuring this core's Ed25519 verify rate")
    verify_rate = bench_probe.verify_per_s()
    cores = bench_probe.cores()
    bench = Bench(root, settings)
    try:
        _say(f"starting {settings.nodes} nodes in {root}")
        bench.start()
        songs = settings.txs // TXS_PER_SONG
        _say(f"signing {settings.txs} + {settings.catchup_txs} txs")
        load_songs = bench.sign(0, songs)
        catchup_songs = bench.sign(songs, settings.catchup_txs // TXS_PER_SONG)
        _say(f"submitting from {settings.clients} client processes")
        load = bench.load(load_songs)
        tx_hashes = load.pop("tx_hashes")
        _say(
            f"load: {load['committed_txs']} txs committed in {load['elapsed_s']} s = "
            f"{load['committed_tx_per_s']} tx/s; latency ms {load['latency_ms']}"
        )
        sampled, ok = bench.receipts_ok(tx_hashes)
        _say("fetching inclusion proofs")
        proofs = bench.proofs(tx_hashes)
        disk = bench.disk()
        _say("catch-up: one node killed, load committed without it, node restarted")
        catchup = bench.catchup(catchup_songs)
    finally:
        bench.close()
    limit = bench_report.limit_tx_per_s(cores, verify_rate, settings.nodes)
    if catchup is not None:
        catchup["ratio_to_commit_rate"] = round(
            catchup["tx_per_s"] / max(load["committed_tx_per_s"], 1e-9), 2
        )
    for node in load["per_node"]:
        node["disk_bytes"] = disk.get(node["org"])
    committed = max(load["committed_txs"], 1)
    return {
        "nodes": settings.nodes,
        "txs": settings.txs,
        "clients": settings.clients,
        "batch_txs": settings.batch_txs,
        "window_txs": settings.window_txs,
        "proposal_max_txs": settings.proposal_max_txs,
        **{k: v for k, v in load.items() if k != "per_node"},
        "verify_per_s_per_core": round(verify_rate, 1),
        "cores": cores,
        "limit_tx_per_s": round(limit, 1),
        "ratio_to_limit": round(load["committed_tx_per_s"] / limit, 4),
        "receipts_sampled": sampled,
        "ok_fraction_sampled": round(ok / max(sampled, 1), 4),
        "disk_bytes_per_tx": round(sum(disk.values()) / len(disk) / committed, 1),
        "proofs": proofs,
        "catchup": catchup,
        "per_node": load["per_node"],
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"kledger bench: {exc}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _interrupt)
    temporary = None if args.keep else tempfile.mkdtemp(prefix="kledger-bench-")
    root = args.keep if args.keep else Path(temporary or "")
    try:
        report = run(settings, root)
    except BenchError as exc:
        print(f"kledger bench: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # init_cluster refuses a directory that already holds a cluster
        print(f"kledger bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nkledger bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(bench_report.table(report))
    return 0
