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
relayed = runs.get("join through another node (relayed)")
direct = runs.get("join answered by the room node")
ratio = ""
if relayed and direct:
    ratio = (f"\nA relayed join's median is {statistics.median(relayed) / statistics.median(direct):.2f}x "
             "that of a join answered by the room node (medians of the same interleaved runs).\n")
table = "\n".join(rows)
print(table + ratio)
if write and runs:
    section = (f"## Several nodes\n\nMeasured by `scripts/bench-nodes.sh` on {datetime.date.today()} "
               f"({cores} cores, load {load}; debug build, Chromium headless; two nodes on one PostgreSQL "
               f"and one Redis on this machine, the browsers through haproxy; lease 9 s, renewed every 3 s, "
               f"the survivors look every second).\n\n{table}\n{ratio}")
    text = open("BENCHMARKS.md").read()
    if "## Several nodes" in text:
        text = re.sub(r"## Several nodes\n.*?(?=\n## |\Z)", section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    open("BENCHMARKS.md", "w").write(text)
PY
rm -f "$OUT"
