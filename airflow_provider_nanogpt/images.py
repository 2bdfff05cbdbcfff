"""Turn a local or object-storage image into the ``imageDataUrl`` NanoGPT accepts (max 4 MB)."""

from __future__ import annotations

import base64
from typing import Any

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError
from airflow_provider_nanogpt.storage import describe, resolve_destination

MAX_INLINE_IMAGE_BYTES = 4 * 1024 * 1024

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"WEBP", 8, "webp"),
)


def image_type(head: bytes) -> str | None:
    """The image subtype from magic bytes (file names and extensions are not trusted)."""
    for signature, offset, kind in _SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            if kind == "webp" and not head.startswith(b"RIFF"):
                continue
            return kind
    return None


def image_data_url(image_path: Any) -> str:
    """Read ``image_path`` (path, file:// or any ObjectStoragePath URI) into a data URL."""
    path = resolve_destination(image_path)
    where = describe(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise NanoGPTValidationError(f"image_path={where!r} does not exist") from None
    except OSError as exc:
        raise NanoGPTValidationError(f"image_path={where!r} cannot be read: {exc}") from None
    if size > MAX_INLINE_IMAGE_BYTES:
        raise NanoGPTValidationError(
            f"image_path={where!r} is {size / 1_048_576:.1f} MB; NanoGPT accepts inline images "
            "up to 4 MB. Host the image and pass image_url instead."
        )
    with path.open("rb") as handle:
        data = handle.read(MAX_INLINE_IMAGE_BYTES + 1)
    kind = image_type(data[:16])
    if kind is None:
        raise NanoGPTValidationError(f"image_path={where!r} is not a PNG, JPEG, GIF or WebP image")
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"
