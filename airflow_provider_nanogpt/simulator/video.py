"""The simulator's video files, deterministic per run id.

By default a finished job's video is the real clip shipped beside this module (``media/
sample.mp4``: 3 s of H.264, made by ``scripts/make_sample_video.sh``) followed by a ``free`` box
naming the run, so every run's file is playable and still differs from the others.

A job marked ``[sim:size=BYTES]`` gets fake bytes of exactly that size instead, generated chunk
by chunk in constant memory (for download, streaming and memory tests): a minimal ISO-BMFF
``ftyp`` box, an ``mdat`` box header covering the rest of the file, and a payload repeating a
64 KiB pseudo-random block seeded by the run id.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from collections.abc import Iterator
from pathlib import Path

SAMPLE_CLIP = Path(__file__).parent / "media" / "sample.mp4"
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


@functools.cache
def _sample_clip() -> bytes:
    return SAMPLE_CLIP.read_bytes()


def default_video(run_id: str) -> bytes:
    """The video of a job without a size marker: the shipped clip, then a ``free`` box naming the
    run (players skip ``free`` boxes, so it stays playable)."""
    tag = f"nanogpt-simulator run {run_id}".encode()
    return _sample_clip() + struct.pack(">I", 8 + len(tag)) + b"free" + tag


def video_chunks(
    run_id: str, size: int, limit: int | None = None, start: int = 0
) -> Iterator[bytes]:
    """Yield bytes ``start`` up to ``limit`` (default: all ``size``) of the fake video of
    ``run_id`` (a ``[sim:size=BYTES]`` job)."""
    end = size if limit is None else min(limit, size)
    header = (FTYP_BOX + _mdat_header(size))[:size]
    block = _block(run_id)
    offset = start
    if offset < len(header):
        head = header[offset:end]
        offset += len(head)
        if head:
            yield head
    while offset < end:
        # Payload byte at file offset i is block[(i - len(header)) % CHUNK_SIZE].
        at = (offset - len(header)) % CHUNK_SIZE
        take = min(CHUNK_SIZE - at, end - offset)
        yield block[at : at + take]
        offset += take


def video_sha256(run_id: str, size: int) -> str:
    """SHA-256 hex digest of the full fake video of a ``[sim:size=BYTES]`` job (for tests)."""
    digest = hashlib.sha256()
    for chunk in video_chunks(run_id, size):
        digest.update(chunk)
    return digest.hexdigest()
