#!/usr/bin/env python3
"""The p50/p95 table of a browser benchmark's `BENCH {"metric": …, "ms": …}`
lines (end2end/bench/*.bench.ts; `"value": …, "unit": …` instead of `"ms"`
for figures of other units), and its `NOTE {"text": …}` lines below it, printed, and with --write put into
BENCHMARKS.md under HEADING: between the section's generated-part markers
when it has them (the text around them is kept), else as the whole section.

  bench-table.py OUT HEADING INTRO [--write] [--ratio NUMERATOR DENOMINATOR]

INTRO may name {date}, {cores} and {load}; --ratio adds a line comparing the
medians of two metrics.
"""
import datetime
import json
import os
import re
import statistics
import sys

args = sys.argv[1:]
write = "--write" in args
ratio = None
if "--ratio" in args:
    i = args.index("--ratio")
    ratio = (args[i + 1], args[i + 2])
    del args[i:i + 3]
args = [a for a in args if a != "--write"]
out, heading, intro = args

runs = {}
units = {}
notes = []
for line in open(out):
    m = re.search(r"BENCH (\{.*\})", line)
    if m:
        r = json.loads(m.group(1))
        runs.setdefault(r["metric"], []).append(r["ms"] if "ms" in r else r["value"])
        units[r["metric"]] = "ms" if "ms" in r else r.get("unit", "")
    m = re.search(r"NOTE (\{.*\})", line)
    if m:
        notes.append(json.loads(m.group(1))["text"])


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


def fmt(x):
    return f"{x:.0f}" if abs(x) >= 100 or float(x).is_integer() else f"{x:.2f}"


if all(u == "ms" for u in units.values()):
    rows = ["| measure | runs | p50 ms | p95 ms |", "|---|---|---|---|"]
    for metric, v in runs.items():
        rows.append(f"| {metric} | {len(v)} | {statistics.median(v):.0f} | {pct(v, 0.95)} |")
else:
    rows = ["| measure | runs | p50 | p95 | unit |", "|---|---|---|---|---|"]
    for metric, v in runs.items():
        rows.append(f"| {metric} | {len(v)} | {fmt(statistics.median(v))} | {fmt(pct(v, 0.95))} | {units[metric]} |")
table = "\n".join(rows)
if notes:
    table += "\n\n" + "\n".join(f"- {n}" for n in notes)
extra = ""
if ratio and ratio[0] in runs and ratio[1] in runs:
    r = statistics.median(runs[ratio[0]]) / statistics.median(runs[ratio[1]])
    extra = f"\nThe median of \"{ratio[0]}\" is {r:.2f}x that of \"{ratio[1]}\" (the same interleaved runs).\n"
print(table + "\n" + extra)

if write and runs:
    load = os.getloadavg()
    filled = intro.format(
        date=datetime.date.today(), cores=os.cpu_count(), load=", ".join(f"{x:.2f}" for x in load)
    )
    generated = f"{filled}\n\n{table}\n{extra}"
    slug = re.sub(r"[^a-z]+", "-", heading.lstrip("# ").lower()).strip("-")
    begin, end = f"<!-- {slug}:begin (generated; edits here are overwritten) -->", f"<!-- {slug}:end -->"
    text = open("BENCHMARKS.md").read()
    if begin in text and end in text:
        text = text[: text.index(begin) + len(begin)] + "\n" + generated + text[text.index(end):]
    else:
        section = f"{heading}\n\n{begin}\n{generated}{end}\n"
        if f"{heading}\n" in text:
            text = re.sub(rf"{re.escape(heading)}\n.*?(?=\n## |\Z)", lambda _: section, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + section
    open("BENCHMARKS.md", "w").write(text)
