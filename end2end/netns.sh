#!/usr/bin/env bash
# A test host for the browser suite: a network namespace joined to this
# machine by a veth pair, so a browser inside it can be cut off the network
# the way Wi-Fi loss does it: packets simply stop arriving, in both
# directions, with no close frame, no reset and no link change that either
# side could notice.
#
#   netns.sh up        create the namespace (idempotent)
#   netns.sh down      remove it and every rule (idempotent)
#   netns.sh check     exit 1 unless it is up and usable
#   netns.sh cut       drop everything crossing the veth, both ways (idempotent)
#   netns.sh restore   stop dropping (idempotent)
#
# Layout (all on this machine; nothing is routed anywhere else):
#   root namespace  $HOST_IF  10.77.0.1/30   <- the server listens here too
#   $NS             $NS_IF    10.77.0.2/30   <- the browser that gets cut
# The cut drops every frame on the host side of the veth, in both directions,
# with an nftables netdev table (ingress: the browser's packets never reach
# the server; egress: the server's packets never leave). The server's sends
# still succeed and the browser's leave normally: to both, the other side has
# simply gone quiet, as behind a dead access point. Permanent neighbour
# entries keep ARP out of it. A blackhole route with a high metric keeps
# traffic for the test subnet on this machine even if the veth is gone.
# Needs root, iproute2 and nftables.
set -euo pipefail

NS="${NETNS_NAME:-cleanroom-e2e}"
HOST_IF="${NETNS_HOST_IF:-cr-e2e-h}"
NS_IF="${NETNS_NS_IF:-cr-e2e-n}"
HOST_IP="10.77.0.1"
NS_IP="10.77.0.2"
SUBNET="10.77.0.0/30"
TABLE="cleanroom_e2e_cut"

die() { printf 'netns.sh: %s\n' "$*" >&2; exit 1; }
in_ns() { ip netns exec "$NS" "$@"; }
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$NS"; }

up() {
  command -v nft >/dev/null || die "nft not found (apt-get install nftables)"
  ns_exists || ip netns add "$NS"
  if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
    ip link add "$HOST_IF" type veth peer name "$NS_IF" netns "$NS"
  fi
  ip addr replace "$HOST_IP/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  in_ns ip addr replace "$NS_IP/30" dev "$NS_IF"
  in_ns ip link set "$NS_IF" up
  in_ns ip link set lo up
  ip neigh replace "$NS_IP" lladdr "$(in_ns cat "/sys/class/net/$NS_IF/address")" dev "$HOST_IF" nud permanent
  in_ns ip neigh replace "$HOST_IP" lladdr "$(cat "/sys/class/net/$HOST_IF/address")" dev "$NS_IF" nud permanent
  ip route replace blackhole "$SUBNET" metric 4000
  # The cut's table, with nothing to drop until `cut`.
  nft delete table netdev "$TABLE" 2>/dev/null || true
  nft -f - <<EOF
table netdev $TABLE {
  chain ingress { type filter hook ingress device "$HOST_IF" priority -500; policy accept; }
  chain egress { type filter hook egress device "$HOST_IF" priority -500; policy accept; }
}
EOF
}

down() {
  nft delete table netdev "$TABLE" 2>/dev/null || true
  ip route del blackhole "$SUBNET" metric 4000 2>/dev/null || true
  ip link del "$HOST_IF" 2>/dev/null || true
  if ns_exists; then ip netns del "$NS"; fi
}

check() {
  ns_exists || die "namespace $NS is missing (run: end2end/netns.sh up)"
  ip link show "$HOST_IF" >/dev/null 2>&1 || die "veth $HOST_IF is missing (run: end2end/netns.sh up)"
  in_ns ip -4 addr show dev "$NS_IF" | grep -q "inet $NS_IP/" || die "$NS_IF in $NS has no $NS_IP"
  nft list table netdev "$TABLE" >/dev/null 2>&1 || die "nftables table $TABLE is missing (run: end2end/netns.sh up)"
}

# Cut and restore are one atomic nft transaction each, and kept short: the
# blip test times them.
cut() {
  exec nft -f - <<EOF
flush chain netdev $TABLE ingress
flush chain netdev $TABLE egress
add rule netdev $TABLE ingress drop
add rule netdev $TABLE egress drop
EOF
}

restore() {
  nft list table netdev "$TABLE" >/dev/null 2>&1 || return 0
  exec nft -f - <<EOF
flush chain netdev $TABLE ingress
flush chain netdev $TABLE egress
EOF
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  check) check ;;
  cut) cut ;;
  restore) restore ;;
  *) die "usage: $0 up|down|check|cut|restore" ;;
esac
