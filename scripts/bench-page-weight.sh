#!/usr/bin/env bash
# Page weight: builds the site as a deployment ships it (release WASM,
# precompressed with brotli and gzip by cargo-leptos) into its own folder,
# target/site-release, and prints each file's size as stored and as sent.
# Takes a few minutes (the release WASM build); leaves the test site alone.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_rust_tools
ensure_node_packages
SITE="target/site-release"
log "building the release site into $SITE (cargo leptos build --release --precompress --frontend-only)"
LEPTOS_SITE_ROOT="$SITE" cargo leptos build --release --precompress --frontend-only
python3 - "$SITE/pkg" <<'PY'
import os, sys
pkg = sys.argv[1]
rows = []
for name in sorted(os.listdir(pkg)):
    path = os.path.join(pkg, name)
    if name.endswith(('.br', '.gz')) or not os.path.isfile(path):
        continue
    size = lambda p: os.path.getsize(p) if os.path.exists(p) else None
    rows.append((name, size(path), size(path + '.gz'), size(path + '.br')))
kb = lambda n: '-' if n is None else f'{n / 1024:.1f} KiB'
print(f"{'file':<44} {'stored':>11} {'gzip':>11} {'brotli':>11}")
for name, raw, gz, br in rows:
    print(f"{name:<44} {kb(raw):>11} {kb(gz):>11} {kb(br):>11}")
total = lambda i: sum(r[i] or r[1] for r in rows)
print(f"{'all (sent as brotli where there is a copy)':<44} {kb(total(1)):>11} {kb(total(2)):>11} {kb(total(3)):>11}")
PY
