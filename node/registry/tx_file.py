"""Transaction files for `kledger tx submit FILE.json --key KEY` and JSON-lines imports:

    {"type": "RegisterWork", "payload": {...}}

The payload is signed as written (canonical msgpack of the JSON value), after the same stateless
checks a node makes at admission, so a mistake is reported before anything is sent. JSON numbers
must be integers: floats have no canonical form (and no place in money or shares).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kledger.node.chain.tx import TxBody
from kledger.node.errors import Refused, invalid
from kledger.node.registry.txtypes import TX_TYPES

MAX_FILE_BYTES = 1_048_576


def _no_floats(value: Any, path: str) -> None:
    if isinstance(value, float):
        raise invalid("numbers must be integers (shares in 1/100 %, money in minor units)", path)
    if isinstance(value, list):
        for index, item in enumerate(value):
            _no_floats(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_floats(item, f"{path}.{key}")


def body_from_json(document: Any, chain_id: str, nonce: int) -> TxBody:
    """A TxBody from {"type", "payload"}; raises Refused naming the field."""
    if not isinstance(document, dict) or set(document) != {"type", "payload"}:
        raise invalid('a transaction file is {"type": NAME, "payload": {...}}', "file")
    tx_type = document["type"]
    if tx_type not in TX_TYPES:
        raise invalid(
            f"unknown transaction type {tx_type!r} (known: {', '.join(sorted(TX_TYPES))})", "type"
        )
    payload = document["payload"]
    _no_floats(payload, "payload")
    TX_TYPES[tx_type].check(payload)
    return TxBody(chain_id=chain_id, type=tx_type, nonce=nonce, payload=payload)


def body_from_file(path: Path | str, chain_id: str, nonce: int) -> TxBody:
    file = Path(path)
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise invalid(f"larger than {MAX_FILE_BYTES} bytes", str(file))
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise invalid(f"cannot read JSON: {error}", str(file)) from None
    return body_from_json(document, chain_id, nonce)


def check_body(tx_type: str, payload: Any) -> Refused | None:
    """The stateless refusal of (type, payload), or None."""
    try:
        body_from_json({"type": tx_type, "payload": payload}, "check", 0)
    except Refused as refusal:
        return refusal
    return None
