"""The layout is the architecture, and this file states its rules (docs/design.md names the
rooms): every package installs under the one name `kledger`; each room imports only rooms below
it, so the import direction stays one way; the consensus core imports no I/O, time or
randomness; the verifier's trusted core (node/proof and node/chain) imports neither plyvel nor
grpc; generated protobuf code is imported only at the edge; the readers of the societies' files
(node/registry/formats) do no I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("consensus", "node", "cluster")

# A room may import itself and rooms of a strictly lower rank, never one above or beside it.
RANKS = {
    "consensus": 0,
    "node.errors": 1,
    "node.telemetry": 1,
    "node.runtime": 1,
    "node.chain": 2,
    "node.proof": 3,
    "node.storage": 4,
    "node.registry": 5,
    "node.config": 6,
    "node.ordering": 6,
    "node.commit": 6,
    "node.net": 7,
    "node.api": 8,
    "node.app": 9,
    "node.main": 10,
    "cluster.layout": 11,
    "cluster.sample": 11,
    "cluster.sim": 11,
    "cluster.client": 12,
    "cluster.local": 13,
    "cluster.bench": 14,
    "cluster.demo": 14,
    "cluster.cli": 15,
}
# Generated protobuf code (kledger.v1) stays at the edge: the gRPC servers and clients.
PROTOBUF_ROOMS = {"node.net", "node.api", "node.app", "cluster.client", "cluster.local",
                  "cluster.bench"}  # fmt: skip
FORBIDDEN_IN_CONSENSUS = {
    "asyncio", "grpc", "plyvel", "socket", "time", "random", "threading", "subprocess",
    "os", "io", "pathlib", "shutil", "selectors", "signal", "multiprocessing", "msgpack",
    "proto", "node", "cluster", "datetime", "secrets", "uuid",
}  # fmt: skip
# The verifier's trusted core: what `kledger verify` runs on a verifier's machine.
TRUSTED_CORE = ("node.proof", "node.chain", "node.errors")
FORBIDDEN_IN_TRUSTED_CORE = {"plyvel", "grpc", "asyncio", "prometheus_client"}


def modules() -> list[tuple[str, Path]]:
    """(dotted name under kledger, path) of every module in the source folders."""
    found = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((".".join(parts), path))
    return found


def room_of(module: str) -> str:
    """The room a dotted module (under kledger) belongs to: a folder under node/ or cluster/,
    or a top-level module of either, or consensus."""
    parts = module.split(".")
    if parts[0] == "consensus":
        return "consensus"
    return ".".join(parts[:2]) if len(parts) >= 2 else parts[0]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import, relative imports resolved to absolute."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            found.append((node.lineno, node.module))
    return found


def test_every_room_is_ranked() -> None:
    rooms = {room_of(module) for module, _ in modules()} - {"node", "cluster"}
    assert rooms <= set(RANKS), f"rooms without a rank in this test: {sorted(rooms - set(RANKS))}"


def test_imports_go_one_way_and_through_the_installed_name() -> None:
    problems = []
    for module, path in modules():
        here = room_of(module)
        for line, imported in imports_of(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            top = imported.split(".")[0]
            if top in SOURCE_FOLDERS:
                problems.append(f"{where}: import {imported}: use kledger.{imported}")
                continue
            if top != "kledger":
                continue
            inner = imported.split(".", 1)[1] if "." in imported else ""
            if inner.startswith("v1"):
                if here not in PROTOBUF_ROOMS:
                    problems.append(f"{where}: protobuf (kledger.v1) outside the edge in {here}")
                continue
            there = room_of(inner)
            if there in ("node", "cluster"):
                problems.append(f"{where}: import of the bare package {imported}")
            elif there != here and RANKS.get(there, 99) >= RANKS.get(here, -1):
                problems.append(f"{where}: {here} (rank {RANKS.get(here)}) imports {there} "
                                f"(rank {RANKS.get(there)})")  # fmt: skip
    assert problems == []


def test_consensus_imports_no_io() -> None:
    offenders = {}
    for module, path in modules():
        if room_of(module) == "consensus":
            roots = {imported.split(".")[0] for _, imported in imports_of(path)}
            outside = {
                imported
                for _, imported in imports_of(path)
                if imported.startswith("kledger.") and not imported.startswith("kledger.consensus")
            }
            bad = sorted((roots & FORBIDDEN_IN_CONSENSUS) | outside)
            if bad:
                offenders[module] = bad
    assert offenders == {}


def test_the_trusted_core_imports_no_store_or_network() -> None:
    offenders = {}
    for module, path in modules():
        if room_of(module) in TRUSTED_CORE:
            roots = {imported.split(".")[0] for _, imported in imports_of(path)}
            if roots & FORBIDDEN_IN_TRUSTED_CORE:
                offenders[module] = sorted(roots & FORBIDDEN_IN_TRUSTED_CORE)
    assert offenders == {}


# The readers and writers of the societies' files (CWR, DSR) are pure: lines in, values out.
# Opening, signing and sending is the client's (cluster/client/import_cli.py).
FORMATS = "kledger.node.registry.formats"
FORBIDDEN_IN_FORMATS = {
    "asyncio", "grpc", "plyvel", "socket", "os", "io", "pathlib", "shutil", "subprocess",
    "threading", "time", "random", "msgpack", "kledger.node.storage", "kledger.node.chain",
}  # fmt: skip


def test_the_format_readers_do_no_io() -> None:
    offenders = {}
    for module, path in modules():
        if not f"kledger.{module}".startswith(FORMATS):
            continue
        found = {imported for _, imported in imports_of(path)}
        bad = sorted(
            name
            for name in found
            if name.split(".")[0] in FORBIDDEN_IN_FORMATS
            or any(name.startswith(room) for room in FORBIDDEN_IN_FORMATS if "." in room)
        )
        if bad:
            offenders[module] = bad
    assert offenders == {}


def test_kledger_verify_loads_neither_plyvel_nor_grpc() -> None:
    """The rule above, end to end: what `kledger verify` imports, transitively."""
    probe = (
        "import sys, kledger.cluster.cli, kledger.node.proof.verify_cli;"
        "print(sorted(m for m in ('plyvel', 'grpc', 'asyncio') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.strip()
    assert loaded == "[]"


def test_nothing_installs_a_top_level_node_cluster_or_consensus(tmp_path: Path) -> None:
    """Installed, the project is the one package `kledger`: from outside the checkout the old
    top-level names are not importable, the new ones are."""
    probe = (
        "import importlib.util as u;"
        "print([n for n in ('node', 'cluster', 'consensus') if u.find_spec(n)],"
        " [n for n in ('kledger.node', 'kledger.cluster', 'kledger.consensus', 'kledger.v1')"
        " if u.find_spec(n)])"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout.strip()
    assert found == "[] ['kledger.node', 'kledger.cluster', 'kledger.consensus', 'kledger.v1']"
