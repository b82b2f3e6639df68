#!/usr/bin/env bash
# The bandwidth benchmark (end2end/bench/bandwidth.bench.ts): one subscriber
# on a tc-shaped downlink (300 kbit/s, then 60 kbit/s): frames decoded per
# second, freezes, the layer sent over time, the time back to the top layer
# and to playing video once the limit is lifted; and the server's CPU with
# simulcast against one layer. Medians over BENCH_RUNS (3) runs, written to
# the "## Bandwidth" section of BENCHMARKS.md (--no-write: print only).
# BENCH_CPU=0 skips the CPU part; BENCH_LOG=<RUST_LOG filter> keeps each
# weak-link run's server log in end2end/test-results/bandwidth-run-<n>.log.
# Needs root (the test namespace, tc) and a built server and site
# (`cargo leptos build`; CLEANROOM_BIN defaults to its debug binary).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
WRITE=1
[ "${1:-}" = "--no-write" ] && WRITE=0
ensure_node_packages
ensure_chromium
ensure_netns_tools
BIN="${CLEANROOM_BIN:-$(target_dir)/debug/cleanroom}"
[ -x "$BIN" ] || die "no server binary at $BIN (run cargo leptos build)"
"$ROOT/end2end/netns.sh" up
trap '"$ROOT/end2end/netns.sh" down || true' EXIT
OUT="$(mktemp)"
CLEANROOM_BIN="$BIN" BASE_URL="http://127.0.0.1:9" npx playwright test -c end2end/bench.config.ts bandwidth.bench.ts | tee "$OUT"
python3 "$ROOT/scripts/bench-table.py" "$OUT" "## Bandwidth" \
  "Measured by \`scripts/bench-bandwidth.sh\` on {date} ({cores} cores, load {load}; debug build, Chromium headless; Ada publishes from the host, Bob subscribes from a network namespace whose downlink is shaped with \`tc tbf\` (400 ms queue), Cy on the host keeps the top layer; CPU: two people on the host sending cameras to each other, 20 s after a 15 s ramp, simulcast and one layer in turns)." \
  --ratio "server CPU, two cameras, simulcast" "server CPU, two cameras, one layer" \
  $([ "$WRITE" = 1 ] && echo --write)
rm -f "$OUT"
