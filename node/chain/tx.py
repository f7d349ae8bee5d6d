"""Signed transactions: canonical body, Ed25519 signature, hash, and the Merkle leaf encoding.

    SignedTx  = (body, signer_public_key, signature)
    body      = canonical msgpack map {chain_id: str, type: str, nonce: int, payload: map}
    signature = Ed25519 over b"kledger/tx/v1\\0" + body
    encoding  = canonical msgpack array [body: bin, signer_public_key: bin32, signature: bin64]
    tx_hash   = SHA-256(encoding); the encoding is also the Merkle leaf data

Decoding checks shape and limits only (stateless); `check_signature` is separate so a node
verifies each tx once at admission and never again (docs/design.md §5.1, issue 6).
"""

from __future__ import annotations

import hashlib
from dataclasses import InitVar, dataclass, field
from typing import Any

from kledger.node.chain import canonical
from kledger.node.chain.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, TX_TAG, KeyPair, verify
from kledger.node.errors import DecodeError, Refused, Status

BODY_KEYS = frozenset({"chain_id", "type", "nonce", "payload"})
MAX_NONCE = 2**64 - 1


@dataclass(frozen=True, slots=True)
class TxLimits:
    """Every limit on a transaction is a named setting (genesis `params.tx_limits`)."""

    max_tx_bytes: int = 65_536
    max_string_chars: int = 4_096
    max_list_items: int = 1_000
    max_type_chars: int = 64


DEFAULT_TX_LIMITS = TxLimits()


@dataclass(frozen=True, slots=True)
class SignedTx:
    body: bytes
    signer: bytes
    signature: bytes
    # Derived once at construction; every holder reuses them instead of re-encoding or re-hashing.
    encoding: bytes = field(init=False, repr=False, compare=False)
    tx_hash: bytes = field(init=False, repr=False, compare=False)
    # The body as `decode_body` decoded it, with the limits it was checked against: a tx is
    # decoded at admission and again at execution, from the same object when the payload
    # decoder hands back the mempool's txs (node/chain/payload.py).
    _decoded_body: tuple[TxLimits, TxBody] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    # decode_tx passes the bytes it decoded, which it checked are this tx's canonical encoding,
    # so they are not encoded again. Nobody else passes it.
    _canonical_encoding: InitVar[bytes | None] = None

    def __post_init__(self, _canonical_encoding: bytes | None) -> None:
        encoding = _canonical_encoding
        if encoding is None:
            encoding = canonical.encode([self.body, self.signer, self.signature])
        object.__setattr__(self, "encoding", encoding)
        object.__setattr__(self, "tx_hash", hashlib.sha256(encoding).digest())


@dataclass(frozen=True, slots=True)
class TxBody:
    chain_id: str
    type: str
    nonce: int
    payload: dict[str, Any]


def encode_body(body: TxBody) -> bytes:
    return canonical.encode(
        {"chain_id": body.chain_id, "type": body.type, "nonce": body.nonce, "payload": body.payload}
    )


def sign_tx(key: KeyPair, body: TxBody) -> SignedTx:
    body_bytes = encode_body(body)
    return SignedTx(body=body_bytes, signer=key.public_key, signature=key.sign(TX_TAG, body_bytes))


def decode_tx(data: bytes, limits: TxLimits = DEFAULT_TX_LIMITS) -> SignedTx:
    """Decode the leaf encoding of a signed tx. Raises DecodeError (INVALID_ARGUMENT) or
    Refused(RESOURCE_EXHAUSTED) for oversize input; never anything else."""
    if len(data) > limits.max_tx_bytes:
        raise Refused(
            Status.RESOURCE_EXHAUSTED,
            f"{len(data)} bytes exceed max_tx_bytes={limits.max_tx_bytes}",
            "tx",
        )
    value = _decode_named(data, "tx")
    if not (isinstance(value, list) and len(value) == 3):
        raise DecodeError("a signed tx is [body, signer_public_key, signature]", "tx")
    body, signer, signature = value
    if not isinstance(body, bytes):
        raise DecodeError("must be bytes", "body")
    if not (isinstance(signer, bytes) and len(signer) == PUBLIC_KEY_BYTES):
        raise DecodeError(f"must be {PUBLIC_KEY_BYTES} bytes", "signer_public_key")
    if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_BYTES):
        raise DecodeError(f"must be {SIGNATURE_BYTES} bytes", "signature")
    # canonical.decode refused anything but the canonical encoding of [body, signer, signature].
    return SignedTx(body, signer, signature, data)


def decode_body(tx: SignedTx, limits: TxLimits = DEFAULT_TX_LIMITS) -> TxBody:
    """Decode and check the body's shape and limits (no signature, no state).

    The result is kept on `tx` and returned again for the same limits: it is a function of the
    body bytes and the limits only. Callers share it (admission on the loop, execution on the
    commit worker thread), so they must treat it as read-only (registry checks build new
    normalized payloads; tests/test_admission.py checks that admission and execution leave
    decoded bodies unchanged). Two threads decoding the same tx at once both store an equal
    body; either is right."""
    cached = tx._decoded_body
    if cached is not None and cached[0] == limits:
        return cached[1]
    body = _decode_body(tx, limits)
    object.__setattr__(tx, "_decoded_body", (limits, body))
    return body


def forget_decoded_body(tx: SignedTx) -> None:
    """Drop the body `decode_body` keeps on `tx` (memory for a tx that will wait long)."""
    object.__setattr__(tx, "_decoded_body", None)


def _decode_body(tx: SignedTx, limits: TxLimits) -> TxBody:
    value = _decode_named(tx.body, "body")
    if not isinstance(value, dict):
        raise DecodeError("must be a map", "body")
    missing = BODY_KEYS - value.keys()
    if missing:
        raise DecodeError(f"missing {', '.join(sorted(missing))}", "body")
    unknown = value.keys() - BODY_KEYS
    if unknown:
        raise DecodeError(f"unknown field(s) {', '.join(sorted(unknown))}", "body")
    chain_id, tx_type, nonce, payload = (
        value["chain_id"],
        value["type"],
        value["nonce"],
        value["payload"],
    )
    if not isinstance(chain_id, str) or not chain_id:
        raise DecodeError("must be a non-empty string", "chain_id")
    if not isinstance(tx_type, str) or not 0 < len(tx_type) <= limits.max_type_chars:
        raise DecodeError(f"must be a string of 1..{limits.max_type_chars} chars", "type")
    if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce <= MAX_NONCE:
        raise DecodeError("must be an integer in 0..2**64-1", "nonce")
    if not isinstance(payload, dict):
        raise DecodeError("must be a map", "payload")
    _check_sizes(payload, "payload", limits)
    return TxBody(chain_id=chain_id, type=tx_type, nonce=nonce, payload=payload)


def _decode_named(data: bytes, field: str) -> Any:
    """canonical.decode, with the refusal naming which field did not decode."""
    try:
        return canonical.decode(data)
    except DecodeError as exc:
        raise DecodeError(exc.message, field) from None


def _check_sizes(value: Any, path: str, limits: TxLimits) -> None:
    """Refuse the first string or list over its limit, naming its path. Most payloads are far
    within the limits: a walk that builds no paths says so, and only a payload it does not
    clear is walked again to find and name the offender."""
    if _clearly_within(value, limits.max_string_chars, limits.max_list_items):
        return
    _refuse_oversize(value, path, limits)


def _clearly_within(value: Any, max_chars: int, max_items: int) -> bool:
    """True when no string or list inside `value` is over its limit (False: look closer)."""
    kind = type(value)
    if kind is dict:
        children = value.values()
    elif kind is list:
        if len(value) > max_items:
            return False
        children = value
    elif kind is str:
        return len(value) <= max_chars
    else:
        # Other leaves; subclasses of str, list or dict are left to the exact walk.
        return not isinstance(value, str | list | dict)
    for item in children:
        item_kind = type(item)
        if item_kind is str:
            if len(item) > max_chars:
                return False
        elif (
            item_kind is dict or item_kind is list or isinstance(item, str | list | dict)
        ) and not _clearly_within(item, max_chars, max_items):
            return False
    return True


def _refuse_oversize(value: Any, path: str, limits: TxLimits) -> None:
    if isinstance(value, str) and len(value) > limits.max_string_chars:
        raise Refused(
            Status.INVALID_ARGUMENT,
            f"string of {len(value)} chars exceeds max_string_chars={limits.max_string_chars}",
            path,
        )
    if isinstance(value, list):
        if len(value) > limits.max_list_items:
            raise Refused(
                Status.INVALID_ARGUMENT,
                f"list of {len(value)} items exceeds max_list_items={limits.max_list_items}",
                path,
            )
        for index, item in enumerate(value):
            _refuse_oversize(item, f"{path}[{index}]", limits)
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_oversize(item, f"{path}.{key}", limits)


def check_signature(tx: SignedTx) -> None:
    """Raise Refused(UNAUTHENTICATED) unless the signature is the signer's over the body."""
    if not verify(tx.signer, TX_TAG, tx.body, tx.signature):
        raise Refused(Status.UNAUTHENTICATED, "Ed25519 signature does not verify", "signature")


def admit_tx(
    data: bytes, chain_id: str, limits: TxLimits = DEFAULT_TX_LIMITS
) -> tuple[SignedTx, TxBody]:
    """All stateless checks a node makes before a tx may enter its mempool."""
    tx = decode_tx(data, limits)
    body = decode_body(tx, limits)
    if body.chain_id != chain_id:
        raise Refused(
            Status.INVALID_ARGUMENT, f"is {body.chain_id!r}, this chain is {chain_id!r}", "chain_id"
        )
    check_signature(tx)
    return tx, body
