"""Canonical msgpack: the fast encoder and decoder give exactly the bytes and the refusals of the
plain recursive definition (kept here as the reference), on random and on edge-case values."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.node.chain import canonical
from kledger.node.errors import DecodeError

INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def reference_normalize(value: Any, depth: int) -> Any:
    """The definition: the module's original walk, one call per node."""
    if depth > canonical.MAX_DEPTH:
        raise DecodeError(f"nesting deeper than {canonical.MAX_DEPTH}")
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise DecodeError(f"integer {value} out of the 64-bit range")
        return value
    if isinstance(value, list | tuple):
        return [reference_normalize(item, depth + 1) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise DecodeError(f"map key {key!r} is not a string")
        return {
            key: reference_normalize(value[key], depth + 1)
            for key in sorted(value, key=lambda k: k.encode("utf-8"))
        }
    raise DecodeError(f"type {type(value).__name__} has no canonical encoding")


def reference_encode(value: Any) -> bytes:
    packed: bytes = msgpack.packb(reference_normalize(value, 0), use_bin_type=True)
    return packed


def outcome(encode: Any, value: Any) -> tuple[str, object]:
    try:
        return "bytes", encode(value)
    except DecodeError as exc:
        return "refused", exc.message


leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN - 3, max_value=INT_MAX + 3)
    | st.sampled_from([INT_MIN, INT_MAX, -1, 0, 127, 128, 255, 256, 2**32, -(2**31) - 1])
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.floats(allow_nan=False)
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=6), children, max_size=5)
        | st.dictionaries(
            st.text(max_size=3) | st.integers(0, 3) | st.binary(max_size=2), children, max_size=3
        )
    ),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None)
@given(values)
def test_encode_matches_the_reference_bytes_and_refusals(value: Any) -> None:
    assert outcome(canonical.encode, value) == outcome(reference_encode, value)


def nested(depth: int, leaf: Any, as_map: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_map else [value]
    return value


@pytest.mark.parametrize("as_map", [True, False])
@pytest.mark.parametrize("leaf", [1, "s", b"b", None, True, [], {}, 2**64, 1.5])
@pytest.mark.parametrize("depth", [31, 32, 33])
def test_depth_limit_matches_the_reference_at_every_kind_of_leaf(
    depth: int, leaf: Any, as_map: bool
) -> None:
    value = nested(depth, leaf, as_map)
    assert outcome(canonical.encode, value) == outcome(reference_encode, value)


def test_keys_sort_by_utf8_bytes_across_scripts() -> None:
    keys = ["z", "a", "é", "한", "\U0001f3b5", "ﬀ", "A", "", "a\x00", "\x7f", "\u0800", "\uffff"]
    value = {key: i for i, key in enumerate(keys)}
    assert canonical.encode(value) == reference_encode(value)
    assert list(canonical.decode(canonical.encode(value))) == sorted(keys, key=str.encode)


class Text(str):
    pass


class Number(int):
    pass


def test_subclasses_and_tuples_encode_like_the_reference() -> None:
    value = {Text("b"): Number(5), "a": (Text("x"), [Number(2**63)]), Text("c"): {"y": ()}}
    assert canonical.encode(value) == reference_encode(value)
    with pytest.raises(DecodeError) as info:
        canonical.encode({"a": Number(2**64)})
    assert "out of the 64-bit range" in info.value.message


@settings(max_examples=600, deadline=None)
@given(values)
def test_decode_accepts_exactly_the_canonical_bytes(value: Any) -> None:
    kind, encoded = outcome(reference_encode, value)
    if kind == "refused":
        return
    assert isinstance(encoded, bytes)
    assert reference_encode(canonical.decode(encoded)) == encoded
    # The same value packed without sorting: accepted only when it happens to be canonical.
    loose = msgpack.packb(value, use_bin_type=True)
    try:
        canonical.decode(loose)
    except DecodeError:
        assert loose != encoded
    else:
        assert loose == encoded


@settings(max_examples=300, deadline=None)
@given(values)
def test_decode_stored_reads_back_what_encode_wrote(value: Any) -> None:
    kind, encoded = outcome(reference_encode, value)
    if kind == "refused":
        return
    assert isinstance(encoded, bytes)
    assert canonical.decode_stored(encoded) == canonical.decode(encoded)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\xd4\x01\x00"])
def test_decode_stored_refuses_damaged_bytes(data: bytes) -> None:
    with pytest.raises(DecodeError):
        canonical.decode_stored(data)
