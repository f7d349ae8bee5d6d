"""`kledger verify merkle` input handling: malformed proofs exit 2 naming the field, stdin works,
usage errors exit 2, and the dispatcher reaches the subcommands."""

from __future__ import annotations

import io
import json

import pytest

from kledger.cluster import cli
from kledger.node.proof import merkle
from kledger.node.proof import verify_cli as verify


def _tree() -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for i in range(11):
        tree.append(bytes([i]) * 5)
    return tree


def _inclusion(index: int = 6) -> dict[str, object]:
    tree = _tree()
    return {
        "type": "inclusion",
        "leaf_index": index,
        "tree_size": tree.size,
        "leaf": (bytes([index]) * 5).hex(),
        "audit_path": [h.hex() for h in tree.inclusion_path(index)],
        "root": tree.root().hex(),
    }


def _main_stdin(monkeypatch, document: object, argv: list[str]) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(document)))
    return verify.main(argv)


def test_stdin_and_dispatcher(monkeypatch, capsys):
    assert _main_stdin(monkeypatch, _inclusion(), ["merkle", "-"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(_inclusion(3))))
    assert cli.main(["verify", "merkle", "-"]) == 0
    out, _ = capsys.readouterr()
    assert out.count("valid: leaf") == 2


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("type"), "type"),
        (lambda d: d.update(type="audit"), "type"),
        (lambda d: d.update(leaf_hash="00" * 32), "leaf_hash"),  # both leaf and leaf_hash
        (lambda d: d.pop("leaf"), "leaf_hash"),  # neither
        (lambda d: d.update(leaf="xyz"), "leaf"),
        (lambda d: d.update(leaf_index=-1), "leaf_index"),
        (lambda d: d.update(leaf_index=1.5), "leaf_index"),
        (lambda d: d.update(tree_size=2**64), "tree_size"),
        (lambda d: d.update(audit_path=["00" * 31]), "audit_path[0]"),
        (lambda d: d.update(audit_path=["00" * 32] * 129), "audit_path"),
        (lambda d: d.update(root=None), "root"),
    ],
)
def test_malformed_merkle_inputs_exit_2(monkeypatch, capsys, edit, field):
    document = _inclusion()
    edit(document)
    assert _main_stdin(monkeypatch, document, ["merkle", "-"]) == 2
    _, err = capsys.readouterr()
    assert err.startswith(f"malformed: {field}"), err


def test_non_object_and_usage_errors(monkeypatch, capsys):
    assert _main_stdin(monkeypatch, [1, 2], ["merkle", "-"]) == 2
    assert verify.main([]) == 2
    assert verify.main(["bogus", "x"]) == 2
    assert verify.main(["--help"]) == 0
    out, _ = capsys.readouterr()
    assert "merkle" in out and "proof" in out


def test_consistency_from_stdin(monkeypatch, capsys):
    tree = _tree()
    document = {
        "type": "consistency",
        "old_size": 4,
        "new_size": 11,
        "old_root": tree.root(4).hex(),
        "new_root": tree.root().hex(),
        "proof": [h.hex() for h in tree.consistency_proof(4)],
    }
    assert _main_stdin(monkeypatch, document, ["merkle", "-"]) == 0
    document["old_size"] = 5
    assert _main_stdin(monkeypatch, document, ["merkle", "-"]) == 1
    _, err = capsys.readouterr()
    assert err.startswith("invalid: ")
