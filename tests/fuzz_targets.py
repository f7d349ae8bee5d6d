"""Coverage-guided fuzzing (atheris) of everything that reads hostile bytes: the long campaign
behind the property tests (tests/test_execution_total.py). Not collected by pytest.

    ./scripts/fuzz execution --seconds 600    # tx payloads: admission, proposal check, execution
    ./scripts/fuzz wire --seconds 600         # every decoder of client, peer and verifier bytes

A crash prints the input that replays it (`./scripts/fuzz TARGET crash-<hash>`): an exception
other than a refusal, or an INTERNAL receipt (our bug behind the safety net), is a finding.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports(include=["kledger"]):
    import msgpack

    from kledger.consensus.codec import DecodeError as ConsensusDecodeError
    from kledger.consensus.messages import decode_message
    from kledger.node.chain import canonical
    from kledger.node.chain.header import CommitCertificate, Header
    from kledger.node.chain.payload import decode_payload
    from kledger.node.chain.receipt import Receipt
    from kledger.node.chain.tx import TxBody, decode_body, decode_tx, sign_tx
    from kledger.node.errors import Refused
    from kledger.node.ordering.mempool import Mempool
    from kledger.node.ordering.proposals import MempoolPayloads
    from kledger.node.proof import bundle, state_proof
    from kledger.node.registry.txtypes import TX_TYPES
    from kledger.node.storage.keyspace import DictView
    from tests.helpers import key
    from tests.test_execution_total import REGISTRY, SEEDS

TYPES = sorted(TX_TYPES)
GENESIS = REGISTRY.genesis


def _value(data: atheris.FuzzedDataProvider) -> Any:
    """An arbitrary msgpack value from the fuzzer's bytes (canonical or not: decoding decides)."""
    raw = data.ConsumeBytes(data.ConsumeIntInRange(0, 2_000))
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:  # not msgpack: use the text itself
        return raw.decode("utf-8", "replace")


def execution(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    seed = SEEDS[data.ConsumeIntInRange(0, len(SEEDS) - 1)]
    tx_type = (
        seed.tx_type if data.ConsumeBool() else TYPES[data.ConsumeIntInRange(0, len(TYPES) - 1)]
    )
    payload: Any = dict(seed.payload)
    for _ in range(data.ConsumeIntInRange(1, 4)):
        name = (
            data.ConsumeUnicodeNoSurrogates(12)
            if data.ConsumeBool()
            else data.PickValueInList(sorted(payload) or ["kind"])
        )
        payload[name] = _value(data)
    try:
        tx = sign_tx(key(seed.signer), TxBody(GENESIS.chain_id, tx_type, 1, payload))
        body = decode_body(tx)
    except Refused:
        return  # not canonical, or over a tx limit: refused before any payload check
    view = DictView(seed.state)
    try:
        REGISTRY.check_payload(body)
        REGISTRY.check_admission(view, tx, body)
    except Refused:
        pass
    source = MempoolPayloads(
        Mempool(), GENESIS, lambda _h: False, 10,
        check_payload=REGISTRY.check_payload, max_payload_bytes=1 << 20,
    )  # fmt: skip
    source.is_valid_payload(canonical.encode([tx.encoding]), [])
    [result] = REGISTRY.execute_block(view, [(tx, body)], seed.ctx).results
    if result.status == "INTERNAL":
        raise AssertionError(f"execution bug behind the safety net: {result.message}")


def _refusing(*decoders: Callable[[bytes], object]) -> Callable[[bytes], None]:
    def run(raw: bytes) -> None:
        for decode in decoders:
            with contextlib.suppress(Refused, ConsensusDecodeError):
                decode(raw)

    return run


def _json_bundles(raw: bytes) -> None:
    try:
        document = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return
    with contextlib.suppress(Refused):
        bundle.bundle_problem(bundle.parse_bundle(document), GENESIS)
    with contextlib.suppress(Refused):
        state_proof.state_bundle_problem(document, GENESIS)


WIRE = _refusing(
    decode_tx,
    lambda raw: decode_payload(raw, GENESIS.block_limits, GENESIS.tx_limits),
    decode_message,
    Header.decode,
    CommitCertificate.decode,
    Receipt.decode,
    canonical.decode,
)


def wire(raw: bytes) -> None:
    WIRE(raw)
    _json_bundles(raw)


TARGETS = {"execution": execution, "wire": wire}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()
