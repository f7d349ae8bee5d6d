"""The genesis file: the chain id, the member organizations with their roles and keys, and the
chain parameters. It is the one thing a verifier trusts.

Format (JSON, `"format": "kledger-genesis/v1"`):

    {
      "format": "kledger-genesis/v1",
      "chain_id": "kledger-local",
      "genesis_time_ms": 1767225600000,
      "orgs": [
        {
          "id": "KOMCA",                         # [A-Z][A-Z0-9_]{1,15}, unique
          "name": "Korea Music Copyright Association",
          "roles": ["AUTHOR_CMO", "REPORTER"],   # data, not code (docs/domain.md §1)
          "validator_key": HEX32,                # Ed25519 public key of the org's node; optional
          "admin_key": HEX32,                    # registers and revokes the org's member keys
          "member_keys": [HEX32, ...]            # client keys registered at genesis (optional)
        }, ...
      ],
      "params": { "tx_limits": {...}, "block_limits": {...} }   # optional, defaults below
    }

The validator set of epoch 0 is every org with a validator_key, sorted by org id.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from kledger.consensus.validators import ValidatorSet
from kledger.node.chain import canonical
from kledger.node.chain.tx import TxLimits

FORMAT = "kledger-genesis/v1"
ORG_ID = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")


@dataclass(frozen=True, slots=True)
class BlockLimits:
    max_block_txs: int = 2_000
    max_block_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class OrgSpec:
    org_id: str
    name: str
    roles: tuple[str, ...]
    validator_key: bytes | None
    admin_key: bytes
    member_keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    genesis_time_ms: int
    orgs: tuple[OrgSpec, ...]
    tx_limits: TxLimits
    block_limits: BlockLimits

    @property
    def validator_set(self) -> ValidatorSet:
        return ValidatorSet.of(
            0, [(o.org_id, o.validator_key) for o in self.orgs if o.validator_key is not None]
        )

    def org(self, org_id: str) -> OrgSpec | None:
        return next((o for o in self.orgs if o.org_id == org_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "orgs": [
                {
                    "id": o.org_id,
                    "name": o.name,
                    "roles": list(o.roles),
                    **({"validator_key": o.validator_key.hex()} if o.validator_key else {}),
                    "admin_key": o.admin_key.hex(),
                    "member_keys": [k.hex() for k in o.member_keys],
                }
                for o in self.orgs
            ],
            "params": {
                "tx_limits": {f.name: getattr(self.tx_limits, f.name) for f in fields(TxLimits)},
                "block_limits": {
                    f.name: getattr(self.block_limits, f.name) for f in fields(BlockLimits)
                },
            },
        }

    def digest(self) -> bytes:
        """SHA-256 of the canonical genesis: two nodes with different genesis never talk."""
        return hashlib.sha256(b"kledger/genesis/v1\x00" + canonical.encode(self.to_json())).digest()


def save_genesis(path: Path, genesis: Genesis) -> None:
    Path(path).write_text(json.dumps(genesis.to_json(), indent=2) + "\n")


def load_genesis(path: Path) -> Genesis:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"genesis {path}: cannot read ({exc})") from None
    return parse_genesis(raw, str(path))


def parse_genesis(raw: Any, source: str = "genesis") -> Genesis:
    """Validate a genesis document; every problem is a ValueError naming the field."""

    def fail(what: str) -> ValueError:
        return ValueError(f"{source}: {what}")

    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise fail(f'"format" must be "{FORMAT}"')
    chain_id = raw.get("chain_id")
    if not isinstance(chain_id, str) or not chain_id:
        raise fail('"chain_id" must be a non-empty string')
    time_ms = raw.get("genesis_time_ms", 0)
    if not isinstance(time_ms, int) or time_ms < 0:
        raise fail('"genesis_time_ms" must be a non-negative integer')
    raw_orgs = raw.get("orgs")
    if not isinstance(raw_orgs, list) or not raw_orgs:
        raise fail('"orgs" must be a non-empty list')
    orgs = [_parse_org(item, index, fail) for index, item in enumerate(raw_orgs)]
    ids = [o.org_id for o in orgs]
    if len(set(ids)) != len(ids):
        raise fail("org ids must be unique")
    keys = [o.validator_key for o in orgs if o.validator_key] + [o.admin_key for o in orgs]
    keys += [k for o in orgs for k in o.member_keys]
    if len(set(keys)) != len(keys):
        raise fail("every key (validator, admin, member) must be distinct")
    if not any(o.validator_key for o in orgs):
        raise fail("at least one org needs a validator_key")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise fail('"params" must be an object')
    return Genesis(
        chain_id=chain_id,
        genesis_time_ms=time_ms,
        orgs=tuple(sorted(orgs, key=lambda o: o.org_id)),
        tx_limits=_parse_limits(TxLimits, params.get("tx_limits", {}), "tx_limits", fail),
        block_limits=_parse_limits(
            BlockLimits, params.get("block_limits", {}), "block_limits", fail
        ),
    )


def _parse_org(item: Any, index: int, fail: Any) -> OrgSpec:
    where = f"orgs[{index}]"
    if not isinstance(item, dict):
        raise fail(f"{where} must be an object")
    org_id = item.get("id")
    if not isinstance(org_id, str) or not ORG_ID.match(org_id):
        raise fail(f"{where}.id must match {ORG_ID.pattern}")
    roles = item.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise fail(f"{where}.roles must be a list of role names")

    def key(name: str, value: Any) -> bytes:
        try:
            raw = bytes.fromhex(value)
        except (TypeError, ValueError):
            raise fail(f"{where}.{name} must be hex") from None
        if len(raw) != 32:
            raise fail(f"{where}.{name} must be a 32-byte Ed25519 public key")
        return raw

    validator = item.get("validator_key")
    members = item.get("member_keys", [])
    if not isinstance(members, list):
        raise fail(f"{where}.member_keys must be a list")
    return OrgSpec(
        org_id=org_id,
        name=str(item.get("name", org_id)),
        roles=tuple(sorted(set(roles))),
        validator_key=key("validator_key", validator) if validator is not None else None,
        admin_key=key("admin_key", item.get("admin_key")),
        member_keys=tuple(key(f"member_keys[{i}]", m) for i, m in enumerate(members)),
    )


def _parse_limits(kind: Any, raw: Any, name: str, fail: Any) -> Any:
    if not isinstance(raw, dict):
        raise fail(f"params.{name} must be an object")
    known = {f.name for f in fields(kind)}
    for key, value in raw.items():
        if key not in known:
            raise fail(f"params.{name}.{key} is not a setting (known: {sorted(known)})")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(f"params.{name}.{key} must be a positive integer")
    return kind(**raw)
