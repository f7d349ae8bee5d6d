"""Canonical msgpack: the one byte form of everything kledger signs or hashes.

Rules (a value has exactly one encoding):
- allowed types: None, bool, int (-2**63 .. 2**64-1), str (UTF-8), bytes, list, map with str keys;
  floats, ext types and non-str map keys are refused (floats make execution non-deterministic);
- maps are written with keys sorted by their UTF-8 bytes; ints in their shortest form; bytes as
  msgpack bin, str as msgpack str (msgpack-python already picks the shortest headers);
- decoding re-encodes and compares, so a non-canonical input (unsorted keys, long-form ints,
  duplicate keys) is refused instead of silently accepted with another hash.

Two builds of `encode`, one rule: the C extension `_canonical_native` (compiled by `pip install`,
setup.py) and `encode_pure` here. The native one runs unless KLEDGER_PURE=1 or it is missing;
tests/test_native.py checks that both give the same bytes and the same refusals.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import msgpack

from kledger.node.errors import DecodeError

MAX_DEPTH = 32
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _utf8(key: str) -> bytes:
    return key.encode("utf-8")


def _sorted_keys(value: dict[Any, Any]) -> list[str]:
    """The map's keys in UTF-8 byte order, after refusing any key that is not a string."""
    exact = True
    for key in value:
        if type(key) is not str:
            if not isinstance(key, str):
                raise DecodeError(f"map key {key!r} is not a string")
            exact = False
    if exact:
        # UTF-8 preserves code point order, so plain str order is UTF-8 byte order (and this
        # sort runs in C, without a Python call per key).
        return sorted(value)
    return sorted(value, key=_utf8)


def _normalize(value: Any, depth: int) -> Any:
    """`value` with every map's keys in canonical order, tuples as lists; refuses what has no
    canonical encoding. Checks happen in the same order as the straightforward recursive walk
    (depth, then type, then map keys before values, values in key order), so a bad value gets
    the same refusal. Leaves (str, bytes, bool, None, int) of the exact built-in types are
    handled inline by their container: they are most of the nodes, and a Python call per leaf
    was most of the cost."""
    if depth > MAX_DEPTH:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH}")
    kind = type(value)
    if kind is dict:
        child = depth + 1
        leaf_ok = child <= MAX_DEPTH
        out = {}
        for key in _sorted_keys(value):
            item = value[key]
            item_kind = type(item)
            if leaf_ok and (
                item_kind is str
                or item_kind is bytes
                or item is None
                or item_kind is bool
                or (item_kind is int and _INT_MIN <= item <= _INT_MAX)
            ):
                out[key] = item
            else:
                out[key] = _normalize(item, child)
        return out
    if kind is list:
        child = depth + 1
        leaf_ok = child <= MAX_DEPTH
        items = []
        for item in value:
            item_kind = type(item)
            if leaf_ok and (
                item_kind is bytes
                or item_kind is str
                or item is None
                or item_kind is bool
                or (item_kind is int and _INT_MIN <= item <= _INT_MAX)
            ):
                items.append(item)
            else:
                items.append(_normalize(item, child))
        return items
    # Leaves met at the top, tuples and subclasses of the built-in types.
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise DecodeError(f"integer {value} out of the 64-bit range")
        return value
    if isinstance(value, list | tuple):
        return [_normalize(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: _normalize(value[key], depth + 1) for key in _sorted_keys(value)}
    raise DecodeError(f"type {type(value).__name__} has no canonical encoding")


def encode_pure(value: Any) -> bytes:
    """The canonical bytes of `value`. Raises DecodeError for values outside the canonical set."""
    packed: bytes = msgpack.packb(_normalize(value, 0), use_bin_type=True)
    return packed


PURE_ENV = "KLEDGER_PURE"  # "1": run the pure-Python builds of the native modules


def _native_encode() -> Callable[[Any], bytes] | None:
    if os.environ.get(PURE_ENV) == "1":
        return None
    try:
        from kledger.node.chain import _canonical_native
    except ImportError:  # not compiled (a source checkout without `pip install`)
        return None
    _canonical_native.init(DecodeError)
    return _canonical_native.encode


_native = _native_encode()
NATIVE = _native is not None
encode: Callable[[Any], bytes] = _native if _native is not None else encode_pure
"""The canonical bytes of `value` (the native build unless KLEDGER_PURE=1). Raises DecodeError
for values outside the canonical set."""


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack ext type {code} is not allowed")


def decode_stored(data: bytes) -> Any:
    """Decode a value this node encoded itself and kept in its own store (registry state).

    Such bytes were written by `encode`, so they are canonical by construction: proving it again
    by re-encoding (most of the cost of `decode`) is skipped. Malformed bytes still raise
    DecodeError. Never use it for bytes from a client, a peer or a proof: those take `decode`."""
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, ext_hook=_refuse_ext
        )
    except DecodeError:
        raise
    except Exception as exc:  # a damaged store: the same answer as `decode` gives
        raise DecodeError(f"not valid msgpack ({type(exc).__name__})") from None


def decode(data: bytes, *, max_bytes: int | None = None) -> Any:
    """Decode canonical bytes. Any malformed or non-canonical input raises DecodeError."""
    if max_bytes is not None and len(data) > max_bytes:
        raise DecodeError(f"{len(data)} bytes exceed the limit of {max_bytes}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises many types for hostile bytes; all mean "malformed"
        raise DecodeError(f"not valid msgpack ({type(exc).__name__})") from None
    if encode(value) != data:
        raise DecodeError("not in canonical form")
    return value
