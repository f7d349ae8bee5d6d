"""The native build (setup.py: C extensions compiled by `pip install`) against its pure-Python
twin: the same bytes and the same refusals for any value, the native one is what runs unless
KLEDGER_PURE=1, and a whole pipeline run computes the same blocks, receipts, roots and proofs
in both builds (the bench-pipeline fingerprint: KLEDGER_PURE=1 also runs the state tree's pure
pages, whose own parity tests are tests/test_native_state_tree.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.node.chain import canonical
from kledger.node.errors import DecodeError

native = pytest.importorskip("kledger.node.chain._canonical_native")

INT_EDGES = [
    0,
    1,
    31,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2**32 - 1,
    2**32,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32768,
    -32769,
    -(2**31),
    -(2**31) - 1,
    -(2**63),
]
OUT_OF_RANGE = [2**64, -(2**63) - 1, 10**30, -(10**30)]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(INT_EDGES + OUT_OF_RANGE),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=40),
    st.text(min_size=250, max_size=300),
    st.binary(max_size=40),
    st.binary(min_size=250, max_size=300),
    st.floats(allow_nan=False),  # refused by both
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=20),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=8), children, max_size=20),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), children, max_size=4),
    ),
    max_leaves=60,
)


def _outcome(encode: Any, value: Any) -> tuple[str, Any]:
    try:
        return "bytes", encode(value)
    except DecodeError as refusal:
        return "refused", str(refusal)


def test_the_native_build_is_what_runs_unless_pure_is_asked_for() -> None:
    if os.environ.get(canonical.PURE_ENV) == "1":
        assert not canonical.NATIVE and canonical.encode is canonical.encode_pure
    else:
        assert canonical.NATIVE and canonical.encode is native.encode


@settings(max_examples=600, deadline=None)
@given(values)
def test_both_builds_give_the_same_bytes_or_the_same_refusal(value: Any) -> None:
    assert _outcome(native.encode, value) == _outcome(canonical.encode_pure, value)


@pytest.mark.parametrize(
    "value",
    [
        *INT_EDGES,
        *OUT_OF_RANGE,
        1.5,
        bytearray(b"x"),
        {1: "a"},
        {"b": 1, "a": [1, {"z": 2.0}]},
        {"ü": 1, "z": 2, "é": 3, "ab": 4, "a": 5},  # code point order = UTF-8 byte order
        "x" * 70_000,
        b"x" * 70_000,
        list(range(70_000)),
        {str(i): i for i in range(20)},
    ],
    ids=repr,
)
def test_edges_agree(value: Any) -> None:
    assert _outcome(native.encode, value) == _outcome(canonical.encode_pure, value)


def test_depth_is_refused_alike_at_the_limit() -> None:
    for depth in (31, 32, 33, 40):
        value: Any = 1
        for _ in range(depth):
            value = [value]
        assert _outcome(native.encode, value) == _outcome(canonical.encode_pure, value)
    deep: Any = {}
    for _ in range(33):
        deep = {"k": deep}
    assert _outcome(native.encode, deep)[0] == "refused"


def test_a_lone_surrogate_fails_alike() -> None:
    for encode in (native.encode, canonical.encode_pure):
        with pytest.raises(UnicodeEncodeError):
            encode({"a": "\ud800"})


def _pipeline_fingerprint(pure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != canonical.PURE_ENV}
    if pure:
        env[canonical.PURE_ENV] = "1"
    args = ["--txs", "90", "--block-txs", "25", "--proofs", "5", "--json"]
    code = (
        "import sys; from kledger.cluster.bench.pipeline import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout)
    assert report["committed_txs"] == report["ok_txs"] == 90
    fingerprint: dict[str, str] = report["fingerprint"]
    return fingerprint


def test_both_builds_compute_the_same_blocks_receipts_roots_and_proofs() -> None:
    native_run, pure_run = _pipeline_fingerprint(pure=False), _pipeline_fingerprint(pure=True)
    assert native_run == pure_run
    assert set(native_run) >= {
        "state_values_sha256",
        "receipts_sha256",
        "tx_log_root",
        "state_root",
    }
