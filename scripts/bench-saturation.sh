#!/usr/bin/env bash
# The saturation benchmark (cleanroom-bench --saturate): the release server
# pinned to one core, the load generator (every headless client) to the
# other, each publisher's video rate raised step by step until the
# subscribers see more than 0.1 % loss or either side uses 0.9 of its core.
# Three room shapes: 1 room of 8 publishers × 8 subscribers, 2 rooms of one
# speaker and 50 listeners, 25 rooms of 4 publishers. Prints each step (the
# curve) and, per shape, the `saturation:` line. Needs 2 CPUs.
#   BENCH_SECONDS (5): the window of each step; BENCH_RATES: the steps
#   (video packets per second per publisher).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
command -v taskset >/dev/null || die "taskset (util-linux) is needed"
[ "$(nproc)" -ge 2 ] || die "two CPUs are needed (server on one, clients on the other)"
TARGET="$(target_dir)"
cargo build --release -p server --bin cleanroom -p loadgen --bin cleanroom-bench
SECONDS_PER_STEP="${BENCH_SECONDS:-5}"
RATES="${BENCH_RATES:-33,100,200,300,400,500,650,800,1000,1300,1600,2000}"
run() {
  echo "== $1"
  shift
  "$TARGET/release/cleanroom-bench" --server "$TARGET/release/cleanroom" --server-cpu 1 --client-cpu 0 \
    --seconds "$SECONDS_PER_STEP" --join-timeout 60 --saturate "$RATES" "$@"
}
run "8×8" --rooms 1 --publishers 8 --subscribers 8
run "2 × 1×50 (one speaker, many listeners)" --rooms 2 --publishers 1 --subscribers 50
run "25 × 4×0" --rooms 25 --publishers 4 --subscribers 0
