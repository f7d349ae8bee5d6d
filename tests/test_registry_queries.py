"""Registry queries over the real gRPC service on 127.0.0.1: resolve a song from each of its four
codes, shares at a date and territory, overclaims, unmatched usage, statements, distribution
re-runs, the AI-training question, persona claims; every answer's state proofs verify offline
against a certified header, and fail after tampering."""

from __future__ import annotations

import json
from concurrent import futures
from typing import Any

import grpc
import pytest

from kledger.node.api.access import AccessPolicy, Reader
from kledger.node.api.registry_service import add_registry_service
from kledger.node.chain.header import CommitCertificate, Header, sign_header
from kledger.node.commit.certified_state import Snapshot
from kledger.node.proof import smt
from kledger.node.proof.state_proof import state_bundle_problem
from kledger.node.storage import state_tree
from kledger.v1 import registry_pb2, registry_pb2_grpc
from tests.helpers import key
from tests.test_registry import CID, ISRC, ISWC, UCI, Chain, catalog, party, report


def _certified(chain: Chain) -> tuple[Header, CommitCertificate]:
    validators = chain.genesis.validator_set
    header = Header(
        chain_id=chain.genesis.chain_id, epoch=0, height=chain.height, round=chain.height,
        parent_hash=bytes(32), tx_log_size=0, tx_log_root=bytes(32),
        state_root=chain.roots[-1], validator_set_hash=validators.digest(),
        next_validator_set_hash=bytes(32), receipts_root=bytes(32),
        proposer="KOMCA", timestamp_ms=chain.time_ms,
    )  # fmt: skip
    signers = sorted(validators.ids)[: validators.quorum]
    signatures = tuple((s, sign_header(key(f"{s}/validator"), header.hash())) for s in signers)
    return header, CommitCertificate(header.hash(), signatures)


def serve(chain: Chain) -> tuple[grpc.Server, int]:
    """A real gRPC server on 127.0.0.1 answering from the chain's latest certified state."""
    header, certificate = _certified(chain)
    root = state_tree.current_ref(chain.view)
    snapshot = Snapshot(
        chain.view, header, certificate, lambda k: state_tree.prove_ref(chain.view, root, k)[1]
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_registry_service(server, lambda: snapshot, insecure_reader(chain))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def insecure_reader(chain: Chain) -> AccessPolicy:
    """The access policy of these servers without TLS: every call is RIAK's member (label-a's
    CMO, paid from D1). tests/test_access.py checks each tier over mutual TLS."""
    member = Reader("member", "RIAK", key("RIAK/client").public_key.hex())
    return AccessPolicy(lambda: chain.view, without_certificate=member)


@pytest.fixture(scope="module")
def world():
    chain = Chain()
    catalog(chain)
    chain.ok("KOSCAP/client", "RegisterParty", party("co-writer", "KOSCAP"))
    chain.ok(
        "KOSCAP/client",
        "SetShares",
        {
            "subject": {"kind": "work", "id": "W1"},
            "right": "MR",
            "shares": [
                {"party_id": "co-writer", "kind": "writer", "role": "CA", "ownership": 10_000}
            ],
        },
    )
    overclaim = chain.ok(
        "KOMCA/client",
        "SetShares",
        {
            "subject": {"kind": "work", "id": "W1"},
            "right": "MR",
            "shares": [
                {"party_id": "composer", "kind": "writer", "role": "C", "ownership": 10_000}
            ],
        },
    )
    lines = [
        {"line_id": "L1", "code_kind": "isrc", "code": ISRC, "usages": 12_340},
        {"line_id": "L2", "code_kind": "cid", "code": "Aunknown0001", "usages": 100},
    ]
    chain.ok("KMCA/client", "ReportUsage", report(lines))
    chain.ok(
        "KOMCA/client",
        "RunDistribution",
        {"distribution_id": "D1", "period": "2026-01", "territory": "KR", "currency": "KRW"},
    )
    chain.ok(
        "KOMCA/client",
        "SetAiTrainingPolicy",
        {
            "subject": {"kind": "work", "id": "W1"},
            "consent": "allow",
            "territories": ["KR"],
            "policy_uri": "https://komca.example/tdm.json",
        },
    )
    chain.ok(
        "FKMP/client",
        "RegisterPersonaClaim",
        {
            "claim_id": "PC1",
            "performer_party_id": "singer-1",
            "subject": {"kind": "cid", "id": "Adeepfake001"},
            "description": "voice clone of singer-1",
            "evidence_hashes": ["cd" * 32],
        },
    )
    chain.ok(
        "FKMP/client",
        "SetPersonaConsent",
        {"party_id": "singer-1", "voice_cloning": "deny", "likeness": "deny"},
    )
    server, port = serve(chain)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = registry_pb2_grpc.RegistryServiceStub(channel)  # type: ignore[no-untyped-call]
    yield {"chain": chain, "stub": stub, "overclaim": overclaim}
    channel.close()
    server.stop(None)


def _verified(world: Any, reply: Any) -> Any:
    assert reply.height == world["chain"].height
    for text in reply.proofs_json:
        assert state_bundle_problem(json.loads(text), world["chain"].genesis) is None
    return json.loads(reply.answer_json)


@pytest.mark.parametrize(
    ("kind", "value"), [("iswc", ISWC), ("isrc", ISRC), ("cid", CID), ("uci", UCI)]
)
def test_any_of_the_four_codes_resolves_to_the_whole_record(world, kind, value):
    reply = world["stub"].Resolve(
        registry_pb2.ResolveRequest(kind=kind, value=value, with_proof=True)
    )
    answer = _verified(world, reply)
    assert answer["codes"] == {
        "iswc": ["T0345246801"],
        "isrc": [ISRC],
        "cid": [CID],
        "uci": ["I001+SBSi-B10000083052"],
    }
    [work] = answer["works"]
    assert work["id"] == "W1" and work["provenance"]["creation_type"] == "human"
    assert work["current_shares"]["PR"]["denominator"] == 10_000
    assert work["ai_training"]["answer"] == "allow"
    assert [d["dispute_id"] for d in work["open_disputes"]] == [world["overclaim"]["dispute_id"]]
    [recording] = answer["recordings"]
    assert recording["ai_training"]["answer"] == "deny"  # no policy on the recording itself
    assert {link["status"] for link in answer["links"]} == {"confirmed"}
    assert len(reply.proofs_json) >= 10


def _problem(bundle: Any, genesis: Any) -> str:
    problem = state_bundle_problem(bundle, genesis)
    assert problem is not None
    return problem


def test_proofs_fail_after_tampering(world):
    reply = world["stub"].Resolve(
        registry_pb2.ResolveRequest(kind="isrc", value=ISRC, with_proof=True)
    )
    genesis = world["chain"].genesis
    bundle = json.loads(reply.proofs_json[0])
    assert bundle["value"] is not None
    forged = dict(
        bundle, value=bundle["value"][:-2] + ("00" if bundle["value"][-2:] != "00" else "01")
    )
    assert "not the header's state_root" in _problem(forged, genesis)
    absent = dict(bundle, value=None)
    assert "absence" in _problem(absent, genesis)
    header = dict(bundle["header"], height=bundle["header"]["height"] + 1)
    assert "another header hash" in _problem(dict(bundle, header=header), genesis)
    cert = dict(bundle["certificate"], signatures=bundle["certificate"]["signatures"][:2])
    assert "quorum" in _problem(dict(bundle, certificate=cert), genesis)
    assert "malformed" in _problem(dict(bundle, siblings=[["x", "y"]]), genesis)
    assert "other_leaf" in _problem(dict(bundle, other_leaf={"path": "00"}), genesis)
    leaf = {"path": "11" * 32, "value_hash": "22" * 32}
    assert "no other leaf" in _problem(dict(bundle, other_leaf=leaf), genesis)
    assert "absence" in _problem(dict(bundle, value=None, other_leaf=leaf), genesis) or (
        "path" in _problem(dict(bundle, value=None, other_leaf=leaf), genesis)
    )


def test_absence_is_proven(world):
    reply = world["stub"].AiTraining(
        registry_pb2.AiTrainingRequest(kind="isrc", value=ISRC, territory="JP", with_proof=True)
    )
    answer = _verified(world, reply)
    assert answer["answer"] == "deny"
    absent = [json.loads(p) for p in reply.proofs_json if json.loads(p)["value"] is None]
    assert any(bytes.fromhex(p["key"]) == b"s/ai/recording/" + ISRC.encode() for p in absent)


def test_ai_training_question(world):
    stub = world["stub"]
    by_work = _verified(
        world,
        stub.AiTraining(
            registry_pb2.AiTrainingRequest(kind="iswc", value=ISWC, territory="KR", with_proof=True)
        ),
    )
    assert by_work["answer"] == "allow"
    elsewhere = _verified(
        world,
        stub.AiTraining(registry_pb2.AiTrainingRequest(kind="iswc", value=ISWC, territory="US")),
    )
    assert (
        elsewhere["answer"] == "deny"
        and "deny by default" in elsewhere["subjects"][0]["decisions"][0]["reason"]
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.AiTraining(registry_pb2.AiTrainingRequest(kind="iswc", value=ISWC, territory="KOR"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_shares_overclaims_unmatched_statement_distribution(world):
    stub = world["stub"]
    shares = _verified(
        world,
        stub.SharesAt(
            registry_pb2.SharesAtRequest(
                kind="isrc",
                value=ISRC,
                right="NR_PRODUCER",
                territory="KR",
                date="2026-01-15",
                with_proof=True,
            )
        ),
    )
    [subject] = shares["subjects"]
    assert subject["in_effect"]["recipients"] == [
        {"recipient": "party:label-a", "weight": 7000},
        {"recipient": "party:label-b", "weight": 3000},
    ]
    overclaims = _verified(world, stub.Overclaims(registry_pb2.OverclaimsRequest(with_proof=True)))
    assert [o["dispute_id"] for o in overclaims["overclaims"]] == [world["overclaim"]["dispute_id"]]
    unmatched = _verified(
        world,
        stub.UnmatchedUsage(
            registry_pb2.UnmatchedUsageRequest(period="2026-01", territory="KR", with_proof=True)
        ),
    )
    assert [u["line_id"] for u in unmatched["unmatched"]] == ["L2"]
    statement = _verified(
        world,
        stub.Statement(
            registry_pb2.StatementRequest(party_id="label-a", period="2026-01", with_proof=True)
        ),
    )
    assert statement["totals_minor"] == {"KRW": 41_678}
    rerun = _verified(
        world,
        stub.Distribution(registry_pb2.DistributionRequest(distribution_id="D1", recompute=True)),
    )
    assert rerun["recomputed"]["result_matches"] and rerun["recomputed"]["inputs_unchanged"]
    with pytest.raises(grpc.RpcError) as caught:
        stub.Statement(registry_pb2.StatementRequest(party_id="nobody", period="2026-01"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_persona_claims(world):
    answer = _verified(
        world,
        world["stub"].PersonaClaims(
            registry_pb2.PersonaClaimsRequest(kind="cid", value="Adeepfake001", with_proof=True)
        ),
    )
    [claim] = answer["claims"]
    assert claim["performer_party_id"] == "singer-1" and claim["status"] == "open"
    assert answer["consents"]["singer-1"]["voice_cloning"] == "deny"


def test_bad_query_arguments_are_invalid_argument(world):
    stub = world["stub"]
    bad = [
        lambda: stub.Resolve(registry_pb2.ResolveRequest(kind="isrc", value=ISRC, territory="kr")),
        lambda: stub.Resolve(
            registry_pb2.ResolveRequest(kind="isrc", value=ISRC, date="2026-13-01")
        ),
        lambda: stub.Resolve(registry_pb2.ResolveRequest(kind="ean", value="1")),
        lambda: stub.SharesAt(registry_pb2.SharesAtRequest(kind="isrc", value=ISRC, right="XX")),
        lambda: stub.UnmatchedUsage(registry_pb2.UnmatchedUsageRequest(period="2026-1")),
        lambda: stub.Resolve(registry_pb2.ResolveRequest(kind="iswc", value="T-034.524.680-2")),
    ]
    for call in bad:
        with pytest.raises(grpc.RpcError) as caught:
            call()  # type: ignore[no-untyped-call]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Resolve(registry_pb2.ResolveRequest(kind="isrc", value="KRZ990000001"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    for call in (  # ids that once reached the store's key builder: AssertionError -> UNKNOWN
        lambda: stub.Statement(registry_pb2.StatementRequest(party_id="", period="2026-01")),
        lambda: stub.Statement(registry_pb2.StatementRequest(party_id="a/b", period="2026-01")),
        lambda: stub.Distribution(registry_pb2.DistributionRequest(distribution_id="a/b")),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()  # type: ignore[no-untyped-call]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


class _BrokenView:
    def get(self, key: bytes) -> bytes | None:
        raise TypeError("a bug of ours")

    def iterate(self, prefix: bytes):  # type: ignore[no-untyped-def]
        raise TypeError("a bug of ours")


def test_a_bug_behind_a_query_is_internal_and_never_leaks(world):
    header, certificate = _certified(world["chain"])
    snapshot = Snapshot(_BrokenView(), header, certificate, lambda k: smt.Proof())  # type: ignore[arg-type]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    add_registry_service(server, lambda: snapshot, insecure_reader(world["chain"]))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as caught:
                stub.Statement(registry_pb2.StatementRequest(party_id="p1", period="2026-01"))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert "a bug of ours" not in (caught.value.details() or "")
    finally:
        server.stop(None)
