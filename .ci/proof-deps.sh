#!/usr/bin/env bash
# Installs what the proof-of-consent PDF tests need besides Python packages: poppler-utils
# (pdftotext, pdfinfo and pdftoppm read the PDFs WeasyPrint writes) and the fonts the proof's
# stylesheet names (DejaVu; WeasyPrint lays out with the system's Pango, which Chromium's
# dependencies bring). Idempotent: nothing happens when all of it is there.
set -euo pipefail
missing=""
command -v pdftotext >/dev/null 2>&1 || missing="poppler-utils"
fc-list 2>/dev/null | grep -q "DejaVuSans.ttf" || missing="$missing fonts-dejavu-core"
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq $missing >/dev/null; }
fi
echo "proof test dependencies: $(pdftotext -v 2>&1 | head -1)"
