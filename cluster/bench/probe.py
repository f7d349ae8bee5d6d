"""What the benchmark reads from this machine: the Ed25519 verify rate of one core, the core
count, and each node process's CPU time and memory (now and peak) from /proc; and where a
process may run (`pin`, for the proofs served from a core of their own).

Rules it keeps: the verify rate is measured with PyNaCl (what the node uses, through
node/chain/keys.py) on a message the size of a signed registry tx, over about VERIFY_MEASURE_S of
wall time in this one process; /proc reads never raise for a process that is gone (they answer
None), since a node may be killed on purpose during the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Set as AbstractSet
from pathlib import Path

import plyvel
from nacl.signing import SigningKey

from kledger.node.storage import keyspace
from kledger.node.storage.store_parts import STATE_PART

VERIFY_MEASURE_S = 1.0
VERIFY_MESSAGE_BYTES = 300  # about one signed registry tx body
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0))


def verify_per_s(measure_s: float = VERIFY_MEASURE_S) -> float:
    """Ed25519 signature verifications per second on one core (PyNaCl)."""
    key = SigningKey(bytes(range(32)))
    signed = key.sign(bytes(VERIFY_MESSAGE_BYTES))
    verify_key = key.verify_key
    count = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < measure_s:
        for _ in range(100):
            verify_key.verify(signed)
        count += 100
        elapsed = time.perf_counter() - start
    return count / elapsed


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds the process has used, or None if it is gone."""
    return _stat_cpu_s(Path(f"/proc/{pid}/stat"))


def main_thread_cpu_s(pid: int) -> float | None:
    """CPU seconds of the process's main thread only (a node's event loop: consensus,
    admission, serving), without its other threads (the commit worker that executes blocks,
    LevelDB compaction, gRPC polling)."""
    return _stat_cpu_s(Path(f"/proc/{pid}/task/{pid}/stat"))


def _stat_cpu_s(path: Path) -> float | None:
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")" of the command name: state is field 0, utime 11, stime 12 (proc(5) 3, 14, 15).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def _status_kib(pid: int, field: str) -> int | None:
    """A "kB" field of /proc/PID/status in bytes, or None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM: the peak resident set size of the process so far, or None if it is gone."""
    return _status_kib(pid, "VmHWM:")


def rss_bytes(pid: int) -> int | None:
    """VmRSS: the resident set size of the process now, or None if it is gone. It counts the
    pages of files the process maps: LevelDB maps its table files, so a node's RSS grows with
    what it has read of its store (page cache the kernel can reclaim), not only its heap."""
    return _status_kib(pid, "VmRSS:")


def rss_anon_bytes(pid: int) -> int | None:
    """RssAnon: the resident memory of the process that no file backs (its heap and stacks:
    what a leak grows), or None if it is gone."""
    return _status_kib(pid, "RssAnon:")


def tree_bytes(root: Path) -> int:
    """Bytes of all regular files under root (the node's LevelDB directory)."""
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue  # LevelDB compaction removed it while we walked
    return total


def live_state_keys(data_dir: Path) -> int:
    """Registry state records (s/) in a node's store (its state/ LevelDB); only once the node
    is stopped (LevelDB allows one process a store)."""
    db = plyvel.DB(str(data_dir / STATE_PART))
    try:
        return sum(1 for _ in db.iterator(prefix=keyspace.STATE, include_value=False))
    finally:
        db.close()


def pin(pid: int | None, cpus: AbstractSet[int]) -> None:
    """Run every thread of process `pid` on `cpus` only (threads it starts later inherit it).
    A process or thread that is gone is skipped, as everywhere here."""
    if pid is None:
        return
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in threads:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            continue  # the thread ended meanwhile
