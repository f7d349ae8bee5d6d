"""The client ledger service (kledger.v1.Ledger): translation between the wire and the node.

The work is done by a `LedgerBackend` (the node provides it over its store, mempool and driver);
this module only translates protobuf <-> domain types and maps errors (docs/design.md §8):
- node.errors.Refused -> its gRPC status, the message naming the field or rule;
- a missing tx/block/header -> NOT_FOUND naming what was asked for;
- any unexpected exception -> INTERNAL (logged with its traceback); the server keeps serving;
- a batch call succeeds and carries one result per tx;
- who may call what is decided before a handler runs (node/api/access.py); the handlers that
  return a committed tx or its receipt (GetTx, GetInclusionProof, WaitForCommit(s)) also check
  the tx's own rule (a usage report's revenue, a distribution), refusing it whole: the tx bytes
  are signed and are the Merkle leaf, so a redacted tx would prove nothing. WaitForCommits
  checks every tx it answers and one refusal refuses the call, naming `tx_hashes[i]`;
- a commit wait for many hashes is one wait (node/api/commit_waiters.py), and the hashes waited
  for at once are bounded per client connection and in all, so the bound stays per hash when one
  call names thousands (the stream limit of node/api/server.py only counts calls).

Request limits are named here: txs per batch, hashes per commit wait, the hashes waited for at
once per client connection and in all, and the longest wait for a commit (docs/design.md §11).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, Protocol, TypeVar

import grpc

from kledger.consensus.validators import ValidatorSet
from kledger.node.api.access import AccessPolicy
from kledger.node.api.grpc_status import refusal_code
from kledger.node.chain.header import HASH_BYTES, CommitCertificate, Header
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.errors import DecodeError, Refused, Status
from kledger.node.ordering.admission import SubmitResult
from kledger.node.ordering.sources import SourceBudgets
from kledger.node.proof.bundle import ConsistencyBundle, InclusionBundle
from kledger.node.proof.epochs import MAX_EPOCH_LINKS, EpochLink
from kledger.node.telemetry.metrics import NodeMetrics
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

log = logging.getLogger("kledger.ledger_service")

MAX_BATCH_TXS = 10_000
# Hashes one WaitForCommits may name: what one SubmitBatch may carry, so the accepted txs of any
# batch are one wait.
MAX_WAIT_HASHES = MAX_BATCH_TXS
# Distinct hashes waited for at once, WaitForCommit and WaitForCommits together, per client
# connection and over all of them. A waiter holds memory for its whole timeout and one call may
# name thousands, so the bound counts hashes, not calls (the stream limit counts calls).
MAX_WAITING_HASHES_PER_CONNECTION = MAX_WAIT_HASHES
MAX_WAITING_HASHES = 4 * MAX_WAIT_HASHES
MAX_WAIT_MS = 600_000
DEFAULT_WAIT_MS = 30_000
# A DEADLINE_EXCEEDED answer names at most this many of the hashes that did not commit.
MAX_NAMED_MISSING = 8


@dataclass(frozen=True, slots=True)
class CertifiedHeader:
    header: Header
    certificate: CommitCertificate | None  # None: committed here, not yet certified


@dataclass(frozen=True, slots=True)
class StoredTx:
    encoding: bytes
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class BlockView:
    """A committed block as clients see it (also one item of the commit stream)."""

    header: Header
    certificate: CommitCertificate | None
    tx_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class NodeStatusView:
    org: str
    epoch: int
    round: int
    leader: str
    last_header: Header
    certified_height: int
    mempool_txs: int
    view_changes: int
    connected_peers: tuple[str, ...]
    clock: str = "unknown"
    clock_offset_ms: int | None = None
    role: str = "validator"  # or "follower": not in the current epoch's set
    validators: int = 0  # size of the current epoch's set


class LedgerBackend(Protocol):
    """What the ledger service needs from the node. Methods raise node.errors.Refused for bad
    requests (e.g. a tree size beyond the log); getters return None for "not found"."""

    @property
    def chain_id(self) -> str: ...

    async def submit(self, encodings: Sequence[bytes], source: str) -> list[SubmitResult]:
        """Admit each tx (all checks, then mempool); one result per input, in order. `source`
        names the client connection (its budget and penalty are its own)."""
        ...

    async def wait_for_receipts(
        self, tx_hashes: Sequence[bytes], timeout_s: float
    ) -> list[Receipt | None]:
        """Each tx's receipt once committed, in order; None for those that did not commit
        within timeout_s. The hashes are distinct; one wait for all of them, not one per tx."""
        ...

    def get_tx(self, tx_hash: bytes) -> StoredTx | None: ...

    def get_block(self, height: int) -> BlockView | None: ...

    def get_header(self, height: int | None) -> CertifiedHeader | None:
        """At a height, or (None) the latest header that has a commit certificate."""
        ...

    def inclusion_proof(self, tx_hash: bytes) -> InclusionBundle | None: ...

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyBundle: ...

    def status(self) -> NodeStatusView:
        """What this node sees now (for operators and `kledger cluster status`)."""
        ...

    def commits(self, from_height: int) -> AsyncIterator[BlockView]:
        """Stored blocks from from_height, then each new one as it commits; never ends."""
        ...


# -- proto <-> domain --------------------------------------------------------------------------


def receipt_to_proto(receipt: Receipt) -> ledger_pb2.Receipt:
    output = receipt.result.output
    return ledger_pb2.Receipt(
        height=receipt.height,
        leaf_index=receipt.leaf_index,
        status=receipt.result.status,
        message=receipt.result.message,
        output_json="" if output is None else json.dumps(output, sort_keys=True),
    )


def certified_to_proto(certified: CertifiedHeader) -> ledger_pb2.CertifiedHeader:
    return ledger_pb2.CertifiedHeader(
        header=certified.header.encode(),
        certificate=b"" if certified.certificate is None else certified.certificate.encode(),
    )


def block_to_proto(block: BlockView) -> ledger_pb2.CommittedBlock:
    return ledger_pb2.CommittedBlock(
        header=block.header.encode(),
        certificate=b"" if block.certificate is None else block.certificate.encode(),
        tx_hashes=list(block.tx_hashes),
    )


def inclusion_to_proto(bundle: InclusionBundle) -> ledger_pb2.InclusionProof:
    return ledger_pb2.InclusionProof(
        chain_id=bundle.chain_id,
        leaf=bundle.leaf,
        leaf_index=bundle.leaf_index,
        tree_size=bundle.tree_size,
        audit_path=list(bundle.audit_path),
        header=bundle.header.encode(),
        certificate=bundle.certificate.encode(),
        receipt=receipt_to_proto(bundle.receipt),
        receipt_header=bundle.receipt_header.encode(),
        receipt_certificate=bundle.receipt_certificate.encode(),
        receipt_count=bundle.receipt_count,
        receipt_path=list(bundle.receipt_path),
        epoch_chain=epoch_chain_to_proto(bundle.epoch_chain),
    )


def epoch_chain_to_proto(chain: Sequence[EpochLink]) -> list[ledger_pb2.EpochLink]:
    return [
        ledger_pb2.EpochLink(
            header=link.header.encode(),
            certificate=link.certificate.encode(),
            next_epoch=link.next_validators.epoch,
            next_validators=[
                ledger_pb2.Validator(org=v.node_id, public_key=v.public_key)
                for v in link.next_validators.validators
            ],
        )
        for link in chain
    ]


def epoch_chain_from_proto(chain: Sequence[ledger_pb2.EpochLink]) -> tuple[EpochLink, ...]:
    """The domain links from the wire (client side). Raises DecodeError naming the link."""
    if len(chain) > MAX_EPOCH_LINKS:
        raise DecodeError(f"more than {MAX_EPOCH_LINKS} links", "epoch_chain")
    links = []
    for index, link in enumerate(chain):
        where = f"epoch_chain[{index}]"
        members = [(v.org, v.public_key) for v in link.next_validators]
        if not members or any(len(key) != HASH_BYTES for _, key in members):
            raise DecodeError("must be 1 or more validators with 32-byte keys", where)
        try:
            following = ValidatorSet.of(link.next_epoch, members)
        except ValueError as exc:
            raise DecodeError(str(exc), where) from None
        links.append(
            EpochLink(
                Header.decode(link.header), CommitCertificate.decode(link.certificate), following
            )
        )
    return tuple(links)


def receipt_from_proto(receipt: ledger_pb2.Receipt) -> Receipt:
    """The domain receipt from a wire Receipt (client side). Raises DecodeError when the node
    sent output that is no JSON object."""
    try:
        output = json.loads(receipt.output_json) if receipt.output_json else None
    except ValueError:
        raise DecodeError("is not JSON", "receipt.output_json") from None
    if output is not None and not isinstance(output, dict):
        raise DecodeError("must be a JSON object", "receipt.output_json")
    result = TxResult(receipt.status, receipt.message, output)
    return Receipt(receipt.height, receipt.leaf_index, result)


def inclusion_from_proto(proof: ledger_pb2.InclusionProof) -> InclusionBundle:
    """The domain bundle from a wire InclusionProof (client side). Raises DecodeError when the
    node sent malformed header or certificate bytes."""
    return InclusionBundle(
        chain_id=proof.chain_id,
        leaf=proof.leaf,
        leaf_index=proof.leaf_index,
        tree_size=proof.tree_size,
        audit_path=tuple(proof.audit_path),
        header=Header.decode(proof.header),
        certificate=CommitCertificate.decode(proof.certificate),
        receipt=receipt_from_proto(proof.receipt),
        receipt_header=Header.decode(proof.receipt_header),
        receipt_certificate=CommitCertificate.decode(proof.receipt_certificate),
        receipt_count=proof.receipt_count,
        receipt_path=tuple(proof.receipt_path),
        epoch_chain=epoch_chain_from_proto(proof.epoch_chain),
    )


def consistency_from_proto(proof: ledger_pb2.ConsistencyProof) -> ConsistencyBundle:
    """The domain bundle from a wire ConsistencyProof (client side). Raises DecodeError when
    the node sent malformed header or certificate bytes."""
    return ConsistencyBundle(
        chain_id=proof.chain_id,
        old_header=Header.decode(proof.old_header.header),
        old_certificate=CommitCertificate.decode(proof.old_header.certificate),
        new_header=Header.decode(proof.new_header.header),
        new_certificate=CommitCertificate.decode(proof.new_header.certificate),
        proof=tuple(proof.proof),
        epoch_chain=epoch_chain_from_proto(proof.epoch_chain),
    )


def inclusion_to_json(proof: ledger_pb2.InclusionProof) -> dict[str, Any]:
    """The kledger-proof/v2 JSON bundle from a wire InclusionProof (client side), exactly as
    the verifier reads it (InclusionBundle.to_json)."""
    return inclusion_from_proto(proof).to_json()


# -- the servicer ------------------------------------------------------------------------------

Request = TypeVar("Request")
Reply = TypeVar("Reply")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Reply]]


def _unary(method: Handler[Request, Reply]) -> Handler[Request, Reply]:
    """Map Refused to its status and anything unexpected to INTERNAL, for a unary method."""

    @wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Reply:
        try:
            return await method(self, request, context)
        except Refused as refusal:
            await context.abort(refusal_code(refusal), refusal.message)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception:
            log.exception("ledger_service_internal_error")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")
        raise AssertionError("context.abort returned")

    return wrapper


def _tx_hash(value: bytes, field: str = "tx_hash") -> bytes:
    if len(value) != HASH_BYTES:
        raise Refused(Status.INVALID_ARGUMENT, f"must be {HASH_BYTES} bytes", field)
    return value


def _wait_timeout_ms(requested_ms: int) -> int:
    """A commit wait's timeout: DEFAULT_WAIT_MS for 0, at most MAX_WAIT_MS."""
    if requested_ms > MAX_WAIT_MS:
        raise Refused(
            Status.INVALID_ARGUMENT, f"must be at most MAX_WAIT_MS={MAX_WAIT_MS}", "timeout_ms"
        )
    return requested_ms or DEFAULT_WAIT_MS


@dataclass(frozen=True, slots=True)
class _HashFields:
    """How a commit wait names its hashes in refusals: `tx_hash`, or `tx_hashes[i]`."""

    field: str
    indexed: bool = True

    def of(self, index: int) -> str:
        return f"{self.field}[{index}]" if self.indexed else self.field


def _not_committed_message(
    missing: Sequence[int], total: int, timeout_ms: int, fields: _HashFields
) -> str:
    """`tx_hashes[3], tx_hashes[7]: not committed within timeout_ms=...`, naming at most
    MAX_NAMED_MISSING of them (the answer's trailer stays small)."""
    named = ", ".join(fields.of(index) for index in missing[:MAX_NAMED_MISSING])
    more = len(missing) - MAX_NAMED_MISSING
    if more > 0:
        named += f" and {more} more"
    counted = f" ({len(missing)} of {total})" if total > 1 else ""
    return f"{named}: not committed within timeout_ms={timeout_ms}{counted}"


def _committed(receipt: Receipt | None) -> Receipt:
    assert receipt is not None, "every hash has its receipt once none is missing"
    return receipt


def _not_found(what: str, field: str) -> Refused:
    return Refused(Status.NOT_FOUND, f"{what} not found", field)


class LedgerServicer(ledger_pb2_grpc.LedgerServicer):
    def __init__(
        self,
        backend: LedgerBackend,
        access: AccessPolicy,
        metrics: NodeMetrics | None = None,
        *,
        waiting_hashes_per_connection: int = MAX_WAITING_HASHES_PER_CONNECTION,
        waiting_hashes: int = MAX_WAITING_HASHES,
    ) -> None:
        self._backend = backend
        self._access = access
        self._metrics = metrics
        # Commit waits in flight, by hash, per client connection (no penalty: a wait is no
        # offence, only a cost).
        self._waits = SourceBudgets(
            waiting_hashes_per_connection, penalty_ms=0, total_txs=waiting_hashes
        )

    def _check_tx(self, context: grpc.aio.ServicerContext, rpc: str, encoding: bytes) -> None:
        """Refused unless this call's reader may see the committed tx `encoding`."""
        self._access.check_tx(self._access.reader_of(context), rpc, encoding)

    async def _admit(
        self, txs: Sequence[bytes], context: grpc.aio.ServicerContext
    ) -> list[SubmitResult]:
        results = await self._backend.submit(txs, connection_of(context))
        assert len(results) == len(txs), "the backend answers every tx"
        if self._metrics is not None:
            for result in results:
                self._metrics.count_submission(result.status)
        return results

    async def _submit(
        self, txs: Sequence[bytes], context: grpc.aio.ServicerContext
    ) -> ledger_pb2.SubmitBatchResponse:
        if len(txs) > MAX_BATCH_TXS:
            raise Refused(
                Status.RESOURCE_EXHAUSTED,
                f"{len(txs)} txs exceed MAX_BATCH_TXS={MAX_BATCH_TXS}",
                "txs",
            )
        results = await self._admit(list(txs), context)
        return ledger_pb2.SubmitBatchResponse(
            results=[
                ledger_pb2.TxSubmitResult(tx_hash=r.tx_hash, status=r.status, message=r.message)
                for r in results
            ]
        )

    @_unary
    async def SubmitTx(
        self, request: ledger_pb2.SubmitTxRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.SubmitTxResponse:
        (result,) = await self._admit([request.tx], context)
        if not result.ok:
            raise _refusal_of(result)
        return ledger_pb2.SubmitTxResponse(tx_hash=result.tx_hash)

    @_unary
    async def SubmitBatch(
        self, request: ledger_pb2.SubmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.SubmitBatchResponse:
        return await self._submit(request.txs, context)

    async def SubmitStream(
        self,
        request_iterator: AsyncIterator[ledger_pb2.SubmitBatchRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[ledger_pb2.SubmitBatchResponse]:
        try:
            async for request in request_iterator:
                yield await self._submit(request.txs, context)
        except Refused as refusal:
            await context.abort(refusal_code(refusal), refusal.message)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception:
            log.exception("ledger_service_internal_error")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")

    @_unary
    async def WaitForCommit(
        self, request: ledger_pb2.WaitForCommitRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.Receipt:
        tx_hash = _tx_hash(request.tx_hash)
        timeout_ms = _wait_timeout_ms(request.timeout_ms)
        (receipt,) = await self._wait_for_commits(
            [tx_hash], timeout_ms, context, "WaitForCommit", _HashFields("tx_hash", indexed=False)
        )
        return receipt_to_proto(receipt)

    @_unary
    async def WaitForCommits(
        self, request: ledger_pb2.WaitForCommitsRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.WaitForCommitsResponse:
        if len(request.tx_hashes) > MAX_WAIT_HASHES:
            raise Refused(
                Status.INVALID_ARGUMENT,
                f"{len(request.tx_hashes)} hashes exceed MAX_WAIT_HASHES={MAX_WAIT_HASHES}",
                "tx_hashes",
            )
        tx_hashes = [_tx_hash(h, f"tx_hashes[{i}]") for i, h in enumerate(request.tx_hashes)]
        timeout_ms = _wait_timeout_ms(request.timeout_ms)
        receipts = await self._wait_for_commits(
            tx_hashes, timeout_ms, context, "WaitForCommits", _HashFields("tx_hashes")
        )
        return ledger_pb2.WaitForCommitsResponse(receipts=[receipt_to_proto(r) for r in receipts])

    async def _wait_for_commits(
        self,
        tx_hashes: Sequence[bytes],
        timeout_ms: int,
        context: grpc.aio.ServicerContext,
        rpc: str,
        fields: _HashFields,
    ) -> list[Receipt]:
        """The receipt of each of `tx_hashes` (checked hashes, maybe repeated), in order, after
        one wait for all: DEADLINE_EXCEEDED naming the fields of those not committed in time,
        and the access rule of every committed tx, as GetTx, before any is answered."""
        first_index: dict[bytes, int] = {}  # a repeated hash is waited for once
        for index, tx_hash in enumerate(tx_hashes):
            first_index.setdefault(tx_hash, index)
        distinct = list(first_index)
        connection = connection_of(context)
        self._reserve_waits(connection, len(distinct), fields.field)
        try:
            found = await self._backend.wait_for_receipts(distinct, timeout_ms / 1000)
        finally:
            self._waits.release(connection, len(distinct))
        assert len(found) == len(distinct), "the backend answers every hash"
        receipts = dict(zip(distinct, found, strict=True))
        missing = [index for index, tx_hash in enumerate(tx_hashes) if receipts[tx_hash] is None]
        if missing:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                _not_committed_message(missing, len(tx_hashes), timeout_ms, fields),
            )
        for tx_hash in distinct:
            self._check_committed_tx(context, rpc, tx_hash, fields.of(first_index[tx_hash]))
        return [_committed(receipts[tx_hash]) for tx_hash in tx_hashes]

    def _reserve_waits(self, connection: str, count: int, field: str) -> None:
        """Refused (RESOURCE_EXHAUSTED) unless `count` more hashes may be waited for now."""
        granted = self._waits.reserve(connection, count)
        if granted < count:
            self._waits.release(connection, granted)
            raise Refused(
                Status.RESOURCE_EXHAUSTED,
                f"{count} more hashes waited for would exceed this connection's "
                f"{self._waits.per_source_txs} or all connections' limit "
                "(MAX_WAITING_HASHES_PER_CONNECTION, MAX_WAITING_HASHES); retry later",
                field,
            )

    def _check_committed_tx(
        self, context: grpc.aio.ServicerContext, rpc: str, tx_hash: bytes, field: str
    ) -> None:
        """The reader may see this committed tx's receipt; a denial names the field too (the
        rule stays first in the message, as every access denial)."""
        stored = self._backend.get_tx(tx_hash)
        assert stored is not None, "a tx with a receipt is stored"
        try:
            self._check_tx(context, rpc, stored.encoding)
        except Refused as denial:
            raise Refused(denial.status, f"{denial.message} ({field})") from None

    @_unary
    async def GetTx(
        self, request: ledger_pb2.GetTxRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.GetTxResponse:
        stored = self._backend.get_tx(_tx_hash(request.tx_hash))
        if stored is None:
            raise _not_found("committed tx", "tx_hash")
        self._check_tx(context, "GetTx", stored.encoding)
        return ledger_pb2.GetTxResponse(
            tx=stored.encoding, receipt=receipt_to_proto(stored.receipt)
        )

    @_unary
    async def GetBlock(
        self, request: ledger_pb2.GetBlockRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.GetBlockResponse:
        block = self._backend.get_block(request.height)
        if block is None:
            raise _not_found(f"block at height {request.height}", "height")
        return ledger_pb2.GetBlockResponse(
            header=block.header.encode(),
            certificate=b"" if block.certificate is None else block.certificate.encode(),
            tx_hashes=list(block.tx_hashes),
        )

    @_unary
    async def GetHeader(
        self, request: ledger_pb2.GetHeaderRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.CertifiedHeader:
        height = request.height if request.HasField("height") else None
        certified = self._backend.get_header(height)
        if certified is None:
            what = "certified header" if height is None else f"header at height {height}"
            raise _not_found(what, "height")
        return certified_to_proto(certified)

    @_unary
    async def GetInclusionProof(
        self, request: ledger_pb2.GetInclusionProofRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.InclusionProof:
        bundle = self._backend.inclusion_proof(_tx_hash(request.tx_hash))
        if bundle is None:
            raise _not_found("certified tx", "tx_hash")
        self._check_tx(context, "GetInclusionProof", bundle.leaf)
        return inclusion_to_proto(bundle)

    @_unary
    async def GetConsistencyProof(
        self, request: ledger_pb2.GetConsistencyProofRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.ConsistencyProof:
        if not 0 < request.old_size <= request.new_size:
            raise Refused(
                Status.INVALID_ARGUMENT, "must satisfy 0 < old_size <= new_size", "old_size"
            )
        bundle = self._backend.consistency_proof(request.old_size, request.new_size)
        return ledger_pb2.ConsistencyProof(
            chain_id=bundle.chain_id,
            old_size=bundle.old_header.tx_log_size,
            new_size=bundle.new_header.tx_log_size,
            proof=list(bundle.proof),
            old_header=certified_to_proto(
                CertifiedHeader(bundle.old_header, bundle.old_certificate)
            ),
            new_header=certified_to_proto(
                CertifiedHeader(bundle.new_header, bundle.new_certificate)
            ),
            epoch_chain=epoch_chain_to_proto(bundle.epoch_chain),
        )

    @_unary
    async def GetStatus(
        self, request: ledger_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.NodeStatus:
        status = self._backend.status()
        header = status.last_header
        return ledger_pb2.NodeStatus(
            org=status.org,
            chain_id=header.chain_id,
            epoch=status.epoch,
            height=header.height,
            round=status.round,
            leader=status.leader,
            last_header_hash=header.hash(),
            tx_log_size=header.tx_log_size,
            tx_log_root=header.tx_log_root,
            state_root=header.state_root,
            certified_height=status.certified_height,
            mempool_txs=status.mempool_txs,
            view_changes=status.view_changes,
            connected_peers=list(status.connected_peers),
            clock=status.clock,
            clock_offset_ms=status.clock_offset_ms or 0,
            role=status.role,
            validators=status.validators,
        )

    async def StreamCommits(
        self, request: ledger_pb2.StreamCommitsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ledger_pb2.CommittedBlock]:
        try:
            async for block in self._backend.commits(request.from_height):
                yield block_to_proto(block)
        except Refused as refusal:
            await context.abort(refusal_code(refusal), refusal.message)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception:
            log.exception("ledger_service_internal_error")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")


def connection_of(context: grpc.aio.ServicerContext) -> str:
    """A client connection's name: its address as gRPC reports it ("ipv4:127.0.0.1:50412"),
    the same for every call on that connection. Admission budgets stay per connection, not per
    certificate: many clients may share one certificate (the public reader's, an org's)."""
    peer: str = context.peer() or "unknown"
    return peer


def _refusal_of(result: SubmitResult) -> Refused:
    try:
        status = Status(result.status)
    except ValueError:
        raise AssertionError(f"backend returned unknown status {result.status!r}") from None
    refusal = Refused(status, result.message)
    return refusal
