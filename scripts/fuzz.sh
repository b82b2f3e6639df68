#!/usr/bin/env bash
# Fuzz: runs every cargo-fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS
# each (default 20) from its committed corpus (fuzz/corpus/<target>); new
# inputs go to a scratch copy, so the checkout is left as it was. Exits
# non-zero when a target finds a crash (the input is in fuzz/artifacts/).
# `./scripts/fuzz.sh 600` is the longer run BENCHMARKS.md reports.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

SECONDS_EACH="${1:-${FUZZ_SECONDS:-20}}"
ensure_fuzz_tools

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in signal_message ice_candidate beacon_body display_name; do
  log "fuzzing $target for ${SECONDS_EACH} s"
  mkdir -p "$scratch/$target"
  cargo +nightly fuzz run --fuzz-dir fuzz -s none "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 2>"$scratch/$target.log" \
    || { tail -n 40 "$scratch/$target.log"; die "fuzz target $target failed"; }
  grep -E "stat::number_of_executed_units|stat::new_units_added" "$scratch/$target.log" | tr '\n' ' ' >&2 || true
  echo >&2
done
