#!/usr/bin/env bash
# Render a cctr_report page in headless Chromium (Debian package `chromium`) and save a PNG screenshot.
# usage: bash scripts/screenshot_report.sh REPORT.html OUTPUT.png [WIDTH HEIGHT]
set -euo pipefail
report="$1"; output="$2"; width="${3:-1280}"; height="${4:-2400}"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
    echo "no Chromium found; install it with: apt-get install -y chromium" >&2
    exit 1
fi
# --no-sandbox: containers run as root; no network is needed, the page embeds everything
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="${width},${height}" \
    --screenshot="$(realpath -m "$output")" "file://$(realpath "$report")" 2>/dev/null
echo "screenshot: $output"
