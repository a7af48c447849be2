#!/usr/bin/env bash
# Install Debian's chromium for headless checks of the ComfyUI page (fusionframes/tools/comfy_host.py: screenshot()).
# Idempotent: does nothing when chromium is already on PATH. Needs root (or sudo) and the Debian mirror via apt.
# With --playwright also installs playwright-core (npm, no bundled browser download) into .host/node/ for
# scripts/comfy_page_probe.js, which drives /usr/bin/chromium.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T0=$(date +%s)

SUDO=()
if [ "$(id -u)" != 0 ]; then
  SUDO=(sudo)
fi

if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(chromium --version 2>/dev/null || echo "$(command -v chromium)")"
else
  echo "==> apt-get install chromium"
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update once per machine (the package lists are kept under /var/lib/apt/lists).
  if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' -e '^auxfiles$' || true)" ]; then
    "${SUDO[@]}" apt-get update -qq
  fi
  if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium; then
    # Stale lists: refresh once and retry.
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium
  fi
  echo "chromium installed: $(chromium --version)"
fi

if [ "${1:-}" = "--playwright" ]; then
  NODE_DIR="$REPO/.host/node"
  if [ ! -f "$NODE_DIR/node_modules/playwright-core/package.json" ]; then
    echo "==> npm install playwright-core into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] || echo '{"private": true}' > "$NODE_DIR/package.json"
    # playwright-core never downloads a browser; we point it at /usr/bin/chromium.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent playwright-core
  fi
  echo "playwright-core $(node -p "require('$NODE_DIR/node_modules/playwright-core/package.json').version")"
fi
echo "browser ready after $(($(date +%s) - T0)) s"
