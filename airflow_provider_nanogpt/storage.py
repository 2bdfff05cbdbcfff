"""Where a finished video is written: local paths, ``file://`` URIs and any ObjectStoragePath.

The destination is checked before anything is paid for (not a directory, writable, its bucket
there, inside the connection's ``output_base_dir`` when one is set). Writes go to a hidden
temporary sibling first and are moved into place only once the byte count is verified, so a
failed download never leaves a partial file at the destination; leftovers of a killed download
are removed by the next one.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from airflow_provider_nanogpt.exceptions import NanoGPTConfigurationError, NanoGPTValidationError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

Destination = str | os.PathLike[str]

# The Airflow provider that registers each object-storage protocol (ObjectStoragePath reads and
# writes through it), and the fsspec package it brings.
_FILESYSTEM_PACKAGES = {
    **dict.fromkeys(("s3", "s3a"), ("apache-airflow-providers-amazon", "s3fs")),
    **dict.fromkeys(("gs", "gcs"), ("apache-airflow-providers-google", "gcsfs")),
    **dict.fromkeys(
        ("az", "abfs", "abfss", "adl"), ("apache-airflow-providers-microsoft-azure", "adlfs")
    ),
}


def _install_hint(protocol: str) -> str:
    provider, package = _FILESYSTEM_PACKAGES.get(protocol, (None, None))
    if provider is None:
        return (
            f"install the Airflow provider that registers the {protocol!r} filesystem, with its "
            "fsspec implementation, where the tasks run"
        )
    return f"install {provider} (it brings {package}) where the tasks run"


def resolve_location(location: Any, name: str, consequence: str) -> Path | ObjectStoragePath:
    """``resolve_destination`` for a task parameter, ready for I/O, or a permanent error.

    fsspec and Airflow find a protocol's filesystem (s3fs, gcsfs, … through the provider that
    registers it) only when it is first used: that is checked here, so a missing package fails
    the task at once, saying what to install, instead of as a retried ImportError.
    """
    protocol = str(location).partition("://")[0]
    try:
        target = resolve_destination(location)
    except ValueError as exc:  # a scheme nothing handles: a typo, or an unknown package missing
        raise NanoGPTValidationError(
            f"{name}={location!r}: {exc}; fix the URI, or {_install_hint(protocol)}. {consequence}"
        ) from None
    except ImportError as exc:  # fsspec knows the scheme, but its package is not installed
        raise _filesystem_missing(name, str(location), protocol, exc, consequence) from None
    if is_local(target):
        return target
    try:
        # Airflow's filesystem for the scheme: the one ObjectStoragePath reads and writes with.
        _ = cast(Any, target).fs
    except (ImportError, ValueError) as exc:  # ValueError: no provider registers the scheme
        raise _filesystem_missing(name, describe(target), protocol, exc, consequence) from None
    return target


def _filesystem_missing(
    name: str, where: str, protocol: str, exc: Exception, consequence: str
) -> NanoGPTConfigurationError:
    return NanoGPTConfigurationError(
        f"{name}={where!r} needs the {protocol!r} filesystem, which is not available on "
        f"this worker ({exc}): {_install_hint(protocol)}. {consequence}"
    )


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


def check_destination(
    destination: Any, base_dir: str | None = None, *, name: str = "output_path"
) -> Path | ObjectStoragePath:
    """The resolved destination, or a NanoGPTValidationError saying why a video can't go there.

    The path is taken as given (a relative path is relative to the worker's working directory),
    except that with ``base_dir`` it must resolve, ``..`` and links followed, to a place under it.
    """
    target = resolve_location(destination, name, "Nothing was submitted.")
    where = describe(target)
    if base_dir is not None and not _inside(target, resolve_destination(base_dir)):
        raise NanoGPTValidationError(
            f"{name}={where!r} is outside the connection's output_base_dir {base_dir!r}. "
            "Nothing was submitted."
        )
    try:
        if target.is_dir():
            raise NanoGPTValidationError(
                f"{name}={where!r} is a directory; give the path of the video file. "
                "Nothing was submitted."
            )
        if is_local(target):
            _check_local_parent(Path(str(target)), name)
        else:
            _check_bucket(target, name)
    except OSError as exc:
        raise NanoGPTValidationError(
            f"{name}={where!r} cannot be checked ({type(exc).__name__}: {exc}). "
            "Nothing was submitted."
        ) from None
    return target


def saved_video_location(location: object, base_dir: str | None) -> Path | ObjectStoragePath | None:
    """Where a task saved its video, for the api-server to read back, or None when it may not.

    ``location`` comes from a job card (an XCom anyone with XCom write access can edit), so it is
    honoured only when it resolves, ``..`` and links followed, under ``base_dir``: no base
    directory, a relative path (relative to a worker, not to the api-server), or a place outside
    it, and nothing is read. A local path comes back resolved, so what is opened is what was
    checked.
    """
    if base_dir is None or not isinstance(location, str) or not location:
        return None
    try:
        target, base = resolve_destination(location), resolve_destination(base_dir)
    except (ValueError, ImportError):  # a scheme nothing here handles
        return None
    if is_local(target):
        if not target.is_absolute():
            return None
        target = target.resolve()
    return target if _inside(target, base) else None


def _inside(target: Path | ObjectStoragePath, base: Path | ObjectStoragePath) -> bool:
    if is_local(target) != is_local(base):
        return False
    if is_local(target):
        return Path(str(target)).resolve().is_relative_to(Path(str(base)).resolve())
    if _storage_conn_id(target) != _storage_conn_id(base):
        return False  # ``s3://admin@bucket/…``: the same place, read with other credentials
    target_uri, base_uri = _normalised_uri(target), _normalised_uri(base).rstrip("/")
    return target_uri == base_uri or target_uri.startswith(base_uri + "/")


def _storage_conn_id(path: Any) -> str | None:
    """The Airflow connection an object-storage path reads with (``s3://conn_id@bucket/…``): an
    attribute on Airflow 3.3 (its ``as_uri()`` drops it), a storage option on 3.1."""
    conn_id = getattr(path, "conn_id", None) or dict(
        getattr(path, "storage_options", None) or {}
    ).get("conn_id")
    return str(conn_id) if conn_id else None


def _normalised_uri(path: ObjectStoragePath | Path) -> str:
    scheme, _, rest = describe(path).partition("://")
    return f"{scheme}://{posixpath.normpath('/' + rest).lstrip('/')}"


def _check_local_parent(target: Path, name: str) -> None:
    """The nearest existing folder above ``target`` must be a folder this worker can write."""
    ancestor = target.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise NanoGPTValidationError(
            f"{name}={str(target)!r} cannot be written: {str(ancestor)!r} is not a folder this "
            "worker may write to. Nothing was submitted."
        )


def _check_bucket(target: ObjectStoragePath | Path, name: str) -> None:
    """The bucket (the first part of the path) must exist, or the upload would fail late."""
    from airflow.sdk import ObjectStoragePath

    scheme, _, rest = describe(target).partition("://")
    bucket = ObjectStoragePath(f"{scheme}://{rest.split('/', 1)[0]}")
    try:
        missing = not bucket.exists()
    except Exception:  # no permission to look (a write-only role): the upload will tell
        return
    if missing:
        raise NanoGPTValidationError(
            f"{name}={describe(target)!r}: the bucket {describe(bucket)!r} does not exist, or "
            "this connection cannot see it. Nothing was submitted."
        )


def remove_stale_parts(destination: Path | ObjectStoragePath) -> None:
    """Delete temporary files a killed download left next to ``destination``."""
    with suppress(OSError):
        for leftover in destination.parent.glob(f".{destination.name}.*.part"):
            with suppress(OSError):
                leftover.unlink()


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
