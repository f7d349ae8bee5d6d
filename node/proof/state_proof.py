"""State proof bundles: one registry state key, its value (or its absence) at a height, the
sparse Merkle proof, and the certified header whose state_root it leads to.

    {"format": "kledger-state-proof/v3",
     "key": HEX,                 the state key (e.g. hex of b"s/work/W1")
     "value": HEX | null,        canonical msgpack of the value; null proves absence
     "siblings": [[DEPTH, HEX], ...],   the non-empty siblings, depth 0 = below the root,
                                        increasing; every other sibling is the empty subtree
     "other_leaf": null | {"path": HEX, "value_hash": HEX},
                                 absence shown by another key's leaf where the key's path ends
     "header": Header.to_json(),
     "certificate": CommitCertificate.to_json(),
     "epoch_chain": [EpochLink.to_json(), ...]}   the epoch-ending links before header.epoch

A verifier needs only the genesis (or a checkpoint): the header must be of the genesis chain,
the proof must lead to the header's state_root (node/proof/smt.py), the epoch chain must follow
from the trusted set (node/proof/epochs.py), and the certificate must carry a quorum of the set
of the header's epoch over the header hash. A v2 bundle (v1 header) is refused by name.
"""

from __future__ import annotations

from typing import Any

from kledger.node.chain.genesis import Genesis
from kledger.node.chain.header import CommitCertificate, Header
from kledger.node.errors import DecodeError
from kledger.node.proof import smt
from kledger.node.proof.epochs import (
    EpochLink,
    FollowedEpochs,
    TrustedEpoch,
    chain_to_json,
    follow_epochs,
    parse_chain,
)

FORMAT = "kledger-state-proof/v3"
OLD_FORMAT = "kledger-state-proof/v2"
BUNDLE_FIELDS = frozenset(
    {"format", "key", "value", "siblings", "other_leaf", "header", "certificate", "epoch_chain"}
)
MAX_KEY_BYTES = 1_024


def build_bundle(
    key: bytes,
    value: bytes | None,
    proof: smt.Proof,
    header: Header,
    certificate: CommitCertificate,
    *,
    epoch_chain: tuple[EpochLink, ...] = (),
) -> dict[str, Any]:
    other = proof.other_leaf
    return {
        "format": FORMAT,
        "key": key.hex(),
        "value": None if value is None else value.hex(),
        "siblings": [[depth, sibling.hex()] for depth, sibling in proof.siblings],
        "other_leaf": None
        if other is None
        else {"path": other[0].hex(), "value_hash": other[1].hex()},
        "header": header.to_json(),
        "certificate": certificate.to_json(),
        "epoch_chain": chain_to_json(epoch_chain),
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
) -> tuple[bytes, bytes | None, smt.Proof, Header, CommitCertificate, tuple[EpochLink, ...]]:
    """Raises ValueError naming what is malformed."""
    if isinstance(bundle, dict) and bundle.get("format") == OLD_FORMAT:
        raise ValueError(
            f"{OLD_FORMAT} (v1 header, no epoch chain) is no longer read; this verifier reads "
            f"{FORMAT}: fetch the proof again from a node of this version"
        )
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
    other_leaf = _other_leaf(bundle["other_leaf"])
    try:
        header = Header.from_json(bundle["header"])
        certificate = CommitCertificate.from_json(bundle["certificate"])
        chain = parse_chain(bundle["epoch_chain"])
    except DecodeError as error:
        raise ValueError(error.message) from None
    return key, value, smt.Proof(siblings, other_leaf), header, certificate, chain


def _other_leaf(raw: Any) -> tuple[bytes, bytes] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"path", "value_hash"}:
        raise ValueError('other_leaf must be null or {"path": HEX, "value_hash": HEX}')
    path = _hex(raw["path"], "other_leaf.path")
    value_hash = _hex(raw["value_hash"], "other_leaf.value_hash")
    if len(path) != smt.HASH_BYTES or len(value_hash) != smt.HASH_BYTES:
        raise ValueError(
            f"other_leaf.path and other_leaf.value_hash must be {smt.HASH_BYTES} bytes"
        )
    return path, value_hash


def state_epochs(
    bundle: Any, genesis: Genesis, trust: TrustedEpoch | None = None
) -> FollowedEpochs | str:
    """The sets the bundle's epoch chain proves from the trust (or its first problem)."""
    try:
        chain = parse_bundle(bundle)[5]
    except ValueError as error:
        return f"malformed bundle: {error}"
    return follow_epochs(chain, trust or TrustedEpoch.of_genesis(genesis), genesis.chain_id)


def state_bundle_problem(
    bundle: Any, genesis: Genesis, trust: TrustedEpoch | None = None
) -> str | None:
    """Why `bundle` does not prove its key's value at its header, or None when it does."""
    try:
        key, value, proof, header, certificate, chain = parse_bundle(bundle)
    except ValueError as error:
        return f"malformed bundle: {error}"
    if header.chain_id != genesis.chain_id:
        return f"header is of chain {header.chain_id!r}, genesis is {genesis.chain_id!r}"
    try:
        root = smt.compute_root(key, value, proof)
    except ValueError as error:
        return f"malformed proof: {error}"
    if root != header.state_root:
        what = "absence" if value is None else "value"
        return (
            f"the proof of {what} leads to root {root.hex()[:16]}..., not the header's state_root"
        )
    followed = follow_epochs(chain, trust or TrustedEpoch.of_genesis(genesis), genesis.chain_id)
    if isinstance(followed, str):
        return followed
    return followed.header_problem(certificate, header, "certificate")
