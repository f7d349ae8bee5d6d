"""`kledger bench-flood`: a fresh 4-node cluster under load, first undisturbed, then with one
org (the last, ORG4) flooding the others with bad-signature txs, as issue 13 describes.

    kledger bench-flood [--phase-s S] [--rounds R] [--no-peer-flood] [--no-client-flood]
                        [--reconnect] [--json] [--keep DIR]

R flooded phases, each between two undisturbed ones (2R + 1 phases): on a shared machine the
undisturbed rate drifts with the other jobs and falls as the ledger grows, so each flooded
phase is compared with the mean of the two beside it. Every phase runs the cluster
benchmark's soak load (cluster/bench/main.py `Bench.load`: client processes signing and
submitting valid registry txs to every node at full rate for S seconds). In each flooded
phase, flood processes run beside it:

- peer flood: a process holding ORG4's peer TLS identity (its node.json certificate and key)
  opens a `Peer.Stream` to each other node's peer port and writes gossip batches of
  `--gossip-batch-txs` bad-signature txs as fast as the stream takes them (ORG4's own node
  keeps running, voting and proposing meanwhile);
- client flood: a process with the CA certificate and ORG4's public member key sends
  `SubmitBatch` calls of `--client-batch-txs` bad-signature txs to the other nodes' client
  ports, round-robin, as fast as they are answered; with `--reconnect` on a new connection
  each time (so a per-connection penalty never holds it for long).

The junk txs are well-formed registry txs (RegisterParty) by ORG4's member key with random
signatures: they pass every check but the Ed25519 one, the most expensive path.

Figures: committed tx/s of the honest nodes (ORG1..3, from the growth of their tx log) in each
phase; per flooded phase, and their mean and minimum, its rate as a fraction of the undisturbed;
GetStatus latency of the honest nodes during each phase (p50/p99/max, one probe thread); what
the flooders sent and how it was answered; the honest nodes' drop counters from their metrics
port; CPU seconds of every node and flooder. Rules it keeps: those of `kledger bench` (every
process it starts is stopped on every exit path; 127.0.0.1 only; a temporary directory unless
--keep).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

import grpc

from kledger.cluster.bench import probe as bench_probe
from kledger.cluster.bench import report as bench_report
from kledger.cluster.bench.main import CHAIN_ID, Bench, BenchError, Settings
from kledger.cluster.bench.workload import song_payloads
from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.node.chain import canonical
from kledger.node.chain.keys import KeyPair, load_key
from kledger.node.chain.tx import SignedTx
from kledger.node.config import PeerSettings
from kledger.node.net.peer_transport import channel_options
from kledger.node.net.tls import TlsMaterial, peer_channel_credentials
from kledger.v1 import ledger_pb2, ledger_pb2_grpc, peer_pb2, peer_pb2_grpc

NODES = 4
DEFAULT_PHASE_S = 30.0
DEFAULT_GOSSIP_BATCH_TXS = 4_000  # the default admission.peer_inflight_txs: the most that
# a node checks at all (a larger batch is dropped before any per-tx work)
DEFAULT_CLIENT_BATCH_TXS = 10_000  # MAX_BATCH_TXS
JUNK_TXS = 20_000  # distinct junk txs, sent over and over (refused, so never deduplicated)
SONGS_PER_PHASE = 10_000_000  # phase k's load numbers its songs from k * SONGS_PER_PHASE
JUNK_FIRST_SONG = 1_000_000_000  # the junk txs' payloads, apart from every phase's songs
STATUS_PROBE_EVERY_S = 0.2
STATUS_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 60.0
RECONNECT_PAUSE_S = 0.1
FLOODER_READY_TIMEOUT_S = 300.0  # building 20,000 junk txs takes seconds, minutes when loaded
DROP_LINE = re.compile(r'^kledger_dropped_messages_total\{org="\w+",reason="([\w.]+)"\} (\S+)$')


def junk_txs(chain_id: str, seed: bytes, count: int) -> list[bytes]:
    """Well-formed RegisterParty txs by the member key of `seed`, with random signatures."""
    signer = KeyPair.from_seed(seed).public_key
    out = []
    for n in range(count):
        tx_type, payload = song_payloads("ORG4", JUNK_FIRST_SONG + n)[0]
        body = {"chain_id": chain_id, "type": tx_type, "nonce": n, "payload": payload}
        out.append(SignedTx(canonical.encode(body), signer, os.urandom(64)).encoding)
    return out


# -- flood processes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerFloodJob:
    targets: tuple[tuple[str, str], ...]  # (org, host:peer_port)
    material: TlsMaterial  # ORG4's
    chain_id: str
    member_seed: bytes
    batch_txs: int


@dataclass(frozen=True, slots=True)
class ClientFloodJob:
    targets: tuple[str, ...]  # host:client_port
    ca_cert: bytes
    client: ClientCert  # the flooding org's member certificate
    chain_id: str
    member_seed: bytes
    batch_txs: int
    reconnect: bool


@dataclass(frozen=True, slots=True)
class FloodResult:
    kind: str
    batches: int
    txs: int
    answers: dict[str, int]  # client: tx status -> count; peer: stream end -> count
    cpu_s: float
    error: str = ""


def run_peer_flood(
    job: PeerFloodJob,
    ready: ProcessQueue[str],
    go: ProcessEvent,
    stop: ProcessEvent,
    out: ProcessQueue[FloodResult],
) -> None:
    """Process entry point: one stream per target, writing junk gossip until `stop`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    junk = junk_txs(job.chain_id, job.member_seed, JUNK_TXS)
    ready.put("peer")  # the phase starts once every flooder has its junk (slow on a busy box)
    go.wait()
    sent = Counter[str]()
    ends = Counter[str]()

    async def flood(org: str, address: str) -> None:
        credentials = peer_channel_credentials(job.material)
        options = channel_options(PeerSettings(), org)
        while not stop.is_set():
            async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
                stub = peer_pb2_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]

                async def messages() -> AsyncIterator[peer_pb2.PeerMessage]:
                    first = 0
                    while not stop.is_set():
                        batch = [junk[(first + i) % len(junk)] for i in range(job.batch_txs)]
                        first = (first + job.batch_txs) % len(junk)
                        sent["batches"] += 1
                        sent["txs"] += len(batch)
                        yield peer_pb2.PeerMessage(txs=peer_pb2.TxBatch(txs=batch))

                try:
                    await stub.Stream(messages())
                    ends["closed"] += 1
                except grpc.aio.AioRpcError as exc:
                    ends[exc.code().name] += 1
            await asyncio.sleep(RECONNECT_PAUSE_S)

    async def main() -> None:
        tasks = [asyncio.create_task(flood(org, address)) for org, address in job.targets]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # let the streams see the stop and end
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    error = ""
    try:
        asyncio.run(main())
    except Exception as exc:  # reported to the parent, which fails the run
        error = f"{type(exc).__name__}: {exc}"
    out.put(
        FloodResult("peer", sent["batches"], sent["txs"], dict(ends), time.process_time(), error)
    )


def run_client_flood(
    job: ClientFloodJob,
    ready: ProcessQueue[str],
    go: ProcessEvent,
    stop: ProcessEvent,
    out: ProcessQueue[FloodResult],
) -> None:
    """Process entry point: SubmitBatch of junk to each target in turn until `stop` (at least
    one batch, so a short phase on a busy machine still floods)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    junk = junk_txs(job.chain_id, job.member_seed, JUNK_TXS)
    ready.put("client")
    go.wait()
    answers = Counter[str]()
    batches = txs = 0
    channels: dict[str, grpc.Channel] = {}
    error = ""
    try:
        first = 0
        while batches == 0 or not stop.is_set():
            target = job.targets[batches % len(job.targets)]
            if job.reconnect or target not in channels:
                old = channels.pop(target, None)
                if old is not None:
                    old.close()
                channels[target] = open_channel(target, job.ca_cert, job.client)
            batch = [junk[(first + i) % len(junk)] for i in range(job.batch_txs)]
            first = (first + job.batch_txs) % len(junk)
            stub = ledger_pb2_grpc.LedgerStub(channels[target])  # type: ignore[no-untyped-call]
            try:
                reply = stub.SubmitBatch(ledger_pb2.SubmitBatchRequest(txs=batch), timeout=30)
                answers.update(result.status for result in reply.results)
            except grpc.RpcError as exc:
                answers[f"call:{exc.code().name}"] += 1  # type: ignore[attr-defined]
            batches += 1
            txs += len(batch)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        for channel in channels.values():
            channel.close()
    out.put(FloodResult("client", batches, txs, dict(answers), time.process_time(), error))


# -- the run ------------------------------------------------------------------------------------


class StatusProbe:
    """A thread timing GetStatus on the honest nodes in turn, every STATUS_PROBE_EVERY_S."""

    def __init__(self, targets: list[str], ca_cert: bytes, client: ClientCert) -> None:
        self._channels = [open_channel(target, ca_cert, client) for target in targets]
        self._stop = threading.Event()
        self.latencies_s: list[float] = []
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="status-probe", daemon=True)

    def __enter__(self) -> StatusProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=STATUS_TIMEOUT_S + 5)
        for channel in self._channels:
            channel.close()

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            stub = ledger_pb2_grpc.LedgerStub(self._channels[turn % len(self._channels)])  # type: ignore[no-untyped-call]
            turn += 1
            started = time.monotonic()
            try:
                stub.GetStatus(ledger_pb2.GetStatusRequest(), timeout=STATUS_TIMEOUT_S)
                self.latencies_s.append(time.monotonic() - started)
            except grpc.RpcError:
                self.failures += 1
            self._stop.wait(STATUS_PROBE_EVERY_S)

    def figures(self) -> dict[str, Any]:
        return {
            **bench_report.latency_ms(self.latencies_s),
            "failures": self.failures,
            "max": round(1000 * max(self.latencies_s, default=0.0), 1),
        }


class FloodBench:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.args = args
        self.bench = Bench(
            root,
            Settings(
                nodes=NODES,
                txs=6,
                clients=2,
                batch_txs=120,
                window_txs=1_200,
                proofs=0,
                catchup_txs=0,
                timeout_s=600.0,
                soak_s=args.phase_s,
            ),
        )
        self.layout = self.bench.layout
        self.honest = self.bench.nodes[:-1]
        self.flooder = self.bench.nodes[-1]
        self._processes: list[BaseProcess] = []

    def close(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=10)
        self.bench.close()

    def honest_log_sizes(self) -> list[int]:
        return [self.bench.status(n.org).tx_log_size for n in self.honest]

    def drops(self) -> dict[str, float]:
        """Drop counters summed over the honest nodes (their metrics ports)."""
        total: dict[str, float] = {}
        for node in self.honest:
            url = f"http://{node.host}:{node.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                for line in reply.read().decode().splitlines():
                    if match := DROP_LINE.match(line):
                        total[match[1]] = total.get(match[1], 0.0) + float(match[2])
        return total

    def cpu(self) -> dict[str, float | None]:
        return {
            org: bench_probe.cpu_s(pid) if pid else None for org, pid in self.bench.pids().items()
        }

    def phase(self, name: str, first_song: int, flood: bool) -> dict[str, Any]:
        sys.stderr.write(f"bench-flood: phase {name} ({self.args.phase_s:.0f} s)\n")
        context = multiprocessing.get_context("spawn")
        ready: ProcessQueue[str] = context.Queue()
        go, stop = context.Event(), context.Event()
        results: ProcessQueue[FloodResult] = context.Queue()
        flooders = self._start_flooders(ready, go, stop, results) if flood else []
        for _ in flooders:
            ready.get(timeout=FLOODER_READY_TIMEOUT_S)
        drops_before, cpu_before = self.drops(), self.cpu()
        sizes_before, started_s = self.honest_log_sizes(), time.monotonic()
        go.set()
        targets = [f"{n.host}:{n.client_port}" for n in self.honest]
        with StatusProbe(targets, self.bench.ca_cert, self.bench.client) as status_probe:
            load = self.bench.load([], first_song)
        sizes_after, ended_s = self.honest_log_sizes(), time.monotonic()
        stop.set()
        flood_results = [results.get(timeout=60) for _ in flooders]
        for process in flooders:
            process.join(timeout=30)
        errors = [r.error for r in flood_results if r.error]
        if errors:
            raise BenchError(f"flooder failed: {errors}")
        drops_after, cpu_after = self.drops(), self.cpu()
        elapsed_s = ended_s - started_s
        committed = min(
            after - before for before, after in zip(sizes_before, sizes_after, strict=True)
        )
        return {
            "elapsed_s": round(elapsed_s, 1),
            "honest_committed_txs": committed,
            "honest_committed_tx_per_s": round(committed / elapsed_s, 1),
            "clients_committed_tx_per_s": load["committed_tx_per_s"],
            "latency_ms": load["latency_ms"],
            "get_status_ms": status_probe.figures(),
            "drops": {
                reason: int(drops_after[reason] - drops_before.get(reason, 0.0))
                for reason in sorted(drops_after)
                if drops_after[reason] > drops_before.get(reason, 0.0)
            },
            "node_cpu_s": {
                org: None
                if cpu_before[org] is None or cpu_after[org] is None
                else round(cpu_after[org] - cpu_before[org], 1)  # type: ignore[operator]
                for org in cpu_after
            },
            "flooders": [
                {
                    "kind": r.kind,
                    "batches": r.batches,
                    "txs": r.txs,
                    "answers": r.answers,
                    "cpu_s": round(r.cpu_s, 1),
                }
                for r in flood_results
            ],
        }

    def _start_flooders(
        self,
        ready: ProcessQueue[str],
        go: ProcessEvent,
        stop: ProcessEvent,
        results: ProcessQueue[FloodResult],
    ) -> list[BaseProcess]:
        context = multiprocessing.get_context("spawn")
        seed = load_key(self.layout.client_key(self.flooder.org)).seed
        node_dir = self.layout.node_dir(self.flooder.org)
        started: list[BaseProcess] = []
        if self.args.peer_flood:
            material = TlsMaterial.load(
                self.layout.ca_cert, node_dir / "tls.pem", node_dir / "tls.key"
            )
            peer_job = PeerFloodJob(
                targets=tuple((n.org, f"{n.host}:{n.peer_port}") for n in self.honest),
                material=material,
                chain_id=CHAIN_ID,
                member_seed=seed,
                batch_txs=self.args.gossip_batch_txs,
            )
            started.append(
                context.Process(target=run_peer_flood, args=(peer_job, ready, go, stop, results))
            )
        if self.args.client_flood:
            client_job = ClientFloodJob(
                targets=tuple(f"{n.host}:{n.client_port}" for n in self.honest),
                ca_cert=self.bench.ca_cert,
                client=ClientCert.member(self.layout, self.flooder.org),
                chain_id=CHAIN_ID,
                member_seed=seed,
                batch_txs=self.args.client_batch_txs,
                reconnect=self.args.reconnect,
            )
            started.append(
                context.Process(
                    target=run_client_flood, args=(client_job, ready, go, stop, results)
                )
            )
        for process in started:
            process.start()
            self._processes.append(process)
        return started


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Phases undisturbed, flooded, undisturbed, ... ending undisturbed: R flooded phases, each
    between two undisturbed ones."""
    flood = FloodBench(root, args)
    phases: list[dict[str, Any]] = []
    try:
        sys.stderr.write(f"bench-flood: starting {NODES} nodes in {root}\n")
        flood.bench.start()
        for number in range(2 * args.rounds + 1):
            flooded = number % 2 == 1
            name = "flooded" if flooded else "undisturbed"
            phases.append(
                {"phase": name, **flood.phase(name, number * SONGS_PER_PHASE, flood=flooded)}
            )
    finally:
        flood.close()
    rounds = [
        {
            "flooded_tx_per_s": phases[i]["honest_committed_tx_per_s"],
            "undisturbed_tx_per_s": round(
                (phases[i - 1]["honest_committed_tx_per_s"]
                 + phases[i + 1]["honest_committed_tx_per_s"]) / 2, 1
            ),
        }
        for i in range(1, len(phases), 2)
    ]  # fmt: skip
    for one in rounds:
        one["commit_rate_fraction"] = round(
            one["flooded_tx_per_s"] / max(one["undisturbed_tx_per_s"], 1e-9), 3
        )
    fractions = [one["commit_rate_fraction"] for one in rounds]
    return {
        "nodes": NODES,
        "flooding_org": flood.flooder.org,
        "phase_s": args.phase_s,
        "peer_flood": args.peer_flood,
        "client_flood": args.client_flood,
        "reconnect": args.reconnect,
        "gossip_batch_txs": args.gossip_batch_txs,
        "client_batch_txs": args.client_batch_txs,
        "phases": phases,
        "rounds": rounds,
        "commit_rate_fraction": round(sum(fractions) / len(fractions), 3),
        "commit_rate_fraction_min": min(fractions),
        "get_status_ms_max": {
            name: max(p["get_status_ms"]["max"] for p in phases if p["phase"] == name)
            for name in ("undisturbed", "flooded")
        },
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger bench-flood", description="one org floods a loaded 4-node cluster"
    )
    parser.add_argument("--phase-s", type=float, default=DEFAULT_PHASE_S, help="seconds per phase")
    parser.add_argument(
        "--rounds", type=int, default=1, help="flooded phases (each between undisturbed ones)"
    )
    parser.add_argument("--no-peer-flood", dest="peer_flood", action="store_false")
    parser.add_argument("--no-client-flood", dest="client_flood", action="store_false")
    parser.add_argument(
        "--reconnect", action="store_true", help="client flood: a new connection per batch"
    )
    parser.add_argument("--gossip-batch-txs", type=int, default=DEFAULT_GOSSIP_BATCH_TXS)
    parser.add_argument("--client-batch-txs", type=int, default=DEFAULT_CLIENT_BATCH_TXS)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--keep", type=Path, help="create the cluster here and keep it")
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if min(args.phase_s, args.rounds, args.gossip_batch_txs, args.client_batch_txs) <= 0:
        print(
            "kledger bench-flood: --phase-s and the batch sizes must be positive", file=sys.stderr
        )
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    root = args.keep if args.keep else Path(tempfile.mkdtemp(prefix="kledger-flood-")) / "cluster"
    try:
        result = run(args, root)
    except BenchError as exc:
        print(f"kledger bench-flood: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(root.parent, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report(result))
    return 0


def report(result: dict[str, Any]) -> str:
    lines = [
        f"flooding org {result['flooding_org']}: peer flood {result['peer_flood']}, "
        f"client flood {result['client_flood']} (reconnect {result['reconnect']})"
    ]
    for phase in result["phases"]:
        status = phase["get_status_ms"]
        lines.append(
            f"{phase['phase']:<12} honest nodes commit {phase['honest_committed_tx_per_s']:>7} "
            f"tx/s; GetStatus p50 {status['p50']} ms, p99 {status['p99']} ms, "
            f"max {status['max']} ms"
        )
    for number, one in enumerate(result["rounds"], 1):
        lines.append(
            f"flooded phase {number}: {one['flooded_tx_per_s']} / {one['undisturbed_tx_per_s']} "
            f"tx/s (the undisturbed phases beside it) = {one['commit_rate_fraction']}"
        )
    lines.append(
        f"flooded / undisturbed commit rate: mean {result['commit_rate_fraction']}, "
        f"min {result['commit_rate_fraction_min']}"
    )
    last = [p for p in result["phases"] if p["phase"] == "flooded"][-1]
    for flooder in last["flooders"]:
        lines.append(
            f"  {flooder['kind']} flooder: {flooder['batches']} batches, "
            f"{flooder['txs']} txs, cpu {flooder['cpu_s']} s, answers {flooder['answers']}"
        )
    lines.append(f"  honest nodes' drops while flooded (last phase): {last['drops']}")
    return "\n".join(lines)
