"""Prometheus metrics of one node (docs/design.md §9) on its own CollectorRegistry, so several
nodes in one process (tests) never collide, and the HTTP exposition server on the metrics port.

tx/s is derived by Prometheus: rate(kledger_committed_txs_total[1m]).
Label sets are bounded: `reason` takes values from DROP_REASONS / REFUSAL_REASONS, `peer` the
org ids of the validator set.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

# Why a peer message was dropped (the `reason` label of kledger_dropped_messages_total).
DROP_REASONS = (
    "queue_full",
    "oversize",
    "undecodable",
    "not_validator",
    "inbox_full",
    "invalid",
    "link_down",
    "mempool_full",
    "admission_bug",
)


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    """Unlabelled metrics are children bound to this node's org label; the labelled ones
    (dropped messages, refused connections, peer state, submissions) go through the methods."""

    org: str
    registry: CollectorRegistry
    height: Gauge
    round: Gauge
    commits: Counter
    committed_txs: Counter
    mempool_txs: Gauge
    mempool_bytes: Gauge
    view_changes: Counter
    sync_target_height: Gauge
    synced_blocks: Counter
    store_bytes: Gauge
    dropped_messages: Counter
    refused_connections: Counter
    peer_connected: Gauge
    submitted_txs: Counter

    @staticmethod
    def create(org: str) -> NodeMetrics:
        registry = CollectorRegistry(auto_describe=True)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, ("org",), registry=registry).labels(org=org)

        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, ("org",), registry=registry).labels(org=org)

        return NodeMetrics(
            org=org,
            registry=registry,
            height=gauge("kledger_height", "height of the last committed block"),
            round=gauge("kledger_round", "current consensus round"),
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
            dropped_messages=Counter(
                "kledger_dropped_messages",
                "peer messages dropped, by reason",
                ("org", "reason"),
                registry=registry,
            ),
            refused_connections=Counter(
                "kledger_refused_peer_connections",
                "peer streams refused: certificate CN not a validator",
                ("org", "peer"),
                registry=registry,
            ),
            peer_connected=Gauge(
                "kledger_peer_connected",
                "1 while the outbound stream to a peer is open",
                ("org", "peer"),
                registry=registry,
            ),
            submitted_txs=Counter(
                "kledger_submitted_txs",
                "client transactions by admission result",
                ("org", "status"),
                registry=registry,
            ),
        )

    def drop(self, reason: str, count: int = 1) -> None:
        assert reason in DROP_REASONS, reason
        self.dropped_messages.labels(org=self.org, reason=reason).inc(count)

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


def start_metrics_server(metrics: NodeMetrics, host: str, port: int) -> MetricsServer:
    """Serve /metrics over HTTP on host:port (port 0 picks a free one) in a daemon thread."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(server, thread)
