"""node.json parsing: defaults, relative paths, round trip, and a ValueError naming the setting
for each kind of bad configuration; `kledger node start` refuses a bad one in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kledger.node.config import (
    Address,
    BatchingSettings,
    MempoolSettings,
    PeerSettings,
    load_config,
    parse_config,
    save_config,
)

MINIMAL: dict[str, Any] = {"org": "KOMCA"}


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, tmp_path)
    assert config.genesis == tmp_path / "../../genesis.json"
    assert config.validator_key == tmp_path / "validator.key"
    assert config.data_dir == tmp_path / "data"
    assert config.tls.cert == tmp_path / "tls.pem"
    assert config.listen.client == Address("127.0.0.1", 7050)
    assert config.mempool == MempoolSettings()
    assert config.batching == BatchingSettings()
    assert config.peer == PeerSettings()
    assert config.log_level == "INFO" and config.peers == {} and config.consensus == {}


def test_round_trip(tmp_path: Path) -> None:
    raw = {
        "org": "RIAK",
        "genesis": "/abs/genesis.json",
        "data_dir": "store",
        "listen": {"client": "0.0.0.0:9000", "peer": "10.0.0.2:9001", "metrics": "[::1]:9002"},
        "peers": {"KOMCA": "komca.example:7051"},
        "consensus": {"round_timeout_ms": 800, "max_round_timeout_ms": 8000},
        "mempool": {"max_txs": 10},
        "batching": {"gossip_flush_ms": 5},
        "peer": {"queue_max_messages": 7},
        "admission": {"peer_inflight_txs": 9},
        "connections": {"client_max_connections": 11},
        "log_level": "DEBUG",
    }
    path = tmp_path / "node" / "node.json"
    path.parent.mkdir()
    path.write_text(json.dumps(raw))
    config = load_config(path)
    assert config.genesis == Path("/abs/genesis.json")
    assert config.data_dir == path.parent / "store"
    assert config.listen.metrics == Address("::1", 9002)
    assert config.peers == {"KOMCA": Address("komca.example", 7051)}
    assert config.consensus["round_timeout_ms"] == 800
    assert config.mempool.max_txs == 10 and config.mempool.max_bytes == MempoolSettings().max_bytes
    assert config.peer.queue_max_messages == 7
    assert config.admission.peer_inflight_txs == 9
    assert config.connections.client_max_connections == 11
    save_config(tmp_path / "copy" / "node.json", config)
    again = load_config(tmp_path / "copy" / "node.json")
    for name in ("genesis", "validator_key", "data_dir"):
        assert getattr(again, name).resolve() == getattr(config, name).resolve()
    assert again.tls.cert.resolve() == config.tls.cert.resolve()
    assert json.loads((tmp_path / "copy" / "node.json").read_text())["genesis"] == (
        "/abs/genesis.json"
    )
    assert (again.listen, again.peers, again.consensus) == (
        config.listen,
        config.peers,
        config.consensus,
    )
    assert (again.mempool, again.batching, again.peer, again.log_level) == (
        config.mempool,
        config.batching,
        config.peer,
        config.log_level,
    )
    assert (again.admission, again.connections) == (config.admission, config.connections)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"org": "komca"}, "org"),
        ({"colour": 1}, "colour"),
        ({"listen": {"client": "nohostport"}}, "listen.client"),
        ({"listen": {"peer": "h:99999"}}, "listen.peer"),
        ({"listen": {"admin": "h:1"}}, "listen.admin"),
        ({"peers": {"RIAK": 7051}}, "peers.RIAK"),
        ({"peers": {"KOMCA": "h:1"}}, "peers.KOMCA"),
        ({"consensus": {"round_timeout_ms": -1}}, "consensus.round_timeout_ms"),
        ({"consensus": {"round_timeout_ms": True}}, "consensus.round_timeout_ms"),
        ({"consensus": {"round_timout_ms": 500}}, "consensus.round_timout_ms"),
        ({"consensus": {"max_payload_bytes": 0}}, "consensus.max_payload_bytes"),
        ({"testing": {"byzantine_proposer": "yes"}}, "testing.byzantine_proposer"),
        ({"testing": {"byzantine": True}}, "testing.byzantine"),
        ({"mempool": {"max_txs": 0}}, "mempool.max_txs"),
        ({"mempool": {"max_tx": 5}}, "mempool.max_tx"),
        ({"batching": {"proposal_max_txs": "10"}}, "batching.proposal_max_txs"),
        ({"peer": {"reconnect_min_ms": 9000}}, "peer.reconnect_min_ms"),
        ({"admission": {"verify_threads": 0}}, "admission.verify_threads"),
        ({"admission": {"verify_thread": 2}}, "admission.verify_thread"),
        ({"connections": {"idle_timeout_ms": -5}}, "connections.idle_timeout_ms"),
        ({"connections": {"max_connections": 5}}, "connections.max_connections"),
        ({"tls": {"ca": ""}}, "tls.ca"),
        ({"genesis": 5}, "genesis"),
        ({"log_level": "LOUD"}, "log_level"),
    ],
)
def test_bad_config_names_the_setting(tmp_path: Path, change: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        parse_config({**MINIMAL, **change}, tmp_path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_config(tmp_path / "bad.json")


def test_a_misspelt_setting_stops_the_node_at_start_in_one_line(tmp_path):
    """`kledger node start` refuses a config with a typo: exit 1, one line naming the setting,
    no traceback (the typo was once ignored, and a misspelt consensus key crashed later)."""
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"org": "KOMCA", "consensus": {"round_timout_ms": 500}}))
    run = subprocess.run(
        [sys.executable, "-m", "kledger.cluster.cli", "node", "start", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "consensus.round_timout_ms: not a setting" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
