"""State proof bundles: one registry state key, its value (or its absence) at a height, the
sparse Merkle siblings, and the certified header whose state_root they lead to.

    {"format": "kledger-state-proof/v1",
     "key": HEX,                 the state key (e.g. hex of b"s/work/W1")
     "value": HEX | null,        canonical msgpack of the value; null proves absence
     "siblings": [[DEPTH, HEX], ...],   the non-default siblings, depth 0 = below the root,
                                        increasing; every other sibling is the empty subtree
     "header": Header.to_json(),
     "certificate": CommitCertificate.to_json()}

A verifier needs only the genesis: the certificate must carry a quorum of the genesis validator
set over the header hash, the header must be of the genesis chain, and the proof must lead to the
header's state_root (node/smt.py). Headers of later epochs need certified epoch changes, which
this check does not follow: they fail with "header names another validator set".
"""

from __future__ import annotations

from typing import Any

from node import smt
from node.errors import DecodeError
from node.genesis import Genesis
from node.header import CommitCertificate, Header, certificate_problem

FORMAT = "kledger-state-proof/v1"
BUNDLE_FIELDS = frozenset({"format", "key", "value", "siblings", "header", "certificate"})
MAX_KEY_BYTES = 1_024


def build_bundle(
    key: bytes,
    value: bytes | None,
    siblings: list[tuple[int, bytes]],
    header: Header,
    certificate: CommitCertificate,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "key": key.hex(),
        "value": None if value is None else value.hex(),
        "siblings": [[depth, sibling.hex()] for depth, sibling in siblings],
        "header": header.to_json(),
        "certificate": certificate.to_json(),
    }


def _hex(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{name} is not valid hex") from None


def parse_bundle(
    bundle: Any,
) -> tuple[bytes, bytes | None, list[tuple[int, bytes]], Header, CommitCertificate]:
    """Raises ValueError naming what is malformed."""
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise ValueError(f'"format" must be "{FORMAT}"')
    if set(bundle) != BUNDLE_FIELDS:
        raise ValueError(f"fields must be exactly {sorted(BUNDLE_FIELDS)}")
    key = _hex(bundle["key"], "key")
    if not 0 < len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"key must be 1..{MAX_KEY_BYTES} bytes")
    value = None if bundle["value"] is None else _hex(bundle["value"], "value")
    raw_siblings = bundle["siblings"]
    if not isinstance(raw_siblings, list) or len(raw_siblings) > smt.DEPTH:
        raise ValueError(f"siblings must be a list of at most {smt.DEPTH} [depth, hash] pairs")
    siblings = []
    for index, item in enumerate(raw_siblings):
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], int)
            and not isinstance(item[0], bool)
        ):
            raise ValueError(f"siblings[{index}] must be [depth, hash]")
        siblings.append((item[0], _hex(item[1], f"siblings[{index}]")))
    try:
        header = Header.from_json(bundle["header"])
        certificate = CommitCertificate.from_json(bundle["certificate"])
    except DecodeError as error:
        raise ValueError(error.message) from None
    return key, value, siblings, header, certificate


def state_bundle_problem(bundle: Any, genesis: Genesis) -> str | None:
    """Why `bundle` does not prove its key's value at its header, or None when it does."""
    try:
        key, value, siblings, header, certificate = parse_bundle(bundle)
    except ValueError as error:
        return f"malformed bundle: {error}"
    if header.chain_id != genesis.chain_id:
        return f"header is of chain {header.chain_id!r}, genesis is {genesis.chain_id!r}"
    try:
        root = smt.compute_root(key, value, siblings)
    except ValueError as error:
        return f"malformed proof: {error}"
    if root != header.state_root:
        what = "absence" if value is None else "value"
        return (
            f"the proof of {what} leads to root {root.hex()[:16]}..., not the header's state_root"
        )
    return certificate_problem(certificate, header, genesis.validator_set)
