"""What the NanoGPT page hands out as files: CSV exports, and the names downloads are saved as."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import quote

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection"):
# prompts, errors and ids are user text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Characters no file name may hold on Windows, macOS or Linux (controls are dropped separately).
_FORBIDDEN_IN_NAMES = re.compile(r'[/\\:*?"<>|]')
_NOT_PLAIN_ASCII = re.compile(r"[^A-Za-z0-9._-]+")
# Well under the 255 bytes most file systems allow, leaving room for "(1)" and the like.
MAX_NAME_BYTES = 180


def csv_cell(value: object) -> str:
    """A value as a CSV cell that no spreadsheet will run: text starting like a formula gets a
    leading apostrophe. Numbers are written as they are (their "-" is not a formula)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Iterator[str]:
    """The CSV text, a line at a time (for streaming): the header, then each row guarded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)  # names we chose: written as they are
    yield _drain(buffer)
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def file_name(parts: Sequence[str], extension: str) -> str:
    """A file name made of ``parts`` (joined by "__"), safe on every OS: no path separator,
    reserved character, control or bidi character, no leading dot; NFC; bounded in bytes."""
    cleaned = []
    for part in parts:
        text = unicodedata.normalize("NFC", part)
        # Cc: controls (CR, LF, NUL, ...); Cf: format characters (bidi overrides, zero widths).
        text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf"))
        text = _FORBIDDEN_IN_NAMES.sub("_", text).strip(" .")
        cleaned.append(text or "_")
    stem = "__".join(cleaned)
    while len(stem.encode()) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem.rstrip(" .") + extension


def content_disposition(name: str) -> str:
    """``attachment`` naming the file ``name``: an ASCII fallback, and RFC 6266's ``filename*``
    (UTF-8, percent-encoded) that browsers prefer for the exact name."""
    ascii_name = _NOT_PLAIN_ASCII.sub("_", name).strip("._") or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
