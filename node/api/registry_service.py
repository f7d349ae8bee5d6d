"""The gRPC registry query service (kledger.v1.RegistryService): protobuf at the edge, answers
from node.registry.queries, each optionally with a state proof per key read.

The node hands in `snapshot()`, which returns one consistent committed state: a ReadView at a
height, that height's header and commit certificate, and `prove(key)` giving the key's sparse
Merkle proof (node/proof/smt.py Proof) under the header's state_root; and `proof_at(height,
key)` for one key's proof at an older certified height in the retention window. A query that
breaks a rule is answered with the refusal's status code and message; a node that cannot give
a snapshot raises Refused(UNAVAILABLE).

Access (node/api/access.py): the tier is checked before a handler runs; each answer then passes
`screen_answer`, which refuses a restricted record the reader may not see (a statement, a
distribution), or redacts what it may not see (the revenue of another org's usage lines,
dispute records for the public reader) and drops the state proofs of what it redacted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import grpc

from kledger.node.api.access import AccessPolicy, screen_answer
from kledger.node.api.grpc_status import refusal_code
from kledger.node.commit.certified_state import HistoricProof, Snapshot
from kledger.node.errors import Refused, Status, StoreCorrupt
from kledger.node.proof.epochs import EpochLink
from kledger.node.proof.state_proof import build_bundle
from kledger.node.registry.queries import RegistryQueries
from kledger.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger("kledger.registry_service")

MAX_PROOFS_PER_ANSWER = 512


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode_answer(answer: dict[str, Any]) -> str:
    return json.dumps(answer, sort_keys=True, ensure_ascii=False, default=_json_default)


ProofAt = Callable[[int, bytes], HistoricProof]
# The epoch-ending links before an epoch (node/storage/proofs.py build_epoch_chain).
EpochChain = Callable[[int], tuple[EpochLink, ...]]


def _no_history(height: int, key: bytes) -> HistoricProof:
    raise Refused(Status.FAILED_PRECONDITION, "this server keeps no state history", "height")


def _no_epochs(epoch: int) -> tuple[EpochLink, ...]:
    """A server without an epoch index: no links (verifies for epoch 0 only)."""
    return ()


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        access: AccessPolicy,
        proof_at: ProofAt = _no_history,
        epoch_chain: EpochChain = _no_epochs,
    ) -> None:
        self._snapshot = snapshot
        self._access = access
        self._proof_at = proof_at
        self._epoch_chain = epoch_chain

    def _reply(
        self,
        context: Any,
        rpc: str,
        with_proof: bool,
        ask: Callable[[RegistryQueries], dict[str, Any]],
    ) -> registry_pb2.QueryReply:
        try:
            reader = self._access.reader_of(context)
            snap = self._snapshot()
            queries = RegistryQueries(snap.view, snap.header.timestamp_ms)
            answer, hidden = screen_answer(self._access, reader, rpc, ask(queries), snap.view)
            chain = self._epoch_chain(snap.header.epoch) if with_proof else ()
        except Refused as refusal:
            context.abort(refusal_code(refusal), refusal.message)
            raise AssertionError("context.abort returns only by raising") from None
        except StoreCorrupt:
            raise
        except Exception:
            # Our bug, reached by some query: the client learns only that (INTERNAL); the
            # node logs the stack. Never UNKNOWN with Python's text.
            log.exception("registry query failed")
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")
            raise AssertionError("context.abort returns only by raising") from None
        proofs = []
        if with_proof:
            shown = [key for key in queries.keys_read if not hidden(key)]
            for key in shown[:MAX_PROOFS_PER_ANSWER]:
                bundle = build_bundle(
                    key,
                    snap.view.get(key),
                    snap.prove(key),
                    snap.header,
                    snap.certificate,
                    epoch_chain=chain,
                )
                proofs.append(json.dumps(bundle, sort_keys=True))
        return registry_pb2.QueryReply(
            answer_json=encode_answer(answer),
            height=snap.header.height,
            state_root=snap.header.state_root,
            proofs_json=proofs,
        )

    def Resolve(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        territory = request.territory or "KR"
        return self._reply(
            context,
            "Resolve",
            request.with_proof,
            lambda q: q.resolve(request.kind, request.value, territory, request.date),
        )

    def SharesAt(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        right, territory = request.right or "PR", request.territory or "KR"
        return self._reply(
            context,
            "SharesAt",
            request.with_proof,
            lambda q: q.shares_at(request.kind, request.value, right, territory, request.date),
        )

    def Overclaims(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        return self._reply(
            context,
            "Overclaims",
            request.with_proof,
            lambda q: q.overclaims(request.include_closed),
        )

    def UnmatchedUsage(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        return self._reply(
            context,
            "UnmatchedUsage",
            request.with_proof,
            lambda q: q.unmatched_usage(request.period, request.territory or "KR"),
        )

    def Statement(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        return self._reply(
            context,
            "Statement",
            request.with_proof,
            lambda q: q.statement(request.party_id, request.period),
        )

    def Distribution(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        return self._reply(
            context,
            "Distribution",
            request.with_proof,
            lambda q: q.distribution(request.distribution_id, request.recompute),
        )

    def AiTraining(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        territory, scope = request.territory or "KR", request.scope or "ai_training"
        return self._reply(
            context,
            "AiTraining",
            request.with_proof,
            lambda q: q.ai_training(request.kind, request.value, territory, request.date, scope),
        )

    def PersonaClaims(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        return self._reply(
            context,
            "PersonaClaims",
            request.with_proof,
            lambda q: q.persona_claims(request.kind, request.value),
        )

    def Works(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        return self._reply(
            context,
            "Works",
            request.with_proof,
            lambda q: q.works(
                request.registered_by, request.sender, request.after, request.limit or 100
            ),
        )

    def StateProof(self, request: Any, context: Any) -> registry_pb2.QueryReply:
        try:
            reader = self._access.reader_of(context)
            self._access.check_state_key(reader, bytes(request.key))
            found = self._proof_at(request.height, bytes(request.key))
            chain = self._epoch_chain(found.header.epoch)
        except Refused as refusal:
            context.abort(refusal_code(refusal), refusal.message)
            raise AssertionError("context.abort returns only by raising") from None
        bundle = build_bundle(
            found.key,
            found.value,
            found.proof,
            found.header,
            found.certificate,
            epoch_chain=chain,
        )
        return registry_pb2.QueryReply(
            answer_json=encode_answer({"key": found.key, "value": found.value}),
            height=found.header.height,
            state_root=found.header.state_root,
            proofs_json=[json.dumps(bundle, sort_keys=True)],
        )


def add_registry_service(
    server: grpc.Server,
    snapshot: Callable[[], Snapshot],
    access: AccessPolicy,
    proof_at: ProofAt = _no_history,
    epoch_chain: EpochChain = _no_epochs,
) -> None:
    add = registry_pb2_grpc.add_RegistryServiceServicer_to_server
    add(RegistryServicer(snapshot, access, proof_at, epoch_chain), server)  # type: ignore[no-untyped-call]
