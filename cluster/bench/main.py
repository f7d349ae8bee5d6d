"""`kledger bench`: a fresh local cluster measured against this machine's physical limit.

    kledger bench [--nodes N] [--txs M] [--clients C] [--preload-txs P] [--soak-s S]
                  [--json] [--keep DIR]

Phases, in order: measure this core's Ed25519 verify rate; init a cluster of N generic orgs
(ORG1..N, every role) on 127.0.0.1 with ephemeral ports; optionally build a ledger of P
committed txs for every node before they start (cluster/bench/preload.py), one node's copy K txs
older, and time that node's catch-up when the cluster starts; start the nodes; pre-sign M
realistic registry txs (cluster/bench/workload.py) before the clock starts, or with --soak-s let
the clients sign as they go for S seconds while node memory is sampled; C client processes
(cluster/bench/client.py) submit them over SubmitStream, batches round-robin to all nodes,
until every accepted tx is seen committed; then inclusion proofs spread over the whole ledger
from a proof client process (cluster/bench/proofs.py); then, without a preloaded older copy,
the catch-up of a node killed and restarted K txs behind. Figures: cluster/bench/report.py.

Rules it keeps: every process it starts (nodes, clients, the proof client) is stopped on every
exit path, including Ctrl-C, SIGTERM and errors; the cluster directory is a temporary one
removed at the end unless --keep names a directory; nothing binds outside 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue as ProcessQueue
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from kledger.cluster.bench import etcd as bench_etcd
from kledger.cluster.bench import leveldb_levels as bench_leveldb
from kledger.cluster.bench import node_metrics as bench_metrics
from kledger.cluster.bench import phases as bench_phases
from kledger.cluster.bench import probe as bench_probe
from kledger.cluster.bench import report as bench_report
from kledger.cluster.bench.client import Batch, ClientJob, ClientResult, SoakWork, run_client
from kledger.cluster.bench.preload import (
    BehindCopy,
    PreloadFailed,
    PreloadPlan,
    PreloadResult,
    block_limits,
    preload,
)
from kledger.cluster.bench.proofs import ProofJob, ProofResult, run_proof_client
from kledger.cluster.bench.workload import (
    MAX_SONGS,
    TXS_PER_SONG,
    SignedSong,
    isrc_of,
    sign_songs,
)
from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.layout import NodeAddress
from kledger.cluster.local import launcher
from kledger.cluster.local.gen import ClusterSpec, generic_orgs, init_cluster
from kledger.node.chain.keys import load_key
from kledger.node.registry.state import recording_key
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

CHAIN_ID = "kledger-bench"
DEFAULT_NODES = 4
DEFAULT_TXS = 20_000
DEFAULT_CLIENTS = 2
DEFAULT_BATCH_TXS = 120  # a multiple of TXS_PER_SONG: a song never straddles two batches
DEFAULT_WINDOW_TXS = 1_200
DEFAULT_PROOFS = 1_000  # inclusion proofs, and as many state proofs
ABSENT_KEY_EVERY = 10  # state proofs: one key in ten is never registered
DEFAULT_CATCHUP_TXS = 6_000
DEFAULT_TIMEOUT_S = 900.0
MAX_TXS = 10_000_000
MAX_PRELOAD_TXS = 100_000_000
MAX_SOAK_S = 24 * 3_600.0
MAX_CLIENTS = 64
RECEIPTS_SAMPLED = 300
PROGRESS_EVERY_S = 0.5
RSS_EVERY_S = 5.0  # soak: each node's resident memory is read this often
SOAK_WINDOW_S = 30.0  # soak: committed tx/s is reported per window of this length
READY_TIMEOUT_S = 120.0
POLL_S = 0.05
MIN_NODES_FOR_CATCHUP = 4  # with fewer, no node can be down while the rest commit
# Proofs are timed on a settled cluster: after a load, LevelDB compacts what it was given for
# seconds, and a proof's p99 would measure that backlog rather than serving a proof. Settled =
# all nodes together below SETTLED_CORES of CPU over one SETTLE_SAMPLE_S (an idle cluster still
# commits an empty block every few hundred ms); never waiting more than SETTLE_MAX_S.
SETTLED_CORES = 0.3
SETTLE_SAMPLE_S = 1.0
SETTLE_MAX_S = 120.0


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
    preload_txs: int = 0
    soak_s: float = 0.0
    rate_tx_per_s: float = 0.0  # offered load, all clients together (0: as fast as it goes)
    # Per-host capacity (issue 12 point 5): during the load the first node runs alone on the
    # first core, every other node and client on the rest.
    own_core: bool = False

    @property
    def catchup_from_preload(self) -> bool:
        """Put the catch-up node behind by giving it an older copy of the preloaded ledger
        (cheap) instead of killing it while the cluster commits the catch-up txs (slow)."""
        return self.nodes >= MIN_NODES_FOR_CATCHUP and 0 < self.catchup_txs <= self.preload_txs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger bench", description="benchmark a fresh local cluster"
    )
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="cluster size")
    parser.add_argument(
        "--txs", type=int, default=DEFAULT_TXS, help="txs in the measured load (not with --soak-s)"
    )
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
        help="txs the catch-up node is behind (0: skip the catch-up phase)",
    )
    parser.add_argument(
        "--preload-txs",
        type=int,
        default=0,
        help="build a ledger of this many committed txs before the nodes start",
    )
    parser.add_argument(
        "--soak-s",
        type=float,
        default=0.0,
        help="submit at full rate for this many seconds instead of --txs, sampling node RSS",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offer this many tx/s in all (paced, open loop) instead of as fast as the window "
        "allows: the latency at a given load, e.g. half the top rate",
    )
    parser.add_argument(
        "--own-core",
        action="store_true",
        help="run the first node alone on the first core during the load (the others and the "
        "clients on the rest): what one node sustains with a host to itself",
    )
    parser.add_argument(
        "--proposal-max-txs",
        type=int,
        help="set batching.proposal_max_txs in every node.json (default: the node's default)",
    )
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--keep", type=Path, help="create the cluster here and keep it")
    parser.add_argument(
        "--etcd",
        action="store_true",
        help="then load a 3-member etcd with as many puts from as many clients (bench-etcd)",
    )
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
    if not 0 <= args.preload_txs <= MAX_PRELOAD_TXS:
        raise ValueError(f"--preload-txs: must be 0..{MAX_PRELOAD_TXS}, got {args.preload_txs}")
    if not 0 <= args.soak_s <= MAX_SOAK_S:
        raise ValueError(f"--soak-s: must be 0..{MAX_SOAK_S:.0f}, got {args.soak_s}")
    if args.rate < 0:
        raise ValueError(f"--rate: must be >= 0 tx/s, got {args.rate}")
    return Settings(
        rate_tx_per_s=args.rate,
        own_core=args.own_core,
        proposal_max_txs=args.proposal_max_txs,
        nodes=args.nodes,
        txs=args.txs - args.txs % TXS_PER_SONG,
        clients=args.clients,
        batch_txs=args.batch_txs,
        window_txs=args.window_txs,
        proofs=args.proofs,
        catchup_txs=args.catchup_txs - args.catchup_txs % TXS_PER_SONG,
        timeout_s=args.timeout_s,
        preload_txs=args.preload_txs - args.preload_txs % TXS_PER_SONG,
        soak_s=args.soak_s,
    )


def _say(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def spread(items: Sequence[bytes], count: int) -> list[bytes]:
    """`count` items evenly spread over `items`, in order (all of them if fewer)."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def proof_sample(
    preloaded: Sequence[bytes], preload_txs: int, loaded: Sequence[bytes], load_txs: int, count: int
) -> list[bytes]:
    """`count` tx hashes spread over the whole ledger in leaf order: from the preloaded part in
    proportion to its share of the committed txs, the rest from the measured load. Each input
    is already an even sample of its part (or the whole part)."""
    total = preload_txs + load_txs
    if total == 0 or count == 0:
        return []
    from_preload = min(len(preloaded), round(count * preload_txs / total))
    return spread(preloaded, from_preload) + spread(loaded, count - from_preload)


def state_proof_keys(
    preloaded_songs: int, first_song: int, end_song: int, count: int
) -> list[bytes]:
    """`count` registry keys to prove: the recordings of songs spread over the preloaded ones
    (0..preloaded_songs) and the load's (first_song..end_song) in proportion, and every
    ABSENT_KEY_EVERY-th a song number no run reaches (an absence proof)."""
    total = preloaded_songs + max(0, end_song - first_song)
    if total == 0 or count == 0:
        return []
    keys: list[bytes] = []
    for i in range(count):
        if i % ABSENT_KEY_EVERY == ABSENT_KEY_EVERY - 1:
            song = MAX_SONGS - 1 - i
        else:
            n = i * total // count
            song = n if n < preloaded_songs else first_song + n - preloaded_songs
        keys.append(recording_key(isrc_of(song)))
    return keys


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
        # The bench reads and submits as the first org's member (every call it makes is
        # member tier or public; none reads a restricted record).
        self.client = ClientCert.member(self.layout, self.nodes[0].org)
        # One member per org, the first org's first: a usage report's tx is readable only by
        # its reporter and the orgs paid from it (docs/node.md "Access").
        self.members = tuple(ClientCert.member(self.layout, n.org) for n in self.nodes)
        self._channels: dict[str, grpc.Channel] = {}
        self._clients: list[BaseProcess] = []

    # -- plumbing -------------------------------------------------------------------------------

    def stub(self, org: str) -> ledger_pb2_grpc.LedgerStub:
        if org not in self._channels:
            node = next(n for n in self.nodes if n.org == org)
            self._channels[org] = open_channel(
                f"{node.host}:{node.client_port}", self.ca_cert, self.client
            )
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

    def _drop_channel(self, org: str) -> None:
        dropped = self._channels.pop(org, None)
        if dropped is not None:
            dropped.close()

    # -- phases ---------------------------------------------------------------------------------

    def build_preload(self) -> PreloadResult:
        """Build the preloaded ledger for every node (nodes not started yet); with
        `catchup_from_preload`, the last node's copy is `catchup_txs` older."""
        s = self.settings
        block_txs, block_bytes = block_limits(self.layout)
        behind = s.catchup_txs if s.catchup_from_preload else 0
        count = min(s.proofs, s.preload_txs)
        plan = PreloadPlan(
            txs=s.preload_txs,
            block_txs=block_txs,
            block_bytes=block_bytes,
            behind_txs=behind,
            sample_leaves=sorted({i * s.preload_txs // count for i in range(count)}),
        )
        last_drawn_s = -PROGRESS_EVERY_S

        def progress(done: int, total: int, elapsed_s: float) -> None:
            nonlocal last_drawn_s
            if elapsed_s - last_drawn_s >= PROGRESS_EVERY_S or done == total:
                last_drawn_s = elapsed_s
                bench_report.preload_progress(done, total, elapsed_s)

        try:
            result = preload(self.layout, plan, progress)
        except PreloadFailed as exc:
            raise BenchError(f"preload: {exc}") from None
        finally:
            sys.stderr.write("\n")
        return result

    def start(self, without: str | None = None) -> None:
        """Start every node (but `without`) and wait until each serves."""
        orgs = [n.org for n in self.nodes if n.org != without]
        for org in orgs:
            launcher.start_node(self.layout, org)
        late = launcher.wait_serving(self.layout, orgs, timeout_s=READY_TIMEOUT_S)
        if late:
            raise BenchError(f"not serving: {late}; logs in {self.layout.root}/nodes/*/node.log")

    def sign(self, first_song: int, songs: int) -> list[SignedSong]:
        keys = {n.org: load_key(self.layout.client_key(n.org)) for n in self.nodes}
        return sign_songs(CHAIN_ID, keys, first_song, songs)

    def _jobs(
        self,
        songs: list[SignedSong],
        from_height: int,
        nodes: list[NodeAddress],
        soak: Callable[[int], SoakWork] | None = None,
    ) -> list[ClientJob]:
        """One job per client: pre-signed batches dealt round-robin to the clients and, batch
        by batch, to `nodes`; or, with `soak`, the SoakWork each client signs for itself."""
        s = self.settings
        per_batch = s.batch_txs // TXS_PER_SONG
        targets = tuple(f"{n.host}:{n.client_port}" for n in nodes)
        batches: list[list[Batch]] = [[] for _ in range(s.clients)]
        for number, first in enumerate(range(0, len(songs), per_batch)):
            chunk = songs[first : first + per_batch]
            batch = Batch(
                node=number % len(nodes),
                encodings=tuple(e for song in chunk for e in song.encodings),
                tx_hashes=tuple(h for song in chunk for h in song.tx_hashes),
            )
            batches[number % s.clients].append(batch)
        return [
            ClientJob(
                index=i,
                targets=targets,
                ca_cert=self.ca_cert,
                client=self.client,
                batches=tuple(batches[i]),
                watch_node=i % len(nodes),
                from_height=from_height,
                window_txs=s.window_txs,
                timeout_s=s.timeout_s,
                soak=None if soak is None else soak(i),
                rate_tx_per_s=s.rate_tx_per_s / s.clients,
            )
            for i in range(s.clients)
        ]

    def _run_clients(
        self,
        jobs: list[ClientJob],
        nodes: list[NodeAddress],
        at_start: Callable[[], None],
        on_tick: Callable[[float], None],
    ) -> list[ClientResult]:
        """Start one process per job, wait until all are connected, call `at_start`, release
        them together, call `on_tick(seconds since release)` about every PROGRESS_EVERY_S
        until each reported its result; the results, in any order. A client or one of `nodes`
        exiting meanwhile fails the run at once (the clients would otherwise wait for commits
        that a cluster without a quorum never makes)."""
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
        connected = 0
        ready_by_s = time.monotonic() + READY_TIMEOUT_S
        while connected < len(jobs):
            try:
                ready.get(timeout=PROGRESS_EVERY_S)
                connected += 1
                continue
            except queue.Empty:
                pass
            self._check_alive(nodes)
            early = [p.name for p in self._clients if not p.is_alive()]
            if early or time.monotonic() > ready_by_s:
                why = "; ".join(r.error for r in _drain(results)) or "no message"
                raise BenchError(f"clients not ready ({early or 'timed out'}): {why}")
        at_start()
        go.set()
        start_s = time.monotonic()
        finished: list[ClientResult] = []
        last_tick_s = 0.0
        while len(finished) < len(jobs):
            try:
                result: ClientResult = results.get(timeout=PROGRESS_EVERY_S)
            except queue.Empty:  # time to draw the bar and check the clients
                pass
            else:
                if result.error:
                    self._check_alive(nodes)  # a dead node is the cause worth naming
                    raise BenchError(f"client {result.index}: {result.error}")
                finished.append(result)
                continue
            now = time.monotonic()
            if now - last_tick_s >= PROGRESS_EVERY_S:
                last_tick_s = now
                on_tick(now - start_s)
            dead = [p.name for p in self._clients if not p.is_alive() and p.exitcode]
            if dead:
                raise BenchError(f"client process failed: {dead}")
            self._check_alive(nodes)
        for client in self._clients:
            client.join(timeout=10)
        self._clients.clear()
        return finished

    def _check_alive(self, nodes: list[NodeAddress]) -> None:
        gone = [n.org for n in nodes if launcher.node_pid(self.layout, n.org) is None]
        if gone:
            logs = ", ".join(str(self.layout.node_dir(org) / "node.log") for org in gone)
            raise BenchError(f"node process exited during the run: {gone}; see {logs}")

    def _soak_work(self, first_song: int) -> Callable[[int], SoakWork]:
        s = self.settings
        seeds = tuple((n.org, load_key(self.layout.client_key(n.org)).seed) for n in self.nodes)

        def work(_: int) -> SoakWork:
            return SoakWork(
                chain_id=CHAIN_ID,
                client_seeds=seeds,
                first_song=first_song,
                songs_per_batch=s.batch_txs // TXS_PER_SONG,
                clients=s.clients,
                nodes=len(self.nodes),
                duration_s=s.soak_s,
            )

        return work

    def load(self, songs: list[SignedSong], first_song: int) -> dict[str, Any]:
        """The measured phase: clients submit everything (or, soaking, for soak_s seconds);
        returns the throughput figures."""
        s = self.settings
        first = self.nodes[0].org
        before = self.status(first)
        soak = self._soak_work(first_song) if s.soak_s > 0 else None
        jobs = self._jobs(songs, before.height + 1, self.nodes, soak)
        pids = self.pids()
        cpu_before: dict[str, float | None] = {}
        main_before: dict[str, float | None] = {}
        rss = RssSamples(pids)

        placement: dict[int | None, frozenset[int]] = {}
        cpus = frozenset(os.sched_getaffinity(0))
        cpu_window_s = [0.0, 0.0]  # when the nodes' CPU was read before and after the load
        metrics_before: dict[str, str | None] = {}

        def at_start() -> None:
            if s.own_core:  # the clients are started and connected now
                placement.update(self._own_core_placement(pids))
            for pid, on in placement.items():
                bench_probe.pin(pid, on)
            cpu_window_s[0] = time.monotonic()
            for org, pid in pids.items():
                cpu_before[org] = bench_probe.cpu_s(pid) if pid else None
                main_before[org] = bench_probe.main_thread_cpu_s(pid) if pid else None
            rss.sample(0.0)
            metrics_before.update(bench_metrics.read_all(self.nodes))

        def on_tick(elapsed_s: float) -> None:
            if s.soak_s > 0 and elapsed_s - rss.last_s >= RSS_EVERY_S:
                rss.sample(elapsed_s)
            seen = self.try_status(first)
            if seen is None:  # a node too busy to answer only delays the bar
                return
            committed = seen.tx_log_size - before.tx_log_size
            if s.soak_s > 0:
                bench_report.soak_progress(elapsed_s, s.soak_s, committed)
            else:
                bench_report.progress(committed, s.txs, elapsed_s)

        started_s = time.monotonic()
        try:
            finished = self._run_clients(jobs, self.nodes, at_start, on_tick)
        finally:
            for pid in placement:
                bench_probe.pin(pid, cpus)
        ended_s = time.monotonic() - started_s
        cpu_after = {org: bench_probe.cpu_s(pid) if pid else None for org, pid in pids.items()}
        cpu_window_s[1] = time.monotonic()
        main_after = {
            org: bench_probe.main_thread_cpu_s(pid) if pid else None for org, pid in pids.items()
        }
        rss.sample(ended_s)
        metrics_after = bench_metrics.read_all(self.nodes)
        committed = sum(r.committed_txs for r in finished)
        phases = bench_phases.figures(
            bench_phases.parse_all(metrics_before), bench_phases.parse_all(metrics_after)
        )
        leveldb = bench_leveldb.figures(
            {org: bench_leveldb.parse(text) for org, text in metrics_before.items()},
            {org: bench_leveldb.parse(text) for org, text in metrics_after.items()},
            committed,
        )
        if s.soak_s > 0:
            bench_report.soak_progress(ended_s, s.soak_s, committed)
        else:
            bench_report.progress(committed, s.txs, ended_s)
        sys.stderr.write("\n")
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
            before_s, after_s = cpu_before.get(org), cpu_after[org]
            used_s = None if before_s is None or after_s is None else after_s - before_s
            main_s, main_end_s = main_before.get(org), main_after[org]
            per_node.append(
                {
                    "org": org,
                    "pid": pid,
                    "cpu_s": used_s,
                    "main_thread_cpu_s": None
                    if main_s is None or main_end_s is None
                    else round(main_end_s - main_s, 2),
                    "cpu_ms_per_tx": None if used_s is None else 1000 * used_s / max(committed, 1),
                    "peak_rss_bytes": bench_probe.peak_rss_bytes(pid) if pid else None,
                    "view_changes": _view_changes(self.try_status(org)),
                }
            )
        node_cpu = [n["cpu_s"] for n in per_node if n["cpu_s"] is not None]
        submitted = sum(r.submitted_txs for r in finished)
        if soak is None:
            tx_hashes = [h for song in songs for h in song.tx_hashes]
        else:
            tx_hashes = [h for r in finished for h in r.sampled_hashes]
        return {
            "submitted_txs": submitted,
            "committed_txs": committed,
            "elapsed_s": round(elapsed_s, 3),
            "committed_tx_per_s": round(committed / elapsed_s, 1),
            "latency_ms": bench_report.latency_ms(latencies),
            "phases": phases,
            "leveldb": leveldb,
            "refused": refused,
            "retries": sum(r.retries for r in finished),
            "paced": None
            if s.rate_tx_per_s <= 0
            else {
                "offered_tx_per_s": s.rate_tx_per_s,
                "late_batches": sum(r.late_batches for r in finished),
                "max_lag_ms": round(1000 * max((r.max_lag_s for r in finished), default=0.0), 1),
            },
            "client_cpu_s": round(sum(r.cpu_s for r in finished), 3),
            "node_cpu_ms_per_tx": 1000 * sum(node_cpu) / max(committed, 1),
            "per_node": per_node,
            "own_core": _own_core_figures(
                per_node[0], committed, elapsed_s, cpu_window_s[1] - cpu_window_s[0]
            )
            if s.own_core
            else None,
            "tx_hashes": tx_hashes,
            "soak": None
            if soak is None
            else soak_figures(s.soak_s, finished, first_submit_s, elapsed_s, rss),
        }

    def _own_core_placement(self, pids: dict[str, int | None]) -> dict[int | None, frozenset[int]]:
        """pid -> cores for `--own-core`: the first node on the first core, the other nodes
        and the client processes on the rest (the clients are started by then)."""
        cpus = frozenset(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise BenchError("--own-core: this process may use one core only")
        first = frozenset({min(cpus)})
        first_org = self.nodes[0].org
        others = [pid for org, pid in pids.items() if org != first_org]
        placement = dict.fromkeys([*others, *(p.pid for p in self._clients)], cpus - first)
        placement[pids.get(first_org)] = first
        return placement

    def receipts_ok(self, tx_hashes: list[bytes]) -> tuple[int, int]:
        """(sampled, OK) over an even sample of committed txs' receipts, each read from the
        first node as the first org whose member may read it."""
        sample = spread(tx_hashes, RECEIPTS_SAMPLED)
        node = self.nodes[0]
        target = f"{node.host}:{node.client_port}"
        channels = [open_channel(target, self.ca_cert, member) for member in self.members]
        stubs = [ledger_pb2_grpc.LedgerStub(c) for c in channels]  # type: ignore[no-untyped-call]
        ok = 0
        try:
            for tx_hash in sample:
                request = ledger_pb2.GetTxRequest(tx_hash=tx_hash)
                for index, stub in enumerate(stubs):
                    try:
                        reply = stub.GetTx(request, timeout=10)
                    except grpc.RpcError as exc:
                        denied = exc.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
                        if denied and index < len(stubs) - 1:
                            continue
                        raise
                    ok += reply.receipt.status == "OK"
                    break
        finally:
            for channel in channels:
                channel.close()
        return len(sample), ok

    def proofs(self, sample: list[bytes], state_keys: list[bytes]) -> dict[str, Any] | None:
        """GetInclusionProof for each of `sample` (spread over the ledger in leaf order), one at
        a time from a proof client process of its own, on a settled cluster: first as the nodes
        run (every process on every core), then with the serving node on a core of its own and
        everything else on the rest (`own_core`), as a node on its own host serves: on a shared
        machine a proof that arrives while the other nodes run a consensus round waits for a
        core, and that wait, not the proof, makes the shared p99. Then the same twice for
        StateProof of `state_keys` (`state`)."""
        if not sample:
            return None
        settle_s = self.settle()
        # With one core there is nothing to set apart.
        own_core = len(os.sched_getaffinity(0)) >= 2
        shared = self._proof_run(sample, (), own_core=False)
        shared["settle_s"] = round(settle_s, 1)
        shared["own_core"] = self._proof_run(sample, (), own_core=True) if own_core else None
        if state_keys:
            state = self._proof_run(sample, tuple(state_keys), own_core=False)
            state.pop("tree_size")
            state["own_core"] = (
                self._proof_run(sample, tuple(state_keys), own_core=True) if own_core else None
            )
            shared["state"] = state
        else:
            shared["state"] = None
        return shared

    def _proof_run(
        self, sample: list[bytes], state_keys: tuple[bytes, ...], *, own_core: bool
    ) -> dict[str, Any]:
        node = self.nodes[0]
        target = f"{node.host}:{node.client_port}"
        job = ProofJob(target, self.ca_cert, self.members, tuple(sample), state_keys)
        pids = self.pids()
        others = {org: pid for org, pid in pids.items() if org != node.org}
        serving_busy = NodesCpu({node.org: pids.get(node.org)})
        others_busy = NodesCpu(others)
        context = multiprocessing.get_context("spawn")
        results: ProcessQueue[ProofResult] = context.Queue()
        process = context.Process(
            target=run_proof_client, args=(job, results), name="bench-proof-client"
        )
        process.start()
        self._clients.append(process)
        cpus = frozenset(os.sched_getaffinity(0))
        first = frozenset({min(cpus)})
        # pid -> the cores it runs on while the proofs run: the serving node on the first,
        # the other nodes and the proof client on the rest. Every one gets all back after.
        placement: dict[int | None, frozenset[int]] = {}
        if own_core:
            placement = dict.fromkeys((*others.values(), process.pid), cpus - first)
            placement[pids.get(node.org)] = first
        try:
            for pid, on in placement.items():
                bench_probe.pin(pid, on)
            result = self._proof_result(process, results)
        finally:
            for pid in placement:
                bench_probe.pin(pid, cpus)
        if result.error:
            raise BenchError(f"proofs: {result.error}")
        return {
            "count": result.count,
            "tree_size": result.tree_size,
            "per_s": round(result.count / max(result.elapsed_s, 1e-9), 1),
            "latency_ms": bench_report.latency_ms(result.latencies_s),
            "client_cpu_s": round(result.cpu_s, 3),
            "serving_node_cores_busy": round(serving_busy.cores(), 2),
            "other_nodes_cores_busy": round(others_busy.cores(), 2),
        }

    def _proof_result(
        self, process: BaseProcess, results: ProcessQueue[ProofResult]
    ) -> ProofResult:
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            try:
                result: ProofResult = results.get(timeout=PROGRESS_EVERY_S)
                break
            except queue.Empty:
                if not process.is_alive() or time.monotonic() > deadline:
                    raise BenchError("the proof client stopped without a result") from None
        process.join(timeout=10)
        self._clients.remove(process)
        return result

    def settle(self) -> float:
        """Wait until the nodes' CPU falls to an idle cluster's; return the seconds waited."""
        started_s = time.monotonic()
        while time.monotonic() - started_s < SETTLE_MAX_S:
            sample = NodesCpu(self.pids())
            time.sleep(SETTLE_SAMPLE_S)
            if sample.cores() < SETTLED_CORES:
                break
        return time.monotonic() - started_s

    def _catch_up(self, behind: str, live: str, from_height: int, from_txs: int) -> dict[str, Any]:
        """Start `behind` (at from_height / from_txs) and time until its height reaches what
        `live` reports just before the start."""
        deadline = time.monotonic() + self.settings.timeout_s
        while (target := self.try_status(live)) is None:
            if time.monotonic() > deadline:
                raise BenchError(f"{live} did not answer before the catch-up")
            time.sleep(POLL_S)
        started_s = time.monotonic()
        launcher.start_node(self.layout, behind)
        if launcher.wait_serving(self.layout, [behind], timeout_s=READY_TIMEOUT_S):
            raise BenchError(f"{behind} did not serve after its start")
        serving_s = time.monotonic()
        while True:
            status = self.try_status(behind)
            if status is not None and status.height >= target.height:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{behind} did not catch up in time")
            time.sleep(POLL_S)
        done_s = time.monotonic()
        blocks = target.height - from_height
        txs = target.tx_log_size - from_txs
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

    def catchup_from_copy(self, copy: BehindCopy) -> dict[str, Any]:
        """The node given the older copy starts after the others serve: time its catch-up."""
        _say(f"catch-up: {copy.org} starts {self.settings.catchup_txs} txs behind the others")
        live = next(n.org for n in self.nodes if n.org != copy.org)
        return {"method": "preloaded_copy", **self._catch_up(copy.org, live, copy.height, copy.txs)}

    def catchup(self, songs: list[SignedSong]) -> dict[str, Any] | None:
        """Kill the last node, commit `songs` on the others (client processes, as the load),
        restart it, time its catch-up."""
        if not songs or len(self.nodes) < MIN_NODES_FOR_CATCHUP:
            return None
        behind, live = self.nodes[-1].org, self.nodes[0].org
        start_status = self.status(behind)
        launcher.kill_node(self.layout, behind)
        self._drop_channel(behind)
        before = self.status(live)
        total = len(songs) * TXS_PER_SONG
        jobs = self._jobs(songs, before.height + 1, self.nodes[:-1])

        def on_tick(elapsed_s: float) -> None:
            seen = self.try_status(live)
            if seen is not None:
                bench_report.progress(seen.tx_log_size - before.tx_log_size, total, elapsed_s)

        finished = self._run_clients(jobs, self.nodes[:-1], lambda: None, on_tick)
        sys.stderr.write("\n")
        refused = {k: v for r in finished for k, v in r.refused.items()}
        if refused or sum(r.committed_txs for r in finished) != total:
            raise BenchError(f"catch-up load: not every tx committed (refused: {refused})")
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            target = self.try_status(live)
            if target is not None and target.tx_log_size >= start_status.tx_log_size + total:
                break
            if time.monotonic() > deadline:
                raise BenchError("catch-up load did not commit in time")
            time.sleep(POLL_S)
        return {
            "method": "kill_restart",
            **self._catch_up(behind, live, start_status.height, start_status.tx_log_size),
        }

    def disk(self) -> dict[str, int]:
        return {
            n.org: bench_probe.tree_bytes(self.layout.node_dir(n.org) / "data") for n in self.nodes
        }


def _own_core_figures(
    node: dict[str, Any], committed: int, elapsed_s: float, cpu_window_s: float
) -> dict[str, Any]:
    """What the node alone on its core did: how busy that core was over the window its CPU
    was read in, and the rate one such core would sustain (the cluster's rate over the fraction
    of the core the node took; the others, sharing the rest, set the rate)."""
    busy = None if node["cpu_s"] is None else node["cpu_s"] / max(cpu_window_s, 1e-9)
    return {
        "org": node["org"],
        "cores_busy": None if busy is None else round(busy, 3),
        "tx_per_s_per_core": None if not busy else round(committed / elapsed_s / busy, 1),
    }


class NodesCpu:
    """The CPU all nodes used since this was made, in cores (CPU seconds per second)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = [pid for pid in pids.values() if pid]
        self.started_s = time.monotonic()
        self.start_cpu_s = self._total()

    def _total(self) -> float:
        return sum(bench_probe.cpu_s(pid) or 0.0 for pid in self.pids)

    def cores(self) -> float:
        return (self._total() - self.start_cpu_s) / max(time.monotonic() - self.started_s, 1e-9)


class RssSamples:
    """Each node's memory over the run, per kind ("rss", "anon"): (seconds since the start,
    bytes) while the node runs. Both kinds, because RSS also counts the LevelDB table files the
    node maps (bench_probe.rss_bytes): a growing store grows RSS without any leak."""

    KINDS = (("rss", bench_probe.rss_bytes), ("anon", bench_probe.rss_anon_bytes))

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.samples: dict[tuple[str, str], list[tuple[float, int]]] = {
            (org, kind): [] for org in pids for kind, _ in self.KINDS
        }
        self.last_s = 0.0

    def sample(self, elapsed_s: float) -> None:
        self.last_s = elapsed_s
        for org, pid in self.pids.items():
            for kind, read in self.KINDS:
                value = read(pid) if pid else None
                if value is not None:
                    self.samples[org, kind].append((elapsed_s, value))


def soak_figures(
    duration_s: float,
    results: list[ClientResult],
    first_submit_s: float,
    elapsed_s: float,
    rss: RssSamples,
) -> dict[str, Any]:
    """Memory per node, RSS and anonymous RSS (start, end, max, slope over the second half,
    every sample), and committed tx/s per SOAK_WINDOW_S window."""
    per_second: dict[int, int] = {}
    for result in results:
        for second, count in result.commits_per_s.items():
            per_second[second] = per_second.get(second, 0) + count
    windows = bench_report.windows(per_second, first_submit_s, elapsed_s, SOAK_WINDOW_S)
    per_node: list[dict[str, Any]] = []
    for org in rss.pids:
        node: dict[str, Any] = {"org": org}
        for name, _ in RssSamples.KINDS:
            known = rss.samples[org, name]
            node[f"{name}_start_bytes"] = known[0][1] if known else None
            node[f"{name}_end_bytes"] = known[-1][1] if known else None
            node[f"{name}_max_bytes"] = max((b for _, b in known), default=None)
            node[f"{name}_slope_mib_per_min"] = bench_report.second_half_slope_mib_per_min(known)
            node[f"{name}_mib"] = [[round(t, 1), round(b / 2**20, 1)] for t, b in known]
        per_node.append(node)
    return {
        "duration_s": duration_s,
        "rss_every_s": RSS_EVERY_S,
        "window_s": SOAK_WINDOW_S,
        "windows": windows,
        "per_node": per_node,
    }


def _drain(results: Any) -> list[ClientResult]:
    """What the client processes already reported (without waiting)."""
    out: list[ClientResult] = []
    while True:
        try:
            out.append(results.get_nowait())
        except queue.Empty:
            return out


def _view_changes(status: ledger_pb2.NodeStatus | None) -> int | None:
    """Rounds the node entered by a timeout since it started (None: it did not answer)."""
    return None if status is None else int(status.view_changes)


def _preload_figures(result: PreloadResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "txs": result.txs,
        "blocks": result.height,
        "elapsed_s": round(result.elapsed_s, 1),
        "tx_per_s": round(result.txs / max(result.elapsed_s, 1e-9), 1),
        "s_per_10k_txs": round(10_000 * result.elapsed_s / max(result.txs, 1), 2),
    }


def run(settings: Settings, root: Path) -> dict[str, Any]:
    """One whole run in cluster directory `root`; returns the JSON object."""
    _say("measuring this core's Ed25519 verify rate")
    verify_rate = bench_probe.verify_per_s()
    cores = bench_probe.cores()
    bench = Bench(root, settings)
    preloaded: PreloadResult | None = None
    catchup: dict[str, Any] | None = None
    try:
        if settings.preload_txs:
            _say(f"preloading {settings.preload_txs} committed txs for every node")
            preloaded = bench.build_preload()
        behind = preloaded.behind if preloaded is not None else None
        _say(f"starting {settings.nodes} nodes in {root}")
        bench.start(without=behind.org if behind is not None else None)
        if behind is not None:
            catchup = bench.catchup_from_copy(behind)
        # Song numbers: preloaded songs first, then the kill-restart catch-up's, then the load's
        # (a soak signs from there on, as far as it gets).
        first_song = settings.preload_txs // TXS_PER_SONG
        catchup_songs: list[SignedSong] = []
        if behind is None and settings.catchup_txs:
            _say(f"signing {settings.catchup_txs} catch-up txs")
            catchup_songs = bench.sign(first_song, settings.catchup_txs // TXS_PER_SONG)
            first_song += len(catchup_songs)
        load_songs: list[SignedSong] = []
        if settings.soak_s > 0:
            _say(f"soak: submitting for {settings.soak_s:.0f} s from {settings.clients} clients")
        else:
            _say(f"signing {settings.txs} txs")
            load_songs = bench.sign(first_song, settings.txs // TXS_PER_SONG)
            _say(f"submitting from {settings.clients} client processes")
        load = bench.load(load_songs, first_song)
        tx_hashes = load.pop("tx_hashes")
        _say(
            f"load: {load['committed_txs']} txs committed in {load['elapsed_s']} s = "
            f"{load['committed_tx_per_s']} tx/s; latency ms {load['latency_ms']}"
        )
        sampled, ok = bench.receipts_ok(tx_hashes)
        _say("fetching inclusion proofs")
        preloaded_hashes = preloaded.sampled_hashes if preloaded is not None else ()
        sample = proof_sample(
            preloaded_hashes,
            settings.preload_txs,
            tx_hashes,
            load["committed_txs"],
            settings.proofs,
        )
        state_keys = state_proof_keys(
            settings.preload_txs // TXS_PER_SONG,
            first_song,
            first_song + load["committed_txs"] // TXS_PER_SONG,
            settings.proofs,
        )
        proofs = bench.proofs(sample, state_keys)
        if proofs is not None:
            proofs["from_preload"] = len(set(sample) & set(preloaded_hashes))
        disk = bench.disk()
        if behind is None and catchup_songs:
            _say("catch-up: one node killed, load committed without it, node restarted")
            catchup = bench.catchup(catchup_songs)
    finally:
        bench.close()
    live_keys = bench_probe.live_state_keys(bench.layout.node_dir(bench.nodes[0].org) / "data")
    limit = bench_report.limit_tx_per_s(cores, verify_rate, settings.nodes)
    if catchup is not None:
        catchup["ratio_to_commit_rate"] = round(
            catchup["tx_per_s"] / max(load["committed_tx_per_s"], 1e-9), 2
        )
    for node in load["per_node"]:
        node["disk_bytes"] = disk.get(node["org"])
    ledger_txs = settings.preload_txs + load["committed_txs"]
    return {
        "nodes": settings.nodes,
        "txs": settings.txs if settings.soak_s == 0 else load["submitted_txs"],
        "clients": settings.clients,
        "batch_txs": settings.batch_txs,
        "window_txs": settings.window_txs,
        "proposal_max_txs": settings.proposal_max_txs,
        "preload_txs": settings.preload_txs,
        "soak_s": settings.soak_s,
        **{k: v for k, v in load.items() if k not in ("per_node", "soak")},
        "verify_per_s_per_core": round(verify_rate, 1),
        "cores": cores,
        "limit_tx_per_s": round(limit, 1),
        "ratio_to_limit": round(load["committed_tx_per_s"] / limit, 4),
        "receipts_sampled": sampled,
        "ok_fraction_sampled": round(ok / max(sampled, 1), 4),
        "disk_bytes_per_tx": round(sum(disk.values()) / len(disk) / max(ledger_txs, 1), 1),
        "live_state_keys": live_keys,
        "disk_bytes_per_live_key": round(sum(disk.values()) / len(disk) / max(live_keys, 1), 1),
        "preload": _preload_figures(preloaded),
        "proofs": proofs,
        "catchup": catchup,
        "soak": load["soak"],
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
        if args.etcd:
            _say("the same load shape against a 3-member etcd cluster")
            report["etcd"] = bench_etcd.run(
                root / "etcd",
                clients=settings.clients,
                puts=max(report["committed_txs"], 1),
                window=settings.window_txs,
                value_bytes=bench_probe.VERIFY_MESSAGE_BYTES,
            )
            report["ratio_to_etcd"] = round(
                report["committed_tx_per_s"] / max(report["etcd"]["puts_per_s"], 1e-9), 3
            )
    except bench_etcd.EtcdBenchError as exc:
        print(f"kledger bench: etcd: {exc}", file=sys.stderr)
        return 1
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
