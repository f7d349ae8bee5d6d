"""The committed generated protobuf code matches the .proto sources (regenerate with
./scripts/gen_proto)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "kledger" / "v1"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    sources = sorted(PROTO_DIR.glob("*.proto"))
    if not sources:
        return  # nothing to generate yet; the assertion below is about staleness only
    (tmp_path / "kledger" / "v1").mkdir(parents=True)
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
            f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
            f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", f"--mypy_out={tmp_path}",
            *[str(s) for s in sources],
        ],
        check=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "kledger" / "v1").iterdir()}
    committed = {
        p.name: p.read_bytes()
        for p in PROTO_DIR.iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"))
    }
    stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
    extra = sorted(set(committed) - set(fresh))
    assert not stale and not extra, f"stale: {stale}, orphaned: {extra}; run ./scripts/gen_proto"
    shutil.rmtree(tmp_path / "kledger")
