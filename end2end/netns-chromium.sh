#!/bin/sh
# Debian's Chromium inside the test namespace (see netns.sh). Playwright talks
# to it over a pipe, which crosses the namespace boundary unchanged.
exec ip netns exec "${NETNS_NAME:-cleanroom-e2e}" "${CHROMIUM_PATH:-/usr/bin/chromium}" "$@"
