"""Who may read what on the client port (docs/node.md "Access"): the reader's identity, the tier
of every RPC, the rules for restricted answers, and the audit line of every restricted read.

Identity comes from the client certificate that TLS verified against the cluster CA
(node/net/tls.py `certificate_identity`), never from a request field:
- `public`: the public reader certificate every cluster publishes (or any other CA certificate
  that names no member key and is no node certificate);
- `member`: a member certificate, CN = org and the member key it is bound to. On every call the
  key must still be a registered member key of that org, and the org active, in the committed
  state; a revoked key is refused outright (rule `member_key_registered`);
- `node`: an org's node certificate; on the client port it counts as a member of its org.

Tiers (`METHOD_ACCESS`, mirrored by the table in docs/node.md): `public` answers anyone,
`member` needs a member or node, and `member` RPCs whose answers can hold restricted records
name the rules (`RULES`) that decide from the record. Denials are Refused(PERMISSION_DENIED)
whose message starts with `access.<rule>`.

Rules kept here:
- A method with no entry in METHOD_ACCESS is refused (`unlisted`), so a new RPC is closed until
  someone decides its tier; services outside kledger.v1 (health, reflection) are public.
- A record is refused whole or redacted, never half-shown with a proof of the hidden half: a
  redacted record's state proof is dropped with it, because a proof carries the value.
- Every restricted answer served is logged (`restricted_read`, with the reader) and counted.

What this cannot do: every node stores the whole ledger, so each org's node operators read
everything in their own store; these rules protect the client port, not a node's disk.
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from kledger.node.chain import canonical
from kledger.node.errors import Refused, Status
from kledger.node.net.tls import certificate_identity, peer_certificate_of
from kledger.node.registry import fields, permissions, state
from kledger.node.registry.state import StateReader
from kledger.node.storage.keyspace import ReadView
from kledger.node.telemetry.logs import log_event
from kledger.node.telemetry.metrics import NodeMetrics

audit_log = logging.getLogger("kledger.audit")
log = logging.getLogger("kledger.access")


class Tier(enum.Enum):
    PUBLIC = "public"
    MEMBER = "member"


@dataclass(frozen=True, slots=True)
class Access:
    """One RPC's tier and the rules its answers are checked or redacted by."""

    tier: Tier
    rules: tuple[str, ...] = ()


# The rules a denial or redaction names (docs/node.md "Access" lists each one).
RULES: dict[str, str] = {
    "member": "needs a member (or node) certificate of an org; the public reader gets the "
    "public tier only",
    "member_key_registered": "a member certificate's key must be a registered member key of its "
    "org, and the org active",
    "unlisted": "an RPC with no access entry is refused until its tier is decided",
    "usage_revenue": "a usage report's revenue (its ReportUsage txs, the revenue of its usage "
    "lines): its reporter and the orgs paid from it",
    "distribution_paid": "a distribution (its record, its RunDistribution tx and receipt): the "
    "org that ran it and the orgs paid from it",
    "statement_own_cmo": "a party's statement: the party's own CMO (the org that registered the "
    "party)",
    "disputes_member": "dispute records inside a public answer: members only; the public reader "
    "gets the answer without them and without their proofs",
    "state_proof_family": "a StateProof of a key that holds restricted records (usage reports "
    "and lines, distributions, statements) is refused to every reader: those come with the "
    "query that applies their rule (UnmatchedUsage, Distribution, Statement)",
}

# Registry state families whose values are restricted records (node/registry/state.py keys):
# StateProof serves no key of theirs (rule state_proof_family).
RESTRICTED_STATE_FAMILIES = ("report", "usage", "distribution", "distribution-scope", "statement")

LEDGER = "/kledger.v1.Ledger/"
REGISTRY = "/kledger.v1.RegistryService/"
_TX_RULES = ("usage_revenue", "distribution_paid")

METHOD_ACCESS: dict[str, Access] = {
    LEDGER + "SubmitTx": Access(Tier.MEMBER),
    LEDGER + "SubmitBatch": Access(Tier.MEMBER),
    LEDGER + "SubmitStream": Access(Tier.MEMBER),
    LEDGER + "WaitForCommit": Access(Tier.MEMBER, _TX_RULES),
    LEDGER + "WaitForCommits": Access(Tier.MEMBER, _TX_RULES),
    LEDGER + "GetTx": Access(Tier.MEMBER, _TX_RULES),
    LEDGER + "GetBlock": Access(Tier.MEMBER),
    LEDGER + "GetHeader": Access(Tier.PUBLIC),
    LEDGER + "GetInclusionProof": Access(Tier.MEMBER, _TX_RULES),
    LEDGER + "GetConsistencyProof": Access(Tier.PUBLIC),
    LEDGER + "StreamCommits": Access(Tier.MEMBER),
    LEDGER + "GetStatus": Access(Tier.PUBLIC),
    REGISTRY + "Resolve": Access(Tier.PUBLIC, ("disputes_member",)),
    REGISTRY + "SharesAt": Access(Tier.PUBLIC, ("disputes_member",)),
    REGISTRY + "AiTraining": Access(Tier.PUBLIC, ("disputes_member",)),
    REGISTRY + "Works": Access(Tier.PUBLIC, ("disputes_member",)),
    REGISTRY + "Overclaims": Access(Tier.MEMBER),
    REGISTRY + "PersonaClaims": Access(Tier.MEMBER),
    REGISTRY + "UnmatchedUsage": Access(Tier.MEMBER, ("usage_revenue",)),
    REGISTRY + "Statement": Access(Tier.MEMBER, ("statement_own_cmo",)),
    REGISTRY + "Distribution": Access(Tier.MEMBER, ("distribution_paid",)),
    REGISTRY + "StateProof": Access(Tier.MEMBER, ("state_proof_family",)),
}
# Services outside kledger.v1 that anyone may call: they carry no ledger content.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is asking: kind "public", "member" (org + member key) or "node" (org)."""

    kind: str
    org: str = ""
    member_key: str = ""

    @property
    def is_member(self) -> bool:
        return self.kind in ("member", "node")

    def name(self) -> str:
        if self.kind == "member":
            return f"{self.org} member {self.member_key[:16]}"
        return f"{self.org} node" if self.kind == "node" else "the public reader"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "org": self.org, "member_key": self.member_key}


PUBLIC_READER = Reader("public")


def denied(rule: str, message: str) -> Refused:
    assert rule in RULES, rule
    return Refused(Status.PERMISSION_DENIED, message, f"access.{rule}")


def access_of(method: str) -> Access | None:
    """The method's access entry; None for a kledger.v1 method nobody listed."""
    found = METHOD_ACCESS.get(method)
    if found is None and method.startswith(OPEN_SERVICES):
        return Access(Tier.PUBLIC)
    return found


def rpc_name(method: str) -> str:
    return method.rsplit("/", 1)[-1]


class AccessPolicy:
    """The node's access decisions. `state()` gives the committed state (member keys, the
    records restricted rules look at)."""

    def __init__(
        self,
        state_view: Callable[[], ReadView],
        metrics: NodeMetrics | None = None,
        without_certificate: Reader | None = None,
    ) -> None:
        self._state = state_view
        self._metrics = metrics
        # The reader of a call that shows no certificate. The client port requires one, so
        # only an in-process server without client TLS (a test's) ever sees such a call.
        self._without_certificate = without_certificate or PUBLIC_READER

    def state(self) -> ReadView:
        return self._state()

    # -- identity and tiers ----------------------------------------------------------------

    def reader_of(self, context: Any) -> Reader:
        """The reader behind a call, from its verified certificate. Raises Refused for a
        member certificate whose key is no longer registered to its org."""
        pem = peer_certificate_of(context)
        if pem is None:
            return self._without_certificate
        identity = certificate_identity(pem)
        reader = StateReader(self.state())
        if identity.kind == "member":
            try:
                signer = permissions.resolve_signer(reader, identity.member_key)
            except Refused:
                signer = None
            if signer is None or signer.org != identity.org:
                raise self._deny(
                    "member_key_registered",
                    f"member key {identity.member_key.hex()[:16]}... is not a registered "
                    f"member key of an active org {identity.org}",
                )
            return Reader("member", identity.org, identity.member_key.hex())
        if identity.kind == "node":
            if not permissions.org_roles(reader, identity.org):
                raise self._deny("member", f"org {identity.org} is not an active member")
            return Reader("node", identity.org)
        return PUBLIC_READER

    def check_call(self, method: str, context: Any) -> Reader:
        """The reader, if it may call `method` at all; else Refused naming the rule."""
        entry = access_of(method)
        if entry is None:
            raise self._deny("unlisted", f"{rpc_name(method)} has no access entry")
        reader = self.reader_of(context)
        if entry.tier is Tier.MEMBER and not reader.is_member:
            raise self._deny("member", f"{rpc_name(method)} is for members; {reader.name()}")
        return reader

    # -- restricted records ----------------------------------------------------------------

    def check_tx(self, reader: Reader, rpc: str, encoding: bytes) -> None:
        """Refused unless `reader` may see this committed tx (and its receipt): a ReportUsage
        tx by rule usage_revenue, a RunDistribution tx by distribution_paid, any other tx to
        every member. An allowed restricted tx is audited."""
        # Our own committed bytes (canonical, checked at admission): decoded as stored data.
        body_bytes, signer, _ = canonical.decode_stored(encoding)
        body = canonical.decode_stored(body_bytes)
        tx_type, payload = body["type"], body["payload"]
        if tx_type not in ("ReportUsage", "RunDistribution"):
            return
        reader_state = StateReader(self.state())
        signer_org = _member_org(reader_state, signer)
        if tx_type == "ReportUsage":
            report_id = _record_id(payload, "report_id")
            allowed = usage_readers(reader_state, report_id, signer_org)
            self.require(reader, rpc, "usage_revenue", f"report {report_id}", allowed)
        else:
            distribution_id = _record_id(payload, "distribution_id")
            allowed = distribution_readers(reader_state, distribution_id, signer_org)
            record = f"distribution {distribution_id}"
            self.require(reader, rpc, "distribution_paid", record, allowed)

    def check_state_key(self, reader: Reader, key: bytes) -> None:
        """Refused (state_proof_family) if `key` is in a family of restricted records."""
        prefix = state.S
        family = key[len(prefix) :].split(b"/", 1)[0] if key.startswith(prefix) else b""
        if family.decode("utf-8", "replace") in RESTRICTED_STATE_FAMILIES:
            raise self._deny(
                "state_proof_family",
                f"the {family.decode('utf-8', 'replace')} family is not served by StateProof "
                f"to {reader.name()}",
            )

    def require(
        self, reader: Reader, rpc: str, rule: str, record: str, allowed: Iterable[str]
    ) -> None:
        """Refused under `rule` unless the reader's org is among `allowed`; else audited. The
        refusal does not list who may read (which orgs a report paid is itself restricted)."""
        if not reader.is_member or reader.org not in set(allowed):
            raise self._deny(rule, f"{record} is not for {reader.name()}")
        self.audit(reader, rpc, rule, (record,))

    def audit(self, reader: Reader, rpc: str, rule: str, records: Iterable[str]) -> None:
        """One audit line (and count) per restricted answer served."""
        listed = list(records)
        log_event(
            audit_log,
            "restricted_read",
            reader=reader.kind,
            org=reader.org,
            member_key=reader.member_key,
            rpc=rpc,
            rule=rule,
            records=listed,
        )
        if self._metrics is not None:
            self._metrics.restricted_reads.labels(org=self._metrics.org, rule=rule).inc()

    def _deny(self, rule: str, message: str) -> Refused:
        if self._metrics is not None:
            self._metrics.access_denied.labels(org=self._metrics.org, rule=rule).inc()
        return denied(rule, message)


# -- who may see a record ------------------------------------------------------------------


def _record_id(payload: Any, name: str) -> str:
    """The record id a committed tx names, or "" when it names none that could be a key (a
    refused tx is committed too, with whatever its payload held)."""
    value = payload.get(name) if isinstance(payload, dict) else None
    return value if isinstance(value, str) and fields.ID_TOKEN.match(value) else ""


def _member_org(reader: StateReader, public_key: bytes) -> str:
    member = reader.get(state.member_key(public_key))
    return str(member["org"]) if member else ""


def party_cmo(reader: StateReader, party_id: str) -> str:
    party = reader.get(state.party_key(party_id)) if party_id else None
    return str(party["registered_by"]) if party else ""


def paid_orgs(reader: StateReader, record: dict[str, Any] | None) -> set[str]:
    """The orgs paid from a distribution: the CMOs of the parties it paid."""
    if record is None:
        return set()
    return {party_cmo(reader, party) for party, _ in record["result"]["payouts"]} - {""}


def distribution_readers(reader: StateReader, distribution_id: str, signer_org: str) -> set[str]:
    """Rule distribution_paid: the org that ran it and the orgs paid from it; for a tx whose
    signer's org did not run it (a refused run), that org only."""
    record = reader.get(state.distribution_key(distribution_id)) if distribution_id else None
    if record is None or (signer_org and record["run_by"] != signer_org):
        return {signer_org} - {""}
    return {record["run_by"]} | paid_orgs(reader, record)


def usage_readers(reader: StateReader, report_id: str, signer_org: str = "") -> set[str]:
    """Rule usage_revenue: the report's reporter and the orgs paid from it (those paid by the
    distribution of its period, territory and currency, once one has run). For a tx whose
    signer's org is not the reporter (a refused batch), that org only."""
    report = reader.get(state.report_key(report_id)) if report_id else None
    if report is None or (signer_org and report["reporter"] != signer_org):
        return {signer_org} - {""}
    scope = state.distribution_scope_key(report["period"], report["territory"], report["currency"])
    distribution_id = reader.get(scope)
    record = reader.get(state.distribution_key(distribution_id)) if distribution_id else None
    return {report["reporter"]} | paid_orgs(reader, record)


DISPUTES_OF_PREFIX = state.S + b"disputes-of/"


def is_dispute_key(key: bytes) -> bool:
    """Whether a state key holds a dispute record or a subject's list of disputes."""
    return key.startswith((state.DISPUTE_PREFIX, DISPUTES_OF_PREFIX))


# -- registry answers ----------------------------------------------------------------------


def _nothing_hidden(key: bytes) -> bool:
    return False


def screen_answer(
    policy: AccessPolicy, reader: Reader, rpc: str, answer: dict[str, Any], view: ReadView
) -> tuple[dict[str, Any], Callable[[bytes], bool]]:
    """(the answer the reader may see, which state keys' proofs to drop) for a registry query,
    judged against the same state view the answer came from. Refused for a restricted record
    the reader may not see; audited for one it may."""
    records = StateReader(view)
    if rpc == "Statement":
        party = answer["party"]
        record = f"statement {answer['party_id']} {answer['period']}"
        policy.require(reader, rpc, "statement_own_cmo", record, {party["registered_by"]})
        return answer, _nothing_hidden
    if rpc == "Distribution":
        distribution = answer["distribution"]
        allowed = {distribution["run_by"]} | paid_orgs(records, distribution)
        record = f"distribution {distribution['distribution_id']}"
        policy.require(reader, rpc, "distribution_paid", record, allowed)
        return answer, _nothing_hidden
    if rpc == "UnmatchedUsage":
        return _screen_usage(policy, reader, answer, records)
    if not reader.is_member and rpc in ("Resolve", "SharesAt", "AiTraining", "Works"):
        for subject in answer.get("works", []) + answer.get("recordings", []):
            subject.pop("open_disputes", None)
        return answer, is_dispute_key
    return answer, _nothing_hidden


def _screen_usage(
    policy: AccessPolicy, reader: Reader, answer: dict[str, Any], records: StateReader
) -> tuple[dict[str, Any], Callable[[bytes], bool]]:
    """Unmatched usage lines are member data (usage counts); a line's own revenue is shown
    only under usage_revenue, and a line whose revenue is withheld loses its proof (the
    proof's value holds the revenue)."""
    period, territory = answer["period"], answer["territory"]
    readers: dict[str, set[str]] = {}
    withheld: set[bytes] = set()
    shown: list[str] = []
    for line in answer["unmatched"]:
        if "revenue_minor" not in line:
            continue
        report_id = line["report_id"]
        if report_id not in readers:
            readers[report_id] = usage_readers(records, report_id)
        if reader.org in readers[report_id] and reader.is_member:
            if report_id not in shown:
                shown.append(report_id)
            continue
        del line["revenue_minor"]
        line["revenue_withheld"] = "access.usage_revenue"
        withheld.add(state.usage_key(period, territory, report_id, line["line_id"]))
    if shown:
        policy.audit(reader, "UnmatchedUsage", "usage_revenue", [f"report {r}" for r in shown])
    return answer, withheld.__contains__


# -- the interceptor -------------------------------------------------------------------------


class EnforceAccessTiers(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses a call before its handler runs when the reader may not call the RPC at all
    (tier or identity); restricted rules are applied by the services, which see the records."""

    def __init__(self, policy: AccessPolicy) -> None:
        self._policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return _guarded(handler, handler_call_details.method, self._policy)


def _guarded(handler: Any, method: str, policy: AccessPolicy) -> Any:
    """The handler, with the tier check run first, keeping its kind (sync stays sync)."""

    def refusal(context: Any) -> Refused | None:
        try:
            policy.check_call(method, context)
        except Refused as refused:
            return refused
        return None

    def wrap(behaviour: Any) -> Any:
        if inspect.isasyncgenfunction(behaviour):

            async def checked_stream(request: Any, context: Any) -> Any:
                refused = refusal(context)
                if refused is not None:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused.message)
                async for reply in behaviour(request, context):
                    yield reply

            return checked_stream
        if inspect.iscoroutinefunction(behaviour):

            async def checked_async(request: Any, context: Any) -> Any:
                refused = refusal(context)
                if refused is not None:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused.message)
                return await behaviour(request, context)

            return checked_async

        def checked(request: Any, context: Any) -> Any:
            refused = refusal(context)
            if refused is not None:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, refused.message)
            return behaviour(request, context)

        return checked

    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), **options)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), **options)
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), **options)
