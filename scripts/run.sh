#!/usr/bin/env bash
# Run: installs what is missing and serves Cleanroom on http://127.0.0.1:3000
# with the embedded defaults (SQLite in ./data/, the in-process store).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_rust_tools
ensure_node_packages
log "building and serving (release); open http://${CLEANROOM_ADDR:-127.0.0.1:3000}"
exec cargo leptos serve --release --precompress
