#!/usr/bin/env bash
# The memory benchmark (cleanroom-bench): the release server's RSS per
# participant in rooms of 8 publishers × 8 subscribers (median of
# BENCH_RUNS runs, a fresh server each), then BENCH_CYCLES join/leave
# cycles of a visitor in a two-person call (`--churn`): the server's RSS
# after the first 10 cycles and at the end, every cycle checked to leave the
# server's counts as they were. Prints the `summary` and `churn:` lines.
#   BENCH_RUNS (3), BENCH_CYCLES (1000).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
TARGET="$(target_dir)"
cargo build --release -p server --bin cleanroom -p loadgen --bin cleanroom-bench
bench() { "$TARGET/release/cleanroom-bench" --server "$TARGET/release/cleanroom" "$@"; }
echo "== RSS per participant, 1 × 8×8"
bench --rooms 1 --publishers 8 --subscribers 8 --seconds 5 --runs "${BENCH_RUNS:-3}" --join-timeout 60
echo "== ${BENCH_CYCLES:-1000} join/leave cycles beside a two-person call"
bench --rooms 1 --publishers 2 --subscribers 0 --churn "${BENCH_CYCLES:-1000}"
