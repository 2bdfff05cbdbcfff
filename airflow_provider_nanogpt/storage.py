"""Where a finished video is written: local paths, ``file://`` URIs and any ObjectStoragePath.

Writes go to a hidden temporary sibling first and are moved into place only once the byte count
is verified, so a failed download never leaves a partial file at the destination.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

Destination = str | os.PathLike[str]


def resolve_destination(destination: Any) -> Path | ObjectStoragePath:
    """A local ``Path`` for plain paths, an ``ObjectStoragePath`` for URIs (s3://, file://, …)."""
    if isinstance(destination, Path):
        return destination  # a pathlib.Path, or an ObjectStoragePath that subclasses it
    text = os.fspath(destination) if isinstance(destination, os.PathLike) else destination
    if not isinstance(text, str):
        # Already an ObjectStoragePath (or another UPath): use it as given.
        return destination  # type: ignore[no-any-return]
    if "://" not in text:
        return Path(text).expanduser()
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(text)


def is_local(destination: Path | ObjectStoragePath) -> bool:
    # ObjectStoragePath subclasses pathlib.Path on some Airflow versions; only it has a protocol.
    return isinstance(destination, Path) and getattr(destination, "protocol", None) is None


def describe(destination: Path | ObjectStoragePath) -> str:
    return str(destination) if is_local(destination) else destination.as_uri()


@contextmanager
def atomic_writer(destination: Path | ObjectStoragePath) -> Iterator[IO[bytes]]:
    """Yield a binary file; on clean exit move it to ``destination``, on error delete it."""
    temporary = destination.parent / f".{destination.name}.{uuid.uuid4().hex}.part"
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with temporary.open("wb") as handle:
            yield handle
        if is_local(destination):
            os.replace(temporary, destination)  # type: ignore[arg-type]
        else:
            temporary.rename(destination)  # type: ignore[arg-type]
    except BaseException:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
