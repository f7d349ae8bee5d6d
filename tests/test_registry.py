"""The registry state machine: every transaction type, its rules and its permissions, allowed
and refused; refused txs change no state; determinism of the state root.

`Chain` (also used by the other registry test files) runs real signed txs through
Registry.check_admission and Registry.execute_block over an in-memory store."""

from __future__ import annotations

from typing import Any

import pytest

from kledger.node.chain.receipt import TxResult
from kledger.node.chain.tx import TxBody, sign_tx
from kledger.node.errors import Refused
from kledger.node.registry import BlockContext, Registry
from kledger.node.storage import state_tree
from kledger.node.storage.keyspace import DictView
from tests.helpers import key, make_genesis

DAY_MS = 86_400_000
START_MS = 1_767_225_600_000  # 2026-01-01


class Chain:
    def __init__(self) -> None:
        self.genesis = make_genesis()
        self.registry = Registry(self.genesis)
        self.view = DictView()
        self.view.apply(self.registry.genesis_writes())
        self.height = 0
        self.time_ms = START_MS
        self.nonce = 0
        self.roots = [self.registry.genesis_state_root()]
        self.blocks: list[tuple[list[Any], BlockContext]] = []
        self.epoch = self.genesis.validator_set.epoch

    def signed(self, signer: str, tx_type: str, payload: dict[str, Any]):
        self.nonce += 1
        body = TxBody(self.genesis.chain_id, tx_type, self.nonce, payload)
        return sign_tx(key(signer), body), body

    def block(
        self, *txs: tuple[str, str, dict[str, Any]], advance_ms: int = 1000
    ) -> list[TxResult]:
        self.height += 1
        self.time_ms += advance_ms
        ctx = BlockContext(self.genesis.chain_id, self.epoch, self.height, self.time_ms)
        signed = [self.signed(*tx) for tx in txs]
        outcome = self.registry.execute_block(self.view, signed, ctx)
        self.view.apply(outcome.writes)
        assert self.registry.state_root(self.view) == outcome.state_root
        self.roots.append(outcome.state_root)
        self.blocks.append((signed, ctx))
        self.last_outcome = outcome
        return outcome.results

    def epoch_change(self) -> Any:
        """Execute the marker block of the ready next set (docs/design.md §4.8)."""
        marker = self.registry.ready_next_set(self.view)
        assert marker is not None, "no ready next validator set"
        self.height += 1
        self.time_ms += 1000
        ctx = BlockContext(self.genesis.chain_id, self.epoch, self.height, self.time_ms)
        outcome = self.registry.execute_epoch_change(self.view, marker, ctx)
        self.view.apply(outcome.writes)
        self.roots.append(outcome.state_root)
        self.blocks.append(([], ctx))
        self.last_outcome = outcome
        self.epoch = marker.epoch
        assert outcome.validator_change == marker
        return marker

    def ok(self, signer: str, tx_type: str, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
        [result] = self.block((signer, tx_type, payload), **kw)
        assert result.ok, result
        return result.output or {}

    def refused(self, signer: str, tx_type: str, payload: dict[str, Any]) -> TxResult:
        before = dict(self.view.data)
        [result] = self.block((signer, tx_type, payload))
        assert not result.ok, f"{tx_type} unexpectedly passed"

        # No state change: only the root references (current, and this height's) are written.
        def changed(data: dict[bytes, bytes]) -> dict[bytes, bytes]:
            return {
                k: v
                for k, v in data.items()
                if k != state_tree.ROOT_KEY and not k.startswith(state_tree.ROOT_AT)
            }

        assert changed(dict(self.view.data)) == changed(before)
        return result

    def admit(self, signer: str, tx_type: str, payload: dict[str, Any]) -> None:
        tx, body = self.signed(signer, tx_type, payload)
        self.registry.check_admission(self.view, tx, body)


def human(warranty: str = "KOMCA-HW-2026-0001") -> dict[str, Any]:
    return {
        "creation_type": "human",
        "human_contribution": "melody and lyrics written by the credited writers",
        "warranty_ref": warranty,
    }


ISWC = "T-034.524.680-1"
ISRC = "KRA341561064"
CID = "A123456789012345"
UCI = "urn:uci:I001+SBSi-B10000083052"


def party(party_id: str, society: str, ipi: str | None = None, kind: str = "person"):
    name: dict[str, Any] = {"name": party_id.title()}
    if ipi:
        name["ipi"] = ipi
    return {
        "party_id": party_id,
        "kind": kind,
        "names": [name],
        "memberships": [{"society": society}],
    }


def link(kind_a: str, a: str, kind_b: str, b: str) -> dict[str, Any]:
    return {"from": {"kind": kind_a, "value": a}, "to": {"kind": kind_b, "value": b}}


def catalog(chain: Chain) -> None:
    """The worked example's catalog: one work, one recording, confirmed links, shares."""
    results = chain.block(
        ("KOMCA/client", "RegisterParty", party("composer", "KOMCA", "00662307358")),
        ("KOMCA/client", "RegisterParty", party("lyricist", "KOMCA")),
        ("KOMCA/client", "RegisterParty", party("publisher", "KOMCA", kind="company")),
        ("RIAK/client", "RegisterParty", party("label-a", "RIAK", kind="company")),
        ("RIAK/client", "RegisterParty", party("label-b", "RIAK", kind="company")),
        ("FKMP/client", "RegisterParty", party("singer-1", "FKMP")),
        ("FKMP/client", "RegisterParty", party("singer-2", "FKMP")),
        ("FKMP/client", "RegisterParty", party("guitarist", "FKMP")),
    )
    assert all(r.ok for r in results), results
    chain.ok(
        "KOMCA/client",
        "RegisterWork",
        {
            "work_id": "W1",
            "iswc": ISWC,
            "titles": ["Spring Day"],
            "creators": [
                {"party_id": "composer", "role": "C"},
                {"party_id": "lyricist", "role": "A"},
            ],
            "publishers": [{"party_id": "publisher", "role": "E"}],
            "provenance": human(),
        },
    )
    out = chain.ok(
        "RIAK/client",
        "RegisterRecording",
        {
            "isrc": ISRC,
            "title": "Spring Day",
            "duration_s": 274,
            "main_artists": ["Singer One"],
            "producers": ["label-a", "label-b"],
            "performers": [
                {"party_id": "singer-1", "featured": True},
                {"party_id": "singer-2", "featured": True},
                {"party_id": "guitarist"},
            ],
            "works": ["W1"],
            "cids": [CID],
            "ucis": [UCI],
        },
    )
    assert [link["status"] for link in out["links"]] == ["asserted"] * 3
    results = chain.block(
        ("KOMCA/client", "LinkIdentifiers", link("iswc", ISWC, "isrc", ISRC)),
        ("KMCA/client", "LinkIdentifiers", link("cid", CID, "isrc", ISRC)),
        ("KMCA/client", "LinkIdentifiers", link("isrc", ISRC, "uci", UCI)),
    )  # fmt: skip
    assert [r.output["status"] for r in results if r.output] == ["confirmed"] * 3, results
    results = chain.block(
        ("KOMCA/client", "SetShares", {
            "subject": {"kind": "work", "id": "W1"}, "right": "PR", "shares": [
                {"party_id": "composer", "kind": "writer", "role": "C", "ownership": 2500},
                {"party_id": "lyricist", "kind": "writer", "role": "A", "ownership": 2500},
                {"party_id": "publisher", "kind": "publisher", "role": "E", "ownership": 5000},
            ]}),
        ("RIAK/client", "SetShares", {
            "subject": {"kind": "recording", "id": ISRC}, "right": "NR_PRODUCER", "shares": [
                {"party_id": "label-a", "share": 7000}, {"party_id": "label-b", "share": 3000}]}),
        ("FKMP/client", "SetShares", {
            "subject": {"kind": "recording", "id": ISRC}, "right": "NR_PERFORMER", "shares": [
                {"party_id": "singer-1", "share": 4000}, {"party_id": "singer-2", "share": 4000},
                {"party_id": "guitarist", "share": 2000}]}),
    )  # fmt: skip
    assert all(r.ok for r in results), results


def report(lines: list[dict[str, Any]], report_id: str = "R1", **header: Any) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "period": "2026-01",
        "territory": "KR",
        "service": "Melon",
        "commercial_model": "subscription",
        "use_type": "stream",
        "currency": "KRW",
        "net_revenue_minor": 10_000_000,
        "total_usages": 1_000_000,
        "lines": lines,
        **header,
    }


def test_catalog_builds_and_every_step_is_recorded():
    chain = Chain()
    catalog(chain)
    assert len(set(chain.roots)) == len(chain.roots)  # every block changed the state root


def test_smoke_distribution_of_the_worked_example():
    chain = Chain()
    catalog(chain)
    line = {"line_id": "L1", "code_kind": "isrc", "code": ISRC, "usages": 12_340}
    chain.ok("KMCA/client", "ReportUsage", report([line]))
    out = chain.ok(
        "KOMCA/client",
        "RunDistribution",
        {"distribution_id": "D1", "period": "2026-01", "territory": "KR", "currency": "KRW"},
    )
    assert out["pool_minor"] == 80_210


# -- admission -------------------------------------------------------------------------------


def test_admission_refuses_unknown_types_bad_payloads_strangers_and_missing_roles():
    chain = Chain()
    with pytest.raises(Refused) as caught:
        chain.admit("KOMCA/client", "MintNft", {})
    assert caught.value.status.name == "INVALID_ARGUMENT" and caught.value.field == "type"
    bad_iswc = {
        "work_id": "W9",
        "iswc": "T-034.524.680-2",
        "titles": ["x"],
        "creators": [{"party_id": "a", "role": "C"}],
        "provenance": human(),
    }
    with pytest.raises(Refused) as caught:
        chain.admit("KOMCA/client", "RegisterWork", bad_iswc)
    assert caught.value.field == "payload.iswc" and "check digit" in caught.value.message
    with pytest.raises(Refused) as caught:
        chain.admit("stranger", "RegisterParty", party("x", "KOMCA"))
    assert caught.value.status.name == "PERMISSION_DENIED"
    with pytest.raises(Refused) as caught:
        chain.admit("KEPA/client", "RegisterWork", {**bad_iswc, "iswc": ISWC})
    assert caught.value.status.name == "PERMISSION_DENIED" and "AUTHOR_CMO" in caught.value.message
    with pytest.raises(Refused) as caught:
        chain.admit("KOMCA/admin", "RegisterParty", party("x", "KOMCA"))
    assert "admin key" in caught.value.message
    chain.admit("KOMCA/client", "RegisterWork", {**bad_iswc, "iswc": ISWC})  # passes


# -- permissions per transaction type: allowed and refused ----------------------------------

ROLE_CASES = [
    ("RegisterParty", "KOMCA/client", "KEPA/client", lambda: party("p-new", "KOMCA")),
    ("RegisterWork", "KOMCA/client", "RIAK/client", lambda: {"work_id": "W2", "titles": ["B"], "creators": [{"party_id": "composer", "role": "C"}], "provenance": human()}),  # noqa: E501
    ("RegisterRecording", "KEPA/client", "KOMCA/client", lambda: {"isrc": "KRA342600009", "title": "B"}),  # noqa: E501
    ("RegisterRecording", "KMCA/client", "FKMP/client", lambda: {"isrc": "KSA002600001", "title": "B"}),  # noqa: E501
    ("ReportUsage", "RIAK/client", "KEPA/client", lambda: report([{"line_id": "1", "code_kind": "isrc", "code": ISRC, "usages": 1}])),  # noqa: E501
    ("SetPersonaConsent", "FKMP/client", "KOMCA/client", lambda: {"party_id": "singer-1", "voice_cloning": "deny", "likeness": "conditional"}),  # noqa: E501
    ("RegisterPersonaClaim", "KEPA/client", "KOMCA/client", lambda: {"claim_id": "PC1", "performer_party_id": "singer-1", "subject": {"kind": "cid", "id": "Afake00001"}, "description": "AI voice clone", "evidence_hashes": ["ab" * 32]}),  # noqa: E501
    ("SetAiTrainingPolicy", "KOMCA/client", "KMCA/client", lambda: {"subject": {"kind": "work", "id": "W1"}, "consent": "allow"}),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(("tx_type", "allowed", "refused", "payload"), ROLE_CASES)
def test_role_permissions(tx_type, allowed, refused, payload):
    chain = Chain()
    catalog(chain)
    result = chain.refused(refused, tx_type, payload())
    assert result.status == "PERMISSION_DENIED", result
    chain.ok(allowed, tx_type, payload())


def test_set_shares_roles_depend_on_the_subject():
    chain = Chain()
    catalog(chain)
    work = {
        "subject": {"kind": "work", "id": "W1"},
        "right": "MR",
        "shares": [{"party_id": "composer", "kind": "writer", "role": "C", "ownership": 10_000}],
    }
    rec = {
        "subject": {"kind": "recording", "id": ISRC},
        "right": "NR_PRODUCER",
        "shares": [{"party_id": "label-a", "share": 10_000}],
    }
    assert chain.refused("RIAK/client", "SetShares", work).status == "PERMISSION_DENIED"
    assert chain.refused("KOMCA/client", "SetShares", rec).status == "PERMISSION_DENIED"
    # KOSCAP is an AUTHOR_CMO but none of the parties is its member
    assert "member of KOSCAP" in chain.refused("KOSCAP/client", "SetShares", work).message
    chain.ok("KOMCA/client", "SetShares", work)
    assert chain.ok("RIAK/client", "SetShares", rec)["version"] == 2  # supersedes version 1


def test_register_party_only_for_own_members_and_ipi_unique():
    chain = Chain()
    catalog(chain)
    assert (
        chain.refused("KOSCAP/client", "RegisterParty", party("x", "KOMCA")).status
        == "PERMISSION_DENIED"
    )
    again = chain.refused("KOMCA/client", "RegisterParty", party("x", "KOMCA", "00662307358"))
    assert again.status == "ALREADY_EXISTS" and again.message.startswith("payload.names[0].ipi")
    assert (
        chain.refused("KOMCA/client", "RegisterParty", party("composer", "KOMCA")).status
        == "ALREADY_EXISTS"
    )


def test_work_rules():
    chain = Chain()
    catalog(chain)
    base = {
        "work_id": "W2",
        "titles": ["B"],
        "creators": [{"party_id": "composer", "role": "C"}],
        "provenance": human(),
    }
    assert (
        chain.refused("KOMCA/client", "RegisterWork", {**base, "iswc": ISWC}).status
        == "ALREADY_EXISTS"
    )
    assert (
        chain.refused("KOMCA/client", "RegisterWork", {**base, "work_id": "W1"}).status
        == "ALREADY_EXISTS"
    )
    no_warranty = {**base, "provenance": {"creation_type": "human", "human_contribution": "x"}}
    assert "warranty_ref" in chain.refused("KOMCA/client", "RegisterWork", no_warranty).message
    no_provenance = {k: v for k, v in base.items() if k != "provenance"}
    assert "provenance" in chain.refused("KOMCA/client", "RegisterWork", no_provenance).message
    ghost = {**base, "creators": [{"party_id": "ghost", "role": "C"}]}
    assert chain.refused("KOMCA/client", "RegisterWork", ghost).status == "FAILED_PRECONDITION"
    modified = {**base, "version": "modified", "original_work_id": "W-none"}
    assert chain.refused("KOMCA/client", "RegisterWork", modified).status == "FAILED_PRECONDITION"
    chain.ok("KOMCA/client", "RegisterWork", {**modified, "original_work_id": "W1"})
    shares = {
        "subject": {"kind": "work", "id": "W2"},
        "right": "PR",
        "shares": [{"party_id": "composer", "kind": "writer", "role": "C", "ownership": 10_000}],
    }
    assert "AR, AD" in chain.refused("KOMCA/client", "SetShares", shares).message
    shares["shares"] = [
        {"party_id": "composer", "kind": "writer", "role": "C", "ownership": 5000},
        {"party_id": "lyricist", "kind": "writer", "role": "AR", "ownership": 5000},
    ]
    chain.ok("KOMCA/client", "SetShares", shares)


@pytest.mark.parametrize(
    ("entries", "rule"),
    [
        (
            [("composer", "writer", "C", 6000), ("publisher", "publisher", "E", 3000)],
            "total 90.00 %",
        ),
        (
            [("composer", "writer", "C", 4000), ("publisher", "publisher", "E", 6000)],
            "at most 50 %",
        ),
        (
            [
                ("composer", "writer", "C", 4000),
                ("lyricist", "writer", "A", 500),
                ("publisher", "publisher", "E", 5500),
            ],
            "at most 50 %",
        ),
        (
            [
                ("composer", "writer", "C", 4997),
                ("publisher", "publisher", "E", 5000),
            ],
            "must be 0 or >= 50 %",
        ),
        (
            [("composer", "writer", "AR", 5000), ("publisher", "publisher", "E", 5000)],
            "at least one writer of role CA, A or C",
        ),
        (
            [("composer", "writer", "C", 5000), ("publisher", "publisher", "SE", 5000)],
            "only publishers of role E or AQ",
        ),
        ([("composer", "writer", "C", 5000), ("composer", "writer", "C", 5000)], "appears twice"),
    ],
)
def test_cwr_share_rules_refuse(entries, rule):
    chain = Chain()
    catalog(chain)
    shares = [{"party_id": p, "kind": k, "role": r, "ownership": o} for p, k, r, o in entries]
    result = chain.refused(
        "KOMCA/client",
        "SetShares",
        {"subject": {"kind": "work", "id": "W1"}, "right": "PR", "shares": shares},
    )
    assert result.status == "INVALID_ARGUMENT" and rule in result.message, result


def test_cwr_tolerance_and_zero_total_and_collection_only_publishers():
    chain = Chain()
    catalog(chain)
    shares = [
        {"party_id": "composer", "kind": "writer", "role": "C", "ownership": 5003},
        {"party_id": "publisher", "kind": "publisher", "role": "E", "ownership": 5000},
        {
            "party_id": "lyricist",
            "kind": "publisher",
            "role": "SE",
            "ownership": 0,
            "collection": 0,
        },
    ]
    chain.ok(
        "KOMCA/client",
        "SetShares",
        {"subject": {"kind": "work", "id": "W1"}, "right": "MR", "shares": shares},
    )
    zero = [{"party_id": "composer", "kind": "writer", "role": "C", "ownership": 0}]
    chain.ok(
        "KOMCA/client",
        "SetShares",
        {"subject": {"kind": "work", "id": "W1"}, "right": "SR", "shares": zero},
    )


def test_links_assert_confirm_retract_and_sides():
    chain = Chain()
    catalog(chain)
    chain.ok(
        "KOMCA/client",
        "RegisterWork",
        {
            "work_id": "W2",
            "titles": ["B"],
            "creators": [{"party_id": "composer", "role": "C"}],
            "provenance": human(),
        },
    )
    chain.ok("RIAK/client", "RegisterRecording", {"isrc": "KRA342600002", "title": "B"})
    body = link("work", "W2", "isrc", "KRA342600002")
    assert chain.ok("RIAK/client", "LinkIdentifiers", body)["status"] == "asserted"
    assert chain.refused("RIAK/client", "LinkIdentifiers", body).status == "ALREADY_EXISTS"
    # KMCA is on the recording side too: it cannot confirm an embodies link alone
    assert "other side" in chain.refused("KMCA/client", "LinkIdentifiers", body).message
    assert chain.ok("KOSCAP/client", "LinkIdentifiers", body)["status"] == "confirmed"
    link_id = "work:W2~isrc:KRA342600002"
    assert (
        chain.refused("KEPA/client", "RetractLink", {"link_id": link_id}).status
        == "PERMISSION_DENIED"
    )
    assert chain.ok("KOSCAP/client", "RetractLink", {"link_id": link_id})["status"] == "retracted"
    assert chain.ok("RIAK/client", "LinkIdentifiers", body)["status"] == "asserted"
    bad = chain.refused("RIAK/client", "LinkIdentifiers", link("cid", CID, "uci", UCI))
    assert bad.status == "INVALID_ARGUMENT" and "cannot link" in bad.message
    assert (
        chain.refused(
            "RIAK/client", "LinkIdentifiers", link("isrc", "KRA349999999", "cid", "A1")
        ).status
        == "NOT_FOUND"
    )


def test_link_dispute_holds_matching_and_resolution_retracts():
    chain = Chain()
    catalog(chain)
    link_id = f"isrc:{ISRC}~cid:{CID}"
    assert (
        chain.refused(
            "KOSCAP/client",
            "FileDispute",
            {
                "dispute_id": "DL1",
                "kind": "link",
                "subject": {"kind": "link", "id": link_id},
                "reason": "wrong asset",
            },
        ).status
        == "PERMISSION_DENIED"
    )
    chain.ok(
        "KMCA/client",
        "FileDispute",
        {
            "dispute_id": "DL1",
            "kind": "link",
            "subject": {"kind": "link", "id": link_id},
            "reason": "wrong asset",
        },
    )
    chain.ok(
        "KMCA/client",
        "ReportUsage",
        report([{"line_id": "1", "code_kind": "cid", "code": CID, "usages": 10}]),
    )
    out = chain.ok(
        "KOMCA/client",
        "RunDistribution",
        {"distribution_id": "D1", "period": "2026-01", "territory": "KR", "currency": "KRW"},
    )
    assert out["pool_minor"] == 65  # paid into 'undistributed', the CID no longer matches
    chain.ok("KMCA/client", "ResolveDispute", {"dispute_id": "DL1", "outcome": "uphold"})
    assert (
        chain.ok("RIAK/client", "ResolveDispute", {"dispute_id": "DL1", "outcome": "uphold"})[
            "status"
        ]
        == "resolved"
    )
    from kledger.node.registry.state import StateReader

    assert StateReader(chain.view).get(b"s/link/" + link_id.encode())["status"] == "retracted"


def test_usage_is_idempotent_by_report_and_line():
    chain = Chain()
    catalog(chain)
    line = {"line_id": "L1", "code_kind": "isrc", "code": ISRC, "usages": 5}
    chain.ok("KMCA/client", "ReportUsage", report([line]))
    again = chain.refused("KMCA/client", "ReportUsage", report([line]))
    assert again.status == "ALREADY_EXISTS" and "lines[0].line_id" in again.message
    other = chain.refused(
        "KMCA/client", "ReportUsage", report([{**line, "line_id": "L2"}], net_revenue_minor=5)
    )
    assert other.status == "FAILED_PRECONDITION" and "net_revenue_minor" in other.message
    stolen = chain.refused("RIAK/client", "ReportUsage", report([{**line, "line_id": "L2"}]))
    assert "belongs to KMCA" in stolen.message
    too_many = chain.refused(
        "KMCA/client", "ReportUsage", report([{**line, "line_id": "L3", "usages": 1_000_000}])
    )
    assert "total_usages" in too_many.message
    dup = chain.refused(
        "KMCA/client", "ReportUsage", report([{**line, "line_id": "L9"}, {**line, "line_id": "L9"}])
    )
    assert dup.status == "INVALID_ARGUMENT"
    chain.ok("KMCA/client", "ReportUsage", report([{**line, "line_id": "L2"}]))


def test_provenance_declarations():
    chain = Chain()
    catalog(chain)
    subject = {"kind": "work", "id": "W1"}
    ai_assisted = {
        **human(),
        "creation_type": "ai_assisted",
        "components": {"instrumentation": {"ai_used": True, "tool": "StemGen"}},
    }
    assert (
        chain.refused(
            "KOSCAP/client", "DeclareProvenance", {"subject": subject, "provenance": ai_assisted}
        ).status
        == "PERMISSION_DENIED"
    )
    chain.ok("KOMCA/client", "DeclareProvenance", {"subject": subject, "provenance": ai_assisted})
    generated = {"subject": subject, "provenance": {"creation_type": "ai_generated"}}
    assert (
        "holds no authorship"
        in chain.refused("KOMCA/client", "DeclareProvenance", generated).message
    )
    statement = {
        "subject": {"kind": "recording", "id": ISRC},
        "performance_statement": "vocals performed live by singer-1",
    }
    assert (
        chain.refused("KMCA/client", "DeclareProvenance", statement).status == "PERMISSION_DENIED"
    )
    chain.ok("FKMP/client", "DeclareProvenance", statement)
    bad = {**human(), "components": {"vocals": {"ai_used": True}}}
    assert (
        chain.refused(
            "KOMCA/client", "DeclareProvenance", {"subject": subject, "provenance": bad}
        ).status
        == "INVALID_ARGUMENT"
    )


def test_ai_policy_only_from_the_rightsholders_cmo():
    chain = Chain()
    catalog(chain)
    policy = {"subject": {"kind": "recording", "id": ISRC}, "consent": "allow"}
    assert "rightsholder" in chain.refused("KOSCAP/client", "SetAiTrainingPolicy", policy).message
    assert chain.ok("RIAK/client", "SetAiTrainingPolicy", policy)["version"] == 1
    assert (
        chain.ok("FKMP/client", "SetAiTrainingPolicy", {**policy, "consent": "conditional"})[
            "version"
        ]
        == 2
    )


def test_member_keys_register_and_revoke():
    chain = Chain()
    new_key = key("KOMCA/second").public_key.hex()
    body = {"org": "KOMCA", "public_key": new_key, "roles": ["REPORTER"]}
    assert chain.refused("KOMCA/client", "RegisterMember", body).status == "PERMISSION_DENIED"
    assert chain.refused("KOSCAP/admin", "RegisterMember", body).status == "PERMISSION_DENIED"
    assert (
        "does not hold"
        in chain.refused("KOMCA/admin", "RegisterMember", {**body, "roles": ["ID_AGENCY"]}).message
    )
    chain.ok("KOMCA/admin", "RegisterMember", body)
    # the new key may report usage but not register works (only REPORTER was granted)
    assert (
        chain.refused("KOMCA/second", "RegisterParty", party("z", "KOMCA")).status
        == "PERMISSION_DENIED"
    )
    chain.ok("KOMCA/admin", "RevokeMember", {"org": "KOMCA", "public_key": new_key})
    assert (
        "not a registered member"
        in chain.refused(
            "KOMCA/second",
            "ReportUsage",
            report([{"line_id": "1", "code_kind": "isrc", "code": ISRC, "usages": 1}]),
        ).message
    )


def test_governance_quorum_adds_an_org_and_changes_validators():
    from kledger.node.registry.governance import sign_pop

    chain = Chain()
    auditor_admin = key("MCST/admin").public_key.hex()
    action = {
        "kind": "add_org",
        "org_id": "MCST",
        "name": "Ministry",
        "roles": ["AUDITOR"],
        "admin_key": auditor_admin,
        "validator_key": key("MCST/validator").public_key.hex(),
        "validator_pop": sign_pop(key("MCST/validator"), chain.genesis.chain_id, "MCST").hex(),
        "peer_address": "127.0.0.1:7005",
        "tls_cert_sha256": "ab" * 32,
    }
    out = chain.ok("KOMCA/client", "ProposeGovernance", {"proposal_id": "G1", "action": action})
    assert out == {"proposal_id": "G1", "approvals": 1, "quorum": 4, "status": "open"}
    assert (
        chain.refused("KOMCA/admin", "ApproveGovernance", {"proposal_id": "G1"}).status
        == "ALREADY_EXISTS"
    )
    chain.ok("RIAK/client", "ApproveGovernance", {"proposal_id": "G1"})
    chain.ok("KMCA/admin", "ApproveGovernance", {"proposal_id": "G1"})
    out = chain.ok("FKMP/client", "ApproveGovernance", {"proposal_id": "G1"})
    assert out["status"] == "executed"
    # Decided, not enacted: the approval block changes no epoch (docs/design.md §4.8).
    assert chain.last_outcome.validator_change is None
    assert (
        chain.refused("KEPA/client", "ApproveGovernance", {"proposal_id": "G1"}).status
        == "FAILED_PRECONDITION"
    )
    chain.ok("MCST/validator", "ValidatorReady", {"org": "MCST"})
    change = chain.epoch_change()
    assert change.epoch == 1 and change.size == 7 and change.quorum == 5
    # a tariff change now needs 5 of 7
    tariff = {
        "version": 2,
        "name": "2027",
        "valid_from": "2027-01-01",
        "pools": [{"pool": "authors", "basis_points": 6500, "subject": "work", "right": "PR"}],
        "retained": {"service": 3500},
    }
    bad = chain.refused(
        "KOMCA/client",
        "ProposeGovernance",
        {
            "proposal_id": "G2",
            "action": {"kind": "set_tariff", "tariff": {**tariff, "retained": {}}},
        },
    )
    assert "basis points" in bad.message
    for org in ("KOMCA", "KOSCAP", "RIAK", "KEPA"):
        chain.ok(
            f"{org}/client",
            "ApproveGovernance" if org != "KOMCA" else "ProposeGovernance",
            {"proposal_id": "G2"}
            if org != "KOMCA"
            else {"proposal_id": "G2", "action": {"kind": "set_tariff", "tariff": tariff}},
        )
    assert (
        chain.ok("MCST/admin", "ApproveGovernance", {"proposal_id": "G2"})["status"] == "executed"
    )


def test_refused_tx_in_a_block_changes_nothing_and_later_txs_see_earlier_writes():
    chain = Chain()
    results = chain.block(
        ("KOMCA/client", "RegisterParty", party("a", "KOMCA")),
        ("KOMCA/client", "RegisterParty", party("a", "KOMCA")),
        (
            "KOMCA/client",
            "RegisterWork",
            {
                "work_id": "W1",
                "titles": ["x"],
                "creators": [{"party_id": "a", "role": "CA"}],
                "provenance": human(),
            },
        ),
    )
    assert [r.status for r in results] == ["OK", "ALREADY_EXISTS", "OK"]


def test_two_stores_fed_the_same_blocks_reach_the_same_root(tmp_path):
    import plyvel

    chain = Chain()
    catalog(chain)
    chain.ok(
        "KMCA/client",
        "ReportUsage",
        report([{"line_id": "L1", "code_kind": "isrc", "code": ISRC, "usages": 12_340}]),
    )
    chain.ok(
        "KOMCA/client",
        "RunDistribution",
        {"distribution_id": "D1", "period": "2026-01", "territory": "KR", "currency": "KRW"},
    )
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)

    class View:
        def get(self, k):
            return db.get(k)

        def iterate(self, prefix):
            yield from db.iterator(prefix=prefix)

    registry = Registry(make_genesis())
    with db.write_batch(sync=True) as batch:
        for k, v in registry.genesis_writes().items():
            batch.put(k, v)
    for signed, ctx in chain.blocks:
        outcome = registry.execute_block(View(), signed, ctx)
        with db.write_batch(sync=True) as batch:
            for k, v in outcome.writes.items():
                if v is None:
                    batch.delete(k)
                else:
                    batch.put(k, v)
        assert outcome.state_root == chain.roots[ctx.height]
    assert registry.state_root(View()) == chain.roots[-1]
    db.close()


def test_admin_keys_are_checked_at_admission_for_their_own_org():
    chain = Chain()
    body = {"org": "KOMCA", "public_key": key("x").public_key.hex()}
    with pytest.raises(Refused, match="admin key of KOMCA"):
        chain.admit("KOSCAP/admin", "RegisterMember", body)
    with pytest.raises(Refused, match="admin key of KOMCA"):
        chain.admit("KOMCA/client", "RegisterMember", body)
    chain.admit("KOMCA/admin", "RegisterMember", body)


def test_add_org_cannot_take_over_a_registered_key():
    chain = Chain()
    stolen = key("KOMCA/client").public_key.hex()
    action = {
        "kind": "add_org",
        "org_id": "EVIL",
        "name": "x",
        "roles": ["AUTHOR_CMO"],
        "admin_key": key("EVIL/admin").public_key.hex(),
        "member_keys": [stolen],
    }
    refused = chain.refused(
        "KOMCA/client", "ProposeGovernance", {"proposal_id": "G9", "action": action}
    )
    assert refused.status == "ALREADY_EXISTS" and "member_keys[0]" in refused.message
