"""Input media sent inline: an image, a source video or audio read into a ``data:`` URL.

NanoGPT caps base64 uploads at 4 MB, and the cap applies to what is sent: the data URL, about
4/3 of the file. The type comes from the file's first bytes; names and extensions are not
trusted. A file is read only as far as it can still fit, so a huge file is refused without
being loaded.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError

# NanoGPT's "4 MB" read the strict way: decimal megabytes of data URL, header included.
MAX_DATA_URL_CHARS = 4_000_000
# Enough to recognise every supported format (an MP4 brand list, a WebM DocType).
HEAD_BYTES = 64
_CHUNK_BYTES = 1024 * 1024


def image_type(head: bytes) -> str | None:
    """The image MIME subtype from magic bytes: png, jpeg, gif or webp."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    return None


# ISO-BMFF (MP4/MOV/M4A) brands of audio-only and still-image files, which share the container.
_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"})
# QuickTime files older than the ftyp box start with one of these atoms.
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"pnot"})
_EBML = b"\x1a\x45\xdf\xa3"


def _iso_brands(head: bytes) -> tuple[bytes, ...]:
    """The major and compatible brands of a leading ``ftyp`` box, or () when there is none."""
    if head[4:8] != b"ftyp" or len(head) < 12:
        return ()
    end = min(int.from_bytes(head[:4], "big"), len(head))
    compatible = (head[i : i + 4] for i in range(16, end - 3, 4))
    return (head[8:12], *compatible)


def video_type(head: bytes) -> str | None:
    """The video MIME subtype from magic bytes: mp4, quicktime (MOV) or webm."""
    brands = _iso_brands(head)
    if brands:
        if brands[0] == b"qt  ":
            return "quicktime"
        if brands[0] in _AUDIO_BRANDS or brands[0] in _IMAGE_BRANDS:
            return None
        return "mp4"
    if head[4:8] in _QUICKTIME_ATOMS:
        return "quicktime"
    # Matroska shares the EBML header; only the "webm" DocType is WebM.
    if head.startswith(_EBML) and b"webm" in head[:HEAD_BYTES]:
        return "webm"
    return None


def _mp3_frame(head: bytes) -> bool:
    """An MPEG audio frame header of Layer III (11 sync bits, a valid version, layer bits 01)."""
    return (
        len(head) >= 2
        and head[0] == 0xFF
        and head[1] & 0xE0 == 0xE0
        and head[1] & 0x18 != 0x08
        and head[1] & 0x06 == 0x02
    )


def audio_type(head: bytes) -> str | None:
    """The audio MIME subtype from magic bytes: mpeg (MP3), wav, mp4 (M4A) or ogg."""
    if head.startswith(b"ID3") or _mp3_frame(head):
        return "mpeg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    if any(brand in _AUDIO_BRANDS for brand in _iso_brands(head)):
        return "mp4"
    return None


@dataclass(frozen=True)
class MediaKind:
    """One kind of input media: its operator parameters, NanoGPT fields and formats."""

    name: str  # also the MIME type: image/…, video/…, audio/…
    plural: str
    url_parameter: str
    path_parameter: str
    url_field: str
    data_field: str
    formats: str
    detect: Callable[[bytes], str | None]


IMAGE = MediaKind(
    name="image",
    plural="images",
    url_parameter="image_url",
    path_parameter="image_path",
    url_field="imageUrl",
    data_field="imageDataUrl",
    formats="a PNG, JPEG, GIF or WebP image",
    detect=image_type,
)
VIDEO = MediaKind(
    name="video",
    plural="videos",
    url_parameter="video_url",
    path_parameter="video_path",
    url_field="videoUrl",
    data_field="videoDataUrl",
    formats="an MP4, MOV or WebM video",
    detect=video_type,
)
AUDIO = MediaKind(
    name="audio",
    plural="audio",
    url_parameter="audio_url",
    path_parameter="audio_path",
    url_field="audioUrl",
    data_field="audioDataUrl",
    formats="an MP3, WAV, M4A or OGG audio file",
    detect=audio_type,
)
MEDIA_KINDS: tuple[MediaKind, ...] = (IMAGE, VIDEO, AUDIO)


def check_media_url(kind: MediaKind, url: Any) -> None:
    """NanoGPT downloads the URL itself, so only a public http(s) URL can work."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        shown = url.split("?", 1)[0] if isinstance(url, str) else url  # a query may be a secret
        raise NanoGPTValidationError(
            f"{kind.url_parameter}={shown!r} is not allowed; NanoGPT fetches {kind.plural} "
            f"over http(s) only (use {kind.path_parameter} for local or object-storage files). "
            "Nothing was sent."
        )


def data_url_length(size: int, header: str) -> int:
    """Characters in the data URL of a ``size``-byte file (base64 turns 3 bytes into 4)."""
    return len(header) + 4 * -(-size // 3)


def max_inline_bytes(header: str) -> int:
    """The largest file whose data URL, ``header`` included, fits in MAX_DATA_URL_CHARS."""
    return 3 * ((MAX_DATA_URL_CHARS - len(header)) // 4)


def data_url(source: Any, kind: MediaKind) -> str:
    """Read ``source`` (a path, ``file://`` or any ObjectStoragePath URI) into a data URL.

    The type is read from the first bytes and the size from ``stat`` before the rest is read;
    at most one byte more than can fit is ever read (``stat`` may be stale or missing on object
    storage).
    """
    from airflow_provider_nanogpt.storage import describe, resolve_location

    path = resolve_location(source, kind.path_parameter, "Nothing was sent.")
    where = describe(path)
    try:
        size: int | None = getattr(path.stat(), "st_size", None)
        with path.open("rb") as handle:
            head = _read(handle, HEAD_BYTES)
            subtype = kind.detect(head)
            if subtype is None:
                raise NanoGPTValidationError(
                    f"{kind.path_parameter}={where!r} is not {kind.formats} (the type is read "
                    "from the file's content, not its name). Nothing was sent."
                )
            header = f"data:{kind.name}/{subtype};base64,"
            limit = max_inline_bytes(header)
            if size is not None and size > limit:
                raise _too_large(kind, where, size, header)
            data = head + _read(handle, limit + 1 - len(head))
    except FileNotFoundError:
        raise NanoGPTValidationError(
            f"{kind.path_parameter}={where!r} does not exist. Nothing was sent."
        ) from None
    except OSError as exc:
        raise NanoGPTValidationError(
            f"{kind.path_parameter}={where!r} cannot be read: {exc}. Nothing was sent."
        ) from None
    if len(data) > limit:
        raise _too_large(kind, where, len(data), header, at_least=True)
    return header + base64.b64encode(data).decode("ascii")


def _read(handle: IO[bytes], count: int) -> bytes:
    """Up to ``count`` bytes: a raw or remote stream may return fewer than asked per call."""
    chunks: list[bytes] = []
    while count > 0 and (chunk := handle.read(min(count, _CHUNK_BYTES))):
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _too_large(
    kind: MediaKind, where: str, size: int, header: str, *, at_least: bool = False
) -> NanoGPTValidationError:
    more = "at least " if at_least else ""
    return NanoGPTValidationError(
        f"{kind.path_parameter}={where!r} is {more}{size:,} bytes; sent inline as "
        f"{kind.data_field} that is {more}{data_url_length(size, header):,} characters, and "
        f"NanoGPT accepts inline {kind.plural} up to 4 MB as sent (this provider allows "
        f"{MAX_DATA_URL_CHARS:,} characters, a file of at most {max_inline_bytes(header):,} "
        f"bytes). Host the file and pass {kind.url_parameter} instead. Nothing was sent."
    )


def check_inline_sizes(body: Mapping[str, Any]) -> None:
    """Refuse any data URL in the body past the limit, including ones given in extra_params."""
    for field, value in body.items():
        if isinstance(value, str) and value.startswith("data:") and len(value) > MAX_DATA_URL_CHARS:
            raise NanoGPTValidationError(
                f"{field} is a {len(value):,}-character data URL; NanoGPT accepts inline media "
                f"up to 4 MB as sent (this provider allows {MAX_DATA_URL_CHARS:,} characters). "
                "Host the file and pass its URL instead (image_url, video_url or audio_url). "
                "Nothing was sent."
            )
