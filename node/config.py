"""The node's configuration: one JSON file per node (`node.json`), documented in docs/node.md.

Rules it keeps:
- every field has a default except `org`; unknown fields are refused in every section,
  `consensus` included (a typo such as `consensus.round_timout_ms` must not be silently
  ignored);
- paths are relative to the config file's directory, so a cluster directory can be moved;
- addresses are data (`host:port`), so the same file runs a node on its own host;
- bad configuration is a ValueError naming the setting, raised at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kledger.consensus import CoreConfig
from kledger.node.chain.genesis import ORG_ID

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_PORT = 65_535
_HOST = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Listen:
    client: Address = Address("127.0.0.1", 7050)
    peer: Address = Address("127.0.0.1", 7051)
    metrics: Address = Address("127.0.0.1", 7052)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class MempoolSettings:
    max_txs: int = 100_000
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BatchingSettings:
    gossip_batch_max_txs: int = 500
    gossip_flush_ms: int = 20
    proposal_max_txs: int = 2_000


@dataclass(frozen=True, slots=True)
class PeerSettings:
    queue_max_messages: int = 10_000
    max_message_bytes: int = 16 * 1024 * 1024
    reconnect_min_ms: int = 100
    reconnect_max_ms: int = 5_000
    sync_max_blocks: int = 256


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """Bounded work per source (docs/node.md "Admission"): a source is a peer org (its TLS
    certificate) or a client connection (its address)."""

    # Threads checking registry state and Ed25519 signatures off the event loop.
    verify_threads: int = 2
    # Txs of one peer's gossip waiting for or in their checks; a batch beyond it is dropped.
    peer_inflight_txs: int = 4_000
    # The same per client connection (one SubmitBatch of MAX_BATCH_TXS fits)...
    connection_inflight_txs: int = 10_000
    # ...and for all client connections together; txs beyond either get RESOURCE_EXHAUSTED.
    client_inflight_txs: int = 40_000
    # A source whose batch carried a bad signature is refused without checks this long...
    bad_signature_penalty_ms: int = 10_000
    # ...and each of its refused batches holds its stream (or call) this long at most before
    # the next is read, so flow control slows the sender instead of the node reading junk.
    throttled_pause_ms: int = 1_000
    # Refusals are logged as one summary line per source at most this often.
    refusal_log_interval_ms: int = 10_000


# Descriptors a node needs besides its connections: LevelDB's files, gRPC's own (epoll,
# wakeup fds), the links it dials to its peers, logs, /proc reads. Checked at start-up against
# the open-files limit together with the connection limits below.
RESERVED_DESCRIPTORS = 256


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Connections are a limited resource (docs/node.md "Connections"): every port has a cap,
    and the caps plus RESERVED_DESCRIPTORS must fit the process's open-files limit."""

    # Concurrent TCP connections per port, handshaking ones included; more are closed at once.
    client_max_connections: int = 256
    peer_max_connections: int = 32
    metrics_max_connections: int = 8
    # Concurrent calls (HTTP/2 streams) on one connection, either gRPC port.
    max_streams_per_connection: int = 64
    # Open Peer calls (Stream, SyncBlocks) of one peer org, over all its connections.
    max_streams_per_peer: int = 4
    # A connection that has not finished its TLS handshake by then is closed.
    handshake_timeout_ms: int = 10_000
    # A connection without a call for this long is closed (GOAWAY).
    idle_timeout_ms: int = 300_000
    # The server pings each connection this often and closes it when the ping goes unanswered.
    keepalive_time_ms: int = 60_000
    # A client pinging more often than this is closed (too_many_pings); peers ping every 10 s.
    min_ping_interval_ms: int = 5_000

    def descriptors_needed(self) -> int:
        """Open files the node may hold at once with every port full."""
        return (
            self.client_max_connections
            + self.peer_max_connections
            + self.metrics_max_connections
            + RESERVED_DESCRIPTORS
        )


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """The store (docs/node.md "State retention")."""

    # State proofs work at the last this many heights; older state-tree records are pruned in
    # the background (the tx log and blocks are kept forever).
    state_retention_blocks: int = 10_000


@dataclass(frozen=True, slots=True)
class TestingSettings:
    """Fault injection for tests and campaigns, never for production (docs/node.md)."""

    byzantine_proposer: bool = False  # propose junk txs beside honest ones (ordering/byzantine)
    byzantine_seed: int = 1
    clock_offset_ms: int = 0  # the consensus clock runs this far ahead (negative: behind)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    org: str
    genesis: Path
    validator_key: Path
    data_dir: Path
    tls: TlsFiles
    listen: Listen = field(default_factory=Listen)
    peers: dict[str, Address] = field(default_factory=dict)
    consensus: dict[str, int] = field(default_factory=dict)
    mempool: MempoolSettings = field(default_factory=MempoolSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    peer: PeerSettings = field(default_factory=PeerSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    connections: ConnectionSettings = field(default_factory=ConnectionSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    log_level: str = "INFO"
    testing: TestingSettings = field(default_factory=TestingSettings)
    # The safety record (node/storage/safety_record.py); None: `safety.bin` beside data_dir, so
    # moving a damaged data_dir aside keeps it.
    safety_record: Path | None = None
    # Key rotation (docs/node.md "Epochs"): the key a change_validator names for this org; the
    # node signs each epoch with whichever of its two keys that epoch's set names.
    next_validator_key: Path | None = None
    # An org added by governance starts its node with a brand-new store as a non-voting
    # follower; it learns the chain from its peers (docs/node.md "Epochs").
    joining: bool = False

    @property
    def safety_record_path(self) -> Path:
        if self.safety_record is not None:
            return self.safety_record
        return self.data_dir.parent / "safety.bin"

    def core_config(self) -> CoreConfig:
        """The consensus core's settings: its defaults with this file's `consensus` overrides."""
        return CoreConfig(**self.consensus)

    def to_json(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The JSON form; paths relative to `relative_to` when given (the config's directory)."""

        def path(value: Path) -> str:
            if relative_to is None:
                return str(value)
            target, base = value.resolve(), relative_to.resolve()
            # Relative when both share more than the filesystem root, so the directory can move.
            if os.path.commonpath([target, base]) == target.anchor:
                return str(target)
            return os.path.relpath(target, base)

        return {
            "org": self.org,
            "genesis": path(self.genesis),
            "validator_key": path(self.validator_key),
            "data_dir": path(self.data_dir),
            "safety_record": path(self.safety_record_path),
            "listen": {
                "client": str(self.listen.client),
                "peer": str(self.listen.peer),
                "metrics": str(self.listen.metrics),
            },
            "tls": {
                "ca": path(self.tls.ca),
                "cert": path(self.tls.cert),
                "key": path(self.tls.key),
            },
            "peers": {org: str(address) for org, address in sorted(self.peers.items())},
            "consensus": dict(sorted(self.consensus.items())),
            "mempool": _settings_json(self.mempool),
            "batching": _settings_json(self.batching),
            "peer": _settings_json(self.peer),
            "admission": _settings_json(self.admission),
            "connections": _settings_json(self.connections),
            "storage": _settings_json(self.storage),
            "log_level": self.log_level,
            **(
                {"next_validator_key": path(self.next_validator_key)}
                if self.next_validator_key is not None
                else {}
            ),
            **({"joining": True} if self.joining else {}),
            **(
                {"testing": dataclasses.asdict(self.testing)}
                if self.testing != TestingSettings()
                else {}
            ),
        }


def parse_address(value: Any, name: str) -> Address:
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"{name}: must be a 'host:port' string, got {value!r}")
    host, _, port_text = value.rpartition(":")
    if not _HOST.match(host):
        raise ValueError(f"{name}: {host!r} is not a host name or address")
    if not port_text.isdigit() or not 0 <= int(port_text) <= MAX_PORT:
        raise ValueError(f"{name}: port must be 0..{MAX_PORT}, got {port_text!r}")
    return Address(host.strip("[]"), int(port_text))


def load_config(path: Path) -> NodeConfig:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"config {path}: cannot read ({exc})") from None
    return parse_config(raw, Path(path).resolve().parent)


def save_config(path: Path, config: NodeConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_json(path.parent), indent=2) + "\n")


_TOP_LEVEL = frozenset(
    {
        "org",
        "genesis",
        "validator_key",
        "data_dir",
        "safety_record",
        "listen",
        "tls",
        "peers",
        "consensus",
        "mempool",
        "batching",
        "peer",
        "admission",
        "connections",
        "storage",
        "log_level",
        "testing",
        "next_validator_key",
        "joining",
    }
)


def parse_config(raw: Any, base_dir: Path) -> NodeConfig:
    """Validate a config document; relative paths resolve against `base_dir`."""
    if not isinstance(raw, dict):
        raise ValueError("config: must be a JSON object")
    unknown = set(raw) - _TOP_LEVEL
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: not a setting (known: {sorted(_TOP_LEVEL)})")
    org = raw.get("org")
    if not isinstance(org, str) or not ORG_ID.match(org):
        raise ValueError(f"org: must match {ORG_ID.pattern}, got {org!r}")

    def path(value: Any, name: str, default: str | None = None) -> Path:
        if value is None and default is not None:
            value = default
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name}: must be a path string")
        candidate = Path(value)
        return candidate if candidate.is_absolute() else base_dir / candidate

    listen_raw = _section(raw, "listen")
    _known(listen_raw, "listen", {"client", "peer", "metrics"})
    defaults = Listen()
    listen = Listen(
        client=_address_or(listen_raw, "client", defaults.client, "listen"),
        peer=_address_or(listen_raw, "peer", defaults.peer, "listen"),
        metrics=_address_or(listen_raw, "metrics", defaults.metrics, "listen"),
    )
    tls_raw = _section(raw, "tls")
    _known(tls_raw, "tls", {"ca", "cert", "key"})
    tls = TlsFiles(
        ca=path(tls_raw.get("ca"), "tls.ca", "../../ca/ca.pem"),
        cert=path(tls_raw.get("cert"), "tls.cert", "tls.pem"),
        key=path(tls_raw.get("key"), "tls.key", "tls.key"),
    )
    peers_raw = _section(raw, "peers")
    peers: dict[str, Address] = {}
    for peer_org, address in peers_raw.items():
        if not ORG_ID.match(peer_org):
            raise ValueError(f"peers.{peer_org}: org id must match {ORG_ID.pattern}")
        peers[peer_org] = parse_address(address, f"peers.{peer_org}")
    if org in peers:
        raise ValueError(f"peers.{org}: a node does not list itself as a peer")
    consensus_raw = _section(raw, "consensus")
    _known(consensus_raw, "consensus", {f.name for f in dataclasses.fields(CoreConfig)})
    for name, value in consensus_raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"consensus.{name}: must be a non-negative integer")
    try:
        CoreConfig(**consensus_raw)
    except ValueError as exc:  # "CoreConfig.x must be positive": name the setting as written
        raise ValueError(str(exc).replace("CoreConfig.", "consensus.")) from None
    log_level = raw.get("log_level", "INFO")
    if log_level not in LOG_LEVELS:
        raise ValueError(f"log_level: must be one of {list(LOG_LEVELS)}, got {log_level!r}")
    peer_settings = _positive_settings(PeerSettings, _section(raw, "peer"), "peer")
    if peer_settings.reconnect_min_ms > peer_settings.reconnect_max_ms:
        raise ValueError("peer.reconnect_min_ms: must not exceed peer.reconnect_max_ms")
    testing_raw = _section(raw, "testing")
    _known(testing_raw, "testing", {f.name for f in dataclasses.fields(TestingSettings)})
    if not isinstance(testing_raw.get("byzantine_proposer", False), bool):
        raise ValueError("testing.byzantine_proposer: must be true or false")
    for name in ("byzantine_seed", "clock_offset_ms"):
        value = testing_raw.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"testing.{name}: must be an integer")
    joining = raw.get("joining", False)
    if not isinstance(joining, bool):
        raise ValueError("joining: must be true or false")
    next_key = raw.get("next_validator_key")
    return NodeConfig(
        org=org,
        next_validator_key=None if next_key is None else path(next_key, "next_validator_key"),
        joining=joining,
        genesis=path(raw.get("genesis"), "genesis", "../../genesis.json"),
        validator_key=path(raw.get("validator_key"), "validator_key", "validator.key"),
        data_dir=path(raw.get("data_dir"), "data_dir", "data"),
        safety_record=path(raw.get("safety_record"), "safety_record", "safety.bin"),
        listen=listen,
        tls=tls,
        peers=peers,
        consensus=dict(consensus_raw),
        mempool=_positive_settings(MempoolSettings, _section(raw, "mempool"), "mempool"),
        batching=_positive_settings(BatchingSettings, _section(raw, "batching"), "batching"),
        peer=peer_settings,
        admission=_positive_settings(AdmissionSettings, _section(raw, "admission"), "admission"),
        connections=_positive_settings(
            ConnectionSettings, _section(raw, "connections"), "connections"
        ),
        storage=_positive_settings(StorageSettings, _section(raw, "storage"), "storage"),
        log_level=log_level,
        testing=TestingSettings(**testing_raw),
    )


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{name}: must be an object")
    return value


def _known(raw: dict[str, Any], name: str, known: set[str]) -> None:
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{name}.{sorted(unknown)[0]}: not a setting (known: {sorted(known)})")


def _address_or(raw: dict[str, Any], key: str, default: Address, section: str) -> Address:
    return parse_address(raw[key], f"{section}.{key}") if key in raw else default


def _positive_settings(kind: Any, raw: dict[str, Any], name: str) -> Any:
    known = set(kind.__dataclass_fields__)
    _known(raw, name, known)
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}.{key}: must be a positive integer, got {value!r}")
    return kind(**raw)


def _settings_json(settings: Any) -> dict[str, int]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}
