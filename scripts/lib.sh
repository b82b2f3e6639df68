# Shared steps of scripts/run.sh and scripts/test.sh: install what is
# missing, start what is not running. Sourced, not executed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_LEPTOS_VERSION="0.3.10"

log() { printf '\033[1;36m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  have apt-get || die "apt-get not found: install $* by hand"
  if [ -z "${CLEANROOM_APT_UPDATED:-}" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    export CLEANROOM_APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_rust_tools() {
  have cargo || die "cargo not found: install Rust with rustup first"
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
  if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
    log "installing cargo-leptos $CARGO_LEPTOS_VERSION (takes a while on a small machine)"
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
      cargo install cargo-leptos --locked --version "$CARGO_LEPTOS_VERSION"
  fi
  local wbg
  wbg="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock")"
  [ -n "$wbg" ] || die "wasm-bindgen not found in Cargo.lock"
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $wbg\$"; then
    log "installing wasm-bindgen-cli $wbg (must match Cargo.lock)"
    cargo install wasm-bindgen-cli --version "=$wbg"
  fi
}

ensure_node_packages() {
  have npm || apt_install nodejs npm
  if [ ! -x "$ROOT/node_modules/.bin/wasm-opt" ] || [ ! -x "$ROOT/node_modules/.bin/playwright" ] \
     || [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
    log "installing npm packages (binaryen for wasm-opt, Playwright)"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  export PATH="$ROOT/node_modules/.bin:$PATH"
}

# cargo-fuzz and the nightly toolchain it needs (libFuzzer's coverage
# instrumentation); both are on this kind of machine or come from crates.io.
ensure_fuzz_tools() {
  rustup toolchain list | grep -q '^nightly' || die "the nightly toolchain (for cargo fuzz) is missing: rustup toolchain install nightly"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
}

ensure_chromium() {
  [ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || apt_install chromium
}

# The browser suite's test host (end2end/netns.sh): a network namespace with
# a veth pair, cut with nftables. Needs root.
ensure_netns_tools() {
  have ip || apt_install iproute2
  have nft || apt_install nftables
}

# The real components of the real-network and several-node tests: coturn
# (TURN), pebble and pebble-challtestsrv (an ACME CA and its DNS), haproxy
# (the balancer in front of several nodes), all Debian packages.
ensure_real_network_tools() {
  have turnserver || apt_install coturn
  have pebble || apt_install pebble
  have haproxy || apt_install haproxy
}

# Cargo's target directory (honours CARGO_TARGET_DIR and .cargo/config).
target_dir() {
  cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
