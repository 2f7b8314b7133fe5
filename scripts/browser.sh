#!/usr/bin/env bash
# Make sure a headless browser for the web UI's end-to-end test (tests/test_ui_e2e.py) is installed,
# and print its path as the only line on stdout; everything else goes to stderr.
#
#   bash scripts/browser.sh            # -> /usr/bin/chromium
#
# The test drives Debian's `chromium` package through the Python `playwright` package (a dev extra);
# Playwright's own browser download (`playwright install`) is not used. If /usr/bin/chromium is
# missing, this installs it with apt-get (as root; `apt-get update` and a retry if the first attempt
# fails). Idempotent: with the browser present it installs nothing.
set -euo pipefail

BROWSER=/usr/bin/chromium

log() { echo "browser.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ ! -x "$BROWSER" ]; then
    [ "$(id -u)" = 0 ] || die "$BROWSER is missing and this is not root; install it with: sudo apt-get install chromium"
    log "installing Debian's chromium with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    install=(apt-get install -y -qq --no-install-recommends chromium)
    if ! "${install[@]}" >/dev/null 2>&1; then
        log "install failed; running apt-get update and retrying"
        apt-get update -qq >&2
        "${install[@]}" >&2
    fi
    [ -x "$BROWSER" ] || die "apt-get installed chromium but $BROWSER is not there"
fi
log "$("$BROWSER" --version 2>/dev/null || echo "$BROWSER")"
echo "$BROWSER"
