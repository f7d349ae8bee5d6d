"""Ports of a local cluster (cluster/local/ports.py): chosen outside the OS's ephemeral range,
claimed so clusters made one after another differ, refused by `cluster init` and `cluster up` when a
socket holds one (naming the port and its holder); a node whose port is taken says so in one
line and exits 1; `cluster up` with a node that fails names it, shows its log tail and leaves
no process running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kledger.cluster.cli import main as kledger
from kledger.cluster.local import launcher, ports
from kledger.cluster.local.gen import PORTS_PER_NODE, ClusterSpec, generic_orgs, init_cluster
from kledger.cluster.local.ports import PortInUse, claim_block, ephemeral_range

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A socket of this process listening on a port the OS picks (so nothing else holds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def listen_on(port: int, *, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket()
    if reuse_port:  # as gRPC's own listeners do
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def running_under(root: Path) -> list[str]:
    """Command lines of processes whose arguments mention `root` (its nodes' configs)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in text and "node start" in text:
            found.append(text)
    return found


# -- choosing ----------------------------------------------------------------------------------


def test_the_ephemeral_range_is_read_from_proc(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ephemeral_range(tmp_path / "range") == (40_000, 50_000)
    assert ephemeral_range(tmp_path / "missing") == ports.DEFAULT_EPHEMERAL


def test_a_block_lies_below_the_ephemeral_range(tmp_path: Path) -> None:
    low, high = ephemeral_range()
    block = claim_block(18, "127.0.0.1", tmp_path / "c", claims_file=tmp_path / "claims")
    assert block == list(range(block[0], block[0] + 18))
    assert block[0] >= ports.SEARCH_START and block[-1] < low
    assert not set(block) & set(range(low, high + 1))


def test_above_the_range_when_it_leaves_no_room_below(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (ports.SEARCH_START + 10, 60_999))
    block = claim_block(18, "127.0.0.1", tmp_path / "c", claims_file=tmp_path / "claims")
    assert block[0] >= 61_000 and block[-1] <= ports.HIGHEST_PORT


def test_clusters_made_one_after_another_get_their_own_block(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    first = claim_block(12, "127.0.0.1", tmp_path / "a", claims_file=claims)
    second = claim_block(12, "127.0.0.1", tmp_path / "b", claims_file=claims)
    assert (tmp_path / "a").is_dir() and not set(first) & set(second)
    again = claim_block(12, "127.0.0.1", tmp_path / "a", claims_file=claims)  # re-created
    assert not set(again) & set(second)
    (tmp_path / "a").rmdir()  # a claim lasts as long as its cluster directory
    claim_block(12, "127.0.0.1", tmp_path / "c", claims_file=claims)
    assert set(json.loads(claims.read_text())) == {str(tmp_path / "b"), str(tmp_path / "c")}


def test_a_held_port_is_never_chosen(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    block = claim_block(6, "127.0.0.1", tmp_path / "a", claims_file=claims)
    (tmp_path / "a").rmdir()
    with listen_on(block[2], reuse_port=True):
        chosen = claim_block(6, "127.0.0.1", tmp_path / "b", claims_file=claims)
    assert block[2] not in chosen


def test_init_claims_a_block_outside_the_ephemeral_range(tmp_path: Path) -> None:
    layout = init_cluster(tmp_path / "c", ClusterSpec(orgs=generic_orgs(4), chain_id="p"))
    used = [p for n in layout.nodes() for p in (n.client_port, n.peer_port, n.metrics_port)]
    low, high = ephemeral_range()
    assert len(set(used)) == 4 * PORTS_PER_NODE
    assert all(p < low or p > high for p in used)


# -- refusing ----------------------------------------------------------------------------------


def test_init_refuses_a_given_base_port_that_is_held(
    tmp_path: Path, listening: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    port = port_of(listening)
    spec = ClusterSpec(orgs=generic_orgs(2), chain_id="p", base_port=port)
    with pytest.raises(PortInUse) as refused:
        init_cluster(tmp_path / "c", spec)
    message = str(refused.value)
    assert f"127.0.0.1:{port} (ORG1 client)" in message
    assert f"held by pid {os.getpid()}" in message
    assert kledger(["cluster", "init", str(tmp_path / "d"), "--base-port", str(port)]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


def test_up_refuses_a_held_port_before_starting_any_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = init_cluster(tmp_path / "c", ClusterSpec(orgs=generic_orgs(4), chain_id="p"))
    peer_port = next(n.peer_port for n in layout.nodes() if n.org == "ORG3")
    with listen_on(peer_port, reuse_port=True):  # another gRPC server would hold it like this
        assert kledger(["cluster", "up", str(layout.root)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{peer_port} (ORG3 peer) is in use" in err
    assert f"held by pid {os.getpid()}" in err
    assert not list(layout.root.glob("nodes/*/node.pid")) and not running_under(layout.root)


# -- failing to start --------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("setting", ["client", "peer", "metrics"])
def test_a_node_whose_port_is_taken_exits_1_saying_so_in_one_line(
    tmp_path: Path, setting: str
) -> None:
    layout = init_cluster(tmp_path / "c", ClusterSpec(orgs=generic_orgs(1), chain_id="p"))
    (node,) = layout.nodes()
    port = {"client": node.client_port, "peer": node.peer_port, "metrics": node.metrics_port}
    with listen_on(port[setting], reuse_port=True):
        started = subprocess.run(
            [
                sys.executable, "-m", "kledger.cluster.cli", "node", "start",
                "--config", str(layout.node_config("ORG1")),
            ],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
    lines = started.stderr.strip().splitlines()
    assert started.returncode == 1, started.stderr
    assert len(lines) == 1, started.stderr
    assert f"listen.{setting}: cannot bind 127.0.0.1:{port[setting]}" in lines[0]
    assert "Address already in use" in lines[0]


@pytest.mark.integration
def test_up_with_a_failing_node_names_it_shows_its_log_and_stops_the_rest(tmp_path: Path) -> None:
    layout = init_cluster(tmp_path / "c", ClusterSpec(orgs=generic_orgs(4), chain_id="p"))
    # ORG3 given ORG1's validator key: it refuses to start (after the port checks pass).
    key = layout.node_dir("ORG3") / "validator.key"
    key.write_bytes((layout.node_dir("ORG1") / "validator.key").read_bytes())
    done = subprocess.run(
        [sys.executable, "-m", "kledger.cluster.cli", "cluster", "up", str(layout.root)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ORG3 exited with code 1; last " in done.stderr
    assert f"lines of {layout.node_dir('ORG3') / 'node.log'}:" in done.stderr
    assert "| kledger node: refusing to start: validator_key:" in done.stderr  # the log tail
    assert "not serving: ORG3; stopped every node this command started" in done.stderr
    assert not running_under(layout.root)
    assert not any(p.running for p in launcher.processes(layout))
