"""The consensus core stays a pure state machine: it imports no I/O, time or randomness
(DESIGN.md section 2), and protobuf stays at the edge."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CONSENSUS = {
    "asyncio", "grpc", "plyvel", "socket", "time", "random", "threading", "subprocess",
    "os", "io", "pathlib", "shutil", "selectors", "signal", "multiprocessing", "msgpack",
    "kledger", "proto", "node", "cluster", "datetime", "secrets", "uuid",
}  # fmt: skip


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_consensus_imports_no_io() -> None:
    files = sorted((ROOT / "consensus").rglob("*.py"))
    assert files, "consensus/ has no modules"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN_IN_CONSENSUS) for f in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_node_does_not_import_cluster() -> None:
    offenders = [
        str(f.relative_to(ROOT))
        for f in sorted((ROOT / "node").rglob("*.py"))
        if "cluster" in imported_roots(f)
    ]
    assert offenders == []
