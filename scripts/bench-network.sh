#!/usr/bin/env bash
# The real-network benchmark (end2end/bench/network.bench.ts): join click to
# first remote video frame, direct and through coturn over TCP with UDP
# blocked, and the time from the end of a 3 s link flap to the remote video
# advancing again; p50/p95 over BENCH_RUNS (5) runs, written to the
# "## Real networks" section of BENCHMARKS.md (--no-write: print only).
# Needs root (the test namespace), coturn, and a built server and site
# (`cargo leptos build`; CLEANROOM_BIN defaults to its debug binary).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
WRITE=1
[ "${1:-}" = "--no-write" ] && WRITE=0
ensure_node_packages
ensure_chromium
ensure_netns_tools
ensure_real_network_tools
BIN="${CLEANROOM_BIN:-$(target_dir)/debug/cleanroom}"
[ -x "$BIN" ] || die "no server binary at $BIN (run cargo leptos build)"
"$ROOT/end2end/netns.sh" up
trap '"$ROOT/end2end/netns.sh" down || true' EXIT
OUT="$(mktemp)"
CLEANROOM_BIN="$BIN" BASE_URL="http://127.0.0.1:9" npx playwright test -c end2end/bench.config.ts network.bench.ts | tee "$OUT"
python3 "$ROOT/scripts/bench-table.py" "$OUT" "## Real networks" \
  "Measured by \`scripts/bench-network.sh\` on {date} ({cores} cores, load {load}; debug build, Chromium headless; Bob in a network namespace, Ada on the host; TURN = coturn over TCP with UDP dropped in the namespace)." \
  $([ "$WRITE" = 1 ] && echo --write)
rm -f "$OUT"
