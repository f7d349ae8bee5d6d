"""The yardstick beside `kledger bench`: a 3-member etcd cluster (Raft in Go, no signatures, one
fsync per batch like the node's synced block write) on this machine, loaded through the same
Python gRPC client machinery, so "how far is the ledger from a well-tuned replicated store" is a
figure measured in the same run rather than a number from elsewhere.

    kledger bench-etcd [--members 3] [--clients 2] [--puts 20000] [--window 128]
                       [--value-bytes 300] [--json]
    kledger bench --etcd ...     the ledger run, then this one with the ledger's load shape

Rules it keeps:
- etcd comes from Debian's `etcd-server` package, downloaded with `apt-get download` and
  unpacked with `dpkg-deb -x` into a cache (ETCD_CACHE, once per machine); nothing is installed
  system-wide and no prebuilt binary is fetched from anywhere else;
- the members speak TLS as the nodes do (certificates from a CA made for the run; mutual TLS
  between members and towards the clients, which show a certificate as the ledger's clients
  do), bind only 127.0.0.1 on a claimed port block outside the ephemeral range, keep their data
  in the run's directory, and are stopped by PID;
- each client is its own spawned process with one channel per member, puts spread round-robin
  over the members (a follower forwards to the leader, as a node forwards gossip), at most
  `window` puts in flight; it connects, reports ready and waits for the start event, so
  connection set-up is outside the measured time;
- a put is encoded by hand (etcdserverpb.PutRequest: key = 1, value = 2, both bytes): no etcd
  client library and no generated code are needed for one message.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

import grpc

from kledger.cluster.bench.report import latency_ms
from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.local.ports import claim_block
from kledger.node.net.tls import issue_node_cert, make_ca

ETCD_PACKAGE = "etcd-server"
ETCD_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kledger" / "etcd"
HOST = "127.0.0.1"
PUT_METHOD = "/etcdserverpb.KV/Put"
READY_TIMEOUT_S = 60.0
PUT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class EtcdBenchError(RuntimeError):
    """The comparison could not run (no package, a member that does not start, a failed put)."""


# -- the etcd binary ----------------------------------------------------------------------------


def _run(command: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; its exit status is the caller's to read (never raises for it)."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def etcd_binary(cache: Path = ETCD_CACHE) -> Path:
    """The etcd server binary, unpacked from Debian's package into `cache` on first use."""
    binary = cache / "usr" / "bin" / "etcd"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        download = ["apt-get", "download", ETCD_PACKAGE]
        done = _run(download, cwd=scratch)
        if done.returncode != 0:  # no package lists yet on a fresh machine: fetch them once
            _run(["apt-get", "update"])
            done = _run(download, cwd=scratch)
        debs = sorted(Path(scratch).glob(f"{ETCD_PACKAGE}_*.deb"))
        if done.returncode != 0 or not debs:
            raise EtcdBenchError(
                f"`apt-get download {ETCD_PACKAGE}` failed: {done.stderr.strip()[-300:]}"
            )
        unpacked = _run(["dpkg-deb", "-x", str(debs[0]), str(cache)])
        if unpacked.returncode != 0 or not binary.exists():
            raise EtcdBenchError(f"dpkg-deb -x {debs[0].name}: {unpacked.stderr.strip()[-300:]}")
    return binary


# -- the members --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"https://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{HOST}:{self.peer_port}"


def _member_command(binary: Path, member: Member, initial_cluster: str, root: Path) -> list[str]:
    tls = root / "tls"
    return [
        str(binary),
        f"--name={member.name}",
        f"--data-dir={root / member.name}",
        f"--listen-client-urls={member.client_url}",
        f"--advertise-client-urls={member.client_url}",
        f"--listen-peer-urls={member.peer_url}",
        f"--initial-advertise-peer-urls={member.peer_url}",
        f"--initial-cluster={initial_cluster}",
        "--initial-cluster-state=new",
        "--initial-cluster-token=kledger-bench",
        f"--cert-file={tls / 'member.pem'}",
        f"--key-file={tls / 'member.key'}",
        f"--trusted-ca-file={tls / 'ca.pem'}",
        "--client-cert-auth",
        f"--peer-cert-file={tls / 'member.pem'}",
        f"--peer-key-file={tls / 'member.key'}",
        f"--peer-trusted-ca-file={tls / 'ca.pem'}",
        "--peer-client-cert-auth",
        "--log-level=error",
    ]


class EtcdCluster:
    """`members` etcd processes under `root`; a context manager that stops them all by PID."""

    def __init__(self, root: Path, members: int, binary: Path) -> None:
        self.root = root
        ports = claim_block(2 * members, HOST, root)
        self.members = [Member(f"m{i + 1}", ports[2 * i], ports[2 * i + 1]) for i in range(members)]
        authority = make_ca("kledger bench etcd CA")
        cert_pem, key_pem = issue_node_cert(authority, "ETCD")
        tls = root / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        (tls / "ca.pem").write_bytes(authority.cert_pem)
        (tls / "member.pem").write_bytes(cert_pem)
        (tls / "member.key").write_bytes(key_pem)
        self.ca_pem = authority.cert_pem
        client_pem, client_key = issue_node_cert(authority, "BENCH")  # client auth too
        self.client = ClientCert(client_pem, client_key)
        self._binary = binary
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    @property
    def targets(self) -> list[str]:
        return [f"{HOST}:{m.client_port}" for m in self.members]

    def __enter__(self) -> EtcdCluster:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        try:
            for member in self.members:
                log = open(
                    self.root / f"{member.name}.log", "wb"
                )  # the child holds it; ours closes below
                command = _member_command(self._binary, member, initial, self.root)
                self._processes.append(subprocess.Popen(command, stdout=log, stderr=log))
                log.close()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        """Every member answers a put (a leader is elected and every member reaches it)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        for target in self.targets:
            channel = open_channel(target, self.ca_pem, self.client)
            try:
                put = _put_callable(channel)
                while True:
                    for process in self._processes:
                        if process.poll() is not None:
                            raise EtcdBenchError(
                                f"etcd member exited with {process.returncode}; "
                                f"see {self.root}/m*.log"
                            )
                    try:
                        put(encode_put(b"ready", b""), timeout=2.0)
                        break
                    except grpc.RpcError:
                        if time.monotonic() > deadline:
                            raise EtcdBenchError(
                                f"etcd at {target} not ready in {READY_TIMEOUT_S:.0f} s"
                            ) from None
                        time.sleep(0.2)
            finally:
                channel.close()

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- puts ---------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_put(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest{key: 1, value: 2} in protobuf wire format."""
    return b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value


def _put_callable(channel: grpc.Channel) -> Any:
    return channel.unary_unary(
        PUT_METHOD, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
    )


@dataclass(frozen=True, slots=True)
class PutJob:
    client: int
    targets: tuple[str, ...]
    ca_pem: bytes
    client_cert: ClientCert
    puts: int
    window: int
    value_bytes: int


@dataclass(frozen=True, slots=True)
class PutResult:
    client: int
    acked: int
    failed: dict[str, int]
    latencies_s: list[float]
    first_sent: float
    last_acked: float


def run_putter(
    job: PutJob, ready: ProcessQueue[int], go: ProcessEvent, out: ProcessQueue[PutResult]
) -> None:
    """Process entry point: `job.puts` puts, at most `job.window` in flight, round-robin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channels = [open_channel(target, job.ca_pem, job.client_cert) for target in job.targets]
    puts = [_put_callable(channel) for channel in channels]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT_S)
    value = os.urandom(job.value_bytes)
    requests = [encode_put(f"bench/{job.client}/{n:09d}".encode(), value) for n in range(job.puts)]
    in_flight = threading.BoundedSemaphore(job.window)
    lock = threading.Lock()
    latencies: list[float] = []
    failed: dict[str, int] = {}
    last_acked = [0.0]
    all_done = threading.Event()
    remaining = [job.puts]
    ready.put(job.client)
    go.wait()
    first_sent = time.monotonic()

    def done(future: grpc.Future, sent: float) -> None:
        now = time.monotonic()
        error = future.exception()
        with lock:
            if error is None:
                latencies.append(now - sent)
                last_acked[0] = now
            else:
                name = error.code().name if isinstance(error, grpc.RpcError) else "error"  # type: ignore[attr-defined]
                failed[name] = failed.get(name, 0) + 1
            remaining[0] -= 1
            if remaining[0] == 0:
                all_done.set()
        in_flight.release()

    for n, request in enumerate(requests):
        in_flight.acquire()
        sent = time.monotonic()
        future = puts[n % len(puts)].future(request, timeout=PUT_TIMEOUT_S)
        future.add_done_callback(lambda f, sent=sent: done(f, sent))
    if job.puts:
        all_done.wait()
    for channel in channels:
        channel.close()
    out.put(PutResult(job.client, len(latencies), failed, latencies, first_sent, last_acked[0]))


def load(
    cluster: EtcdCluster, clients: int, puts: int, window: int, value_bytes: int
) -> dict[str, Any]:
    """`puts` puts from `clients` processes; the figures of the load."""
    context = multiprocessing.get_context("spawn")
    ready: ProcessQueue[int] = context.Queue()
    results: ProcessQueue[PutResult] = context.Queue()
    go = context.Event()
    shares = [puts // clients + (1 if i < puts % clients else 0) for i in range(clients)]
    processes = []
    for client, share in enumerate(shares):
        targets = tuple(cluster.targets[client % len(cluster.targets) :] + cluster.targets)
        job = PutJob(
            client,
            targets[: len(cluster.targets)],
            cluster.ca_pem,
            cluster.client,
            share,
            window,
            value_bytes,
        )
        process = context.Process(target=run_putter, args=(job, ready, go, results))
        process.start()
        processes.append(process)
    try:
        for _ in processes:
            ready.get(timeout=READY_TIMEOUT_S * 2)
        started = time.monotonic()
        go.set()
        outcome = [results.get(timeout=PUT_TIMEOUT_S * 10) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    acked = sum(r.acked for r in outcome)
    failed: dict[str, int] = {}
    for result in outcome:
        for name, count in result.failed.items():
            failed[name] = failed.get(name, 0) + count
    ended = max((r.last_acked for r in outcome), default=started)
    elapsed = max(ended - started, 1e-9)
    latencies = [s for r in outcome for s in r.latencies_s]
    return {
        "puts": puts,
        "acked_puts": acked,
        "failed_puts": failed,
        "elapsed_s": round(elapsed, 2),
        "puts_per_s": round(acked / elapsed, 1),
        "latency_ms": latency_ms(latencies),
    }


def run(
    root: Path,
    *,
    members: int = 3,
    clients: int = 2,
    puts: int = 20_000,
    window: int = 128,
    value_bytes: int = 300,
) -> dict[str, Any]:
    """One whole etcd run in `root` (created; its member data is removed afterwards)."""
    binary = etcd_binary()
    version = _run([str(binary), "--version"])
    root.mkdir(parents=True, exist_ok=True)
    with EtcdCluster(root, members, binary) as cluster:
        figures = load(cluster, clients, puts, window, value_bytes)
        pids = cluster.pids
    for member in cluster.members:
        shutil.rmtree(root / member.name, ignore_errors=True)
    return {
        "etcd_version": version.stdout.splitlines()[0] if version.stdout else "",
        "members": members,
        "clients": clients,
        "window": window,
        "value_bytes": value_bytes,
        "member_pids": pids,
        **figures,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kledger bench-etcd", description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--puts", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=128, help="puts in flight per client")
    parser.add_argument("--value-bytes", type=int, default=300, help="about one signed tx")
    parser.add_argument("--dir", type=Path, help="where the members run (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser


@contextmanager
def _run_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="kledger-etcd-") as scratch:
        yield Path(scratch)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    for name in ("members", "clients", "puts", "window"):
        if getattr(args, name) < 1:
            print(f"kledger bench-etcd: --{name} must be at least 1", file=sys.stderr)
            return 2
    try:
        with _run_dir(args.dir) as root:
            report = run(
                root,
                members=args.members,
                clients=args.clients,
                puts=args.puts,
                window=args.window,
                value_bytes=args.value_bytes,
            )
    except EtcdBenchError as exc:
        print(f"kledger bench-etcd: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"etcd {report['members']} members ({report['etcd_version']}): "
            f"{report['acked_puts']}/{report['puts']} puts in {report['elapsed_s']} s = "
            f"{report['puts_per_s']} puts/s; latency ms {report['latency_ms']}"
        )
    return 0 if report["acked_puts"] == report["puts"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
