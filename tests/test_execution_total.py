"""Execution is total: no payload a client or a Byzantine proposer can sign makes admission, the
proposal check or block execution raise anything but a refusal.

Property tests over arbitrary canonical values: each seed is a documented example of one tx
type (docs/registry.md) run against the state in which it succeeds; hypothesis replaces, adds or
deletes values anywhere in its payload. Every outcome must be a refusal naming a field (or a
success): never an exception, never a receipt of status INTERNAL (the safety net for our bugs,
which must stay unused). A failing case prints the payload that replays it.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kledger.node.chain import canonical
from kledger.node.chain.payload import encode_payload
from kledger.node.chain.tx import DEFAULT_TX_LIMITS, SignedTx, TxBody, decode_body, sign_tx
from kledger.node.errors import Refused, StoreCorrupt
from kledger.node.ordering.mempool import Mempool
from kledger.node.ordering.proposals import MempoolPayloads
from kledger.node.registry import BlockContext, Registry
from kledger.node.registry.governance import sign_pop
from kledger.node.registry.txtypes import TX_TYPES
from kledger.node.storage.keyspace import DictView
from tests.helpers import key, make_genesis
from tests.test_registry import Chain, party

DOCS = Path(__file__).resolve().parent.parent / "docs" / "registry.md"
SIGNERS = ("KOMCA/admin", "KOMCA/client", "RIAK/client", "FKMP/client", "KEPA/client")
PREREQUISITE_PARTIES = (
    ("KOMCA-P002", "KOMCA", "person"),
    ("KOMCA-PUB01", "KOMCA", "company"),
    ("RIAK-L01", "RIAK", "company"),
    ("FKMP-A001", "FKMP", "person"),
)
HEX = "ab" * 32
NEW_KEY = key("NEW/validator")
# Governance actions beyond the documented set_tariff example (each stays an open proposal).
EXTRA_ACTIONS = (
    {"kind": "add_org", "org_id": "MCST", "name": "Ministry", "roles": ["REPORTER"],
     "admin_key": HEX, "validator_key": NEW_KEY.public_key.hex(), "member_keys": ["ef" * 32],
     "validator_pop": sign_pop(NEW_KEY, make_genesis().chain_id, "MCST").hex(),
     "peer_address": "127.0.0.1:7007", "tls_cert_sha256": "12" * 32},
    {"kind": "remove_org", "org_id": "KEPA"},
    {"kind": "change_validator", "org_id": "KEPA", "validator_key": NEW_KEY.public_key.hex(),
     "validator_pop": sign_pop(NEW_KEY, make_genesis().chain_id, "KEPA").hex()},
)  # fmt: skip


@dataclass(frozen=True)
class Seed:
    """A payload that executes OK as `signer` on `state` (the chain just before it ran)."""

    tx_type: str
    signer: str
    payload: dict[str, Any]
    state: dict[bytes, bytes] = field(repr=False)
    ctx: BlockContext = field(repr=False)


def _build_seeds() -> list[Seed]:
    chain = Chain()
    for party_id, society, kind in PREREQUISITE_PARTIES:
        chain.ok(f"{society}/client", "RegisterParty", party(party_id, society, kind=kind))
    documented = [
        json.loads(raw)
        for _, raw in re.findall(r"#### (\w+)\n```json\n(.*?)\n```", DOCS.read_text(), re.S)
    ]
    extra = [
        {"type": "ProposeGovernance", "payload": {"proposal_id": f"GOV-X{i}", "action": action}}
        for i, action in enumerate(EXTRA_ACTIONS)
    ]
    seeds = []
    # ValidatorReady needs a decided change and the new key: seeded after the loop.
    documented = [doc for doc in documented if doc["type"] != "ValidatorReady"]
    for doc in [*extra, *documented]:
        state = dict(chain.view.data)
        for signer in SIGNERS:
            ctx = BlockContext(chain.genesis.chain_id, 0, chain.height + 1, chain.time_ms + 1000)
            [result] = chain.block((signer, doc["type"], doc["payload"]))
            if result.ok:
                seeds.append(Seed(doc["type"], signer, doc["payload"], state, ctx))
                break
        else:
            raise AssertionError(f"no signer runs the example of {doc['type']}")
    # ValidatorReady: signed by the new key of a decided (pending) change.
    decide = {"proposal_id": "GOV-READY", "action": EXTRA_ACTIONS[2]}
    chain.ok("KOMCA/client", "ProposeGovernance", decide)
    for org in ("RIAK", "FKMP", "KEPA"):
        chain.ok(f"{org}/client", "ApproveGovernance", {"proposal_id": "GOV-READY"})
    ctx = BlockContext(chain.genesis.chain_id, 0, chain.height + 1, chain.time_ms + 1000)
    ready = {"org": "KEPA"}
    seeds.append(Seed("ValidatorReady", "NEW/validator", ready, dict(chain.view.data), ctx))
    chain.ok("NEW/validator", "ValidatorReady", ready)
    return seeds


SEEDS = _build_seeds()
REGISTRY = Registry(Chain().genesis)
CHAIN_ID = REGISTRY.genesis.chain_id

# Values the canonical decoder can produce, biased towards what the checks look for.
NAMES = st.sampled_from(
    ["kind", "id", "party_id", "role", "right", "territory", "territories", "shares", "lines",
     "subject", "value", "code", "code_kind", "ownership", "usages", "names", "memberships",
     "action", "tariff", "pools", "society", "ipi", "from", "to", "provenance", "components"]
)  # fmt: skip
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.integers(min_value=-3, max_value=10_001)
    | st.text(max_size=12)
    | st.binary(max_size=8)
    | st.sampled_from(
        ["", " ", "a/b", "KR", "PR", "work", "recording", "isrc", "iswc", "cid", "uci", "C",
         "writer", "publisher", "2026-01", "2026-01-01", "9999-12-31", "Worldwide", "KOMCA",
         "KOMCA-P001", "KRA402600001", "T-034.524.680-1", HEX, "\x00", "é" * 3]
    )
)  # fmt: skip
VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(NAMES | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for name, item in value.items():
            found += _paths(item, (*path, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = dict(value)
        if delete and not rest:
            out.pop(head, None)
        else:
            out[head] = new if not rest else _replaced(value[head], rest, new, delete)
        return out
    out_list = list(value)
    if delete and not rest:
        del out_list[head]
    else:
        out_list[head] = _replaced(value[head], rest, new, delete)
    return out_list


@st.composite
def mutated(draw: st.DrawFn, seed: Seed) -> dict[str, Any]:
    payload: Any = seed.payload
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(payload)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add":
            target = _get(payload, path)
            if isinstance(target, dict):
                path = (*path, draw(NAMES))
            elif isinstance(target, list):
                path = (*path, len(target))
                payload = _replaced(payload, path[:-1], [*target, None], False)
            action = "replace"
        if action == "delete" and not path:
            action = "replace"
        payload = _replaced(payload, path, draw(VALUES), action == "delete")
    if not isinstance(payload, dict):
        payload = {"value": payload}
    return payload  # type: ignore[no-any-return]


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _signed(seed: Seed, payload: dict[str, Any]) -> tuple[SignedTx, TxBody] | None:
    """The tx as a node decodes it, or None when its bytes are refused before any payload check
    (oversized strings, lists: tx decoding covers those)."""
    tx = sign_tx(key(seed.signer), TxBody(CHAIN_ID, seed.tx_type, 1, payload))
    try:
        return tx, decode_body(tx, DEFAULT_TX_LIMITS)
    except Refused:
        return None


def _check_total(seed: Seed, payload: dict[str, Any]) -> None:
    signed = _signed(seed, payload)
    if signed is None:
        return
    tx, body = signed
    replay = f"{seed.tx_type} as {seed.signer}, payload {canonical.encode(payload).hex()}"
    view = DictView(seed.state)
    stateless_ok = True
    try:
        REGISTRY.check_payload(body)
    except Refused as refusal:
        stateless_ok = False
        assert refusal.field, f"refusal names no field: {refusal} ({replay})"
    with contextlib.suppress(Refused):  # any refusal will do; an exception fails the test
        REGISTRY.check_admission(view, tx, body)
    source = MempoolPayloads(
        Mempool(),
        REGISTRY.genesis,
        lambda _h: False,
        10,
        check_payload=REGISTRY.check_payload,
        max_payload_bytes=1 << 20,
    )
    assert source.is_valid_payload(encode_payload([tx]), []) is stateless_ok, replay
    outcome = REGISTRY.execute_block(view, [(tx, body)], seed.ctx)
    [result] = outcome.results
    assert result.status != "INTERNAL", f"{result.message} ({replay})"
    if not stateless_ok:
        assert not result.ok, replay


SEED_NAMES = {f"{s.tx_type}-{s.payload.get('proposal_id', '')}".rstrip("-"): s for s in SEEDS}


@pytest.mark.parametrize("seed_name", sorted(SEED_NAMES))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_payload_is_refused_or_run_never_raised(seed_name: str, data: st.DataObject) -> None:
    seed = SEED_NAMES[seed_name]
    _check_total(seed, data.draw(mutated(seed), label="payload"))


def test_the_seeds_cover_every_tx_type_and_run() -> None:
    assert {s.tx_type for s in SEEDS} == set(TX_TYPES)
    for seed in SEEDS:
        signed = _signed(seed, seed.payload)
        assert signed is not None
        [result] = REGISTRY.execute_block(DictView(seed.state), [signed], seed.ctx).results
        assert result.ok, (seed.tx_type, result)


def REGISTRY_TYPES() -> list[str]:
    from kledger.node.registry.txtypes import TX_TYPES

    return sorted(TX_TYPES)


def test_a_choice_given_a_list_is_a_refusal_at_every_stage() -> None:
    """The finding: `"kind": []` in a subject raised TypeError in the commit worker on every
    node (unhashable list in a set membership test), halting the chain for good."""
    seed = next(s for s in SEEDS if s.tx_type == "SetShares")
    payload = {**seed.payload, "subject": {"kind": [], "id": "KOMCA-W0001"}}
    signed = _signed(seed, payload)
    assert signed is not None
    tx, body = signed
    with pytest.raises(Refused, match=r"payload\.subject\.kind"):
        REGISTRY.check_payload(body)
    source = MempoolPayloads(
        Mempool(),
        REGISTRY.genesis,
        lambda _h: False,
        10,
        check_payload=REGISTRY.check_payload,
        max_payload_bytes=1 << 20,
    )
    assert not source.is_valid_payload(encode_payload([tx]), [])
    [result] = REGISTRY.execute_block(DictView(seed.state), [(tx, body)], seed.ctx).results
    assert result.status == "INVALID_ARGUMENT" and "payload.subject.kind" in result.message


def _with_apply(monkeypatch: pytest.MonkeyPatch, tx_type: str, apply: Any) -> None:
    monkeypatch.setitem(TX_TYPES, tx_type, replace(TX_TYPES[tx_type], apply=apply))


def test_a_bug_inside_one_tx_fails_that_tx_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net for our own bugs: the tx gets a deterministic INTERNAL receipt, its writes
    are discarded, and the block's other txs run as before."""
    seed = next(s for s in SEEDS if s.tx_type == "RegisterParty")
    good = _signed(seed, seed.payload)
    assert good is not None

    def buggy(st: Any, env: Any, payload: dict[str, Any]) -> dict[str, Any]:
        st.put(b"s/party/half-written", {"x": 1})
        raise TypeError("some node-local text 0x7f3a")

    _with_apply(monkeypatch, "SetShares", buggy)
    shares = next(s for s in SEEDS if s.tx_type == "SetShares")
    bad = _signed(shares, shares.payload)
    assert bad is not None
    outcome = REGISTRY.execute_block(DictView(seed.state), [bad, good], seed.ctx)
    failed, passed = outcome.results
    assert failed.status == "INTERNAL" and "TypeError" in failed.message
    assert "0x7f3a" not in failed.message  # node-local text stays out of the receipt
    assert passed.ok
    assert b"s/party/half-written" not in outcome.writes


def test_a_broken_store_stops_execution_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors that say the node itself is broken are not some tx's failure: they propagate."""
    seed = next(s for s in SEEDS if s.tx_type == "RegisterParty")
    signed = _signed(seed, seed.payload)
    assert signed is not None

    def broken(st: Any, env: Any, payload: dict[str, Any]) -> dict[str, Any]:
        raise StoreCorrupt("table file 000042.ldb: checksum mismatch")

    _with_apply(monkeypatch, "RegisterParty", broken)
    with pytest.raises(StoreCorrupt, match="checksum"):
        REGISTRY.execute_block(DictView(seed.state), [signed], seed.ctx)
