"""The Video view streams the video the task saved, read back only from under the connection's
``output_base_dir`` (the job card naming the path is an editable XCom), with Range for seeking.

No api-server needed: ``live.stream_saved_video`` is called as the app calls it; which files were
opened is observed with a Python audit hook.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nanogpt.plugin.live import CHUNK_BYTES, VideoStream, stream_saved_video
from tests.conftest import connection_json

VIDEO = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)  # a few chunks, and a bit
_opened: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str | os.PathLike):
        _opened.append(os.fspath(args[0]))  # type: ignore[arg-type]


sys.addaudithook(_audit)


@contextmanager
def _files_opened() -> Iterator[list[str]]:
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "v.mp4").write_bytes(VIDEO)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.mp4").write_bytes(b"not yours")
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT",
        connection_json("http://127.0.0.1:9", output_base_dir=str(videos)),
    )
    return videos


def _read(stream: VideoStream | None) -> bytes:
    assert stream is not None
    return b"".join(stream.chunks)


def test_the_saved_file_is_streamed(base: Path) -> None:
    with _files_opened() as opened:
        stream = stream_saved_video("nanogpt_default", str(base / "v.mp4"), None)
    assert str(base / "v.mp4") in opened  # the audit hook sees what is opened
    assert stream is not None and stream.status_code == 200
    assert stream.headers["Content-Type"] == "video/mp4"
    assert stream.headers["Content-Length"] == str(len(VIDEO))
    assert _read(stream) == VIDEO


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, len(VIDEO) - 1),
        ("bytes=-50", len(VIDEO) - 50, len(VIDEO) - 1),
        (f"bytes={CHUNK_BYTES - 1}-{10 * len(VIDEO)}", CHUNK_BYTES - 1, len(VIDEO) - 1),
        ("bytes=7-7", 7, 7),
    ],
)
def test_a_range_is_served_so_the_player_can_seek(
    base: Path, header: str, first: int, last: int
) -> None:
    stream = stream_saved_video("nanogpt_default", str(base / "v.mp4"), header)
    assert stream is not None and stream.status_code == 206
    assert stream.headers["Content-Range"] == f"bytes {first}-{last}/{len(VIDEO)}"
    assert _read(stream) == VIDEO[first : last + 1]


# "bytes=9-3": a last byte before the first is invalid, and ignored (RFC 9110 14.1.1).
@pytest.mark.parametrize(
    "header", ["bytes=0-1,5-6", "items=0-5", "bytes=a-b", "bytes", "bytes=9-3", "bytes=1-0"]
)
def test_a_range_not_served_gets_the_whole_file(base: Path, header: str) -> None:
    stream = stream_saved_video("nanogpt_default", str(base / "v.mp4"), header)
    assert stream is not None and stream.status_code == 200 and _read(stream) == VIDEO


@pytest.mark.parametrize(
    "header", [f"bytes={len(VIDEO)}-", f"bytes={len(VIDEO)}-{len(VIDEO) + 9}", "bytes=-0"]
)
def test_an_unsatisfiable_range_is_416(base: Path, header: str) -> None:
    stream = stream_saved_video("nanogpt_default", str(base / "v.mp4"), header)
    assert stream is not None and stream.status_code == 416
    assert stream.headers["Content-Range"] == f"bytes */{len(VIDEO)}" and _read(stream) == b""


def _escapes(base: Path) -> dict[str, str]:
    outside = base.parent / "outside"
    (base / "link.mp4").symlink_to(outside / "secret.mp4")
    (base / "linked_dir").symlink_to(outside)
    return {
        "etc-passwd": "/etc/passwd",
        "dot-dot": f"{base}/../outside/secret.mp4",
        "file-uri": f"file://{outside}/secret.mp4",
        "symlink": str(base / "link.mp4"),
        "symlinked-folder": str(base / "linked_dir" / "secret.mp4"),
        "relative": "v.mp4",  # relative to a worker, not to the api-server
        "sibling-prefix": f"{base}x/v.mp4",
    }


@pytest.mark.parametrize(
    "escape",
    [
        "etc-passwd",
        "dot-dot",
        "file-uri",
        "symlink",
        "symlinked-folder",
        "relative",
        "sibling-prefix",
    ],
)
def test_a_path_outside_the_base_dir_is_refused_unread(
    base: Path, escape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = _escapes(base)[escape]
    (base.parent / "videosx").mkdir()
    (base.parent / "videosx" / "v.mp4").write_bytes(b"not yours either")
    monkeypatch.chdir(base)  # "v.mp4" would name the real video from here: still refused
    with _files_opened() as opened:
        assert stream_saved_video("nanogpt_default", location, None) is None
    assert not [p for p in opened if "passwd" in p or "secret" in p or p.endswith(".mp4")]


def test_only_a_regular_file_is_served(base: Path) -> None:
    os.mkfifo(base / "pipe.mp4")  # opening it for reading would wait for a writer
    (base / "folder.mp4").mkdir()
    started = time.monotonic()
    assert stream_saved_video("nanogpt_default", str(base / "pipe.mp4"), None) is None
    assert stream_saved_video("nanogpt_default", str(base / "folder.mp4"), None) is None
    assert time.monotonic() - started < 2


def test_a_missing_file_falls_back(base: Path) -> None:
    assert stream_saved_video("nanogpt_default", str(base / "gone.mp4"), None) is None


def test_without_a_base_dir_no_saved_file_is_read(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NANOGPT_DEFAULT", connection_json("http://127.0.0.1:9"))
    with _files_opened() as opened:
        assert stream_saved_video("nanogpt_default", str(base / "v.mp4"), None) is None
    assert not [path for path in opened if path.endswith(".mp4")]


@pytest.mark.parametrize(
    "name", ["page.html", "notes.txt", "script.js", "config.json", "no-extension", "v.mp4.html"]
)
def test_only_a_video_file_is_served(base: Path, name: str) -> None:
    """The base dir may hold other files: a page would run on Airflow's own origin, the rest is
    none of the player's business. Not read at all; the caller falls back to the URL."""
    (base / name).write_text("<script>alert(1)</script>")
    with _files_opened() as opened:
        assert stream_saved_video("nanogpt_default", str(base / name), None) is None
    assert str(base / name) not in opened


@pytest.fixture
def half_second_timeout(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection's download_timeout: half a second."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_NANOGPT_DEFAULT",
        connection_json("http://127.0.0.1:9", output_base_dir=str(base), download_timeout=0.5),
    )


@pytest.mark.timing
@pytest.mark.usefixtures("half_second_timeout")
def test_a_slow_reader_stream_ends_by_the_download_timeout(base: Path) -> None:
    stream = stream_saved_video("nanogpt_default", str(base / "v.mp4"), None)
    assert stream is not None
    received = next(stream.chunks)
    time.sleep(0.7)
    received += b"".join(stream.chunks)
    assert 0 < len(received) < len(VIDEO)


@pytest.mark.parametrize(
    ("location", "base_dir", "allowed"),
    [
        ("s3://bucket/videos/x.mp4", "s3://bucket/videos", True),
        ("s3://team@bucket/videos/x.mp4", "s3://team@bucket/videos", True),
        # The same place, but read with another Airflow connection's credentials.
        ("s3://aws_admin@bucket/videos/x.mp4", "s3://bucket/videos", False),
        ("s3://aws_admin@bucket/videos/x.mp4", "s3://team@bucket/videos", False),
        ("s3://bucket/videos/x.mp4", "s3://team@bucket/videos", False),
        ("gs://admin@bucket/videos/x.mp4", "gs://bucket/videos", False),
    ],
)
def test_an_object_path_naming_another_connection_is_refused(
    location: str, base_dir: str, allowed: bool
) -> None:
    """Pure: no store is reached (the connection is part of the path, not of the object)."""
    from airflow_provider_nanogpt.storage import saved_video_location

    assert (saved_video_location(location, base_dir) is not None) is allowed


def test_without_a_way_to_verify_the_opened_file_it_is_not_served(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No /proc (or one that cannot be read): fail closed, the caller falls back to the URL."""
    from airflow_provider_nanogpt.plugin import live

    assert stream_saved_video("nanogpt_default", str(base / "v.mp4"), None) is not None
    monkeypatch.setattr(live, "OPEN_FILES_DIR", str(tmp_path / "no-proc"), raising=False)
    assert stream_saved_video("nanogpt_default", str(base / "v.mp4"), None) is None


@pytest.mark.timing
@pytest.mark.usefixtures("half_second_timeout")
def test_the_download_timeout_counts_from_before_the_file_is_opened(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that takes its time to open the file uses up the stream's time, not extra."""
    from airflow_provider_nanogpt.plugin import live

    opening = live._open_local

    def slow_open(path: Path, base_dir: str | None) -> Any:
        time.sleep(0.6)
        return opening(path, base_dir)

    monkeypatch.setattr(live, "_open_local", slow_open)
    stream = stream_saved_video("nanogpt_default", str(base / "v.mp4"), None)
    assert stream is not None and b"".join(stream.chunks) == b""
