"""Ledger headers and their commit certificates (docs/design.md §7).

A header (format v2) describes the ledger after a committed block was executed:

    chain_id, epoch, height, round, parent_hash, tx_log_size, tx_log_root, state_root,
    validator_set_hash, next_validator_set_hash, receipts_root, proposer, timestamp_ms

    header bytes = canonical msgpack map of those fields
    header_hash  = SHA-256(b"kledger/header/v2\\0" + header bytes)

`validator_set_hash` is the digest of the set of the header's epoch (the set that certifies it);
`next_validator_set_hash` is ZERO_HASH except in an epoch's last block, where it is the digest
of the next epoch's set (that header, certified by the old set, hands trust on);
`receipts_root` is the RFC 6962 root over the block's receipt encodings in tx order (the empty
tree's root for a block without txs), so a certified header vouches for each tx's result.
A v1 header (without the two fields) is refused by name.

A commit certificate is signatures of a quorum of the epoch's validator set over
b"kledger/commit/v1\\0" + header_hash. Each validator signs a header only after executing the
committed block itself, so a quorum (which holds at least f+1 honest validators) vouches that
this header is the committed, correctly executed ledger at that height.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any

from kledger.consensus.validators import ValidatorSet
from kledger.node.chain import canonical
from kledger.node.chain.keys import COMMIT_TAG, KeyPair, verify
from kledger.node.errors import DecodeError

HEADER_TAG = b"kledger/header/v2\x00"
HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)

_BYTES_FIELDS = (
    "parent_hash",
    "tx_log_root",
    "state_root",
    "validator_set_hash",
    "next_validator_set_hash",
    "receipts_root",
)
# The fields a v1 header had: recognised only to refuse it by name.
_V1_FIELDS = frozenset(
    {
        "chain_id",
        "epoch",
        "height",
        "round",
        "parent_hash",
        "tx_log_size",
        "tx_log_root",
        "state_root",
        "validator_set_hash",
        "proposer",
        "timestamp_ms",
    }
)
V1_REFUSAL = (
    "is a v1 header (no next_validator_set_hash, no receipts_root); this verifier reads "
    "header format v2 only: fetch the proof again from a node of this version"
)
_INT_FIELDS = ("epoch", "height", "round", "tx_log_size", "timestamp_ms")
_STR_FIELDS = ("chain_id", "proposer")


@dataclass(frozen=True, slots=True)
class Header:
    chain_id: str
    epoch: int
    height: int
    round: int
    parent_hash: bytes
    tx_log_size: int
    tx_log_root: bytes
    state_root: bytes
    validator_set_hash: bytes
    next_validator_set_hash: bytes
    receipts_root: bytes
    proposer: str
    timestamp_ms: int

    def encode(self) -> bytes:
        return canonical.encode(asdict(self))

    def hash(self) -> bytes:
        return hashlib.sha256(HEADER_TAG + self.encode()).digest()

    @property
    def ends_epoch(self) -> bool:
        """Whether this is its epoch's last block (it names the next set)."""
        return self.next_validator_set_hash != ZERO_HASH

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        for name in _BYTES_FIELDS:
            out[name] = out[name].hex()
        return out

    @staticmethod
    def from_fields(value: Any) -> Header:
        """Build from a decoded map, checking every field's type. Raises DecodeError."""
        if not isinstance(value, dict):
            raise DecodeError("must be a map", "header")
        names = {f.name for f in fields(Header)}
        if set(value) == _V1_FIELDS:
            raise DecodeError(V1_REFUSAL, "header")
        if set(value) != names:
            raise DecodeError(f"fields must be exactly {sorted(names)}", "header")
        for name in _BYTES_FIELDS:
            if not (isinstance(value[name], bytes) and len(value[name]) == HASH_BYTES):
                raise DecodeError(f"must be {HASH_BYTES} bytes", f"header.{name}")
        for name in _INT_FIELDS:
            item = value[name]
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise DecodeError("must be a non-negative integer", f"header.{name}")
        for name in _STR_FIELDS:
            if not isinstance(value[name], str):
                raise DecodeError("must be a string", f"header.{name}")
        return Header(**value)

    @staticmethod
    def decode(data: bytes) -> Header:
        return Header.from_fields(canonical.decode(data))

    @staticmethod
    def from_json(value: Any) -> Header:
        if not isinstance(value, dict):
            raise DecodeError("must be an object", "header")
        if set(value) == _V1_FIELDS:
            raise DecodeError(V1_REFUSAL, "header")
        converted = dict(value)
        for name in _BYTES_FIELDS:
            converted[name] = _hex(value.get(name), f"header.{name}")
        return Header.from_fields(converted)


def commit_sign_bytes(header_hash: bytes) -> bytes:
    """What a validator signs to certify a header (the tag is added by the signer)."""
    assert len(header_hash) == HASH_BYTES
    return header_hash


def sign_header(key: KeyPair, header_hash: bytes) -> bytes:
    return key.sign(COMMIT_TAG, commit_sign_bytes(header_hash))


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """Quorum signatures over one header hash. Signatures are sorted by validator id."""

    header_hash: bytes
    signatures: tuple[tuple[str, bytes], ...]

    def encode(self) -> bytes:
        return canonical.encode(
            {"header_hash": self.header_hash, "signatures": [list(s) for s in self.signatures]}
        )

    @staticmethod
    def decode(data: bytes) -> CommitCertificate:
        return CommitCertificate.from_fields(canonical.decode(data))

    @staticmethod
    def from_fields(value: Any) -> CommitCertificate:
        if not isinstance(value, dict) or set(value) != {"header_hash", "signatures"}:
            raise DecodeError("must be {header_hash, signatures}", "certificate")
        header_hash, signatures = value["header_hash"], value["signatures"]
        if not (isinstance(header_hash, bytes) and len(header_hash) == HASH_BYTES):
            raise DecodeError(f"must be {HASH_BYTES} bytes", "certificate.header_hash")
        if not isinstance(signatures, list):
            raise DecodeError("must be a list", "certificate.signatures")
        pairs: list[tuple[str, bytes]] = []
        for index, item in enumerate(signatures):
            if not (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and isinstance(item[1], bytes)
            ):
                raise DecodeError("must be [validator_id, signature]", f"signatures[{index}]")
            pairs.append((item[0], item[1]))
        return CommitCertificate(header_hash, tuple(pairs))

    def to_json(self) -> dict[str, Any]:
        return {
            "header_hash": self.header_hash.hex(),
            "signatures": [{"validator": v, "signature": s.hex()} for v, s in self.signatures],
        }

    @staticmethod
    def from_json(value: Any) -> CommitCertificate:
        if not isinstance(value, dict):
            raise DecodeError("must be an object", "certificate")
        raw = value.get("signatures")
        if not isinstance(raw, list):
            raise DecodeError("must be a list", "certificate.signatures")
        pairs = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict) or not isinstance(item.get("validator"), str):
                raise DecodeError("must be {validator, signature}", f"signatures[{index}]")
            pairs.append((item["validator"], _hex(item.get("signature"), f"signatures[{index}]")))
        return CommitCertificate(
            _hex(value.get("header_hash"), "certificate.header_hash"), tuple(pairs)
        )


def certificate_problem(
    cert: CommitCertificate, header: Header, validators: ValidatorSet
) -> str | None:
    """Why `cert` does not certify `header` under `validators`, or None when it does."""
    if cert.header_hash != header.hash():
        return "certificate signs another header hash"
    if header.validator_set_hash != validators.digest():
        return "header names another validator set"
    signers: set[str] = set()
    for validator_id, signature in cert.signatures:
        key = validators.public_key(validator_id)
        if key is None:
            return f"signer {validator_id!r} is not a validator of epoch {validators.epoch}"
        if validator_id in signers:
            return f"signer {validator_id!r} appears twice"
        if not verify(key, COMMIT_TAG, commit_sign_bytes(cert.header_hash), signature):
            return f"signature of {validator_id!r} does not verify"
        signers.add(validator_id)
    if len(signers) < validators.quorum:
        return f"{len(signers)} signatures, quorum is {validators.quorum}"
    return None


def _hex(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise DecodeError("must be a hex string", name)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DecodeError("is not valid hex", name) from None
