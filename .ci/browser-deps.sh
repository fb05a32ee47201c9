#!/usr/bin/env bash
# Installs what the browser tests (tests/browser, marker `browser`) need:
# Debian's Chromium, the Playwright Python package, and axe-core from npm.
# Idempotent: each step is skipped when its result is already there.
# Playwright's own browser download (`playwright install`) is NOT used: the
# tests drive the system's /usr/bin/chromium through executable_path.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

if ! python3 -c "import playwright" >/dev/null 2>&1; then
    python3 -m pip install --quiet "playwright>=1.45"
fi

if [ ! -f tests/browser/node_modules/axe-core/axe.min.js ]; then
    npm install --silent --no-audit --no-fund --no-package-lock --prefix tests/browser >/dev/null
fi

echo "browser test dependencies: $(chromium --version 2>/dev/null | head -1)," \
     "playwright $(python3 -c 'import importlib.metadata as m; print(m.version("playwright"))')," \
     "axe-core $(node -p 'require("./tests/browser/node_modules/axe-core/package.json").version')"
