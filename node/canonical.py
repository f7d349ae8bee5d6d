"""Canonical msgpack: the one byte form of everything kledger signs or hashes.

Rules (a value has exactly one encoding):
- allowed types: None, bool, int (-2**63 .. 2**64-1), str (UTF-8), bytes, list, map with str keys;
  floats, ext types and non-str map keys are refused (floats make execution non-deterministic);
- maps are written with keys sorted by their UTF-8 bytes; ints in their shortest form; bytes as
  msgpack bin, str as msgpack str (msgpack-python already picks the shortest headers);
- decoding re-encodes and compares, so a non-canonical input (unsorted keys, long-form ints,
  duplicate keys) is refused instead of silently accepted with another hash.
"""

from __future__ import annotations

from typing import Any

import msgpack

from node.errors import DecodeError

MAX_DEPTH = 32
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _normalize(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise DecodeError(f"integer {value} out of the 64-bit range")
        return value
    if isinstance(value, list | tuple):
        return [_normalize(item, depth + 1) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise DecodeError(f"map key {key!r} is not a string")
        return {
            key: _normalize(value[key], depth + 1)
            for key in sorted(value, key=lambda k: k.encode("utf-8"))
        }
    raise DecodeError(f"type {type(value).__name__} has no canonical encoding")


def encode(value: Any) -> bytes:
    """The canonical bytes of `value`. Raises DecodeError for values outside the canonical set."""
    packed: bytes = msgpack.packb(_normalize(value, 0), use_bin_type=True)
    return packed


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack ext type {code} is not allowed")


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
