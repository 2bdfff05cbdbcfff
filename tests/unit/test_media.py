"""Inline media: type from magic bytes, data URLs, and the 4 MB limit on what is sent."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_nanogpt.exceptions import NanoGPTValidationError
from airflow_provider_nanogpt.media import (
    AUDIO,
    HEAD_BYTES,
    IMAGE,
    MAX_DATA_URL_CHARS,
    VIDEO,
    audio_type,
    data_url,
    image_type,
    max_inline_bytes,
    video_type,
)
from airflow_provider_nanogpt.request import VideoRequest

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = b"ftyp" + major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return (len(body) + 4).to_bytes(4, "big") + body + b"\x00\x00\x00\x08free"


MP4 = ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41")
MOV = ftyp(b"qt  ", b"qt  ")
M4A = ftyp(b"M4A ", b"M4A ", b"mp42", b"isom")
WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm\x42\x87"
MKV = WEBM.replace(b"\x84webm", b"\x88matroska")
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "
MP3_FRAME = b"\xff\xfb\x90\x64" + b"\x00" * 16
OGG = b"OggS\x00\x02" + b"\x00" * 20


@pytest.mark.parametrize(
    ("detect", "head", "expected"),
    [
        (image_type, PNG, "png"),
        (image_type, b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (image_type, b"GIF89a\x01\x00", "gif"),
        (image_type, b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (image_type, WAV, None),  # RIFF, but not WebP
        (video_type, MP4, "mp4"),
        (video_type, ftyp(b"mp42", b"mp42", b"isom"), "mp4"),
        (video_type, MOV, "quicktime"),
        (video_type, b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat", "quicktime"),  # pre-ftyp MOV
        (video_type, WEBM, "webm"),
        (video_type, MKV, None),  # Matroska, not WebM
        (video_type, M4A, None),  # audio in the same container
        (video_type, ftyp(b"heic", b"mif1", b"heic"), None),  # a HEIF still image
        (video_type, PNG, None),
        (audio_type, b"ID3\x04\x00\x00\x00\x00\x00\x00", "mpeg"),
        (audio_type, MP3_FRAME, "mpeg"),
        (audio_type, b"\xff\xf1\x50\x80", None),  # AAC ADTS: MPEG sync, but not Layer III
        (audio_type, WAV, "wav"),
        (audio_type, OGG, "ogg"),
        (audio_type, M4A, "mp4"),
        (audio_type, ftyp(b"mp42", b"isom", b"M4A "), "mp4"),  # M4A listed as compatible
        (audio_type, MP4, None),  # a video is not audio
        (audio_type, b"just some text", None),
    ],
)
def test_type_comes_from_magic_bytes(detect: Any, head: bytes, expected: str | None) -> None:
    assert detect(head[:HEAD_BYTES]) == expected


@pytest.mark.parametrize(
    ("kind", "content", "name", "prefix"),
    [
        (VIDEO, MP4, "clip.mov", "data:video/mp4;base64,"),  # the name is not trusted
        (VIDEO, MOV, "clip.mp4", "data:video/quicktime;base64,"),
        (VIDEO, WEBM, "clip", "data:video/webm;base64,"),
        (AUDIO, MP3_FRAME, "voice.wav", "data:audio/mpeg;base64,"),
        (AUDIO, WAV, "voice.wav", "data:audio/wav;base64,"),
        (AUDIO, M4A, "voice.m4a", "data:audio/mp4;base64,"),
        (AUDIO, OGG, "voice.ogg", "data:audio/ogg;base64,"),
        (IMAGE, PNG, "frame.jpg", "data:image/png;base64,"),
    ],
)
def test_data_url_carries_the_detected_type_and_the_bytes(
    tmp_path: Path, kind: Any, content: bytes, name: str, prefix: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    url = data_url(str(source), kind)
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix) :]) == content
    assert data_url(f"file://{source}", kind) == url


@pytest.mark.parametrize(
    ("kind", "content", "message"),
    [
        (VIDEO, M4A, "video_path='{}' is not an MP4, MOV or WebM video"),
        (AUDIO, MP4, "audio_path='{}' is not an MP3, WAV, M4A or OGG audio file"),
        (IMAGE, MP4, "image_path='{}' is not a PNG, JPEG, GIF or WebP image"),
    ],
)
def test_wrong_media_type_is_refused(
    tmp_path: Path, kind: Any, content: bytes, message: str
) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(content)
    with pytest.raises(NanoGPTValidationError) as info:
        data_url(source, kind)
    assert message.format(source) in str(info.value)


def test_encoded_size_not_file_size_is_limited(tmp_path: Path) -> None:
    # 3.5 MB is under 4 MiB on disk, but its data URL is about 4.67 million characters.
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\x00" * (3_500_000 - len(PNG)))
    with pytest.raises(NanoGPTValidationError) as info:
        data_url(big, IMAGE)
    message = str(info.value)
    assert "3,500,000 bytes" in message
    assert "4,666,690 characters" in message  # 22-character header + 4 * ceil(3,500,000 / 3)
    assert "up to 4 MB" in message and "pass image_url instead" in message
    small = tmp_path / "small.png"
    small.write_bytes(PNG)
    assert len(data_url(small, IMAGE)) < 200


@pytest.mark.parametrize("kind", [IMAGE, VIDEO, AUDIO])
def test_the_largest_file_that_fits_fits_exactly(tmp_path: Path, kind: Any) -> None:
    head = {"image": PNG, "video": MP4, "audio": WAV}[kind.name]
    header = f"data:{kind.name}/{kind.detect(head)};base64,"
    limit = max_inline_bytes(header)
    source = tmp_path / "edge"
    source.write_bytes(head + b"\x00" * (limit - len(head)))
    assert len(data_url(source, kind)) <= MAX_DATA_URL_CHARS
    source.write_bytes(head + b"\x00" * (limit + 1 - len(head)))
    with pytest.raises(NanoGPTValidationError, match=f"pass {kind.url_parameter} instead"):
        data_url(source, kind)


class _CountingReader(io.RawIOBase):
    """An endless MP4 stream, served in short reads, that counts the bytes handed out."""

    def __init__(self) -> None:
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), 4096)
        header = MP4[self.served : self.served + size]
        chunk = header + b"\x00" * (size - len(header))
        buffer[:size] = chunk
        self.served += size
        return size


class _RemoteFile:
    """Just enough of an ObjectStoragePath: its filesystem, stat, open and as_uri."""

    fs = object()  # the scheme's filesystem is installed

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.reader = _CountingReader()

    def stat(self) -> Any:
        return SimpleNamespace() if self.size is None else SimpleNamespace(st_size=self.size)

    def open(self, mode: str) -> Any:
        assert mode == "rb"
        return self.reader

    def as_uri(self) -> str:
        return "s3://bucket/huge.mp4"


def test_a_huge_file_is_refused_after_reading_its_first_bytes() -> None:
    remote = _RemoteFile(size=50 * 1024**3)
    with pytest.raises(NanoGPTValidationError, match=r"s3://bucket/huge.mp4.*53,687,091,200 bytes"):
        data_url(remote, VIDEO)
    assert remote.reader.served == HEAD_BYTES


def test_without_a_size_reading_stops_one_byte_past_the_limit() -> None:
    remote = _RemoteFile(size=None)
    with pytest.raises(NanoGPTValidationError, match="is at least"):
        data_url(remote, VIDEO)
    assert remote.reader.served == max_inline_bytes("data:video/mp4;base64,") + 1


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"video_url": "ftp://host/clip.mp4"}, "video_url='ftp://host/clip.mp4' is not allowed"),
        ({"audio_url": "file:///tmp/voice.mp3"}, "NanoGPT fetches audio over http(s) only"),
        ({"video_url": "clip.mp4"}, "use video_path for local or object-storage files"),
        ({"video_url": 42}, "video_url=42"),
        (
            {"video_url": "https://a/b.mp4", "video_path": "/a/b.mp4"},
            "either video_url or video_path",
        ),
        (
            {"audio_url": "https://a/b.mp3", "audio_path": "/a/b.mp3"},
            "either audio_url or audio_path",
        ),
    ],
)
def test_source_media_urls_and_exclusivity(arguments: dict, fragment: str) -> None:
    request = VideoRequest(model="latentsync", **arguments)
    for validate in (True, False):  # not model rules: they hold with validate=False too
        with pytest.raises(NanoGPTValidationError, match="Nothing was sent") as info:
            request.payload(validate=validate)
        assert fragment in str(info.value)


def test_a_signed_url_query_stays_out_of_the_message() -> None:
    with pytest.raises(NanoGPTValidationError) as info:
        VideoRequest(model="m", video_url="s3://bucket/clip.mp4?X-Amz-Signature=secret").payload()
    assert "secret" not in str(info.value)


def test_paths_are_sent_inline_under_nanogpt_names(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(MP4)
    (tmp_path / "voice.wav").write_bytes(WAV)
    payload = VideoRequest(
        model="latentsync",
        video_path=str(tmp_path / "clip.mp4"),
        audio_path=tmp_path / "voice.wav",
    ).payload()
    assert set(payload) == {"model", "videoDataUrl", "audioDataUrl"}
    assert payload["videoDataUrl"] == "data:video/mp4;base64," + base64.b64encode(MP4).decode()
    assert payload["audioDataUrl"] == "data:audio/wav;base64," + base64.b64encode(WAV).decode()


def test_model_rules_run_before_any_file_is_read(tmp_path: Path) -> None:
    # The file does not exist: the rule failure shows that nothing was read first.
    with pytest.raises(NanoGPTValidationError, match="needs audio"):
        VideoRequest(model="latentsync", video_path=str(tmp_path / "missing.mp4")).payload()


def test_an_oversize_data_url_in_extra_params_is_refused_too() -> None:
    huge = "data:image/png;base64," + "A" * MAX_DATA_URL_CHARS
    request = VideoRequest(model="kling-v21-pro", prompt="p", extra_params={"imageDataUrl": huge})
    for validate in (True, False):
        with pytest.raises(NanoGPTValidationError, match="imageDataUrl is a 4,000,022-character"):
            request.payload(validate=validate)
