#!/usr/bin/env bash
# The several-node benchmark (end2end/bench/nodes.bench.ts): failover (the
# room's node SIGKILLed, until both browsers' video advances again on the
# other node, through haproxy) over BENCH_RUNS (5) runs, and a join's answer
# time on the room's node and through another node (relayed), BENCH_JOINS
# (30) each, interleaved; p50/p95 written to the "## Several nodes" section
# of BENCHMARKS.md (--no-write: print only). Needs PostgreSQL and Redis
# (TEST_POSTGRES_URL, TEST_REDIS_URL), haproxy, and a built server and site
# (`cargo leptos build`; CLEANROOM_BIN defaults to its debug binary).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
WRITE=1
[ "${1:-}" = "--no-write" ] && WRITE=0
export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
ensure_node_packages
ensure_chromium
ensure_real_network_tools
BIN="${CLEANROOM_BIN:-$(target_dir)/debug/cleanroom}"
[ -x "$BIN" ] || die "no server binary at $BIN (run cargo leptos build)"
OUT="$(mktemp)"
CLEANROOM_BIN="$BIN" BASE_URL="http://127.0.0.1:9" npx playwright test -c end2end/bench.config.ts nodes.bench.ts | tee "$OUT"
python3 "$ROOT/scripts/bench-table.py" "$OUT" "## Several nodes" \
  "Measured by \`scripts/bench-nodes.sh\` on {date} ({cores} cores, load {load}; debug build, Chromium headless; two nodes on one PostgreSQL and one Redis on this machine, the browsers through haproxy; lease 9 s, renewed every 3 s, the survivors look every second)." \
  $([ "$WRITE" = 1 ] && echo --write) --ratio "join through another node (relayed)" "join answered by the room node"
rm -f "$OUT"
