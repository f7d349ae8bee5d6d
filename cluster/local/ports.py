"""Which ports a local cluster's nodes listen on, and whether one is free (and if not, who holds
it): used by `kledger cluster init` (cluster/gen.py) to choose them and by `kledger cluster up`
(cluster/launcher.py) to check them again before any node starts.

Why not ports the OS picks (bind to port 0, then release): those come from the OS's ephemeral
range (/proc/sys/net/ipv4/ip_local_port_range), the same range every outgoing connection and
every other program's bind-to-0 draws from, so a port chosen at init can be taken by anyone
before the node binds it, and gRPC's SO_REUSEPORT even lets another gRPC server share it
silently. Ports below that range are handed out by the OS to nobody: only a program that asks
for the number can hold one. So a cluster gets a block of consecutive ports searched from
SEARCH_START upward (below the ephemeral range; above it too when the range leaves no room
below), each probed free, and claimed in a per-user claims file so that clusters created one
after another (or by concurrent test runs) get different blocks even before their nodes
bind. A claim lasts as long as its cluster directory exists.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default ip_local_port_range, for when the file cannot be read.
DEFAULT_EPHEMERAL = (32_768, 60_999)
# Above the registered well-known services (< 1024, and the common 3000-9999 dev servers) and
# below Linux's default ephemeral range: room for ~700 blocks of six nodes.
SEARCH_START = 20_000
LOWEST_PORT = 1_024
HIGHEST_PORT = 65_535
CLAIMS_FILE = Path(tempfile.gettempdir()) / f"kledger-port-claims-{os.getuid()}.json"


class PortInUse(ValueError):
    """A port a node must listen on is held by another socket (the message names it)."""


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """(low, high) of the ports the OS assigns on its own; Linux's default if unreadable."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def bind_error(host: str, port: int) -> OSError | None:
    """The error binding host:port would give a listener now, or None if it is free (or host is
    not an address of this machine, so nothing here can be checked). SO_REUSEADDR as gRPC and
    the metrics server set it: a port left in TIME_WAIT by a stopped node is free to them."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return exc
            return None  # not resolvable or not local: the ports are for another machine
    return None


def holder(port: int) -> str:
    """Best effort: ' (held by pid N: COMMAND)' for the process with a socket on `port` (a
    listener if there is one), from /proc/net/tcp{,6} and the socket inodes in /proc/*/fd; ''
    when it cannot be found (another user's process, no /proc, or only a TIME_WAIT entry,
    which belongs to no process)."""
    for inodes in _socket_inodes(port):
        for pid_dir in Path("/proc").glob("[0-9]*"):
            try:
                for fd in (pid_dir / "fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        raw = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ")
                        command = " ".join(raw.decode(errors="replace").split())
                        return f" (held by pid {pid_dir.name}: {command[:160]})"
            except OSError:
                continue
    return ""


def _socket_inodes(port: int) -> tuple[set[str], set[str]]:
    """Inodes of the TCP sockets whose local port is `port`: (listening, the others)."""
    listening: set[str] = set()
    others: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16) if len(fields) > 9 else -1
            if local_port == port and fields[9] != "0":
                (listening if fields[3] == "0A" else others).add(fields[9])
    return listening, others


def check_free(host: str, ports: dict[int, str]) -> None:
    """PortInUse naming the first port (with what it is for, and its holder) that a listener
    could not bind on host now. `ports`: port -> what it is for, e.g. 'KOMCA client'."""
    for port, purpose in ports.items():
        error = bind_error(host, port)
        if error is not None:
            raise PortInUse(
                f"port {host}:{port} ({purpose}) is in use{holder(port)}: {error.strerror}"
            )


@dataclass(frozen=True, slots=True)
class _Claim:
    first: int
    count: int

    def overlaps(self, first: int, count: int) -> bool:
        return first < self.first + self.count and self.first < first + count


@contextlib.contextmanager
def _claims(path: Path) -> Iterator[dict[str, _Claim]]:
    """The claims (cluster root -> block), locked against other processes while in use and
    written back after; claims of cluster directories that no longer exist are dropped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            raw = json.loads(handle.read() or "{}")
            table = {
                root: _Claim(int(block[0]), int(block[1]))
                for root, block in raw.items()
                if Path(root).exists()
            }
        except (ValueError, TypeError, IndexError, AttributeError):
            table = {}  # a damaged file only loses the claims; ports are probed anyway
        yield table
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({r: [c.first, c.count] for r, c in table.items()}, indent=1))


def _search_ranges(count: int, start: int) -> list[range]:
    """Where a block's first port may be: from `start` up to just below the ephemeral range,
    then above it (if the range is set to leave room there)."""
    low, high = ephemeral_range()
    below = range(max(start, LOWEST_PORT), low - count + 1)
    above = range(max(start, high + 1), HIGHEST_PORT - count + 2)
    return [r for r in (below, above) if len(r) > 0]


def claim_block(
    count: int,
    host: str,
    owner: Path,
    *,
    start: int = SEARCH_START,
    claims_file: Path = CLAIMS_FILE,
) -> list[int]:
    """`count` consecutive ports outside the ephemeral range, free now and claimed by no other
    live cluster, claimed for `owner` (the cluster directory, created here if missing).
    ValueError if there is no such block."""
    owner = owner.resolve()
    with _claims(claims_file) as table:
        table.pop(str(owner), None)  # a re-created cluster gives its old block back
        for candidates in _search_ranges(count, start):
            first = candidates.start
            while first in candidates:
                clash = next((c for c in table.values() if c.overlaps(first, count)), None)
                if clash is not None:
                    first = clash.first + clash.count
                    continue
                taken = next(
                    (p for p in range(first, first + count) if bind_error(host, p) is not None),
                    None,
                )
                if taken is not None:
                    first = taken + 1
                    continue
                owner.mkdir(parents=True, exist_ok=True)
                table[str(owner)] = _Claim(first, count)
                return list(range(first, first + count))
    low, high = ephemeral_range()
    raise ValueError(
        f"no {count} consecutive free ports from {start} outside the ephemeral range "
        f"{low}-{high}; give --base-port"
    )
