"""Prometheus metrics of one node (docs/design.md §9) on its own CollectorRegistry, so several
nodes in one process (tests) never collide, and the HTTP exposition server on the metrics port.

tx/s is derived by Prometheus: rate(kledger_committed_txs_total[1m]).
Label sets are bounded: `reason` takes values from DROP_REASONS, `status` the refusal statuses,
`peer` the org ids of the validator set.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

# LevelDB's own figures per level (label `level`, 0..6), read from its `leveldb.stats` once a
# second: files and bytes now; and, since the store opened, the wall time, bytes read and bytes
# written of the compactions (memtable flushes included) whose output went into the level.
LEVELDB_LEVEL_FIGURES: dict[str, str] = {
    "kledger_leveldb_files": "LevelDB table files at the level",
    "kledger_leveldb_bytes": "bytes of the level's table files (LevelDB rounds to MiB)",
    "kledger_leveldb_compaction_seconds": "seconds of compactions into the level since open",
    "kledger_leveldb_compaction_read_bytes": "bytes read by compactions into the level since open",
    "kledger_leveldb_compaction_written_bytes": (
        "bytes written by compactions (and memtable flushes) into the level since open"
    ),
}


# Why a message was dropped: the `reason` label of kledger_dropped_messages_total, one name per
# cause, "<where>.<cause>". The consensus core, the driver and the certifier count in their own
# `dropped` tables (the core is pure), which the node exports as "consensus.*", "driver.*" and
# "certifier.*"; the transport and admission count here directly. tests/test_metrics_logs.py
# checks that every name counted anywhere is in this table and in docs/node.md.
DROP_REASONS: dict[str, str] = {
    "transport.queue_full": "outbound queue to a peer full (consensus tolerates loss)",
    "transport.oversize": "a message over peer.max_message_bytes, not sent",
    "transport.undecodable": "a peer sent bytes that are no peer message",
    "transport.not_validator": "a stream whose certificate names no validator",
    "transport.certificate_not_pinned": (
        "a joined org's stream with another certificate than its add_org pinned"
    ),
    "transport.no_link": "a message for an org that is no peer",
    "transport.link_down": "queued messages lost with a broken link",
    "transport.handler_bug": "a bug of ours while handling a peer message (logged with stack)",
    "transport.too_many_streams": "a peer call beyond connections.max_streams_per_peer open",
    "gossip.invalid_tx": "a gossiped tx refused by admission (the peer should have refused it)",
    "gossip.bad_signature": "a gossiped tx whose signature does not verify (throttles the peer)",
    "gossip.throttled": "a gossiped tx from a peer throttled for a recent bad signature",
    "gossip.over_budget": "a gossiped tx beyond admission.peer_inflight_txs waiting",
    "gossip.mempool_full": "a gossiped tx with no room in the mempool",
    "gossip.admission_bug": "a gossiped tx that hit a bug of ours (logged with stack)",
    "client.throttled": "a client tx from a connection throttled for a recent bad signature",
    "client.over_budget": "a client tx beyond the connection's or all clients' txs in flight",
    "driver.inbox_full": "consensus messages beyond max_inbox_messages waiting",
    "driver.malformed": "consensus bytes that do not decode",
    "driver.sync_failed": "a block sync from a peer that failed",
    "consensus.chain": "a message for another chain",
    "consensus.epoch": "a message for another epoch",
    "consensus.sender_mismatch": "a message whose author is not the peer that sent it",
    "consensus.not_member": "a message from a node outside the validator set",
    "consensus.not_leader": "a proposal from a node that does not lead its round",
    "consensus.old_round": "a message for a round already left",
    "consensus.future_round": "a message too far ahead (max_rounds_ahead)",
    "consensus.duplicate": "a message already received",
    "consensus.equivocation": "a second, different message of one author and round",
    "consensus.bad_signature": "a consensus message whose signature does not verify",
    "consensus.bad_certificate": "a QC or TC that does not verify",
    "consensus.invalid_block": "a block that does not extend its parent correctly",
    "consensus.invalid_payload": "a block whose payload the node refuses",
    "consensus.timestamp_ahead": "a block timestamped beyond max_clock_skew_ms ahead",
    "consensus.buffer_full": "a proposal waiting for its parent, beyond max_pending_messages",
    "consensus.tree_full": "a block beyond max_tree_blocks uncommitted blocks",
    "consensus.unsafe_vote": "a proposal the safety rules do not allow a vote for",
    "consensus.following": "a vote or timeout not sent: the store is behind the safety record",
    "consensus.unsafe_timeout": "a timeout the safety rules do not allow",
    "consensus.unsolicited": "a block response no request asked for",
    "consensus.unknown_block": "a request for a block this node does not have",
    "consensus.unknown_epoch": "an epoch request for an epoch whose end this node does not hold",
    "consensus.too_frequent": "a second epoch request from one peer within a round timeout",
    "certifier.not_a_validator": "a header signature from a non-validator",
    "certifier.already_certified": "a header signature for a height already certified",
    "certifier.too_far_ahead": "a header signature too far above the executed height",
    "certifier.bad_signature": "a header signature that does not verify",
    "certifier.duplicate": "a header signature already counted",
    "certifier.conflicting_header": "a signature over another header than this node executed",
    "certifier.uncertified_height_given_up": "signatures of a height left uncertified",
}


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    """Unlabelled metrics are children bound to this node's org label; the labelled ones
    (dropped messages, refused connections, peer state, submissions) go through the methods."""

    org: str
    registry: CollectorRegistry
    height: Gauge
    round: Gauge
    epoch: Gauge
    validators: Gauge
    validating: Gauge
    commits: Counter
    committed_txs: Counter
    mempool_txs: Gauge
    mempool_bytes: Gauge
    view_changes: Counter
    sync_target_height: Gauge
    synced_blocks: Counter
    store_bytes: Gauge
    leveldb_levels: dict[str, Gauge]  # LEVELDB_LEVEL_FIGURES name -> gauge by (org, db, level)
    clock_offset_ms: Gauge
    dropped_messages: Counter
    refused_connections: Counter
    peer_connected: Gauge
    submitted_txs: Counter
    equivocations: Counter
    restricted_reads: Counter
    access_denied: Counter

    @staticmethod
    def create(org: str) -> NodeMetrics:
        registry = CollectorRegistry(auto_describe=True)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, ("org",), registry=registry).labels(org=org)

        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, ("org",), registry=registry).labels(org=org)

        def by(name: str, text: str, label: str) -> Counter:
            return Counter(name, text, ("org", label), registry=registry)

        return NodeMetrics(
            org=org,
            registry=registry,
            height=gauge("kledger_height", "height of the last committed block"),
            round=gauge("kledger_round", "current consensus round"),
            epoch=gauge("kledger_epoch", "epoch consensus runs (its validator set's)"),
            validators=gauge("kledger_validators", "validators in the current epoch's set"),
            validating=gauge(
                "kledger_validating", "1 while this node's org is in the current set, else 0"
            ),
            commits=counter("kledger_commits", "committed blocks"),
            committed_txs=counter("kledger_committed_txs", "committed transactions"),
            mempool_txs=gauge("kledger_mempool_txs", "transactions in the mempool"),
            mempool_bytes=gauge("kledger_mempool_bytes", "bytes of transactions in the mempool"),
            view_changes=counter("kledger_view_changes", "rounds entered by a timeout certificate"),
            sync_target_height=gauge(
                "kledger_sync_target_height", "height block sync is catching up to"
            ),
            synced_blocks=counter("kledger_synced_blocks", "blocks applied from block sync"),
            store_bytes=gauge("kledger_store_bytes", "bytes of the LevelDB directory"),
            leveldb_levels={
                name: Gauge(name, text, ("org", "db", "level"), registry=registry)
                for name, text in LEVELDB_LEVEL_FIGURES.items()
            },
            clock_offset_ms=gauge(
                "kledger_clock_offset_ms",
                "median over peers of their proposals' clock minus ours on arrival",
            ),
            dropped_messages=by("kledger_dropped_messages", "messages dropped, by cause", "reason"),
            refused_connections=by(
                "kledger_refused_peer_connections",
                "peer streams refused: certificate CN not a validator",
                "peer",
            ),
            peer_connected=Gauge(
                "kledger_peer_connected",
                "1 while the outbound stream to a peer is open",
                ("org", "peer"),
                registry=registry,
            ),
            submitted_txs=by(
                "kledger_submitted_txs", "client transactions by admission result", "status"
            ),
            equivocations=by(
                "kledger_equivocations",
                "equivocations reported with evidence (both signed messages are in the log)",
                "author",
            ),
            restricted_reads=by(
                "kledger_restricted_reads",
                "restricted answers served on the client port, by access rule (each is audited)",
                "rule",
            ),
            access_denied=by(
                "kledger_access_denied",
                "client calls or records refused PERMISSION_DENIED, by access rule",
                "rule",
            ),
        )

    def drop(self, reason: str, count: int = 1) -> None:
        assert reason in DROP_REASONS, reason
        self.dropped_messages.labels(org=self.org, reason=reason).inc(count)

    def export_drops(self, where: str, counted: dict[str, int], exported: dict[str, int]) -> None:
        """Bring `kledger_dropped_messages_total{reason="<where>.<cause>"}` up to a component's
        own counts (`counted`, cause -> total); `exported` remembers what was already sent."""
        for cause, total in counted.items():
            name = f"{where}.{cause}"
            _bring_up(
                self.dropped_messages.labels(org=self.org, reason=name), name, total, exported
            )

    def export_equivocations(self, counted: dict[str, int], exported: dict[str, int]) -> None:
        """`kledger_equivocations_total{author}` up to the driver's evidence counts."""
        for author, total in counted.items():
            _bring_up(
                self.equivocations.labels(org=self.org, author=author), author, total, exported
            )

    def set_leveldb_level(
        self,
        *,
        db: str,
        level: int,
        files: int,
        size_bytes: int,
        compaction_s: float,
        read_bytes: int,
        written_bytes: int,
    ) -> None:
        """One level's figures of one of the store's LevelDBs (`db`: state, history or tree;
        the fields of node/storage/leveldb_stats.py LevelStats); the compaction ones count
        since the store opened, so a restart starts them at 0."""
        for name, value in (
            ("kledger_leveldb_files", files),
            ("kledger_leveldb_bytes", size_bytes),
            ("kledger_leveldb_compaction_seconds", compaction_s),
            ("kledger_leveldb_compaction_read_bytes", read_bytes),
            ("kledger_leveldb_compaction_written_bytes", written_bytes),
        ):
            self.leveldb_levels[name].labels(org=self.org, db=db, level=str(level)).set(value)

    def set_peer_connected(self, peer: str, connected: bool) -> None:
        self.peer_connected.labels(org=self.org, peer=peer).set(1 if connected else 0)

    def refuse_connection(self, peer: str) -> None:
        self.refused_connections.labels(org=self.org, peer=peer).inc()

    def count_submission(self, status: str) -> None:
        self.submitted_txs.labels(org=self.org, status=status).inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (tests and `kledger cluster status`); 0.0 when absent."""
        result = self.registry.get_sample_value(name, {"org": self.org, **labels})
        return 0.0 if result is None else result


@dataclass(slots=True)
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


# A metrics request that has not arrived whole by then is dropped with its connection.
METRICS_REQUEST_TIMEOUT_S = 10.0


class _QuietHandler(WSGIRequestHandler):
    timeout = METRICS_REQUEST_TIMEOUT_S  # an idle connection cannot hold its thread forever

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most `max_connections` at once: one more is closed at once
    (connections are a limited resource, docs/node.md "Connections")."""

    daemon_threads = True
    max_connections = 8

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._slots.release()


def start_metrics_server(
    metrics: NodeMetrics, host: str, port: int, max_connections: int = 8
) -> MetricsServer:
    """Serve /metrics over HTTP on host:port (port 0 picks a free one) in a daemon thread, at
    most `max_connections` connections at once."""

    class Server(_BoundedServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    Server.max_connections = max_connections
    server = make_server(
        host, port, make_wsgi_app(metrics.registry), Server, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread)


def _bring_up(child: Counter, name: str, total: int, exported: dict[str, int]) -> None:
    if total > exported.get(name, 0):
        child.inc(total - exported.get(name, 0))
        exported[name] = total
