"""The peer transport: node-to-node messages over gRPC with mutual TLS (docs/design.md §4 and §8).

Rules it keeps:
- `send` and `broadcast` never block: each peer has a bounded queue (`queue_max_messages`); when
  it is full the message is dropped and counted (reason "transport.queue_full") — consensus
  tolerates loss, and a slow or dead peer must never stall the node or grow its memory;
- one task per peer keeps one long-lived client stream open (sender -> receiver), reconnecting
  with capped exponential backoff (`reconnect_min_ms` doubling to `reconnect_max_ms`);
- the sender of an inbound message is the CN of its verified TLS client certificate, never a
  claim inside the message; a certificate that does not chain to the cluster CA fails the
  handshake, and a CN that is not a current validator is refused with PERMISSION_DENIED and
  counted;
- messages larger than `max_message_bytes` are refused: not sent (counted "transport.oversize"), and
  gRPC rejects them on receipt (RESOURCE_EXHAUSTED);
- the inbound callback must not raise; if it does, the message is dropped, counted
  ("transport.handler_bug") and logged, and the stream stays up; it must not block either
  (gossip is checked in the background), so a peer's consensus messages are read and handled
  however much gossip arrives with them. It may ask the stream to pause before reading on
  (a stream that floods): HTTP/2 flow control then slows that one stream's sender;
- one peer org has at most `connections.max_streams_per_peer` calls open (Stream and
  SyncBlocks, over all its connections): one more is refused with RESOURCE_EXHAUSTED and
  counted ("transport.too_many_streams"), logged as a summary line per peer;
- when the validator set changes, the open streams of an org that left it are cut at once
  (`revoke_departed`), not at its next message: a removed node that has nothing more to send
  learns its removal from the refusal;
- a former validator may still read, never write: `SyncBlocks` serves it the blocks up to the
  end of the last epoch it was a member of (so a removed node that lagged can commit the
  marker that removed it), nothing after;
- a link whose calls are refused (PERMISSION_DENIED, UNAUTHENTICATED, RESOURCE_EXHAUSTED)
  keeps backing off as for a peer that is down, and logs once per outage: a removed node does
  not redial its former peers ten times a second.

Protobuf stays here: callers see PeerPayload dataclasses and SyncedBlockData.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from kledger.node.config import Address, PeerSettings
from kledger.node.net.tls import (
    TlsMaterial,
    certificate_sha256,
    org_tls_name,
    peer_certificate_of,
    peer_channel_credentials,
    peer_org_of,
)
from kledger.node.telemetry.logs import SummaryLog, log_event
from kledger.node.telemetry.metrics import NodeMetrics
from kledger.v1 import peer_pb2, peer_pb2_grpc

log = logging.getLogger("kledger.peer")

# Seconds a connection attempt may take before it counts as failed and backs off.
CONNECT_TIMEOUT_S = 5.0
# Keepalive pings detect a silently dead peer on an idle stream.
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000
# Refused calls are logged as one summary line per peer at most this often.
REFUSAL_LOG_INTERVAL_S = 10.0
# A retiring link's farewell (the certificate that ended the epoch, for the org that left) is
# written within this long, or the link is closed without it.
FAREWELL_TIMEOUT_S = 5.0
# Call outcomes that mean "the peer will not take us", not "the link broke".
REFUSED_CODES = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # all of our call slots there are taken
    }
)


@dataclass(frozen=True, slots=True)
class ConsensusBytes:
    """A consensus core message in its own canonical encoding (opaque here)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class TxGossip:
    """Signed tx encodings gossiped by their submitting node."""

    txs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class HeaderVote:
    """A validator's signature over a committed header (kledger.node.chain.header.sign_header)."""

    height: int
    header_hash: bytes
    signature: bytes


PeerPayload = ConsensusBytes | TxGossip | HeaderVote


@dataclass(frozen=True, slots=True)
class SyncedBlockData:
    """One committed block for block sync; byte fields are opaque store encodings."""

    height: int
    consensus_block: bytes
    commit_qc: bytes
    header: bytes
    certificate: bytes


@dataclass(eq=False, slots=True)
class InboundStream:
    """One inbound `Peer.Stream` call, as the handler sees it: admission holds back the stream
    that floods, not the peer's other streams."""

    peer: str
    opened_s: float  # time.monotonic() when the call was accepted


# (sender org id from its TLS certificate, payload, the stream it came on) -> seconds that
# stream should wait before it reads its next message (backpressure on a stream that floods;
# None or 0: read on at once). Must not block or raise.
InboundHandler = Callable[[str, PeerPayload, InboundStream], float | None]
# (from_height, to_height) -> committed blocks in that range, in order (at most sync_max_blocks).
BlockSource = Callable[[int, int], Iterable[SyncedBlockData]]
# Whether an org id is a validator of the current set.
MembershipCheck = Callable[[str], bool]
# For an org that is no validator now: the last height it may sync (where the last epoch it
# was a member of ended), or None if it never was one here.
FormerMemberLimit = Callable[[str], int | None]
# org -> the SHA-256 its node's certificate must have (orgs that joined by add_org), or None.
CertificatePin = Callable[[str], bytes | None]


def encode_payload(payload: PeerPayload) -> peer_pb2.PeerMessage:
    match payload:
        case ConsensusBytes(data):
            return peer_pb2.PeerMessage(consensus=data)
        case TxGossip(txs):
            return peer_pb2.PeerMessage(txs=peer_pb2.TxBatch(txs=list(txs)))
        case HeaderVote(height, header_hash, signature):
            return peer_pb2.PeerMessage(
                header_signature=peer_pb2.HeaderSignature(
                    height=height, header_hash=header_hash, signature=signature
                )
            )


def decode_payload(message: peer_pb2.PeerMessage) -> PeerPayload | None:
    """The payload of a wire message, or None when the oneof is empty."""
    kind = message.WhichOneof("body")
    if kind == "consensus":
        return ConsensusBytes(message.consensus)
    if kind == "txs":
        return TxGossip(tuple(message.txs.txs))
    if kind == "header_signature":
        signed = message.header_signature
        return HeaderVote(signed.height, signed.header_hash, signed.signature)
    return None


def channel_options(settings: PeerSettings, peer: str) -> list[tuple[str, int | str]]:
    """Options of a channel to `peer`'s node; TLS checks the name only its certificate holds."""
    return [
        ("grpc.ssl_target_name_override", org_tls_name(peer)),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", settings.reconnect_min_ms),
        ("grpc.max_reconnect_backoff_ms", settings.reconnect_max_ms),
    ]


def server_options(settings: PeerSettings) -> list[tuple[str, int]]:
    """Message limits of the peer port's server (node/api/server.py adds the connection
    limits; `connections.min_ping_interval_ms` must allow a ping every KEEPALIVE_TIME_MS)."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]


def _presents(context: grpc.aio.ServicerContext, pin: bytes) -> bool:
    """Whether the call's verified certificate is the pinned one."""
    pem = peer_certificate_of(context)
    if pem is None:
        return False
    try:
        return hmac.compare_digest(certificate_sha256(pem), pin)
    except ValueError:
        return False


class PeerServicer(peer_pb2_grpc.PeerServicer):
    """The receiving side: authenticates each stream by its TLS certificate's CN."""

    def __init__(
        self,
        *,
        on_message: InboundHandler,
        block_source: BlockSource,
        is_validator: MembershipCheck,
        metrics: NodeMetrics,
        settings: PeerSettings,
        max_streams_per_peer: int = 4,
        certificate_pin: CertificatePin = lambda org: None,
        former_member_limit: FormerMemberLimit = lambda org: None,
    ) -> None:
        self._on_message = on_message
        self._block_source = block_source
        self._is_validator = is_validator
        self._former_member_limit = former_member_limit
        self._certificate_pin = certificate_pin
        self._metrics = metrics
        self._settings = settings
        self._max_streams_per_peer = max_streams_per_peer
        self._open_calls: dict[str, int] = {}
        # The open Stream handlers (task -> sender), and those revoke_departed cancelled.
        self._streams: dict[asyncio.Task[Any], str] = {}
        self._revoked: set[asyncio.Task[Any]] = set()
        self._refusals = SummaryLog(log, "peer_calls_refused", "peer", REFUSAL_LOG_INTERVAL_S)

    def open_calls(self, org: str) -> int:
        return self._open_calls.get(org, 0)

    def revoke_departed(self) -> None:
        """Cut the open streams of every sender that is no validator any more (the node calls
        this after each change of the set): each ends PERMISSION_DENIED, as a new call would."""
        for task, sender in self._streams.items():
            if not self._is_validator(sender) and task not in self._revoked:
                self._revoked.add(task)
                task.cancel()

    def flush_logs(self) -> None:
        """Write the refusal summaries that are due (the node calls this every second)."""
        self._refusals.flush()

    async def _authenticate(
        self, context: grpc.aio.ServicerContext, *, former_member: bool = False
    ) -> str:
        """The calling node's org, or the call is refused (PERMISSION_DENIED). `former_member`:
        the caller checked that this org, no validator now, may read what it was a member of."""
        org = peer_org_of(context)
        if org is None or not (former_member or self._is_validator(org)):
            self._metrics.refuse_connection(org or "unknown")
            self._metrics.drop("transport.not_validator")
            log_event(log, "peer_refused", logging.WARNING, peer=org, rule="not a validator")
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate CN {org!r} is not a validator of the current set"
                if org is not None
                else "the certificate is no node certificate (a client's certificate never "
                "speaks for its org's node)",
            )
        assert org is not None
        pin = self._certificate_pin(org)
        if pin is not None and not _presents(context, pin):
            self._metrics.refuse_connection(org)
            self._metrics.drop("transport.certificate_not_pinned")
            log_event(
                log, "peer_refused", logging.WARNING, peer=org, rule="not the pinned certificate"
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{org}'s node certificate is not the one its add_org pinned (tls_cert_sha256)",
            )
        return org

    async def _open_call(
        self, context: grpc.aio.ServicerContext, *, former_member: bool = False
    ) -> str:
        """Authenticate a call and take one of its peer's call slots (give it back with
        `_close_call`); refuse it when the peer has all of them open."""
        org = await self._authenticate(context, former_member=former_member)
        if self._open_calls.get(org, 0) >= self._max_streams_per_peer:
            self._metrics.drop("transport.too_many_streams")
            rule = f"at most connections.max_streams_per_peer={self._max_streams_per_peer} open"
            self._refusals.note(org, "too_many_streams", example=rule)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{org}: {rule}")
        self._open_calls[org] = self._open_calls.get(org, 0) + 1
        return org

    def _close_call(self, org: str) -> None:
        left = self._open_calls[org] - 1
        if left:
            self._open_calls[org] = left
        else:
            del self._open_calls[org]

    async def Stream(
        self,
        request_iterator: AsyncIterator[peer_pb2.PeerMessage],
        context: grpc.aio.ServicerContext,
    ) -> peer_pb2.PeerAck:
        sender = await self._open_call(context)
        stream = InboundStream(sender, time.monotonic())
        task = asyncio.current_task()
        assert task is not None
        self._streams[task] = sender
        try:
            log_event(log, "peer_stream_open", peer=sender)
            received = await self._read_stream(sender, request_iterator, stream)
            log_event(log, "peer_stream_closed", peer=sender, received=received)
            return peer_pb2.PeerAck(received=received)
        except asyncio.CancelledError:
            if task not in self._revoked:
                raise  # the call ended (the peer went away, or the server stops)
            task.uncancel()  # our own cut (revoke_departed): refuse the stream by name
            await self._authenticate(context)
            return peer_pb2.PeerAck()  # admitted again meanwhile: it redials
        finally:
            del self._streams[task]
            self._revoked.discard(task)
            self._close_call(sender)

    async def _read_stream(
        self,
        sender: str,
        request_iterator: AsyncIterator[peer_pb2.PeerMessage],
        stream: InboundStream,
    ) -> int:
        """Hand each message of one stream to the node; returns how many were read."""
        received = 0
        async for message in request_iterator:
            received += 1
            payload = decode_payload(message)
            if payload is None:
                self._metrics.drop("transport.undecodable")
                continue
            try:
                pause_s = self._on_message(sender, payload, stream)
            except Exception:
                # The handler's bug must not cut the link; count it and keep reading.
                self._metrics.drop("transport.handler_bug")
                log.exception("peer_handler_failed")
                continue
            if pause_s:
                await asyncio.sleep(pause_s)
        return received

    async def SyncBlocks(
        self, request: peer_pb2.SyncRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[peer_pb2.SyncedBlock]:
        org = peer_org_of(context)
        limit = None
        if org is not None and not self._is_validator(org):
            limit = self._former_member_limit(org)
        if limit is not None and request.from_height > limit:
            limit = None  # nothing it may read: refused as any non-validator
        org = await self._open_call(context, former_member=limit is not None)
        try:
            if request.to_height < request.from_height:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "to_height: must be >= from_height"
                )
            # A named limit on blocks per request: a lagging node asks again from where it got.
            last = min(request.to_height, request.from_height + self._settings.sync_max_blocks - 1)
            if limit is not None:
                last = min(last, limit)  # a former validator reads up to its last epoch's end
            for block in self._block_source(request.from_height, last):
                yield peer_pb2.SyncedBlock(
                    height=block.height,
                    consensus_block=block.consensus_block,
                    commit_qc=block.commit_qc,
                    header=block.header,
                    certificate=block.certificate,
                )
        finally:
            self._close_call(org)


@dataclass(slots=True)
class _PeerLink:
    org: str
    address: Address
    queue: asyncio.Queue[peer_pb2.PeerMessage]
    task: asyncio.Task[None] | None = None
    connected: bool = False
    connections: int = 0
    failures: int = 0  # consecutive failed or refused attempts
    channel: grpc.aio.Channel | None = field(default=None)
    # The last message before retire_peer closes the link, and the event set once it is written.
    farewell: tuple[peer_pb2.PeerMessage, asyncio.Event] | None = None


class PeerTransport:
    """The sending side: one bounded queue and one reconnecting stream task per peer."""

    def __init__(
        self,
        *,
        org: str,
        material: TlsMaterial,
        peers: Mapping[str, Address],
        metrics: NodeMetrics,
        settings: PeerSettings,
    ) -> None:
        assert org not in peers, "a node is not its own peer"
        self.org = org
        self._credentials = peer_channel_credentials(material)
        self._metrics = metrics
        self._settings = settings
        self._links = {
            peer: _PeerLink(peer, address, asyncio.Queue(settings.queue_max_messages))
            for peer, address in sorted(peers.items())
        }
        self._stopping = False
        self._started = False

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._links)

    def is_connected(self, peer: str) -> bool:
        link = self._links.get(peer)
        return link is not None and link.connected

    def connections(self, peer: str) -> int:
        """How many times the stream to `peer` was (re)established."""
        return self._links[peer].connections

    def failures(self, peer: str) -> int:
        """Consecutive failed or refused attempts to reach `peer` (0 while its stream is up)."""
        return self._links[peer].failures

    def queued(self, peer: str) -> int:
        return self._links[peer].queue.qsize()

    def start(self) -> None:
        self._started = True
        for link in self._links.values():
            self._start_link(link)

    def _start_link(self, link: _PeerLink) -> None:
        assert link.task is None
        self._metrics.set_peer_connected(link.org, False)
        link.task = asyncio.get_running_loop().create_task(
            self._run_link(link), name=f"peer-{link.org}"
        )

    def add_peer(self, org: str, address: Address) -> bool:
        """Dial one more peer (an org joining the validator set, at the peer_address its
        add_org recorded); False when it is this node or already a peer."""
        if org == self.org or org in self._links or self._stopping:
            return False
        link = _PeerLink(org, address, asyncio.Queue(self._settings.queue_max_messages))
        self._links = dict(sorted({**self._links, org: link}.items()))
        if self._started:
            self._start_link(link)
        log_event(log, "peer_added", peer=org, address=str(address))
        return True

    @property
    def started(self) -> bool:
        return self._started

    def forget_peer(self, org: str) -> bool:
        """Before `start`: leave a configured peer out (its org left the validator set)."""
        assert not self._started, "a running link is retired with retire_peer"
        return self._links.pop(org, None) is not None

    async def retire_peer(self, org: str, farewell: PeerPayload | None = None) -> bool:
        """Stop dialing a peer (its org left the validator set); False if it was none. A
        `farewell` is written first if the link is up (within FAREWELL_TIMEOUT_S): the org that
        left gets the certificate that ended its epoch, which no one would send it later."""
        link = self._links.pop(org, None)
        if link is None:
            return False
        if farewell is not None and link.connected:
            written = asyncio.Event()
            link.farewell = (encode_payload(farewell), written)
            if self._enqueue(link, link.farewell[0]):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FAREWELL_TIMEOUT_S):
                        await written.wait()
            log_event(log, "peer_farewell", peer=org, written=written.is_set())
        if link.task is not None:
            link.task.cancel()
            await asyncio.gather(link.task, return_exceptions=True)
        if link.channel is not None:
            await link.channel.close()
        self._metrics.set_peer_connected(org, False)
        log_event(log, "peer_retired", peer=org)
        return True

    async def stop(self) -> None:
        self._stopping = True
        tasks = [link.task for link in self._links.values() if link.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in self._links.values():
            if link.channel is not None:
                await link.channel.close()
            link.task = None

    def send(self, to: str, payload: PeerPayload) -> bool:
        """Queue a message for one peer; False (and counted) when dropped. Never blocks."""
        link = self._links.get(to)
        if link is None:
            self._metrics.drop("transport.no_link")
            return False
        message = encode_payload(payload)
        if message.ByteSize() > self._settings.max_message_bytes:
            self._metrics.drop("transport.oversize")
            return False
        return self._enqueue(link, message)

    def broadcast(self, payload: PeerPayload) -> None:
        """Queue a message for every peer (not this node). Never blocks."""
        message = encode_payload(payload)
        if message.ByteSize() > self._settings.max_message_bytes:
            self._metrics.drop("transport.oversize", len(self._links))
            return
        for link in self._links.values():
            self._enqueue(link, message)

    def _enqueue(self, link: _PeerLink, message: peer_pb2.PeerMessage) -> bool:
        try:
            link.queue.put_nowait(message)
        except asyncio.QueueFull:
            self._metrics.drop("transport.queue_full")
            return False
        return True

    def _channel(self, link: _PeerLink) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            str(link.address), self._credentials, options=channel_options(self._settings, link.org)
        )

    async def _run_link(self, link: _PeerLink) -> None:
        backoff_ms = self._settings.reconnect_min_ms
        while not self._stopping:
            link.channel = self._channel(link)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the connection completes, and stop() would hang.
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await link.channel.channel_ready()
                link.connected = True
                link.connections += 1
                self._metrics.set_peer_connected(link.org, True)
                log_event(log, "peer_connected", peer=link.org, address=str(link.address))
                stub = peer_pb2_grpc.PeerStub(link.channel)  # type: ignore[no-untyped-call]
                await self._pump(link, stub.Stream())
                link.failures, backoff_ms = 0, self._settings.reconnect_min_ms
            except (grpc.RpcError, TimeoutError, asyncio.InvalidStateError) as exc:
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
                if link.connected and code not in REFUSED_CODES:
                    # The stream was up and broke: a new outage, retried soon and logged.
                    link.failures, backoff_ms = 0, self._settings.reconnect_min_ms
                # Loud once per outage, quiet while the peer stays down or keeps refusing us.
                level = logging.INFO if link.failures == 0 else logging.DEBUG
                link.failures += 1
                reason = code.name if code is not None else "timeout"
                log_event(log, "peer_link_down", level, peer=link.org, reason=reason)
            except Exception:
                # Our bug, but one peer's link must not die silently: log it and reconnect.
                log.exception("peer_link_failed")
            finally:
                if link.connected:
                    link.connected = False
                    self._metrics.set_peer_connected(link.org, False)
                await link.channel.close()
                link.channel = None
            await asyncio.sleep(backoff_ms / 1000)
            backoff_ms = min(backoff_ms * 2, self._settings.reconnect_max_ms)

    async def _pump(self, link: _PeerLink, call: grpc.aio.StreamUnaryCall) -> None:
        """Write queued messages into one open stream until the stream ends (then raise its
        error). This task alone takes from the queue, so a dead stream never keeps a reader
        that would swallow messages meant for the next one."""
        ended: asyncio.Future[peer_pb2.PeerAck] = asyncio.ensure_future(call)
        taking: asyncio.Future[peer_pb2.PeerMessage] | None = None
        try:
            while True:
                taking = asyncio.ensure_future(link.queue.get())
                either: set[asyncio.Future[Any]] = {taking, ended}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if ended.done():
                    if taking.done() and not taking.cancelled():
                        self._metrics.drop("transport.link_down")
                    taking.cancel()
                    ended.result()  # raises the stream's error
                    return
                await self._write(link, call, taking.result())
                # Drain what is already queued without a wait per message; a dead stream makes
                # write raise, and the message in hand is lost like any other on a dead link.
                while not link.queue.empty() and not ended.done():
                    await self._write(link, call, link.queue.get_nowait())
        finally:
            if taking is not None and not taking.done():
                taking.cancel()  # no reader may outlive this stream
            ended.cancel()
            call.cancel()

    async def fetch_blocks(
        self, peer: str, from_height: int, to_height: int
    ) -> AsyncIterator[SyncedBlockData]:
        """Committed blocks [from_height, to_height] from a peer (at most its sync_max_blocks
        per call). The caller checks each block's certificate before applying it."""
        link = self._links.get(peer)
        if link is None:
            return
        async with self._channel(link) as channel:
            stub = peer_pb2_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]
            request = peer_pb2.SyncRequest(from_height=from_height, to_height=to_height)
            async for block in stub.SyncBlocks(request, timeout=CONNECT_TIMEOUT_S * 6):
                yield SyncedBlockData(
                    height=block.height,
                    consensus_block=block.consensus_block,
                    commit_qc=block.commit_qc,
                    header=block.header,
                    certificate=block.certificate,
                )

    @staticmethod
    async def _write(
        link: _PeerLink, call: grpc.aio.StreamUnaryCall, message: peer_pb2.PeerMessage
    ) -> None:
        await call.write(message)
        if link.farewell is not None and message is link.farewell[0]:
            link.farewell[1].set()
