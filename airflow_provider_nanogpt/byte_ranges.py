"""HTTP ``Range: bytes=`` parsing, shared by the plugin's video stream and the simulator's files.

Plain standard library: the simulator imports it without Airflow.
"""

from __future__ import annotations


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``bytes=`` Range; None for the whole file (no header, or
    one not served: several ranges, another unit, bad syntax, a last byte before the first, which
    RFC 9110 calls invalid and says to ignore); ValueError when unsatisfiable."""
    unit, _, spec = (header or "").partition("=")
    first_text, dash, last_text = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or "," in spec:
        return None
    if not all(part == "" or part.isdigit() for part in (first_text, last_text)):
        return None
    if first_text and last_text and int(last_text) < int(first_text):
        return None
    if first_text == "":  # the last N bytes
        if last_text == "" or int(last_text) == 0 or size == 0:
            raise ValueError("unsatisfiable range")
        return max(0, size - int(last_text)), size - 1
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size:
        raise ValueError("unsatisfiable range")
    return first, last
