"""On-disk format of a BinaryIndex, written atomically and verified on load.

Layout (little-endian):
    header, 40 bytes: magic b"ZKBINIDX" | u32 version (1) | u32 num_bits | u64 count | u64 next_id |
                      u32 crc32 of the payload | u32 crc32 of the header bytes before it
    payload: int64 ids [count], then uint8 codes [count, num_bits / 8]
The ids come first so both arrays are naturally aligned for memory mapping. The file size must
equal 40 + count * (8 + num_bits / 8) exactly, so a truncated or extended file is rejected before
any array is built. next_id is the next automatic id: it must be above every stored id and at most
2**63 (2**63 once the int64 maximum is stored: no automatic id is left); load checks both, since a
file with recomputed checksums can still carry a counter that would repeat ids. The payload
checksum is verified on load unless verify=False (worth skipping only for huge memory-mapped files
whose integrity is known: the check reads every code byte once).
"""
from __future__ import annotations

import os
import secrets
import struct
import zlib

import numpy as np

MAGIC = b"ZKBINIDX"
MAX_NEXT_ID = 2**63  # "no automatic id left": the state after storing the int64 maximum
VERSION = 1
_HEAD = struct.Struct("<8sIIQQI")  # everything before the header checksum
HEADER_SIZE = _HEAD.size + 4


class IndexFileError(ValueError):
    """The file is not a valid BinaryIndex file (wrong magic, truncated, altered...)."""


def save(path, num_bits: int, ids: np.ndarray, codes: np.ndarray, next_id: int) -> None:
    path = os.fspath(path)
    ids = np.ascontiguousarray(ids, dtype="<i8")
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if not 0 <= next_id <= MAX_NEXT_ID:
        raise ValueError(f"next_id must lie in [0, 2**63], got {next_id}")
    crc = zlib.crc32(codes, zlib.crc32(ids))
    head = _HEAD.pack(MAGIC, VERSION, num_bits, len(ids), next_id, crc)
    head += struct.pack("<I", zlib.crc32(head))
    directory = os.path.dirname(os.path.abspath(path))
    # Write a temp file in the same directory, fsync it, then rename over the target: readers see
    # either the old file or the complete new one, never a partial write. os.open with mode 0o666
    # lets the umask decide the permissions, as for any new file in the folder (tempfile.mkstemp
    # would leave the index readable by its owner only, 0600).
    tmp = os.path.join(directory, f".zkbin-{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            f.write(ids.data)
            f.write(codes.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(path, mmap: bool = True, verify: bool = True):
    """Returns (num_bits, ids, codes, next_id); arrays are read-only memmaps when mmap=True."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < HEADER_SIZE:
        raise IndexFileError(f"{path}: {size} bytes is too short for a BinaryIndex header")
    with open(path, "rb") as f:
        raw = f.read(HEADER_SIZE)
    magic, version, num_bits, count, next_id, crc = _HEAD.unpack(raw[:_HEAD.size])
    if magic != MAGIC:
        raise IndexFileError(f"{path}: not a BinaryIndex file (bad magic {magic!r})")
    (head_crc,) = struct.unpack("<I", raw[_HEAD.size:])
    if zlib.crc32(raw[:_HEAD.size]) != head_crc:
        raise IndexFileError(f"{path}: header checksum mismatch (file altered or corrupted)")
    if version != VERSION:
        raise IndexFileError(f"{path}: unsupported BinaryIndex file version {version} (this is {VERSION})")
    if num_bits <= 0 or num_bits % 8:
        raise IndexFileError(f"{path}: invalid num_bits {num_bits} in header")
    if next_id > MAX_NEXT_ID:
        raise IndexFileError(f"{path}: header next_id {next_id} is past 2**63 (ids are int64)")
    width = num_bits // 8
    expected = HEADER_SIZE + count * (8 + width)
    if size != expected:
        raise IndexFileError(f"{path}: size {size} bytes, expected {expected} for {count} codes of "
                             f"{num_bits} bits (truncated or extended file)")
    if count == 0:
        ids = np.empty(0, dtype=np.int64)
        codes = np.empty((0, width), dtype=np.uint8)
    elif mmap:
        ids = np.memmap(path, dtype="<i8", mode="r", offset=HEADER_SIZE, shape=(count,))
        codes = np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER_SIZE + 8 * count, shape=(count, width))
    else:
        with open(path, "rb") as f:
            f.seek(HEADER_SIZE)
            ids = np.frombuffer(f.read(8 * count), dtype="<i8").astype(np.int64)
            codes = np.frombuffer(f.read(count * width), dtype=np.uint8).reshape(count, width).copy()
    if verify and zlib.crc32(codes, zlib.crc32(ids)) != crc:
        raise IndexFileError(f"{path}: payload checksum mismatch (file altered or corrupted)")
    # A self-consistent file (checksums recomputed) can still hold a counter that would make add()
    # hand out ids already stored: check what the header says against the ids themselves.
    if count and next_id <= int(ids.max()):
        raise IndexFileError(f"{path}: header next_id {next_id} is not above the largest stored id "
                             f"{int(ids.max())}; add() would repeat ids (file written by a faulty writer?)")
    return num_bits, ids, codes, next_id
