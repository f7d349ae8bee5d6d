"""The files of a LevelDB directory, checked BEFORE LevelDB opens it (docs/node.md "Damage and
recovery").

LevelDB's own recovery is not safe to run on a damaged directory: with `CURRENT` gone and
create_if_missing set it makes a new, empty database and deletes every table file it does not
know; with a table file gone or cut short it opens and fails at the first read that reaches the
missing part. So the store decides here, from the files alone, whether a directory is a new one
(nothing in it: create) or an existing store (open it, never create), and for an existing one
that every file its current MANIFEST names is there, at the size the MANIFEST records.

How: `CURRENT` names the MANIFEST; the MANIFEST is a LevelDB log (32 KiB blocks of records:
checksum u32, length u16, type u8, data) of VersionEdits (tagged varint fields). Replaying its
edits gives the live table files with their sizes and the number of the write-ahead log that
holds the writes not yet in a table. That is all this module reads; it does not verify the
record checksums (LevelDB does, with paranoid_checks, when it opens), so a MANIFEST whose
structure does not parse is refused as damaged rather than guessed at.

Rules kept here:
- Total: every directory content gives a verdict or a StoreCorrupt naming the file, never
  another exception, and nothing here writes or deletes a file.
- Each refusal says what is missing or damaged and how to recover (RECOVERY).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kledger.node.errors import StoreCorrupt

RECOVERY = (
    "nothing was changed or deleted. To recover, stop the node and either restore this "
    "directory from a backup, or move it aside (mv DATA_DIR DATA_DIR.damaged) and start the "
    "node again: it creates an empty store and re-syncs every block from its peers, as a "
    "non-voting follower until it is back where its safety record says it was "
    "(keep the safety record file; see docs/node.md, Damage and recovery)"
)
# LevelDB's log format (db/log_format.h).
_BLOCK_BYTES = 32 * 1024
_HEADER_BYTES = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# VersionEdit tags (db/version_edit.cc).
_COMPARATOR, _LOG_NUMBER, _NEXT_FILE, _LAST_SEQUENCE = 1, 2, 3, 4
_COMPACT_POINTER, _DELETED_FILE, _NEW_FILE, _PREV_LOG_NUMBER = 5, 6, 7, 9
# A MANIFEST larger than this is not one LevelDB wrote for this store (it rewrites it small on
# every open); reading it whole stays bounded.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
# What a file in a LevelDB directory may be called, besides numbered files.
_LEVELDB_NAMES = ("CURRENT", "LOCK", "LOG", "LOG.old")


@dataclass(frozen=True, slots=True)
class LiveFiles:
    """What the current MANIFEST says the database is made of."""

    manifest: str
    tables: dict[int, int]  # table file number -> size in bytes
    log_number: int  # the write-ahead log holding writes newer than the tables


def is_new_store_dir(path: Path) -> bool:
    """A directory that has never held a store: absent, or with no file of LevelDB's in it.
    Anything else is an existing store and is opened, never created."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        raise StoreCorrupt(f"{path}: is not a directory") from None
    except OSError as exc:
        raise StoreCorrupt(f"{path}: cannot list the store directory: {exc}") from None
    return not any(_is_leveldb_name(name) for name in names)


def check_store_files(path: Path) -> LiveFiles:
    """Refuse (StoreCorrupt naming the file and the recovery) an existing store directory whose
    CURRENT, MANIFEST, write-ahead log or table files are missing or not what the MANIFEST
    records; return what the MANIFEST names."""
    current = path / "CURRENT"
    raw = _read(current, "CURRENT (it names the store's MANIFEST)", 1024)
    text = raw.decode("ascii", errors="replace")
    name = text[:-1] if text.endswith("\n") else ""
    if not (name.startswith("MANIFEST-") and name[len("MANIFEST-") :].isdigit()):
        raise StoreCorrupt(
            f"{current}: damaged (it should name the MANIFEST, it holds {raw[:64]!r}); {RECOVERY}"
        )
    manifest = path / name
    data = _read(manifest, "the MANIFEST that CURRENT names", MAX_MANIFEST_BYTES)
    live = _replay_manifest(manifest, data)
    log = path / f"{live.log_number:06d}.log"
    if not log.is_file():
        raise StoreCorrupt(
            f"{log}: the write-ahead log {name} names is missing (the newest writes are in it); "
            f"{RECOVERY}"
        )
    for number, size in sorted(live.tables.items()):
        table = _table_path(path, number)
        if table is None:
            raise StoreCorrupt(
                f"{path / f'{number:06d}.ldb'}: table file missing ({name} lists it, "
                f"{size} bytes); {RECOVERY}"
            )
        actual = table.stat().st_size
        if actual != size:
            raise StoreCorrupt(
                f"{table}: table file is {actual} bytes, {name} records {size} "
                f"({'cut short' if actual < size else 'grown'}); {RECOVERY}"
            )
    return live


def _is_leveldb_name(name: str) -> bool:
    if name in _LEVELDB_NAMES or name.startswith("MANIFEST-"):
        return True
    stem, _, ext = name.partition(".")
    return stem.isdigit() and ext in {"log", "ldb", "sst", "dbtmp"}


def _read(path: Path, what: str, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise StoreCorrupt(f"{path}: {what} is {size} bytes, over {limit}; {RECOVERY}")
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        raise StoreCorrupt(f"{path}: missing: {what}; {RECOVERY}") from None
    except IsADirectoryError:
        raise StoreCorrupt(f"{path}: is a directory, expected {what}; {RECOVERY}") from None
    except OSError as exc:
        raise StoreCorrupt(f"{path}: cannot read {what}: {exc}; {RECOVERY}") from None
    if not data:
        raise StoreCorrupt(f"{path}: empty: {what}; {RECOVERY}")
    return data


def _table_path(path: Path, number: int) -> Path | None:
    for ext in ("ldb", "sst"):  # LevelDB writes .ldb; older versions wrote .sst
        candidate = path / f"{number:06d}.{ext}"
        if candidate.is_file():
            return candidate
    return None


class _Malformed(Exception):
    """A MANIFEST whose structure does not parse (internal to this module)."""


def _replay_manifest(manifest: Path, data: bytes) -> LiveFiles:
    tables: dict[int, int] = {}
    log_number: int | None = None
    try:
        for record in _log_records(data):
            edit_log, added, deleted = _decode_edit(record)
            if edit_log is not None:
                log_number = edit_log
            for number in deleted:
                tables.pop(number, None)
            tables.update(added)
    except _Malformed as exc:
        raise StoreCorrupt(f"{manifest}: damaged MANIFEST ({exc}); {RECOVERY}") from None
    if log_number is None:
        raise StoreCorrupt(f"{manifest}: damaged MANIFEST (no log number in it); {RECOVERY}")
    return LiveFiles(manifest.name, tables, log_number)


def _log_records(data: bytes) -> list[bytes]:
    """The records of a LevelDB log, fragments joined. A record cut off at the very end (a
    write in progress) is left out, as LevelDB's reader does."""
    records: list[bytes] = []
    pending: bytearray | None = None
    offset = 0
    while offset + _HEADER_BYTES <= len(data):
        left_in_block = _BLOCK_BYTES - offset % _BLOCK_BYTES
        if left_in_block < _HEADER_BYTES:  # a block trailer of zeros
            offset += left_in_block
            continue
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        kind = data[offset + 6]
        start = offset + _HEADER_BYTES
        end = start + length
        if kind == 0 and length == 0:  # zero padding (a preallocated or trailing area)
            offset += left_in_block
            continue
        if end > len(data):
            break  # the last record was being written
        if end - offset > left_in_block:
            raise _Malformed(f"record at byte {offset} crosses a block boundary")
        fragment = data[start:end]
        if kind == _FULL:
            if pending is not None:
                raise _Malformed(f"record at byte {offset} inside another one")
            records.append(fragment)
        elif kind == _FIRST:
            if pending is not None:
                raise _Malformed(f"record at byte {offset} inside another one")
            pending = bytearray(fragment)
        elif kind in {_MIDDLE, _LAST}:
            if pending is None:
                raise _Malformed(f"record fragment at byte {offset} without its start")
            pending += fragment
            if kind == _LAST:
                records.append(bytes(pending))
                pending = None
        else:
            raise _Malformed(f"record type {kind} at byte {offset}")
        offset = end
    return records


def _decode_edit(record: bytes) -> tuple[int | None, dict[int, int], list[int]]:
    """(log number or None, added tables {number: size}, deleted table numbers)."""
    reader = _Reader(record)
    log_number: int | None = None
    added: dict[int, int] = {}
    deleted: list[int] = []
    while not reader.done():
        tag = reader.varint()
        if tag == _COMPARATOR:
            reader.prefixed()
        elif tag in {_LOG_NUMBER, _PREV_LOG_NUMBER, _NEXT_FILE, _LAST_SEQUENCE}:
            value = reader.varint()
            if tag == _LOG_NUMBER:
                log_number = value
        elif tag == _COMPACT_POINTER:
            reader.varint()
            reader.prefixed()
        elif tag == _DELETED_FILE:
            reader.varint()
            deleted.append(reader.varint())
        elif tag == _NEW_FILE:
            reader.varint()
            number, size = reader.varint(), reader.varint()
            reader.prefixed()
            reader.prefixed()
            added[number] = size
        else:
            raise _Malformed(f"unknown VersionEdit tag {tag}")
    return log_number, added, deleted


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def done(self) -> bool:
        return self._offset >= len(self._data)

    def varint(self) -> int:
        value = shift = 0
        while True:
            if self._offset >= len(self._data) or shift > 63:
                raise _Malformed("a VersionEdit field is cut off")
            byte = self._data[self._offset]
            self._offset += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def prefixed(self) -> bytes:
        length = self.varint()
        end = self._offset + length
        if end > len(self._data):
            raise _Malformed("a VersionEdit field is cut off")
        value = self._data[self._offset : end]
        self._offset = end
        return value
