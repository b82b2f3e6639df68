#!/usr/bin/env bash
# Test: every test (format and lints, unit and integration tests against real
# PostgreSQL and Redis, the browser suite against both deployments). Installs
# or starts what it needs; exits non-zero on any failure.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"

ensure_services() {
  have redis-server || apt_install redis-server
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  have pg_ctlcluster || apt_install postgresql
  if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
    log "starting PostgreSQL"
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  for _ in $(seq 1 60); do
    pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "PostgreSQL or Redis did not come up"
}

ensure_rust_tools
ensure_node_packages
ensure_services
ensure_chromium
ensure_netns_tools
ensure_real_network_tools
have brotli || apt_install brotli

log "cargo fmt --check"
cargo fmt --all --check

log "clippy (ssr: app + server + loadgen)"
cargo clippy -p app -p server -p loadgen --all-targets --features app/ssr -- -D warnings
log "clippy (hydrate: app + frontend, wasm32)"
cargo clippy -p app -p frontend --target wasm32-unknown-unknown --features app/hydrate -- -D warnings

log "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p app -p server --features app/ssr

log "unit and integration tests"
cargo test -p app -p server --features app/ssr

log "fuzzing the input parsers (FUZZ_SECONDS=${FUZZ_SECONDS:-20} s per target)"
bash "$ROOT/scripts/fuzz.sh"

log "building the site for the browser suite"
cargo leptos build

# The suite is served what a release build ships: precompressed copies
# beside the files (`cargo leptos build --release --precompress` makes them
# for a deployment; a debug build does not, so they are made here, quickly).
log "precompressing the site's files (brotli, gzip)"
for f in "$ROOT/target/site/pkg/"*; do
  [ -f "$f" ] || continue
  case "$f" in *.br|*.gz) continue ;; esac
  brotli -f -q 5 -o "$f.br" "$f"
  gzip -f -k -6 "$f"
done

# Started from another working directory, the server finds its site next
# to the binary and serves the page's script (not a 404 while /readyz says 200).
log "the site is served when the server runs from another directory"
(
  port="$(free_port)"
  dir="$(mktemp -d)"
  cd "$dir"
  DATABASE_URL="sqlite://$dir/c.db?mode=rwc" CLEANROOM_ADDR="127.0.0.1:$port" "$(cd "$ROOT" && target_dir)/debug/cleanroom" \
    >"$dir/log" 2>&1 &
  pid=$!
  trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  script="$(curl -fsS -H 'sec-fetch-dest: document' "http://127.0.0.1:$port/" | grep -o '/pkg/cleanroom[^"]*\.js' | head -n 1)"
  [ -n "$script" ] || { cat "$dir/log"; die "the lobby names no script"; }
  curl -fsS -o /dev/null "http://127.0.0.1:$port$script" \
    || { cat "$dir/log"; die "the site's script $script is not served from $dir"; }
)

SERVER_PID=""
E2E_DB=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
  SERVER_PID=""
  if [ -n "$E2E_DB" ]; then
    psql "$TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS \"$E2E_DB\" WITH (FORCE)" >/dev/null || true
    E2E_DB=""
  fi
}
cleanup() {
  stop_server
  "$ROOT/end2end/netns.sh" down || true
}
trap cleanup EXIT

# The test host for network cuts (end2end/tests/network.spec.ts): a browser in
# this namespace reaches the server at $NETNS_HOST_IP over a veth pair.
NETNS_HOST_IP="10.77.0.1"
log "network namespace for the browser suite"
"$ROOT/end2end/netns.sh" up

# Runs the Playwright suite against one deployment: $1 = label, then env assignments.
e2e() {
  local label="$1"; shift
  local port log
  port="$(free_port)"
  log="$ROOT/target/e2e-$label.log"
  mkdir -p "$ROOT/target"
  log "browser suite against $label (port $port)"
  # Reachable from this host (127.0.0.1) and from the namespace ($NETNS_HOST_IP).
  env "$@" CLEANROOM_ADDR="0.0.0.0:$port" CLEANROOM_ICE_ADDRS="127.0.0.1,$NETNS_HOST_IP" CLEANROOM_DEBUG_API=1 \
    "$(target_dir)/debug/cleanroom" \
    >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log"; die "server for $label exited"; }
    sleep 0.2
  done
  BASE_URL="http://127.0.0.1:$port" NETNS_BASE_URL="http://$NETNS_HOST_IP:$port" npx playwright test -c end2end/playwright.config.ts \
    || { tail -n 50 "$log"; die "browser suite failed against $label"; }
  stop_server
  # A panic in a request (a page, a cleanup) may not fail any one spec, but it is a defect.
  if grep -n "panicked" "$log"; then
    die "the server panicked during the browser suite against $label (see $log)"
  fi
}

SQLITE_DIR="$(mktemp -d)"
e2e sqlite-memory DATABASE_URL="sqlite://$SQLITE_DIR/cleanroom.db?mode=rwc"
rm -rf "$SQLITE_DIR"

E2E_DB="cleanroom_e2e_$$"
psql "$TEST_POSTGRES_URL" -qc "CREATE DATABASE \"$E2E_DB\"" >/dev/null
e2e postgres-redis DATABASE_URL="${TEST_POSTGRES_URL%/*}/$E2E_DB" REDIS_URL="$TEST_REDIS_URL"

# The real-network specs start their own servers with the settings under
# test (HTTPS, TURN through coturn, 1:1 NAT; two nodes behind haproxy on
# PostgreSQL and Redis); one run is enough.
log "browser suite: real networks and several nodes (servers, coturn, NAT and haproxy started by the specs)"
REAL_NETWORKS=1 CLEANROOM_BIN="$(target_dir)/debug/cleanroom" BASE_URL="http://127.0.0.1:9" \
  npx playwright test -c end2end/playwright.config.ts \
  || die "browser suite failed: real networks"

log "all tests passed"
