#!/usr/bin/env bash
# The exit benchmark: per way of leaving a call (Leave button, tab close,
# window close, refresh, in-app navigation, another site, network cut, killed
# browser), the time from the exit to the leaver's tile gone in another
# browser and to the server's last resource of the session released, p50/p95
# over repeated runs; writes the "## Exit paths" table of BENCHMARKS.md.
#
#   scripts/bench-exits.sh [--runs N] [--abrupt-runs M] [--paths 'leave button,refresh']
#                          [--server PATH] [--site DIR] [--no-write]
#
# --runs: runs per graceful path (default 10); --abrupt-runs: per network cut
# and killed browser (default 5, each costs ~15 s); --paths: only these
# (the names in end2end/bench/exits.bench.ts); --server: the cleanroom binary
# (default: a release build of the work tree, server and site, made by
# `cargo leptos build --release` first); --site: the site root it serves
# (default: Leptos.toml's, i.e. what the last cargo-leptos build wrote; it
# must come from the same build as the server, or pages do not hydrate);
# --no-write: print the table only. Needs root (the network namespace of
# end2end/netns.sh). The server runs on a free port with a
# temporary SQLite database and the debug API, and is stopped at the end.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

RUNS=10
ABRUPT_RUNS=5
PATHS=""
SERVER=""
SITE=""
WRITE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --abrupt-runs) ABRUPT_RUNS="$2"; shift 2 ;;
    --paths) PATHS="$2"; shift 2 ;;
    --server) SERVER="$2"; shift 2 ;;
    --site) SITE="$2"; shift 2 ;;
    --no-write) WRITE=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

ensure_node_packages
ensure_chromium
ensure_netns_tools

if [ -z "$SERVER" ]; then
  # Server and site are built together, every time (seconds when nothing
  # changed): a site left by another build (a debug site next to a release
  # server) does not hydrate, and the runs would wait forever.
  ensure_rust_tools
  log "building a release (cargo leptos build --release)"
  cargo leptos build --release
  SERVER="$(target_dir)/release/cleanroom"
fi
[ -x "$SERVER" ] || die "no server binary at $SERVER"
case "$SERVER" in
  */release/*) BUILD=release ;;
  */debug/*) BUILD=debug ;;
  *) BUILD="${BENCH_BUILD:-}"; [ -n "$BUILD" ] || die "cannot tell whether $SERVER is a debug or release build: set BENCH_BUILD" ;;
esac

WORK="$(mktemp -d)"
SERVER_PID=""
NETNS_WAS_UP=0
"$ROOT/end2end/netns.sh" check 2>/dev/null && NETNS_WAS_UP=1
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
  "$ROOT/end2end/netns.sh" restore || true
  [ "$NETNS_WAS_UP" = 1 ] || "$ROOT/end2end/netns.sh" down || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"$ROOT/end2end/netns.sh" up

NETNS_HOST_IP="10.77.0.1"
PORT="$(free_port)"
log "server: $SERVER ($BUILD) on port $PORT"
env ${SITE:+LEPTOS_SITE_ROOT="$SITE"} RUST_LOG="${RUST_LOG:-warn}" \
  CLEANROOM_ADDR="0.0.0.0:$PORT" CLEANROOM_ICE_ADDRS="127.0.0.1,$NETNS_HOST_IP" CLEANROOM_DEBUG_API=1 \
  DATABASE_URL="sqlite://$WORK/cleanroom.db?mode=rwc" "$SERVER" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; die "the server exited"; }
  sleep 0.2
done

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
SAMPLES="$WORK/exits.jsonl"
log "measuring ($RUNS runs per graceful path, $ABRUPT_RUNS per abrupt one)"
set +e
BASE_URL="http://127.0.0.1:$PORT" NETNS_BASE_URL="http://$NETNS_HOST_IP:$PORT" \
  BENCH_OUT="$SAMPLES" BENCH_RUNS="$RUNS" BENCH_RUNS_ABRUPT="$ABRUPT_RUNS" BENCH_PATHS="$PATHS" \
  npx playwright test -c end2end/bench.config.ts exits.bench.ts
STATUS=$?
set -e
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
[ "$STATUS" = 0 ] || { tail -n 30 "$WORK/server.log"; log "some paths failed (exit $STATUS); reporting what was measured"; }
[ -s "$SAMPLES" ] || die "no samples were taken"
mkdir -p "$ROOT/end2end/test-results/bench"
cp "$SAMPLES" "$ROOT/end2end/test-results/bench/exits-$(date -u +%Y%m%dT%H%M%SZ).jsonl"

REPORT_ARGS=(--in "$SAMPLES")
[ "$WRITE" = 1 ] && [ "$STATUS" = 0 ] && [ -z "$PATHS" ] && REPORT_ARGS+=(--write "$ROOT/BENCHMARKS.md")
[ "$WRITE" = 1 ] && { [ "$STATUS" != 0 ] || [ -n "$PATHS" ]; } && log "not writing BENCHMARKS.md (a failed or partial run)"
BENCH_BUILD="$BUILD" BENCH_SERVER_BUILT="$(date -u -r "$SERVER" '+%Y-%m-%d %H:%M UTC')" \
  BENCH_COMMIT="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
  BENCH_LOAD_BEFORE="$LOAD_BEFORE" BENCH_LOAD_AFTER="$LOAD_AFTER" BENCH_RUNS="$RUNS" BENCH_RUNS_ABRUPT="$ABRUPT_RUNS" \
  node end2end/bench/report.mjs "${REPORT_ARGS[@]}"
exit "$STATUS"
