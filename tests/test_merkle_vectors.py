"""The published Certificate Transparency RFC 6962 vectors (tests/vectors/ct_rfc6962.json): our
roots, node hashes and proofs equal them, every valid proof is accepted, and every corrupted
variant (the CT suites' corruption recipe, tests/vectors/ct_cases.json) is rejected by the library
and by `kledger verify merkle`, in process and as a real subprocess.

Regenerate the case file with: .venv/bin/python -m tests.test_merkle_vectors
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kledger.node.errors import DecodeError
from kledger.node.proof import merkle
from kledger.node.proof import verify_cli as verify

VECTORS = Path(__file__).parent / "vectors"
CT = json.loads((VECTORS / "ct_rfc6962.json").read_text())
CASES_FILE = VECTORS / "ct_cases.json"
SOME_HASH = "abacaba000000000000000000000000000000000000000000060061e00123456"
WRONG_LEAF_HASH = merkle.leaf_hash(b"WrongLeaf").hex()
U64 = 2**64


def _tree() -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for leaf in CT["leaves"]:
        tree.append(bytes.fromhex(leaf))
    return tree


def _flip(hex_hash: str, mask: int) -> str:
    raw = bytearray(bytes.fromhex(hex_hash))
    raw[0] ^= mask
    return raw.hex()


def _inclusion_cases(vector: dict[str, Any]) -> list[dict[str, Any]]:
    index, size, path = vector["leaf_index"], vector["tree_size"], vector["audit_path"]
    root = CT["roots"][size]
    leaf_hash = merkle.leaf_hash(bytes.fromhex(CT["leaves"][index])).hex()

    def case(desc: str, expect: str, **change: Any) -> dict[str, Any]:
        proof = {"type": "inclusion", "leaf_index": index, "tree_size": size}
        proof |= {"leaf_hash": leaf_hash, "audit_path": path, "root": root}
        proof |= change
        return {"desc": f"inclusion {index}/{size}: {desc}", "expect": expect, "proof": proof}

    with_leaf = case("leaf data instead of leaf hash", "valid")
    del with_leaf["proof"]["leaf_hash"]
    with_leaf["proof"]["leaf"] = CT["leaves"][index]
    cases = [
        case("published proof", "valid"),
        with_leaf,
        case("leaf_index - 1", "invalid", leaf_index=(index - 1) % U64),
        case("leaf_index + 1", "invalid", leaf_index=index + 1),
        case("leaf_index ^ 2", "invalid", leaf_index=index ^ 2),
        case("tree_size * 2", "invalid", tree_size=size * 2),
        case("tree_size / 2", "invalid", tree_size=size // 2),
        case("wrong leaf (not a hash)", "malformed", leaf_hash=b"WrongLeaf".hex()),
        case("wrong leaf", "invalid", leaf_hash=WRONG_LEAF_HASH),
        case("empty root", "invalid", root=merkle.EMPTY_ROOT.hex()),
        case("random root", "invalid", root=SOME_HASH),
        case("trailing garbage", "malformed", audit_path=[*path, ""]),
        case("trailing root", "invalid", audit_path=[*path, root]),
        case("preceding garbage", "malformed", audit_path=["", *path]),
        case("preceding root", "invalid", audit_path=[root, *path]),
    ]
    for position in range(len(path)):
        changed = list(path)
        changed[position] = _flip(changed[position], 8)
        cases.append(case(f"modified audit_path[{position}] bit 3", "invalid", audit_path=changed))
    if path:
        cases.append(case("removed component", "invalid", audit_path=path[:-1]))
    if len(path) > 1:
        inserted = [path[0], SOME_HASH, *path[1:]]
        cases.append(case("inserted component", "invalid", audit_path=inserted))
    return cases


def _consistency_cases(vector: dict[str, Any]) -> list[dict[str, Any]]:
    old, new, proof = vector["old_size"], vector["new_size"], vector["proof"]
    old_root, new_root = CT["roots"][old], CT["roots"][new]

    def case(desc: str, expect: str, **change: Any) -> dict[str, Any]:
        body = {"type": "consistency", "old_size": old, "new_size": new}
        body |= {"old_root": old_root, "new_root": new_root, "proof": proof}
        body |= change
        return {"desc": f"consistency {old}->{new}: {desc}", "expect": expect, "proof": body}

    cases = [case("published proof", "valid")]
    if not proof:  # equal sizes: only an empty proof between equal roots holds
        return [
            *cases,
            case("non-empty proof", "invalid", proof=[old_root]),
            case("different roots", "invalid", new_root=SOME_HASH),
        ]
    cases += [
        case("old_size - 1", "invalid", old_size=old - 1),
        case("old_size + 1", "invalid", old_size=old + 1),
        case("old_size ^ 2", "invalid", old_size=old ^ 2),
        case("new_size * 2", "invalid", new_size=new * 2),
        case("new_size / 2", "invalid", new_size=new // 2),
        case("wrong old root (not a hash)", "malformed", old_root=b"WrongRoot".hex()),
        case("wrong new root (not a hash)", "malformed", new_root=b"WrongRoot".hex()),
        case("wrong old root", "invalid", old_root=SOME_HASH),
        case("wrong new root", "invalid", new_root=SOME_HASH),
        case("swapped roots", "invalid", old_root=new_root, new_root=old_root),
        case("empty proof", "invalid", proof=[]),
        case("trailing garbage", "malformed", proof=[*proof, ""]),
        case("trailing old root", "invalid", proof=[*proof, old_root]),
        case("trailing new root", "invalid", proof=[*proof, new_root]),
        case("preceding garbage", "malformed", proof=["", *proof]),
        case("preceding old root", "invalid", proof=[old_root, *proof]),
        case("preceding new root", "invalid", proof=[new_root, *proof]),
        case("preceding proof[0]", "invalid", proof=[proof[0], *proof]),
        case("truncated proof", "invalid", proof=proof[:-1]),
        case("from size 0", "invalid", old_size=0, old_root=merkle.EMPTY_ROOT.hex(), proof=[]),
        case("old above new", "invalid", old_size=new, new_size=old),
    ]
    for position in range(len(proof)):
        changed = list(proof)
        changed[position] = _flip(changed[position], 16)
        cases.append(case(f"modified proof[{position}] bit 4", "invalid", proof=changed))
    return cases


def build_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for vector in CT["inclusion"]:
        cases += _inclusion_cases(vector)
    for vector in CT["consistency"]:
        cases += _consistency_cases(vector)
    return cases


CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())
EXIT = {"valid": 0, "invalid": 1, "malformed": 2}


def test_case_file_is_generated_from_the_published_vectors():
    assert build_cases() == CASES, "regenerate: .venv/bin/python -m tests.test_merkle_vectors"


def test_roots_and_every_node_hash_match():
    tree = _tree()
    for size, root in enumerate(CT["roots"]):
        assert tree.root(size).hex() == root
    assert [[h.hex() for h in level] for level in tree.levels] == CT["node_hashes"]
    assert merkle.EMPTY_ROOT.hex() == CT["roots"][0]


def test_generated_proofs_equal_the_published_ones():
    tree = _tree()
    for vector in CT["inclusion"]:
        path = tree.inclusion_path(vector["leaf_index"], vector["tree_size"])
        assert [h.hex() for h in path] == vector["audit_path"]
    for vector in CT["consistency"]:
        proof = tree.consistency_proof(vector["old_size"], vector["new_size"])
        assert [h.hex() for h in proof] == vector["proof"]


def test_library_accepts_valid_and_rejects_every_corrupted_case():
    assert sum(c["expect"] == "valid" for c in CASES) >= 10
    assert sum(c["expect"] != "valid" for c in CASES) >= 100
    for case in CASES:
        try:
            verdict = verify.check_merkle(case["proof"])
        except DecodeError:
            assert case["expect"] == "malformed", case["desc"]
            continue
        got = "valid" if verdict.problem is None else "invalid"
        assert got == case["expect"], (case["desc"], verdict.problem)


@pytest.mark.parametrize("case", CASES, ids=[c["desc"] for c in CASES])
def test_cli_exit_status(case, tmp_path, capsys):
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(case["proof"]))
    assert verify.main(["merkle", str(path)]) == EXIT[case["expect"]]
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(case["expect"])


def test_real_subprocess_reads_stdin():
    kledger = Path(sys.executable).parent / "kledger"
    valid = next(c for c in CASES if c["expect"] == "valid" and c["proof"]["type"] == "inclusion")
    invalid = next(c for c in CASES if c["expect"] == "invalid")
    for case, status in ((valid, 0), (invalid, 1)):
        run = subprocess.run(
            [str(kledger), "verify", "merkle", "-"],
            input=json.dumps(case["proof"]),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == status, run.stderr
    run = subprocess.run(
        [str(kledger), "verify", "merkle", "-"],
        input="{not json",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2 and "not JSON" in run.stderr


if __name__ == "__main__":
    CASES_FILE.write_text(json.dumps(build_cases(), indent=1) + "\n")
