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
python3 - "$OUT" "$WRITE" "$(nproc)" "$(uptime | sed 's/.*load average: //')" <<'PY'
import json, re, statistics, sys, datetime
out, write, cores, load = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
runs = {}
for line in open(out):
    m = re.search(r"BENCH (\{.*\})", line)
    if m:
        r = json.loads(m.group(1))
        runs.setdefault(r["metric"], []).append(r["ms"])
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
rows = ["| measure | runs | p50 ms | p95 ms |", "|---|---|---|---|"]
for metric, v in runs.items():
    rows.append(f"| {metric} | {len(v)} | {statistics.median(v):.0f} | {pct(v, 0.95)} |")
table = "\n".join(rows)
print(table)
if write and runs:
    section = (f"## Real networks\n\nMeasured by `scripts/bench-network.sh` on {datetime.date.today()} "
               f"({cores} cores, load {load}; debug build, Chromium headless; Bob in a network namespace, "
               f"Ada on the host; TURN = coturn over TCP with UDP dropped in the namespace).\n\n{table}\n")
    text = open("BENCHMARKS.md").read()
    if "## Real networks" in text:
        text = re.sub(r"## Real networks\n.*?(?=\n## |\Z)", section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    open("BENCHMARKS.md", "w").write(text)
PY
rm -f "$OUT"
