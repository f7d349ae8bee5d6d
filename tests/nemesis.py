"""The nemesis: a real cluster of node processes driven through rounds of faults while a checker
watches the promise (docs/design.md §10). Faults, one per round, chosen by a seeded RNG:

- kill9      kill -9 a node, restart it after the round
- pause      SIGSTOP a node for the round, then SIGCONT
- partition  cut the peer links of one node, or split the cluster 2|2 (no quorum either side)
- clock      restart a node with its consensus clock 60 s fast or slow (testing.clock_offset_ms)
- byzantine  restart a node as a Byzantine proposer (testing.byzantine_proposer)
- flood      a client floods one node with correctly framed, badly signed txs

Partitions are real: every node dials its peers through a TCP proxy of this process, one
listener per directed link, which drops and refuses the links a partition cuts (TLS runs end to
end through it). Load: txs submitted to reachable nodes all along; a tx is acknowledged when
WaitForCommit returned its receipt to the client. After each round the fault heals and commits
must resume (every node two heights above where they were) within `resume_timeout_s`.

The checker, at the end: every acknowledged tx is on every node; all nodes agree on the header
of every height; no node reported an equivocation (no node here signs two votes or proposals
for one round; the Byzantine proposer's junk is signed once per round). Run it:

    ./scripts/nemesis --rounds 12 --seed 1        (JSON summary on stdout; exit 1 on a violation)

A failing run prints its seed; the same seed replays the same fault schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.local import launcher
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.v1 import ledger_pb2, ledger_pb2_grpc
from tests.cluster_harness import CHAIN_ID, LocalCluster

FAULTS = ("kill9", "pause", "partition", "clock", "byzantine", "flood")


class LinkProxy:
    """TCP proxies for the directed peer links, on an asyncio loop of their own thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._blocked: set[tuple[str, str]] = set()
        self._open: dict[tuple[str, str], set[asyncio.StreamWriter]] = {}
        self._servers: list[asyncio.Server] = []

    def add_link(self, src: str, dst: str, target_port: int) -> int:
        future = asyncio.run_coroutine_threadsafe(self._listen(src, dst, target_port), self._loop)
        return future.result(10)

    async def _listen(self, src: str, dst: str, target_port: int) -> int:
        link = (src, dst)
        self._open[link] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if link in self._blocked:
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
            except OSError:
                writer.close()
                return
            self._open[link] |= {writer, up_writer}
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            self._open[link] -= {writer, up_writer}

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    def cut(self, links: set[tuple[str, str]]) -> None:
        def apply() -> None:
            self._blocked = set(links)
            for link in links:
                for writer in list(self._open.get(link, ())):
                    writer.close()

        self._loop.call_soon_threadsafe(apply)

    def heal(self) -> None:
        self.cut(set())

    def close(self) -> None:
        for server in self._servers:
            self._loop.call_soon_threadsafe(server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@dataclass
class Report:
    seed: int
    rounds: int
    faults: Counter[str] = field(default_factory=Counter)
    submitted: int = 0
    acknowledged: int = 0
    lost: int = 0
    disagreements: int = 0
    equivocations: int = 0
    resume_s: list[float] = field(default_factory=list)
    stalled_rounds: list[str] = field(default_factory=list)
    heights_checked: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.disagreements or self.equivocations or self.stalled_rounds)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "seed": self.seed, "rounds": self.rounds, "faults": dict(self.faults),
            "submitted": self.submitted, "acknowledged": self.acknowledged, "lost": self.lost,
            "disagreements": self.disagreements, "equivocations": self.equivocations,
            "heights_checked": self.heights_checked,
            "resume_s_max": max(self.resume_s, default=0.0), "stalled_rounds": self.stalled_rounds,
        }  # fmt: skip


class Nemesis:
    def __init__(self, root: Path, seed: int, fault_s: float, resume_timeout_s: float) -> None:
        # The fault schedule has its own RNG, so a seed replays the same faults whatever the
        # timing does to the load's choices (which use the other).
        self.schedule = random.Random(seed)
        self.rng = random.Random(seed + 1)
        self.cluster = LocalCluster(root, nodes=4)
        self.orgs = list(self.cluster.orgs)
        self.proxy = LinkProxy()
        self.fault_s = fault_s
        self.resume_timeout_s = resume_timeout_s
        self.report = Report(seed=seed, rounds=0)
        self.down: set[str] = set()  # nodes not to send load to (killed, paused, cut off)
        self.pending: list[tuple[str, SignedTx]] = []
        self.acked: list[SignedTx] = []
        self._route_peers_through_the_proxy()

    def _route_peers_through_the_proxy(self) -> None:
        ports = {n.org: n.peer_port for n in self.cluster.layout.nodes()}
        for org in self.orgs:
            path = self.cluster.layout.node_config(org)
            config = json.loads(path.read_text())
            config["peers"] = {
                peer: f"127.0.0.1:{self.proxy.add_link(org, peer, ports[peer])}"
                for peer in self.orgs
                if peer != org
            }
            path.write_text(json.dumps(config, indent=2))

    def _set_testing(self, org: str, testing: dict[str, Any]) -> None:
        path = self.cluster.layout.node_config(org)
        config = json.loads(path.read_text())
        config["testing"] = testing
        path.write_text(json.dumps(config, indent=2))

    # -- load and acknowledgements -------------------------------------------------------------

    def load(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            live = [o for o in self.orgs if o not in self.down]
            org = self.rng.choice(live)
            tx = self.cluster.party_tx(org)
            try:
                [result] = self.cluster.submit(org, [tx])
            except grpc.RpcError:
                continue
            if result.status == "OK":
                self.pending.append((org, tx))
                self.report.submitted += 1
            time.sleep(0.25)
        self.collect_acks(timeout_s=0.2)

    def collect_acks(self, timeout_s: float) -> None:
        still = []
        for org, tx in self.pending:
            target = (
                org if org not in self.down else next(o for o in self.orgs if o not in self.down)
            )
            try:
                receipt = self.cluster.receipt(target, tx, timeout_s=timeout_s)
            except grpc.RpcError:
                still.append((org, tx))
                continue
            self.acked.append(tx)
            assert receipt.height > 0
        self.pending = still
        self.report.acknowledged = len(self.acked)

    # -- faults ---------------------------------------------------------------------------------

    def round(self, index: int) -> None:
        fault = self.schedule.choice(FAULTS)
        victim = self.schedule.choice(self.orgs)
        self.report.faults[fault] += 1
        heal = getattr(self, f"_{fault}")(victim)
        self.load(self.fault_s)
        heal()
        self.down.clear()
        self._wait_resume(f"round {index} ({fault} {victim})")

    def _kill9(self, org: str) -> Any:
        self.cluster.kill(org)
        self.down.add(org)
        return lambda: self.cluster.start(org)

    def _pause(self, org: str) -> Any:
        pid = launcher.node_pid(self.cluster.layout, org)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        self.down.add(org)
        return lambda: os.kill(pid, signal.SIGCONT)

    def _partition(self, org: str) -> Any:
        if self.schedule.random() < 0.5:
            cut = {(a, b) for a in self.orgs for b in self.orgs if a != b and org in (a, b)}
            self.down.add(org)
        else:
            left = set(self.schedule.sample(self.orgs, 2))
            cut = {(a, b) for a in self.orgs for b in self.orgs if (a in left) != (b in left)}
        self.proxy.cut(cut)
        return self.proxy.heal

    def _restart_with(self, org: str, testing: dict[str, Any]) -> Any:
        self.cluster.stop(org)
        self._set_testing(org, testing)
        self.cluster.start(org)

        def heal() -> None:
            self.cluster.stop(org)
            self._set_testing(org, {})
            self.cluster.start(org)

        return heal

    def _clock(self, org: str) -> Any:
        offset = self.schedule.choice([60_000, -60_000])
        return self._restart_with(org, {"clock_offset_ms": offset})

    def _byzantine(self, org: str) -> Any:
        return self._restart_with(
            org, {"byzantine_proposer": True, "byzantine_seed": self.schedule.randrange(1 << 30)}
        )

    def _flood(self, org: str) -> Any:
        stop = threading.Event()
        stranger = KeyPair.from_seed(self.schedule.randbytes(32))
        good = self.cluster.party_tx(org)
        # The flood's own connection, as an attacker's: the node throttles it, not the load's.
        node = next(n for n in self.cluster.layout.nodes() if n.org == org)
        channel = open_channel(
            f"{node.host}:{node.client_port}",
            self.cluster.layout.ca_cert.read_bytes(),
            ClientCert.member(self.cluster.layout, org),
        )
        stub = ledger_pb2_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]

        def flood() -> None:
            nonce = 0
            while not stop.is_set():
                txs = []
                for _ in range(500):
                    nonce += 1
                    body = TxBody(CHAIN_ID, "RegisterParty", nonce, {"n": nonce})
                    tx = sign_tx(stranger, body)
                    txs.append(SignedTx(tx.body, good.signer, tx.signature))  # bad signature
                request = ledger_pb2.SubmitBatchRequest(txs=[tx.encoding for tx in txs])
                try:
                    stub.SubmitBatch(request, timeout=10)
                except grpc.RpcError:  # throttled: RESOURCE_EXHAUSTED after a pause
                    time.sleep(0.05)

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()

        def heal() -> None:
            stop.set()
            thread.join(30)
            channel.close()

        return heal

    def _wait_resume(self, what: str) -> None:
        start = time.monotonic()
        base = {org: self._height(org) for org in self.orgs}
        goal = max(h for h in base.values() if h is not None) + 2
        while time.monotonic() - start < self.resume_timeout_s:
            heights = [self._height(org) for org in self.orgs]
            if all(h is not None and h >= goal for h in heights):
                self.report.resume_s.append(round(time.monotonic() - start, 1))
                return
            self.load(1.0)
        self.report.stalled_rounds.append(what)

    def _height(self, org: str) -> int | None:
        try:
            return int(self.cluster.status(org).height)
        except grpc.RpcError:
            return None

    # -- the checker ----------------------------------------------------------------------------

    def check(self) -> None:
        self.collect_acks(timeout_s=5)
        top = min(int(self.cluster.status(org).height) for org in self.orgs)
        self.report.heights_checked = top
        for height in range(1, top + 1):
            hashes = {self.cluster.header_at(org, height).hash() for org in self.orgs}
            self.report.disagreements += len(hashes) > 1
        for tx in self.acked:
            self.report.lost += not all(self.cluster.has_tx(org, tx) for org in self.orgs)
        for org in self.orgs:
            log = (self.cluster.layout.node_dir(org) / "node.log").read_text(errors="replace")
            self.report.equivocations += log.count('"event": "equivocation"') + log.count(
                '"event":"equivocation"'
            )

    def run(self, rounds: int) -> Report:
        try:
            self.cluster.up()
            self.load(5.0)
            for index in range(rounds):
                self.round(index)
                self.report.rounds = index + 1
            self.check()
        finally:
            for org in self.orgs:  # never leave a stopped process behind
                pid = launcher.node_pid(self.cluster.layout, org)
                if pid is not None:
                    os.kill(pid, signal.SIGCONT)
            self.cluster.close()
            self.proxy.close()
        return self.report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nemesis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-s", type=float, default=8.0, help="seconds each fault lasts")
    parser.add_argument("--resume-timeout-s", type=float, default=90.0)
    parser.add_argument("--dir", type=Path, default=Path(".cluster/nemesis"))
    args = parser.parse_args(argv)
    if args.dir.exists():
        import shutil

        shutil.rmtree(args.dir)
    report = Nemesis(args.dir, args.seed, args.fault_s, args.resume_timeout_s).run(args.rounds)
    print(json.dumps(report.to_json(), indent=2))
    if not report.ok:
        print(f"nemesis: violation; replay with --seed {args.seed}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
