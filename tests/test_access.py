"""Who may read what on the client port (node/api/access.py, docs/node.md "Access"), over real
gRPC servers with mutual TLS on 127.0.0.1 (node/api/server.py), the real ledger and registry
services and a registry state built by executing real txs (tests/test_registry.py Chain):

- every RPC for each identity: the public reader, members of the orgs a record belongs to and
  of orgs it does not, a node certificate; the expected answer or PERMISSION_DENIED naming the
  rule;
- what a reader may see still verifies (state proofs, inclusion proofs), and redacted records
  lose their proofs;
- a revoked member key, a certificate from another CA, no certificate, a member certificate on
  the peer port;
- every restricted read served is in the audit log with the reader, and counted;
- the access table, the rules and docs/node.md agree, and every RPC has an entry.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from kledger.cluster.client.connect import ClientCert, open_aio_channel
from kledger.node.api.access import (
    METHOD_ACCESS,
    OPEN_SERVICES,
    RULES,
    AccessPolicy,
)
from kledger.node.api.ledger_service import (
    BlockView,
    CertifiedHeader,
    LedgerServicer,
    NodeStatusView,
    StoredTx,
    inclusion_from_proto,
)
from kledger.node.api.registry_service import add_registry_service
from kledger.node.api.server import ClientService, NodeServers, start_servers
from kledger.node.chain import canonical
from kledger.node.chain.header import CommitCertificate, Header, sign_header
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import SignedTx
from kledger.node.commit.certified_state import HistoricProof, Snapshot
from kledger.node.config import Address, PeerSettings
from kledger.node.errors import Refused, Status
from kledger.node.net.peer_transport import PeerServicer
from kledger.node.net.tls import (
    Authority,
    TlsMaterial,
    issue_client_cert,
    issue_node_cert,
    make_ca,
    peer_channel_credentials,
)
from kledger.node.ordering.admission import SubmitResult
from kledger.node.proof.bundle import ConsistencyBundle, InclusionBundle, inclusion_problem
from kledger.node.proof.receipts import receipt_path, receipts_root
from kledger.node.proof.state_proof import state_bundle_problem
from kledger.node.registry import state
from kledger.node.storage import state_tree
from kledger.node.telemetry.metrics import NodeMetrics
from kledger.v1 import (
    ledger_pb2,
    ledger_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from tests.helpers import key
from tests.test_ledger_service import path as audit_path
from tests.test_ledger_service import root as log_root
from tests.test_registry import ISRC, ISWC, Chain, catalog, party, report

ROOT = Path(__file__).resolve().parent.parent
LEDGER = "/kledger.v1.Ledger/"
REGISTRY = "/kledger.v1.RegistryService/"


# -- the world: a registry state with a usage report, a distribution and statements ----------


class RecordingChain(Chain):
    """A Chain that keeps every tx with its receipt, in log order (for the ledger service)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[SignedTx, Receipt]] = []

    def block(
        self, *txs: tuple[str, str, dict[str, Any]], advance_ms: int = 1000
    ) -> list[TxResult]:
        results = super().block(*txs, advance_ms=advance_ms)
        signed, _ = self.blocks[-1]
        for (tx, _body), result in zip(signed, results, strict=True):
            self.log.append((tx, Receipt(self.height, len(self.log), result)))
        return results

    def tx_of(self, tx_type: str) -> SignedTx:
        return next(tx for tx, _ in self.log if _type(tx) == tx_type)


def _type(tx: SignedTx) -> str:
    return str(canonical.decode_stored(tx.body)["type"])


def build_world() -> RecordingChain:
    """The worked example: KMCA reports usage R1 (with an unmatched line that carries its own
    revenue), KOMCA runs distribution D1, paying parties of KOMCA, RIAK and FKMP; an open
    overclaim on W1; a KOMCA member key registered and then revoked."""
    chain = RecordingChain()
    catalog(chain)
    chain.ok("KOSCAP/client", "RegisterParty", party("co-writer", "KOSCAP"))
    for org, holder in (("KOSCAP", "co-writer"), ("KOMCA", "composer")):
        chain.ok(
            f"{org}/client",
            "SetShares",
            {
                "subject": {"kind": "work", "id": "W1"},
                "right": "MR",
                "shares": [
                    {"party_id": holder, "kind": "writer", "role": "CA", "ownership": 10_000}
                ],
            },
        )
    lines = [
        {"line_id": "L1", "code_kind": "isrc", "code": ISRC, "usages": 12_340},
        {"line_id": "L2", "code_kind": "cid", "code": "Aunknown0001", "usages": 100},
        {
            "line_id": "L3",
            "code_kind": "cid",
            "code": "Aunknown0002",
            "usages": 50,
            "revenue_minor": 777,
        },
    ]
    chain.ok("KMCA/client", "ReportUsage", report(lines))
    chain.ok(
        "KOMCA/client",
        "RunDistribution",
        {"distribution_id": "D1", "period": "2026-01", "territory": "KR", "currency": "KRW"},
    )
    revoked = key("KOMCA/revoked").public_key.hex()
    chain.ok("KOMCA/admin", "RegisterMember", {"org": "KOMCA", "public_key": revoked})
    chain.ok("KOMCA/admin", "RevokeMember", {"org": "KOMCA", "public_key": revoked})
    return chain


def block_certified(
    chain: RecordingChain, height: int
) -> tuple[Header, CommitCertificate, list[Receipt]]:
    """The certified header of one height: its receipts root over that block's receipts."""
    validators = chain.genesis.validator_set
    receipts = [r for _, r in chain.log if r.height == height]
    leaves = [tx.encoding for tx, _ in chain.log][: receipts[-1].leaf_index + 1]
    header = Header(
        chain_id=chain.genesis.chain_id, epoch=0, height=height, round=height,
        parent_hash=bytes(32), tx_log_size=len(leaves), tx_log_root=log_root(leaves),
        state_root=chain.roots[height], validator_set_hash=validators.digest(),
        next_validator_set_hash=bytes(32), receipts_root=receipts_root(receipts),
        proposer="KOMCA", timestamp_ms=chain.time_ms,
    )  # fmt: skip
    signers = sorted(validators.ids)[: validators.quorum]
    signatures = tuple((s, sign_header(key(f"{s}/validator"), header.hash())) for s in signers)
    return header, CommitCertificate(header.hash(), signatures), receipts


def certified(chain: RecordingChain) -> tuple[Header, CommitCertificate]:
    validators = chain.genesis.validator_set
    leaves = [tx.encoding for tx, _ in chain.log]
    header = Header(
        chain_id=chain.genesis.chain_id, epoch=0, height=chain.height, round=chain.height,
        parent_hash=bytes(32), tx_log_size=len(leaves), tx_log_root=log_root(leaves),
        state_root=chain.roots[-1], validator_set_hash=validators.digest(),
        next_validator_set_hash=bytes(32), receipts_root=bytes(32),
        proposer="KOMCA", timestamp_ms=chain.time_ms,
    )  # fmt: skip
    signers = sorted(validators.ids)[: validators.quorum]
    signatures = tuple((s, sign_header(key(f"{s}/validator"), header.hash())) for s in signers)
    return header, CommitCertificate(header.hash(), signatures)


class ChainLedger:
    """The ledger service's backend over the world's tx log (one certified header at the
    top). Submissions are answered OK without a mempool: only who may submit is under test."""

    def __init__(self, chain: RecordingChain) -> None:
        self.chain = chain
        self.header, self.certificate = certified(chain)
        self.txs = {tx.tx_hash: (tx, receipt) for tx, receipt in chain.log}

    @property
    def chain_id(self) -> str:
        return self.chain.genesis.chain_id

    async def submit(self, encodings: Sequence[bytes], source: str) -> list[SubmitResult]:
        return [SubmitResult(b"\x00" * 32, "OK") for _ in encodings]

    async def wait_for_receipts(
        self, tx_hashes: Sequence[bytes], timeout_s: float
    ) -> list[Receipt | None]:
        return [None if (found := self.txs.get(h)) is None else found[1] for h in tx_hashes]

    def get_tx(self, tx_hash: bytes) -> StoredTx | None:
        found = self.txs.get(tx_hash)
        return None if found is None else StoredTx(found[0].encoding, found[1])

    def get_block(self, height: int) -> BlockView | None:
        hashes = tuple(tx.tx_hash for tx, r in self.chain.log if r.height == height)
        return BlockView(self.header, self.certificate, hashes) if hashes else None

    def get_header(self, height: int | None) -> CertifiedHeader | None:
        return CertifiedHeader(self.header, self.certificate)

    def inclusion_proof(self, tx_hash: bytes) -> InclusionBundle | None:
        found = self.txs.get(tx_hash)
        if found is None:
            return None
        leaves = [tx.encoding for tx, _ in self.chain.log]
        index = found[1].leaf_index
        block, block_cert, receipts = block_certified(self.chain, found[1].height)
        offset = receipts.index(found[1])
        return InclusionBundle(
            chain_id=self.chain_id,
            leaf=leaves[index],
            leaf_index=index,
            tree_size=len(leaves),
            audit_path=tuple(audit_path(index, leaves)),
            header=self.header,
            certificate=self.certificate,
            receipt=found[1],
            receipt_header=block,
            receipt_certificate=block_cert,
            receipt_count=len(receipts),
            receipt_path=tuple(receipt_path(receipts, offset)),
            epoch_chain=(),
        )

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyBundle:
        raise Refused(Status.INVALID_ARGUMENT, "one header only in this test", "new_size")

    def status(self) -> NodeStatusView:
        return NodeStatusView("KOMCA", 0, 1, "KOMCA", self.header, self.header.height, 0, 0, ())

    async def commits(self, from_height: int) -> AsyncIterator[BlockView]:
        block = self.get_block(1)
        assert block is not None
        yield block


# -- identities --------------------------------------------------------------------------------


def member(authority: Authority, org: str, label: str = "client") -> ClientCert:
    cert, tls_key = issue_client_cert(authority, org, key(f"{org}/{label}").public_key)
    return ClientCert(cert, tls_key)


class Node:
    """KOMCA's client and peer ports over the world, with the identities that call them."""

    def __init__(self, tmp: Path) -> None:
        self.chain = build_world()
        self.authority = make_ca()
        cert, tls_key = issue_node_cert(self.authority, "KOMCA")
        self.material = TlsMaterial(self.authority.cert_pem, cert, tls_key)
        public_cert, public_key = issue_client_cert(self.authority, "", None)
        node_cert, node_key = issue_node_cert(self.authority, "KOMCA")
        other = make_ca("another cluster")
        foreign_cert, foreign_key = issue_client_cert(
            other, "KOMCA", key("KOMCA/client").public_key
        )
        self.identities = {
            "public": ClientCert(public_cert, public_key),
            "KOMCA": member(self.authority, "KOMCA"),
            "RIAK": member(self.authority, "RIAK"),
            "KMCA": member(self.authority, "KMCA"),
            "KEPA": member(self.authority, "KEPA"),
            "KOMCA node": ClientCert(node_cert, node_key),
            "revoked": member(self.authority, "KOMCA", "revoked"),
            "foreign": ClientCert(foreign_cert, foreign_key),
        }
        self.servers: NodeServers | None = None
        self.channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> Node:
        chain = self.chain
        self.metrics = NodeMetrics.create("KOMCA")
        access = AccessPolicy(lambda: chain.view, self.metrics)
        self.ledger = ChainLedger(chain)
        header, certificate = self.ledger.header, self.ledger.certificate
        assert state_tree.stored_root(chain.view) == chain.roots[-1]
        snapshot = Snapshot(
            chain.view,
            header,
            certificate,
            lambda k: state_tree.prove_ref(chain.view, state_tree.current_ref(chain.view), k)[1],
        )
        registry = ClientService(
            registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
            lambda server: add_registry_service(  # type: ignore[arg-type]
                server,
                lambda: snapshot,
                access,
                lambda height, k: HistoricProof(
                    k, chain.view.get(k), snapshot.prove(k), header, certificate
                ),
            ),
        )
        self.servers = await start_servers(
            material=self.material,
            client_address=Address("127.0.0.1", 0),
            peer_address=Address("127.0.0.1", 0),
            ledger=LedgerServicer(self.ledger, access, self.metrics),
            peer=PeerServicer(
                on_message=lambda s, p, _: None,
                block_source=lambda a, b: [],
                is_validator=lambda org: True,
                metrics=self.metrics,
                settings=PeerSettings(),
            ),
            peer_settings=PeerSettings(),
            access=access,
            extra_services=[registry],
        )
        await self.servers.set_serving(True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for channel in self.channels.values():
            await channel.close()
        assert self.servers is not None
        await self.servers.stop(0)

    def channel(self, who: str) -> grpc.aio.Channel:
        if who not in self.channels:
            assert self.servers is not None
            target = f"127.0.0.1:{self.servers.client_port}"
            self.channels[who] = open_aio_channel(
                target, self.authority.cert_pem, self.identities[who]
            )
        return self.channels[who]

    def ledger_stub(self, who: str) -> ledger_pb2_grpc.LedgerStub:
        return ledger_pb2_grpc.LedgerStub(self.channel(who))  # type: ignore[no-untyped-call]

    def registry_stub(self, who: str) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self.channel(who))  # type: ignore[no-untyped-call]


async def outcome(call: Any) -> Any:
    """The reply, or ("DENIED", details) for PERMISSION_DENIED; other errors fail the test."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.PERMISSION_DENIED:
            return ("DENIED", error.details())
        raise


def rule_of(result: Any) -> str:
    """The access rule a denial names ("access.<rule>: ..."), or "" for an answer."""
    if isinstance(result, tuple) and result[0] == "DENIED":
        found = re.match(r"access\.([a-z_]+):", result[1])
        assert found, f"a denial that names no access rule: {result[1]}"
        return found.group(1)
    return ""


# -- every RPC, every identity ----------------------------------------------------------------

READERS = ("public", "KOMCA", "RIAK", "KMCA", "KEPA", "KOMCA node")
# For each call: the access rule each reader meets ("" = answered). KMCA reported R1; KOMCA ran
# D1; D1 paid parties of KOMCA, RIAK and FKMP; label-a is RIAK's party, composer KOMCA's.
EVERYONE = dict.fromkeys(READERS, "")
MEMBERS = {**EVERYONE, "public": "member"}
USAGE_R1 = {**MEMBERS, "KEPA": "usage_revenue"}
DISTRIBUTION_D1 = {**MEMBERS, "KMCA": "distribution_paid", "KEPA": "distribution_paid"}
STATEMENT_LABEL_A = dict.fromkeys(READERS, "statement_own_cmo") | {"public": "member", "RIAK": ""}
STATEMENT_COMPOSER = {**STATEMENT_LABEL_A, "RIAK": "statement_own_cmo", "KOMCA": "",
                      "KOMCA node": ""}  # fmt: skip


def ledger_calls(world: RecordingChain) -> dict[str, tuple[Any, dict[str, str]]]:
    usage, run = world.tx_of("ReportUsage").tx_hash, world.tx_of("RunDistribution").tx_hash
    party_tx = world.tx_of("RegisterParty").tx_hash
    return {
        "SubmitTx": (lambda s: s.SubmitTx(ledger_pb2.SubmitTxRequest(tx=b"x")), MEMBERS),
        "SubmitBatch": (
            lambda s: s.SubmitBatch(ledger_pb2.SubmitBatchRequest(txs=[b"x"])),
            MEMBERS,
        ),
        "WaitForCommit usage": (
            lambda s: s.WaitForCommit(ledger_pb2.WaitForCommitRequest(tx_hash=usage)),
            USAGE_R1,
        ),
        "WaitForCommits usage": (
            # a party tx any member may see, then the usage report: refused whole, naming it
            lambda s: s.WaitForCommits(
                ledger_pb2.WaitForCommitsRequest(tx_hashes=[party_tx, usage])
            ),
            USAGE_R1,
        ),
        "WaitForCommits party": (
            lambda s: s.WaitForCommits(ledger_pb2.WaitForCommitsRequest(tx_hashes=[party_tx])),
            MEMBERS,
        ),
        "GetTx party": (lambda s: s.GetTx(ledger_pb2.GetTxRequest(tx_hash=party_tx)), MEMBERS),
        "GetTx usage": (lambda s: s.GetTx(ledger_pb2.GetTxRequest(tx_hash=usage)), USAGE_R1),
        "GetTx distribution": (
            lambda s: s.GetTx(ledger_pb2.GetTxRequest(tx_hash=run)),
            DISTRIBUTION_D1,
        ),
        "GetInclusionProof usage": (
            lambda s: s.GetInclusionProof(ledger_pb2.GetInclusionProofRequest(tx_hash=usage)),
            USAGE_R1,
        ),
        "GetInclusionProof party": (
            lambda s: s.GetInclusionProof(ledger_pb2.GetInclusionProofRequest(tx_hash=party_tx)),
            MEMBERS,
        ),
        "GetBlock": (lambda s: s.GetBlock(ledger_pb2.GetBlockRequest(height=1)), MEMBERS),
        "GetHeader": (lambda s: s.GetHeader(ledger_pb2.GetHeaderRequest()), EVERYONE),
        "GetStatus": (lambda s: s.GetStatus(ledger_pb2.GetStatusRequest()), EVERYONE),
    }


def registry_calls() -> dict[str, tuple[Any, dict[str, str]]]:
    r = registry_pb2
    return {
        "Resolve": (
            lambda s: s.Resolve(r.ResolveRequest(kind="iswc", value=ISWC, with_proof=True)),
            EVERYONE,
        ),
        "SharesAt": (
            lambda s: s.SharesAt(
                r.SharesAtRequest(kind="iswc", value=ISWC, right="MR", with_proof=True)
            ),
            EVERYONE,
        ),
        "AiTraining": (
            lambda s: s.AiTraining(r.AiTrainingRequest(kind="iswc", value=ISWC)),
            EVERYONE,
        ),
        "Works": (lambda s: s.Works(r.WorksRequest()), EVERYONE),
        "Overclaims": (lambda s: s.Overclaims(r.OverclaimsRequest()), MEMBERS),
        "PersonaClaims": (
            lambda s: s.PersonaClaims(r.PersonaClaimsRequest(kind="isrc", value=ISRC)),
            MEMBERS,
        ),
        "UnmatchedUsage": (
            lambda s: s.UnmatchedUsage(r.UnmatchedUsageRequest(period="2026-01", with_proof=True)),
            MEMBERS,
        ),
        "Statement label-a": (
            lambda s: s.Statement(
                r.StatementRequest(party_id="label-a", period="2026-01", with_proof=True)
            ),
            STATEMENT_LABEL_A,
        ),
        "Statement composer": (
            lambda s: s.Statement(r.StatementRequest(party_id="composer", period="2026-01")),
            STATEMENT_COMPOSER,
        ),
        "Distribution": (
            lambda s: s.Distribution(r.DistributionRequest(distribution_id="D1", with_proof=True)),
            DISTRIBUTION_D1,
        ),
        "StateProof work": (
            lambda s: s.StateProof(r.StateProofRequest(key=state.work_key("W1"))),
            MEMBERS,
        ),
        "StateProof report": (
            lambda s: s.StateProof(r.StateProofRequest(key=state.report_key("R1"))),
            {**dict.fromkeys(READERS, "state_proof_family"), "public": "member"},
        ),
    }


@pytest.fixture
def world_node(tmp_path: Path) -> Iterator[Node]:
    yield Node(tmp_path)


@pytest.mark.asyncio
async def test_every_rpc_answers_or_denies_each_identity_by_its_rule(world_node: Node) -> None:
    async with world_node as node:
        calls = {
            **{
                name: (call, want, node.ledger_stub)
                for name, (call, want) in ledger_calls(node.chain).items()
            },
            **{
                name: (call, want, node.registry_stub)
                for name, (call, want) in registry_calls().items()
            },
        }
        got: dict[tuple[str, str], str] = {}
        wanted: dict[tuple[str, str], str] = {}
        for name, (call, want, stub_of) in calls.items():
            for reader in READERS:
                got[name, reader] = rule_of(await outcome(call(stub_of(reader))))
                wanted[name, reader] = want[reader]
        assert got == wanted
        # The table covers every kledger.v1 RPC but the streams tested below.
        named = {name.split()[0] for name in calls}
        listed = {m.rsplit("/", 1)[-1] for m in METHOD_ACCESS}
        assert listed - named == {"SubmitStream", "StreamCommits", "GetConsistencyProof"}


@pytest.mark.asyncio
async def test_a_batch_wait_is_refused_whole_naming_the_tx_a_reader_may_not_see(
    world_node: Node,
) -> None:
    async with world_node as node:
        party_tx = node.chain.tx_of("RegisterParty").tx_hash
        usage = node.chain.tx_of("ReportUsage").tx_hash
        request = ledger_pb2.WaitForCommitsRequest(tx_hashes=[party_tx, party_tx, usage])
        denied = await outcome(node.ledger_stub("KEPA").WaitForCommits(request))
        assert rule_of(denied) == "usage_revenue"
        assert "(tx_hashes[2])" in denied[1]
        # The reporter's org sees both, the repeated hash answered twice.
        reply = await node.ledger_stub("KMCA").WaitForCommits(request)
        assert len(reply.receipts) == 3 and reply.receipts[0] == reply.receipts[1]
        assert reply.receipts[2] != reply.receipts[0]


@pytest.mark.asyncio
async def test_streams_and_consistency_proofs_follow_their_tier(world_node: Node) -> None:
    async with world_node as node:
        for reader, allowed in (("public", False), ("KEPA", True)):
            stream = node.ledger_stub(reader).StreamCommits(ledger_pb2.StreamCommitsRequest())
            if allowed:
                first = await stream.read()
                assert list(first.tx_hashes)
            else:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stream.read()
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert (info.value.details() or "").startswith("access.member:")
            stream.cancel()

            async def batches() -> AsyncIterator[ledger_pb2.SubmitBatchRequest]:
                yield ledger_pb2.SubmitBatchRequest(txs=[b"x"])

            submit = node.ledger_stub(reader).SubmitStream(batches())
            if allowed:
                assert [r.status for r in (await submit.read()).results] == ["OK"]
            else:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await submit.read()
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            submit.cancel()
        # Public: the refusal is the backend's, not access.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await node.ledger_stub("public").GetConsistencyProof(
                ledger_pb2.GetConsistencyProofRequest(old_size=1, new_size=2)
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_what_a_reader_may_see_still_verifies_and_redactions_drop_proofs(
    world_node: Node,
) -> None:
    async with world_node as node:
        genesis = node.chain.genesis
        usage = node.chain.tx_of("ReportUsage").tx_hash
        proof = await node.ledger_stub("KMCA").GetInclusionProof(
            ledger_pb2.GetInclusionProofRequest(tx_hash=usage)
        )
        assert inclusion_problem(inclusion_from_proto(proof), genesis) is None

        def verified(reply: Any) -> tuple[dict[str, Any], list[bytes]]:
            keys = []
            for text in reply.proofs_json:
                bundle = json.loads(text)
                assert state_bundle_problem(bundle, genesis) is None
                keys.append(bytes.fromhex(bundle["key"]))
            return json.loads(reply.answer_json), keys

        request = registry_pb2.ResolveRequest(kind="iswc", value=ISWC, with_proof=True)
        member_answer, member_keys = verified(await node.registry_stub("KEPA").Resolve(request))
        public_answer, public_keys = verified(await node.registry_stub("public").Resolve(request))
        [work] = member_answer["works"]
        assert work["open_disputes"], "the world has an open overclaim on W1"
        assert "open_disputes" not in public_answer["works"][0]
        assert any(k.startswith(state.DISPUTE_PREFIX) for k in member_keys)
        assert not any(k.startswith(state.DISPUTE_PREFIX) for k in public_keys)
        assert set(public_keys) < set(member_keys)

        request_usage = registry_pb2.UnmatchedUsageRequest(period="2026-01", with_proof=True)
        line_key = state.usage_key("2026-01", "KR", "R1", "L3")
        reporter, reporter_keys = verified(
            await node.registry_stub("KMCA").UnmatchedUsage(request_usage)
        )
        other, other_keys = verified(await node.registry_stub("KEPA").UnmatchedUsage(request_usage))
        assert {u["line_id"]: u.get("revenue_minor") for u in reporter["unmatched"]} == {
            "L2": None,
            "L3": 777,
        }
        [withheld] = [u for u in other["unmatched"] if u["line_id"] == "L3"]
        assert "revenue_minor" not in withheld and withheld["usages"] == 50
        assert withheld["revenue_withheld"] == "access.usage_revenue"
        assert line_key in reporter_keys and line_key not in other_keys


@pytest.mark.asyncio
async def test_revoked_foreign_and_missing_certificates_and_peers(world_node: Node) -> None:
    async with world_node as node:
        result = await outcome(node.ledger_stub("revoked").GetHeader(ledger_pb2.GetHeaderRequest()))
        assert rule_of(result) == "member_key_registered"
        # A certificate from another CA, or none, fails the TLS handshake: the call never runs.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await node.ledger_stub("foreign").GetHeader(ledger_pb2.GetHeaderRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert node.servers is not None
        bare = grpc.aio.secure_channel(
            f"127.0.0.1:{node.servers.client_port}",
            grpc.ssl_channel_credentials(node.authority.cert_pem),
            options=[("grpc.ssl_target_name_override", "kledger-node")],
        )
        async with bare:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ledger_pb2_grpc.LedgerStub(bare).GetHeader(  # type: ignore[no-untyped-call]
                    ledger_pb2.GetHeaderRequest(), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # A member's certificate (CN = its org) does not speak for the org's node.
        komca = node.identities["KOMCA"]
        as_member = TlsMaterial(node.authority.cert_pem, komca.cert_pem, komca.key_pem)
        peer = grpc.aio.secure_channel(
            f"127.0.0.1:{node.servers.peer_port}",
            peer_channel_credentials(as_member),
            options=[("grpc.ssl_target_name_override", "kledger-node")],
        )
        async with peer:
            stub = peer_pb2_grpc.PeerStub(peer)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.SyncBlocks(peer_pb2.SyncRequest(from_height=1, to_height=1)):
                    pass
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "no node certificate" in (info.value.details() or "")


@pytest.mark.asyncio
async def test_every_restricted_read_is_audited_with_its_reader(
    world_node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kledger.audit")
    async with world_node as node:
        usage = node.chain.tx_of("ReportUsage").tx_hash
        await node.ledger_stub("RIAK").GetTx(ledger_pb2.GetTxRequest(tx_hash=usage))
        await node.registry_stub("RIAK").Statement(
            registry_pb2.StatementRequest(party_id="label-a", period="2026-01")
        )
        await node.registry_stub("KMCA").UnmatchedUsage(
            registry_pb2.UnmatchedUsageRequest(period="2026-01")
        )
        denied = await outcome(
            node.registry_stub("KEPA").Distribution(
                registry_pb2.DistributionRequest(distribution_id="D1")
            )
        )
        await node.ledger_stub("KEPA").GetTx(
            ledger_pb2.GetTxRequest(tx_hash=node.chain.tx_of("RegisterParty").tx_hash)
        )
        lines = [
            (r.getMessage(), r.kledger_fields)  # type: ignore[attr-defined]
            for r in caplog.records
            if r.name == "kledger.audit"
        ]
        riak = key("RIAK/client").public_key.hex()
        kmca = key("KMCA/client").public_key.hex()
        assert lines == [
            (
                "restricted_read",
                {
                    "reader": "member",
                    "org": "RIAK",
                    "member_key": riak,
                    "rpc": "GetTx",
                    "rule": "usage_revenue",
                    "records": ["report R1"],
                },
            ),
            (
                "restricted_read",
                {
                    "reader": "member",
                    "org": "RIAK",
                    "member_key": riak,
                    "rpc": "Statement",
                    "rule": "statement_own_cmo",
                    "records": ["statement label-a 2026-01"],
                },
            ),
            (
                "restricted_read",
                {
                    "reader": "member",
                    "org": "KMCA",
                    "member_key": kmca,
                    "rpc": "UnmatchedUsage",
                    "rule": "usage_revenue",
                    "records": ["report R1"],
                },
            ),
        ]
        assert rule_of(denied) == "distribution_paid"
        # A denial names the rule and the reader, never who may read (itself restricted).
        assert not any(org in denied[1] for org in ("KOMCA", "RIAK", "FKMP"))
        value = node.metrics.value
        assert value("kledger_restricted_reads_total", rule="usage_revenue") == 2
        assert value("kledger_access_denied_total", rule="distribution_paid") == 1


# -- the table, the rules and the docs ---------------------------------------------------------


def test_every_rpc_has_an_access_entry_and_nothing_else_is_open() -> None:
    rpcs = set()
    for module in (ledger_pb2, registry_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            rpcs |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    assert set(METHOD_ACCESS) == rpcs
    for entry in METHOD_ACCESS.values():
        assert set(entry.rules) <= set(RULES)
    assert all(not name.startswith("/kledger.") for name in OPEN_SERVICES)


def test_docs_node_md_mirrors_the_access_table_and_the_rules() -> None:
    text = (ROOT / "docs" / "node.md").read_text()
    section = text[text.index("## Access") :]
    section = section[: section.index("\n## ", 1)]
    rows = dict(re.findall(r"^\| `(\w+)` \| (public|member) \|", section, re.M))
    assert rows == {m.rsplit("/", 1)[-1]: e.tier.value for m, e in METHOD_ACCESS.items()}
    documented_rules = set(re.findall(r"^\| `access\.([a-z_]+)` \|", section, re.M))
    assert documented_rules == set(RULES)
    lines = {
        line.split("|")[1].strip(" `"): line
        for line in section.splitlines()
        if line.startswith("| `")
    }
    for method, entry in METHOD_ACCESS.items():
        row = lines[method.rsplit("/", 1)[-1]]
        for rule in entry.rules:
            assert f"`{rule}`" in row, (method, rule)
