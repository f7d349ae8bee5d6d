"""Starts, stops and watches the node processes of a local cluster (cluster/layout.py).

Each node is its own OS process
(`python -m kledger.cluster.cli node start --config nodes/ORG/node.json`) in its own session,
logging to nodes/ORG/node.log, its pid in nodes/ORG/node.pid. A pid file is trusted only while
/proc shows that pid running that node's config, so a stale pid file after a reboot or a
recycled pid is never signalled.

`up` checks every port free before it starts a node (cluster/local/ports.py), fails as soon as
a node it started exits, and when any node does not serve it stops every process it started
and reports each failed node with the tail of its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.layout import ClusterLayout, NodeAddress
from kledger.cluster.local.ports import check_free
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

STOP_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 20
# The node processes this process started, so their exit codes can be read (and so that
# subprocess does not reap them on its own when a Popen object is collected).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class NodeProcess:
    org: str
    pid: int | None
    running: bool


def _pid_file(layout: ClusterLayout, org: str) -> Path:
    return layout.node_dir(org) / "node.pid"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def node_pid(layout: ClusterLayout, org: str) -> int | None:
    """The pid of org's node if it is running (and really is that node), else None."""
    try:
        pid = int(_pid_file(layout, org).read_text().strip())
    except (OSError, ValueError):
        return None
    child = _children.get(pid)
    if child is not None:  # started here: until it has exec'd, its cmdline is this process's
        return pid if child.poll() is None else None
    config = str(layout.node_config(org).resolve())
    return pid if config in _cmdline(pid) else None


def start_node(layout: ClusterLayout, org: str) -> int:
    existing = node_pid(layout, org)
    if existing is not None:
        return existing
    config = layout.node_config(org).resolve()
    log = open(layout.node_dir(org) / "node.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "kledger.cluster.cli", "node", "start", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=layout.node_dir(org),
        )
    finally:
        log.close()
    _children[process.pid] = process
    _pid_file(layout, org).write_text(f"{process.pid}\n")
    return process.pid


def _exited(layout: ClusterLayout, org: str) -> int | None:
    """The pid of org's started node (pid file) if that process has ended: a child of this
    process by its Popen, any other by /proc (gone, or a zombie)."""
    try:
        pid = int(_pid_file(layout, org).read_text().strip())
    except (OSError, ValueError):
        return None
    child = _children.get(pid)
    if child is not None:
        return pid if child.poll() is not None else None
    return pid if not Path(f"/proc/{pid}").exists() or _is_zombie(pid) else None


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    child = _children.pop(pid, None)
    while time.monotonic() < deadline:
        if child is not None:
            if child.poll() is not None:
                return True
        else:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)  # reap if it is our child
                if finished == pid:
                    return True
            except ChildProcessError:
                pass
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        time.sleep(0.05)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop_node(layout: ClusterLayout, org: str, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM (graceful), then SIGKILL after timeout_s. True if a process was stopped."""
    pid = node_pid(layout, org)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout_s):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, timeout_s)
    _pid_file(layout, org).unlink(missing_ok=True)
    return True


def kill_node(layout: ClusterLayout, org: str) -> bool:
    """kill -9: no shutdown path runs; what the node acknowledged must survive it."""
    pid = node_pid(layout, org)
    if pid is None:
        return False
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, STOP_TIMEOUT_S)
    _pid_file(layout, org).unlink(missing_ok=True)
    return True


def is_serving(layout: ClusterLayout, node: NodeAddress, timeout_s: float = 2.0) -> bool:
    """The node's standard grpc.health.v1 check on its client port answers SERVING (asked as
    the public reader: health is public)."""
    channel = open_channel(
        f"{node.host}:{node.client_port}", layout.ca_cert.read_bytes(), ClientCert.public(layout)
    )
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def wait_serving(
    layout: ClusterLayout, orgs: list[str] | None = None, timeout_s: float = READY_TIMEOUT_S
) -> list[str]:
    """Wait until the given nodes serve; returns the orgs that did not: those whose started
    process exited (at once: it will not serve) and those still not serving after timeout_s."""
    waiting = {n.org: n for n in layout.nodes() if orgs is None or n.org in orgs}
    exited: list[str] = []
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for org, node in list(waiting.items()):
            if _exited(layout, org) is not None:
                exited.append(org)
                del waiting[org]
            elif node_pid(layout, org) is None:
                continue  # not (yet) running; keep waiting until the deadline
            elif is_serving(layout, node, timeout_s=1.0):
                del waiting[org]
        if waiting:
            time.sleep(0.2)
    return sorted([*exited, *waiting])


@dataclass(frozen=True, slots=True)
class NodeFailure:
    """A node that did not serve: why, and the last lines of its log."""

    org: str
    reason: str
    log: Path
    log_tail: tuple[str, ...]

    def report(self) -> str:
        lines = [f"{self.org} {self.reason}; last {len(self.log_tail)} lines of {self.log}:"]
        return "\n".join([*lines, *(f"  | {line}" for line in self.log_tail)])


def log_tail(layout: ClusterLayout, org: str, lines: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    try:
        text = (layout.node_dir(org) / "node.log").read_text(errors="replace")
    except OSError:
        return ()
    return tuple(text.splitlines()[-lines:])


def failure(layout: ClusterLayout, org: str, timeout_s: float) -> NodeFailure:
    """Why org's node is not serving, as far as can be told now."""
    gone = _exited(layout, org)
    if gone is not None:
        child = _children.get(gone)
        code = child.poll() if child is not None else None
        reason = "exited" if code is None else f"exited with code {code}"
    elif node_pid(layout, org) is not None:
        reason = f"was running but not serving after {timeout_s:g}s"
    else:
        reason = "is not running"
    return NodeFailure(org, reason, layout.node_dir(org) / "node.log", log_tail(layout, org))


def check_ports(layout: ClusterLayout, orgs: list[str] | None = None) -> None:
    """PortInUse (a ValueError naming the port, its node and its holder) if a port of a node
    that is not running is taken: its node would fail to bind it."""
    for node in layout.nodes():
        if (orgs is None or node.org in orgs) and node_pid(layout, node.org) is None:
            check_free(
                node.host,
                {
                    node.client_port: f"{node.org} client",
                    node.peer_port: f"{node.org} peer",
                    node.metrics_port: f"{node.org} metrics",
                },
            )


def up(layout: ClusterLayout, timeout_s: float = READY_TIMEOUT_S) -> list[NodeFailure]:
    """Start every node not running and wait until each serves; [] when all do. Otherwise
    every node this call started is stopped and the failed ones are returned. PortInUse before
    anything starts if a node's port is taken."""
    check_ports(layout)
    started = [n.org for n in layout.nodes() if node_pid(layout, n.org) is None]
    for org in started:
        start_node(layout, org)
    late = wait_serving(layout, timeout_s=timeout_s)
    failures = [failure(layout, org, timeout_s) for org in late]  # before the stops below
    if failures:
        for org in started:
            stop_node(layout, org)
    return failures


def down(layout: ClusterLayout) -> list[str]:
    return [node.org for node in layout.nodes() if stop_node(layout, node.org)]


def processes(layout: ClusterLayout) -> list[NodeProcess]:
    result = []
    for node in layout.nodes():
        pid = node_pid(layout, node.org)
        result.append(NodeProcess(node.org, pid, pid is not None))
    return result


@dataclass(frozen=True, slots=True)
class NodeStatus:
    org: str
    pid: int | None
    reachable: bool
    epoch: int = 0
    role: str = ""  # "validator" of the current epoch, or "follower"
    height: int = 0
    certified_height: int = 0
    round: int = 0
    leader: str = ""
    mempool_txs: int = 0
    tx_log_size: int = 0
    tx_log_root: str = ""
    state_root: str = ""
    connected_peers: tuple[str, ...] = ()
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def line(self) -> str:
        if not self.reachable:
            state = "running" if self.pid else "stopped"
            return f"{self.org:<8} {self.pid or '-':>7} {'no':<5} ({state}) {self.error}"
        return (
            f"{self.org:<8} {self.pid or '-':>7} {'yes':<5} {self.epoch:>5} {self.role:<9} "
            f"{self.height:>7} "
            f"{self.certified_height:>7} {self.round:>7} {self.leader:<8} {self.mempool_txs:>7}"
            f"  {self.tx_log_root[:16]}"
        )


def node_status(layout: ClusterLayout, node: NodeAddress, timeout_s: float = 2.0) -> NodeStatus:
    pid = node_pid(layout, node.org)
    channel = open_channel(
        f"{node.host}:{node.client_port}", layout.ca_cert.read_bytes(), ClientCert.public(layout)
    )
    try:
        stub = ledger_pb2_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.GetStatus(ledger_pb2.GetStatusRequest(), timeout=timeout_s)
    except grpc.RpcError as exc:
        return NodeStatus(node.org, pid, False, error=str(exc.code().name))  # type: ignore[attr-defined]
    finally:
        channel.close()
    return NodeStatus(
        org=node.org,
        pid=pid,
        reachable=True,
        epoch=reply.epoch,
        role=reply.role,
        height=reply.height,
        certified_height=reply.certified_height,
        round=reply.round,
        leader=reply.leader,
        mempool_txs=reply.mempool_txs,
        tx_log_size=reply.tx_log_size,
        tx_log_root=reply.tx_log_root.hex(),
        state_root=reply.state_root.hex(),
        connected_peers=tuple(reply.connected_peers),
    )


def status(layout: ClusterLayout) -> list[NodeStatus]:
    return [node_status(layout, node) for node in layout.nodes()]
