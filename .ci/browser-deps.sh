#!/usr/bin/env bash
# Installs what the browser tests (tests/browser, marker `browser`) need besides Python
# packages: Debian's Chromium and axe-core from npm. The Playwright package comes from the
# lock (requirements/test.txt) with the README's test command.
# Idempotent: each step is skipped when its result is already there.
# Playwright's own browser download (`playwright install`) is NOT used: the
# tests drive the system's /usr/bin/chromium through executable_path.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

missing=""
command -v chromium >/dev/null 2>&1 || missing="chromium"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null
fi

if [ ! -f tests/browser/node_modules/axe-core/axe.min.js ]; then
    npm install --silent --no-audit --no-fund --no-package-lock --prefix tests/browser >/dev/null
fi

playwright=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null) \
    || playwright="(from requirements/test.txt)"
echo "browser test dependencies: $(chromium --version 2>/dev/null | head -1)," \
     "playwright $playwright," \
     "axe-core $(node -p 'require("./tests/browser/node_modules/axe-core/package.json").version')"
