"""Genesis parsing and the quorum arithmetic of docs/design.md §1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kledger.consensus.validators import ValidatorSet, faults_tolerated, quorum_size
from kledger.node.chain.genesis import load_genesis, parse_genesis, save_genesis
from tests.helpers import make_genesis


@pytest.mark.parametrize(("n", "f", "q"), [(1, 0, 1), (4, 1, 3), (5, 1, 4), (6, 1, 4), (7, 2, 5)])
def test_quorum_sizes(n: int, f: int, q: int) -> None:
    assert faults_tolerated(n) == f and quorum_size(n) == q
    # Any two quorums intersect in more than f validators, so in at least one honest one.
    assert 2 * q - n >= f + 1


def test_genesis_roundtrip_and_validator_set(tmp_path: Path) -> None:
    genesis = make_genesis()
    save_genesis(tmp_path / "genesis.json", genesis)
    loaded = load_genesis(tmp_path / "genesis.json")
    assert loaded == genesis and loaded.digest() == genesis.digest()
    validators = loaded.validator_set
    assert validators.ids == ("FKMP", "KEPA", "KMCA", "KOMCA", "KOSCAP", "RIAK")
    assert validators.quorum == 4 and validators.digest() == genesis.validator_set.digest()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: g.update(format="x"), '"format"'),
        (lambda g: g.update(chain_id=""), '"chain_id"'),
        (lambda g: g["orgs"][0].update(id="komca"), "orgs[0].id"),
        (lambda g: g["orgs"][1].update(id=g["orgs"][0]["id"]), "unique"),
        (lambda g: g["orgs"][0].update(admin_key="zz"), "orgs[0].admin_key"),
        (lambda g: g["orgs"][0].update(admin_key=g["orgs"][1]["admin_key"]), "distinct"),
        (lambda g: g["params"]["tx_limits"].update(max_tx_bytes=0), "max_tx_bytes"),
        (lambda g: g["params"]["tx_limits"].update(bogus=1), "bogus"),
    ],
)
def test_bad_genesis_names_the_field(edit, message) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads(json.dumps(make_genesis().to_json()))
    edit(raw)
    with pytest.raises(ValueError) as info:
        parse_genesis(raw)
    assert message in str(info.value)


def test_validator_set_refuses_unsorted_or_duplicate() -> None:
    with pytest.raises(ValueError):
        ValidatorSet.of(0, [("A", b"k" * 32), ("A", b"j" * 32)])
    with pytest.raises(ValueError):
        ValidatorSet.of(0, [("A", b"k" * 32), ("B", b"k" * 32)])
