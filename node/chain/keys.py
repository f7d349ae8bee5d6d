"""Ed25519 keys and domain-separated signatures (PyNaCl / libsodium).

Every signature in kledger is over `tag + message`, where the tag names what is signed
(`kledger/tx/v1\\0`, `kledger/commit/v1\\0`, ...), so a signature of one kind can never be replayed
as another. Verification rules are consensus-critical (docs/design.md §5): every node uses
libsodium's, never a per-node choice.

Key files are JSON: {"kind": "ed25519", "seed": HEX32, "public_key": HEX32}.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

TX_TAG = b"kledger/tx/v1\x00"
COMMIT_TAG = b"kledger/commit/v1\x00"
# Around the consensus core's own sign bytes (which carry per-message tags and the chain id), so
# no consensus signature can ever pass as a tx or header signature.
CONSENSUS_TAG = b"kledger/consensus/v1\x00"
# A new validator key's proof of possession (governance add_org / change_validator): the key
# signs [chain_id, org_id, key] so no one can name a key they do not hold (docs/domain.md §7.4).
POP_TAG = b"kledger/pop/v1\x00"


@dataclass(frozen=True, slots=True)
class KeyPair:
    seed: bytes
    public_key: bytes

    @staticmethod
    def generate() -> KeyPair:
        return KeyPair.from_seed(os.urandom(32))

    @staticmethod
    def from_seed(seed: bytes) -> KeyPair:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        signing = nacl.signing.SigningKey(seed)
        return KeyPair(seed=seed, public_key=bytes(signing.verify_key))

    def sign(self, tag: bytes, message: bytes) -> bytes:
        signed = nacl.signing.SigningKey(self.seed).sign(tag + message)
        return bytes(signed.signature)


def verify(public_key: bytes, tag: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is public_key's Ed25519 signature of tag + message."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(tag + message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def save_key(path: Path, key: KeyPair) -> None:
    """Write a key file readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"kind": "ed25519", "seed": key.seed.hex(), "public_key": key.public_key.hex()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle, indent=2)
        handle.write("\n")


def load_key(path: Path) -> KeyPair:
    try:
        body = json.loads(Path(path).read_text())
        key = KeyPair.from_seed(bytes.fromhex(body["seed"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"key file {path}: not a kledger ed25519 key ({exc})") from None
    if body.get("public_key") not in (None, key.public_key.hex()):
        raise ValueError(f"key file {path}: public_key does not match the seed")
    return key
