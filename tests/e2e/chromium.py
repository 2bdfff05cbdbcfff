"""Headless Chromium for the UI tests: Debian's ``chromium`` package, driven by Playwright.

Playwright's own browser download is unreachable here, so it is pointed at the system binary
(``executable_path``); the package is installed with apt-get when it is missing, as the e2e
suite does for PostgreSQL.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

from tests.e2e.debian import ensure_package

CANDIDATES = ("chromium", "chromium-browser")
LAUNCH_ARGS = [
    "--no-sandbox",  # the test suite runs as root in CI containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--no-first-run",
]


class ChromiumUnavailable(RuntimeError):
    """Chromium is not installed and could not be installed."""


def find_chromium() -> Path | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def ensure_chromium() -> Path:
    """The Chromium binary, installing Debian's ``chromium`` package if it is absent."""
    return ensure_package("chromium", find_chromium, ChromiumUnavailable, "Chromium")


# Records a real, playable 2-second WebM (a sunrise over a sea) with the browser's own encoder,
# so no binary video has to live in the repository.
_RECORD_SAMPLE_VIDEO = """async () => {
  const canvas = document.createElement("canvas");
  canvas.width = 320; canvas.height = 180;
  const ctx = canvas.getContext("2d");
  const recorder = new MediaRecorder(canvas.captureStream(25), {mimeType: "video/webm;codecs=vp8"});
  const parts = [];
  recorder.ondataavailable = (event) => parts.push(event.data);
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.start(100);
  const start = performance.now();
  while (performance.now() - start < 2000) {
    const t = (performance.now() - start) / 2000;
    ctx.fillStyle = `hsl(${200 + 30 * t}, 55%, ${25 + 35 * t}%)`;
    ctx.fillRect(0, 0, 320, 180);
    ctx.fillStyle = "#ffd27f";
    ctx.beginPath(); ctx.arc(160, 150 - 90 * t, 28, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#1d4e89";
    ctx.fillRect(0, 130, 320, 50);
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
  recorder.stop();
  await stopped;
  const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}"""


def record_sample_video(browser: Any, target: Path) -> Path:
    """Write a short real WebM video to ``target`` (for the simulator's ``sample_video``)."""
    page = browser.new_page()
    try:
        page.goto("about:blank")
        target.write_bytes(base64.b64decode(page.evaluate(_RECORD_SAMPLE_VIDEO)))
    finally:
        page.close()
    return target
