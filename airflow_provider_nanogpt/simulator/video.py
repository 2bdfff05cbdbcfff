"""Deterministic fake MP4 bytes, generated chunk by chunk in constant memory.

The stream starts with a minimal ISO-BMFF ``ftyp`` box followed by an ``mdat`` box header
covering the rest of the file; the payload repeats a 64 KiB pseudo-random block seeded by the
run id, so the same run always yields the same bytes.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator

DEFAULT_VIDEO_SIZE = 256 * 1024
CHUNK_SIZE = 64 * 1024

FTYP_BOX = struct.pack(">I", 24) + b"ftyp" + b"isom" + struct.pack(">I", 512) + b"isommp41"


def _mdat_header(size: int) -> bytes:
    body = size - len(FTYP_BOX)
    if body < 8:
        return b""
    if body <= 0xFFFFFFFF:
        return struct.pack(">I", body) + b"mdat"
    return struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", body)


def _block(run_id: str) -> bytes:
    seed = int.from_bytes(hashlib.sha256(run_id.encode("utf-8")).digest()[:8], "big")
    return random.Random(seed).randbytes(CHUNK_SIZE)


def video_chunks(run_id: str, size: int, limit: int | None = None) -> Iterator[bytes]:
    """Yield the first ``limit`` (default: all ``size``) bytes of the video of ``run_id``."""
    end = size if limit is None else min(limit, size)
    header = (FTYP_BOX + _mdat_header(size))[:size]
    block = _block(run_id)
    offset = 0
    if header:
        head = header[:end]
        offset = len(head)
        if head:
            yield head
    while offset < end:
        # Payload byte at file offset i is block[(i - len(header)) % CHUNK_SIZE].
        start = (offset - len(header)) % CHUNK_SIZE
        take = min(CHUNK_SIZE - start, end - offset)
        yield block[start : start + take]
        offset += take


def video_sha256(run_id: str, size: int) -> str:
    """SHA-256 hex digest of the full video (handy in tests)."""
    digest = hashlib.sha256()
    for chunk in video_chunks(run_id, size):
        digest.update(chunk)
    return digest.hexdigest()
