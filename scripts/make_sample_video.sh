#!/usr/bin/env bash
# Regenerates the simulator's default video, airflow_provider_nanogpt/simulator/media/sample.mp4:
# 3 s of ffmpeg's own synthetic test pattern (testsrc2), no audio, 320x180 at 15 fps, H.264
# Main profile, yuv420p, moov first (+faststart) so a player can start before the whole file is in.
# Made from nothing but ffmpeg's generator, so it carries no third-party content (see NOTICE).
# Needs ffmpeg with libx264 (Debian: apt-get install ffmpeg); the package does not need ffmpeg.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-airflow_provider_nanogpt/simulator/media/sample.mp4}"
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=320x180:rate=15:duration=3" \
  -c:v libx264 -profile:v main -level 3.0 -pix_fmt yuv420p -preset veryslow -crf 30 \
  -g 15 -threads 1 -an -map_metadata -1 -fflags +bitexact -flags:v +bitexact \
  -movflags +faststart "$OUT"
ls -l "$OUT"
