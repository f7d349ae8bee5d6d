"""Canonical bytes for consensus types, with the standard library only.

consensus/ may not import msgpack (docs/design.md §2), so its types have their own tiny
binary form: fixed-width big-endian integers, length-prefixed byte strings and UTF-8 strings,
count-prefixed lists, a one-byte presence flag for optional values. A value has exactly one
encoding, so the bytes are fit to hash and sign.

Decoding is total: any input either yields a value or raises DecodeError (and only DecodeError),
with every length checked against a named bound before anything is allocated.
"""

from __future__ import annotations

import struct

MAX_BYTES_FIELD = 4 * 1024 * 1024  # payloads are bounded again by CoreConfig.max_payload_bytes
MAX_STRING_BYTES = 256  # chain ids, node ids
MAX_LIST_ITEMS = 1024  # signatures per certificate, blocks per response (bounded again by type)

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class DecodeError(ValueError):
    """The only exception any consensus decode raises, for any input bytes."""


class Writer:
    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        assert 0 <= value < 256
        self._parts.append(bytes((value,)))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(value))
        return self

    def raw(self, value: bytes) -> Writer:
        self._parts.append(value)
        return self

    def blob(self, value: bytes) -> Writer:
        assert len(value) <= MAX_BYTES_FIELD
        self._parts.append(_U32.pack(len(value)))
        self._parts.append(value)
        return self

    def text(self, value: str) -> Writer:
        raw = value.encode("utf-8")
        assert len(raw) <= MAX_STRING_BYTES
        self._parts.append(_U32.pack(len(raw)))
        self._parts.append(raw)
        return self

    def flag(self, present: bool) -> Writer:
        return self.u8(1 if present else 0)

    def done(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError("input must be bytes")
        self._data = bytes(data)
        self._offset = 0

    def _take(self, count: int) -> bytes:
        end = self._offset + count
        if end > len(self._data):
            raise DecodeError(f"truncated at byte {self._offset}: {count} more bytes expected")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u8(self) -> int:
        return self._take(1)[0]

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def raw(self, count: int) -> bytes:
        return self._take(count)

    def blob(self, max_bytes: int = MAX_BYTES_FIELD) -> bytes:
        length = self.u32()
        if length > max_bytes:
            raise DecodeError(f"byte string of {length} bytes exceeds the limit of {max_bytes}")
        return self._take(length)

    def text(self) -> str:
        raw = self.blob(MAX_STRING_BYTES)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DecodeError("string is not valid UTF-8") from error

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise DecodeError(f"presence flag must be 0 or 1, got {value}")
        return value == 1

    def count(self, max_items: int = MAX_LIST_ITEMS) -> int:
        value = self.u32()
        if value > max_items:
            raise DecodeError(f"list of {value} items exceeds the limit of {max_items}")
        return value

    def end(self) -> None:
        if self._offset != len(self._data):
            raise DecodeError(f"{len(self._data) - self._offset} trailing bytes")
